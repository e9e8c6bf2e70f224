"""Checks for the course's exercises: one module per lesson, all built on ``core``.

In a notebook::

    from vae_from_scratch.checks import lesson00 as check

    def class_means(x, y, n_classes=10):
        ...

    class_means = check.class_means(class_means)   # prints ✓, ○ (not done) or ✗ (wrong)

``core`` holds the machinery (cases, checkers, the record of outcomes), ``values`` compares a
result with the reference's, ``messages`` lays the values out, ``slips`` recognises common
mistakes.

Writing the checks for a lesson
-------------------------------
Add ``vae_from_scratch/checks/lessonNN.py`` with one :class:`Checker` per exercise, named
like the function the learner writes::

    import numpy as np

    from vae_from_scratch import distributions
    from vae_from_scratch.checks.core import Case, Checker

    kl_univariate = Checker(
        "2.1",                                   # exercise number, as the notebook says it
        reference=distributions.kl_univariate,   # the package's implementation
        cases=[
            Case(0.0, 0.0),                                         # positional arguments
            Case(mu=np.array([0.5, -1.0]), log_var=np.array([0.2, -0.3])),  # or keywords
        ],
        rtol=1e-6,                               # optional, these are the defaults
        atol=1e-8,
    )

Rules of thumb:

* Keep cases small (a dozen numbers or so): a failing check prints them.
* Arguments are deep-copied for every call, so a case may hold a
  ``np.random.default_rng(0)``: the learner's function and the reference then see the same
  random numbers, and a function that modifies its inputs cannot spoil the next case.
* Results may be numbers, arrays, torch tensors, tuples, lists, dicts and dataclasses,
  nested in any way; shapes must match exactly and values within ``rtol``/``atol``.
* ``call=lambda obj, *args, **kwargs: ...`` says how to run what the learner wrote when it
  is not a plain function (say a class: ``call=lambda cls, x: cls().forward(x)[0]``).
* ``compare=lambda expected, got: None or "what is wrong"`` replaces the comparison, for
  answers that are right in more than one way.
* ``example=True`` marks a worked example the notebook shows in all three states; the
  release validation does not expect it to pass or to be "not done".
* ``outputs=("dmu", "dlog_var")`` names the items of a tuple the function returns, so that a
  message says ``dlog_var is wrong`` (the reference's docstring names them). Give it for
  every exercise that returns a tuple; dict keys name themselves.
* ``key_order=[...]`` (with ``key_order_note``) says in which order dict keys are compared,
  e.g. gradients in backpropagation order, so the first one reported is the one to fix.
* ``sizes={"N": "x.shape[0]"}`` names sizes of a case (an argument's axis, or a number), so
  that a result N times too large is reported as "a sum where a mean belongs".
* ``Case(...).strict("why")`` runs the learner's code on that case with floating-point
  errors raised; use it for cases that test a numerical safeguard the lesson asks for.
"""

from vae_from_scratch.checks.core import (
    NOT_DONE,
    PASSED,
    WRONG,
    Case,
    Checker,
    Result,
    checkers,
    recorded,
)

__all__ = ["NOT_DONE", "PASSED", "WRONG", "Case", "Checker", "Result", "checkers", "recorded"]
