"""What output_padding adds to a transposed convolution: rows that copies reach when the
padding is at least 1 (conv.ConvTranspose2d's docstring, lesson 08's uneven overlap)."""

from __future__ import annotations

import numpy as np
import pytest

from vae_from_scratch.conv import ConvTranspose2d

pytestmark = pytest.mark.lesson08


def _copies(size, k, s, p, o):
    """How many kernel copies land on each output pixel: all-ones input and kernel, b = 0."""
    x = np.ones((1, 1, size, size))
    W = np.ones((1, 1, k, k))
    return ConvTranspose2d.forward(x, W, np.zeros(1), stride=s, padding=p, output_padding=o)[0][
        0, 0]


def test_with_padding_1_the_added_row_receives_one_two_one_two_copies():
    counts = _copies(4, k=3, s=2, p=1, o=1)
    assert counts.shape == (8, 8)
    np.testing.assert_array_equal(counts[-1], [1, 2, 1, 2, 1, 2, 1, 1])
    np.testing.assert_array_equal(counts[:, -1], [1, 2, 1, 2, 1, 2, 1, 1])
    # the same copies as the row above it that one input row reaches alone
    np.testing.assert_array_equal(counts[-1], counts[-2])


def test_with_padding_0_no_copy_reaches_the_added_rows():
    counts = _copies(4, k=3, s=2, p=0, o=1)
    assert counts.shape == (10, 10)
    assert np.all(counts[-1] == 0) and np.all(counts[:, -1] == 0)
    assert np.all(counts[:-1, :-1] > 0)


@pytest.mark.parametrize("k, s, p, o", [(3, 2, 1, 1), (3, 2, 0, 1), (4, 3, 1, 2), (4, 3, 2, 2),
                                        (5, 3, 2, 1), (3, 3, 0, 2)])
def test_min_of_o_and_p_added_rows_receive_copies_and_the_rest_hold_the_bias(k, s, p, o):
    x = np.ones((1, 1, 3, 3))
    out, _ = ConvTranspose2d.forward(x, np.ones((1, 1, k, k)), np.full(1, 0.5), stride=s,
                                     padding=p, output_padding=o)
    added_rows = out[0, 0, -o:, : out.shape[3] - o]
    reached = [bool(np.any(row > 0.5)) for row in added_rows]
    assert reached == [True] * min(o, p) + [False] * (o - min(o, p))
    assert np.all(added_rows[min(o, p):] == 0.5)  # b alone
