"""The judge of generated images (vae_from_scratch.classifier): it learns the digits, its
probabilities are a softmax of its logits, and a seed repeats it bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from vae_from_scratch.classifier import train_classifier
from vae_from_scratch.data import load_mnist

pytestmark = [pytest.mark.lesson09, pytest.mark.lesson11]


def test_it_learns_the_digits_and_repeats():
    ds = load_mnist()
    judge = train_classifier(ds.x_train, ds.y_train, hidden=64, epochs=2, seed=0)
    assert np.mean(judge.predict(ds.x_test) == ds.y_test) > 0.85
    probs = judge.probs(ds.x_test[:50])
    assert probs.shape == (50, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(probs.argmax(axis=1), judge.predict(ds.x_test[:50]))
    again = train_classifier(ds.x_train, ds.y_train, hidden=64, epochs=2, seed=0)
    np.testing.assert_array_equal(again.logits(ds.x_test[:50]), judge.logits(ds.x_test[:50]))


def test_bad_labels_are_refused():
    with pytest.raises(ValueError, match="integer labels"):
        train_classifier(np.zeros((4, 3)), np.zeros(4))
