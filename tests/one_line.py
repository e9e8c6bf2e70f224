"""What the fault tests ask of a command that fails: one line on stderr, no traceback."""

from __future__ import annotations


def assert_one_line(result, code, *fragments):
    """``result`` (a finished subprocess) ended with exit status ``code`` and one line on
    stderr holding every fragment; returns that line."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]
