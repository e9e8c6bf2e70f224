"""Checks for lesson 09, the conditional VAE (``solutions/09_conditional_vae.ipynb``).

* Exercise 9.1: ``one_hot(y, n_classes)`` - integer labels (N,) as rows of 0s with a 1 at the
  label, (N, n_classes), as ``vae.one_hot``.
* Exercise 9.2: ``label_rows_grad(y, delta, n_classes)`` - the gradient of a first layer's
  label rows, one_hot(y)^T delta, i.e. the per-class sums of the upstream gradient delta
  (N, H), computed without building the one-hot; as the package's "condition" layer followed
  by a Linear layer gives it.
* Exercise 9.3: ``softmax_cross_entropy(logits, y)`` - (loss, dlogits): the mean over the batch
  of -log softmax(logits)[y] and its gradient (softmax - one_hot) / N; stable for logits in
  the hundreds.
* Exercise 9.4 is a written answer.

The strict cases (:meth:`Case.strict`) run the learner's code with NumPy's floating-point
errors raised: a softmax that exponentiates logits of 1000, or that subtracts the batch's
largest logit instead of each row's, fails there even where the final value would come out
right. The continuous Bernoulli's exercises moved to lesson 10 (:mod:`.lesson10`).
"""

from __future__ import annotations

import numpy as np

from vae_from_scratch import distributions as dist
from vae_from_scratch.checks.core import Case, Checker
from vae_from_scratch.checks.messages import to_plain
from vae_from_scratch.checks.values import compare_values
from vae_from_scratch.vae import one_hot as _package_one_hot


def _one_hot(y, n_classes):
    """Integer labels y (N,) -> (N, n_classes) float64, row n all 0 but a 1 at column y[n]."""
    return _package_one_hot(np.asarray(y), n_classes, np.float64)


def _label_rows_grad(y, delta, n_classes):
    """The gradient of a first layer's label rows: one_hot(y)^T @ delta.

    y (N,) integer labels, delta (N, H) the gradient of the loss with respect to the
    layer's pre-activation. Returns (n_classes, H): row k is the sum of delta over the
    examples with label k (zeros for a label absent from the batch).
    """
    return _one_hot(y, n_classes).T @ np.asarray(delta, dtype=np.float64)


def _softmax_cross_entropy(logits, y):
    """Mean cross-entropy of softmax(logits) against integer labels, and its gradient.

    logits (N, K), y (N,) -> (loss, dlogits): loss = mean_n [logsumexp(logits_n) -
    logits_n[y_n]] (a float), dlogits = (softmax(logits) - one_hot(y)) / N, (N, K).
    """
    logits = np.asarray(logits, dtype=np.float64)
    n, k = logits.shape
    lse = dist.logsumexp(logits, axis=1)
    loss = float(np.mean(lse - logits[np.arange(n), y]))
    dlogits = (np.exp(logits - lse[:, None]) - _one_hot(y, k)) / n
    return loss, dlogits


_rng = np.random.default_rng(90)


def _r(a, decimals=2):
    return np.round(a, decimals) + 0.0


def _float_one_hot(expected, got):
    """9.1's comparison: the values, and a floating-point dtype (the reference's float64
    or float32)."""
    got = to_plain(got)
    if isinstance(got, np.ndarray) and got.dtype.kind in "biu":
        return (f"It has dtype {got.dtype}: the exercise asks for floats, rows of 0.0 and 1.0 "
                f"(np.zeros((N, K)) is float64). An integer or boolean one-hot leaves the dtype "
                "of whatever it is stacked with to NumPy's promotion rules: np.hstack of "
                "float32 images and an int64 one-hot is float64.")
    found = compare_values(expected, got)
    return None if found is None else f"{found.describe()} {found.hint}".strip()


one_hot = Checker(
    "9.1",
    reference=_one_hot,
    compare=_float_one_hot,
    cases=[
        Case(np.array([2, 0, 1]), 3),
        # repeated labels, a class that never occurs, and more classes than max(y) + 1
        Case(np.array([9, 9, 0, 4, 7]), 10),
        Case(np.array([1, 1, 0, 1]), 5),
    ],
)

label_rows_grad = Checker(
    "9.2",
    reference=_label_rows_grad,
    cases=[
        # one example per class: the rows of delta, reordered by label
        Case(np.array([1, 0, 2]), _r(_rng.normal(0, 1, (3, 2))), 3),
        # repeated labels (their rows add up), a label absent from the batch (a row of 0s),
        # and more classes than max(y) + 1
        Case(np.array([2, 0, 2, 2, 0, 1]), _r(_rng.normal(0, 1, (6, 4))), 5),
        Case(np.array([3, 3, 3]), _r(_rng.normal(0, 1, (3, 3))), 4),
    ],
)

softmax_cross_entropy = Checker(
    "9.3",
    reference=_softmax_cross_entropy,
    cases=[
        Case(np.array([[2.0, 1.0, 0.1]]), np.array([0])),
        Case(_r(_rng.normal(0, 2, (4, 3))), np.array([2, 0, 1, 1])),
        Case(np.array([[800.0, 0.0, -800.0], [0.0, 1000.0, 2.0]]), np.array([0, 2])).strict(
            "logits in the hundreds: exp(800) overflows, and a probability of exp(-998) "
            "underflows to 0 before its log is taken. Subtract each row's largest logit "
            "before exponentiating, and take -log softmax as logsumexp(logits) - logit[y]"
        ),
        # rows a thousand apart: the largest logit of the whole batch is no substitute for
        # each row's (the second row's exponentials all underflow to 0, and log 0 follows)
        Case(np.array([[1000.0, 999.0, 990.0], [1.0, 0.0, -2.0]]), np.array([1, 0])).strict(
            "two rows whose largest logits are a thousand apart: subtracting the largest logit "
            "of the whole batch leaves exp(-1000) = 0 in every entry of the second row, and "
            "its log is -inf. Subtract each row's own largest logit (axis=1, keepdims=True)"
        ),
    ],
    outputs=("loss", "dlogits"),
    sizes={"N": "logits.shape[0]"},
)
