"""Checks for the course's exercises: one module per lesson, all built on ``core``.

In a notebook::

    from vae_from_scratch.checks import lesson00 as check

    def class_means(x, y, n_classes=10):
        ...

    class_means = check.class_means(class_means)   # prints ✓, ○ (not done) or ✗ (wrong)

``vae_from_scratch.checks.core`` holds the machinery and documents how to write the checks
for a new lesson (``checks/lessonNN.py``).
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
