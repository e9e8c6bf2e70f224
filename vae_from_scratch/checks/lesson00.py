"""Checks for lesson 00, the tour (``solutions/00_tour.ipynb``).

* Example: ``total_ink(x)`` - the worked example that shows a check in its three states.
* Exercise 0.1: ``class_means(x, y, n_classes=10)`` - the mean image of each digit.
* Exercise 0.2: ``ink_fraction(x, threshold=0.5)`` - the share of pixels above a threshold.
"""

from __future__ import annotations

import numpy as np

from vae_from_scratch.checks.core import Case, Checker


def _total_ink(x):
    """x (N, D) -> (N,): the sum of each image's pixel intensities."""
    return np.asarray(x).sum(axis=1)


def _class_means(x, y, n_classes=10):
    """x (N, D), y (N,) labels in 0..n_classes-1 -> (n_classes, D): row k is the mean of
    the images labelled k. Every class must appear at least once."""
    x, y = np.asarray(x), np.asarray(y)
    means = np.zeros((n_classes, x.shape[1]), dtype=np.result_type(x.dtype, np.float32))
    for k in range(n_classes):
        means[k] = x[y == k].mean(axis=0)
    return means


def _ink_fraction(x, threshold=0.5):
    """x (N, D) -> (N,): the fraction of each image's pixels strictly above ``threshold``."""
    return (np.asarray(x) > threshold).mean(axis=1)


total_ink = Checker(
    "0.0",
    reference=_total_ink,
    cases=[Case(np.array([[0.0, 0.5, 1.0], [0.25, 0.25, 0.0]]))],
    example=True,
)

class_means = Checker(
    "0.1",
    reference=_class_means,
    cases=[
        Case(
            np.array(
                [
                    [0.0, 1.0, 0.0, 1.0],
                    [1.0, 1.0, 0.0, 0.0],
                    [0.0, 0.5, 0.5, 0.0],
                    [1.0, 0.0, 0.0, 0.0],
                    [0.2, 0.4, 0.6, 0.8],
                ]
            ),
            np.array([0, 0, 1, 2, 1]),
            n_classes=3,
        ),
        # The default n_classes=10, with the labels out of order.
        Case(
            np.array([[k / 10, 1 - k / 10] for k in (3, 1, 4, 0, 5, 9, 2, 6, 8, 7)]),
            np.array([3, 1, 4, 0, 5, 9, 2, 6, 8, 7]),
        ),
    ],
)

ink_fraction = Checker(
    "0.2",
    reference=_ink_fraction,
    cases=[
        Case(np.array([[0.0, 0.5, 0.6, 1.0], [0.2, 0.2, 0.2, 0.2], [0.9, 0.8, 0.51, 0.7]])),
        Case(np.array([[0.0, 0.5, 0.6, 1.0], [0.05, 0.2, 0.1, 0.15]]), threshold=0.1),
    ],
)
