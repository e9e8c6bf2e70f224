"""Lesson 00's checkers catch the mistakes learners make, accept right answers written
differently from the reference, and say what was expected and what came back."""

from __future__ import annotations

import numpy as np
import pytest

from vae_from_scratch.checks import core
from vae_from_scratch.checks import lesson00 as check
from vae_from_scratch.checks.core import NOT_DONE, PASSED, WRONG

pytestmark = pytest.mark.lesson00


def test_the_lesson_registers_the_example_and_exercises_0_1_and_0_2():
    assert [(c.exercise, c.name) for c in core.checkers(0)] == [
        ("0.1", "class_means"),
        ("0.2", "ink_fraction"),
    ]
    examples = [c for c in core.checkers(0, examples=True) if c.example]
    assert [(c.exercise, c.name) for c in examples] == [("0.0", "total_ink")]


@pytest.mark.parametrize("checker", [check.total_ink, check.class_means, check.ink_fraction])
def test_the_references_pass(checker):
    result = checker.run(checker.reference)
    assert result.status == PASSED, result.message
    assert "correct" in result.message


def test_the_references_compute_what_their_docstrings_say():
    x = np.array([[0.0, 0.5, 1.0, 0.25], [1.0, 1.0, 0.0, 0.75], [0.2, 0.6, 0.6, 0.0]])
    y = np.array([1, 0, 1])
    np.testing.assert_allclose(check.total_ink.reference(x), [1.75, 2.75, 1.4])
    np.testing.assert_allclose(check.class_means.reference(x, y, n_classes=2),
                               [[1.0, 1.0, 0.0, 0.75], [0.1, 0.55, 0.8, 0.125]])
    np.testing.assert_allclose(check.ink_fraction.reference(x), [0.25, 0.75, 0.5])
    np.testing.assert_allclose(check.ink_fraction.reference(x, threshold=0.2), [0.75, 0.75, 0.5])


# -- right answers, written another way --------------------------------------------------------


def total_ink_by_matmul(x):
    return x @ np.ones(x.shape[1])


def class_means_by_stacking(x, y, n_classes=10):
    # the solution notebook's version
    return np.stack([x[y == k].mean(axis=0) for k in range(n_classes)])


def class_means_by_one_hot(x, y, n_classes=10):
    one_hot = np.eye(n_classes)[y]  # (N, K)
    return (one_hot.T @ x) / one_hot.sum(axis=0)[:, None]


def ink_fraction_by_counting(x, threshold=0.5):
    return np.count_nonzero(x > threshold, axis=1) / x.shape[1]


@pytest.mark.parametrize(
    "checker, fn",
    [
        (check.total_ink, total_ink_by_matmul),
        (check.class_means, class_means_by_stacking),
        (check.class_means, class_means_by_one_hot),
        (check.ink_fraction, ink_fraction_by_counting),
    ],
)
def test_right_answers_written_differently_pass(checker, fn):
    result = checker.run(fn)
    assert result.status == PASSED, result.message


# -- stubs -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "checker, text",
    [
        (check.total_ink, "Example: implement total_ink"),
        (check.class_means, "Exercise 0.1: implement class_means"),
        (check.ink_fraction, "Exercise 0.2: implement ink_fraction"),
    ],
)
def test_a_lesson_stub_is_not_done(checker, text):
    def stub(*args, **kwargs):
        raise NotImplementedError(text)

    result = checker.run(stub)
    assert result.status == NOT_DONE
    assert result.detail == text
    assert "not done yet" in result.message and checker.label in result.message


# -- typical mistakes ------------------------------------------------------------------------------


def total_ink_as_a_mean(x):
    return x.mean(axis=1)  # the notebook's own wrong example


def total_ink_over_the_batch(x):
    return x.sum(axis=0)


def class_means_summed(x, y, n_classes=10):
    return np.stack([x[y == k].sum(axis=0) for k in range(n_classes)])


def class_means_in_order_of_first_appearance(x, y, n_classes=10):
    _, first = np.unique(y, return_index=True)
    order = y[np.sort(first)]
    return np.stack([x[y == k].mean(axis=0) for k in order])


def class_means_transposed(x, y, n_classes=10):
    return class_means_by_stacking(x, y, n_classes).T


def class_means_of_the_pixels(x, y, n_classes=10):
    # averages each image over its pixels instead of each pixel over the images
    return np.stack([x[y == k].mean(axis=1).mean() * np.ones(x.shape[1])
                     for k in range(n_classes)])


def class_means_ignoring_n_classes(x, y, n_classes=10):
    # ten rows whatever n_classes says; a class with no images gets NaN
    return np.stack([x[y == k].mean(axis=0) if np.any(y == k) else np.full(x.shape[1], np.nan)
                     for k in range(10)])


def ink_fraction_at_or_above(x, threshold=0.5):
    return (x >= threshold).mean(axis=1)


def ink_fraction_ignoring_the_threshold(x, threshold=0.5):
    return (x > 0.5).mean(axis=1)


def ink_fraction_as_a_count(x, threshold=0.5):
    return (x > threshold).sum(axis=1)


def ink_fraction_over_the_batch(x, threshold=0.5):
    return (x > threshold).mean(axis=0)


def ink_fraction_of_the_ink(x, threshold=0.5):
    # the share of the ink, not of the pixels
    return np.where(x > threshold, x, 0).sum(axis=1) / x.sum(axis=1)


@pytest.mark.parametrize(
    "checker, fn",
    [
        (check.total_ink, total_ink_as_a_mean),
        (check.total_ink, total_ink_over_the_batch),
        (check.class_means, class_means_summed),
        (check.class_means, class_means_in_order_of_first_appearance),
        (check.class_means, class_means_transposed),
        (check.class_means, class_means_of_the_pixels),
        (check.class_means, class_means_ignoring_n_classes),
        (check.ink_fraction, ink_fraction_at_or_above),
        (check.ink_fraction, ink_fraction_ignoring_the_threshold),
        (check.ink_fraction, ink_fraction_as_a_count),
        (check.ink_fraction, ink_fraction_over_the_batch),
        (check.ink_fraction, ink_fraction_of_the_ink),
    ],
)
def test_typical_mistakes_are_wrong(checker, fn):
    result = checker.run(fn)
    assert result.status == WRONG, result.message
    assert checker.run(fn).message == result.message  # the same words every time


def test_a_wrong_value_shows_the_call_the_inputs_expected_and_got():
    result = check.class_means.run(class_means_summed)
    lines = result.message.splitlines()
    assert lines[0] == "✗ Exercise 0.1 (class_means): wrong answer."
    assert "for class_means(x, y, n_classes) with" in result.message
    assert "n_classes = 3" in result.message  # the failing case, as called
    assert any(line.lstrip().startswith("expected") for line in lines)
    assert any(line.lstrip().startswith("got") for line in lines)
    assert result.detail  # a one-line reason


def test_a_wrong_shape_names_both_shapes():
    result = check.class_means.run(class_means_transposed)
    assert result.status == WRONG
    assert "(3, 4)" in result.detail and "(4, 3)" in result.detail, result.detail


def test_an_exception_in_the_learners_code_is_wrong_and_quoted():
    def ink_fraction(x, threshold=0.5):
        return (x > threshold).mean(axis=2)

    result = check.ink_fraction.run(ink_fraction)
    assert result.status == WRONG
    assert result.detail.startswith("raised AxisError"), result.detail
    assert "axis 2 is out of bounds" in result.message


def test_the_check_hands_back_the_learners_function_only_when_it_passed(capsys):
    core.clear_recorded()
    try:
        assert check.ink_fraction(ink_fraction_by_counting) is ink_fraction_by_counting
        assert check.ink_fraction(ink_fraction_as_a_count) is check.ink_fraction.reference
        printed = capsys.readouterr().out
        assert "✓ Exercise 0.2 (ink_fraction): correct." in printed
        assert "✗ Exercise 0.2 (ink_fraction): wrong answer." in printed
        assert [r.status for r in core.recorded()] == [PASSED, WRONG]
    finally:
        core.clear_recorded()
