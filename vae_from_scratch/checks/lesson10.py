"""Checks for lesson 10, the likelihood of grey pixels (``solutions/10_grey_pixels.ipynb``).

* Exercise 10.1: ``cb_log_norm(logits)`` - log C(l) = log(l / tanh(l/2)) of the continuous
  Bernoulli, log 2 at l = 0, stable near 0 and for |l| in the hundreds
  (``distributions.cb_log_norm``).
* Exercise 10.2: ``cb_log_norm_grad(logits)`` - d log C / dl = 1/l - 1/sinh(l), without the
  cancellation near 0 and without overflow (``distributions.cb_log_norm_grad``).
* Exercise 10.3 is a written answer.

The strict cases (:meth:`Case.strict`) run the learner's code with NumPy's floating-point
errors raised: a log C that divides 0 by 0 at l = 0 (even in the unused branch of an
``np.where``), an ``exp`` or ``sinh`` that overflows at |l| = 750, fail there even where the
final value would come out right.
"""

from __future__ import annotations

import numpy as np

from vae_from_scratch import distributions as dist
from vae_from_scratch.checks.core import Case, Checker

cb_log_norm = Checker(
    "10.1",
    reference=dist.cb_log_norm,
    cases=[
        Case(np.array([-3.0, -1.0, 0.5, 2.0, 10.0])),
        Case(np.array([[0.9, -0.2, 4.0], [-7.5, 0.05, 1.5]])),
        # a series used near 0 is exercised where its l^2 term still shows (5e-4, -8e-4)
        Case(np.array([0.0, 1e-8, -1e-12, 5e-4, -8e-4, 0.3])).strict(
            "at l = 0 the closed form l / tanh(l/2) is 0/0. Use log 2 + l^2/12 - 7 l^4/1440 "
            "for small |l|, and keep l = 0 out of the closed form (np.where computes both "
            "of its branches on every entry: give the closed form a harmless l there)"
        ),
        Case(np.array([-750.0, -300.0, 40.0, 300.0, 750.0])).strict(
            "for |l| in the hundreds exp(l) overflows and sigmoid(l) rounds to 1 (so "
            "log(pi / (1 - pi)) is infinite): log(|l| / tanh(|l|/2)) needs neither"
        ),
    ],
    rtol=1e-10,
    atol=1e-12,
)

cb_log_norm_grad = Checker(
    "10.2",
    reference=dist.cb_log_norm_grad,
    cases=[
        Case(np.array([-3.0, -1.0, 0.5, 2.0, 10.0])),
        # 1/l - 1/sinh(l) cancels: at l = 1e-5 it keeps about 5 correct digits, at 1e-9 none
        Case(np.array([1e-5, -1e-7, 1e-9, 0.02, -0.3])),
        Case(np.array([0.0, -1e-12, 0.004])).strict(
            "at l = 0, 1/l - 1/sinh(l) is inf - inf. Use l/6 - 7 l^3/360 for small |l|, and "
            "keep l = 0 out of the closed form (np.where computes both of its branches)"
        ),
        Case(np.array([-800.0, -300.0, 300.0, 800.0])).strict(
            "sinh(l) overflows beyond |l| = 710: write 1/sinh(l) = 2 e^-|l| / (1 - e^-2|l|) "
            "with the sign of l"
        ),
    ],
    rtol=1e-8,
    atol=1e-15,
)
