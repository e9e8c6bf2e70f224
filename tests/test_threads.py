"""limit_threads: NumPy's BLAS and PyTorch get the thread count asked for (by argument, by
VAE_COURSE_THREADS or by default), without this module importing torch; the CLI applies it
before any work."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from vae_from_scratch.course import threads
from vae_from_scratch.course.threads import (
    DEFAULT_THREADS,
    ENV_VAR,
    limit_threads,
    threads_from_env,
)

# the thread setting every notebook's first cell and the CLI apply
pytestmark = [pytest.mark.lesson00, pytest.mark.lesson05]


def _python(code: str, **env) -> dict:
    """Run ``code`` in a fresh interpreter (so the limits do not leak into this one) and
    return the JSON it prints last."""
    import os

    environ = {k: v for k, v in os.environ.items()
               if k not in (ENV_VAR, "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    environ.update(env)
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=environ,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


_BLAS = """
import json, sys
import numpy as np
from threadpoolctl import threadpool_info
from vae_from_scratch.course.threads import limit_threads
n = limit_threads({arg})
blas = sorted({{i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}})
print(json.dumps({{"n": n, "blas": blas, "torch_imported": "torch" in sys.modules}}))
"""


def test_limit_threads_sets_numpys_blas_and_never_imports_torch():
    found = _python(_BLAS.format(arg="1"))
    assert found == {"n": 1, "blas": [1], "torch_imported": False}


def test_the_default_and_the_environment_variable():
    assert _python(_BLAS.format(arg=""))["blas"] == [DEFAULT_THREADS]
    assert _python(_BLAS.format(arg=""), VAE_COURSE_THREADS="2")["blas"] == [2]
    assert _python(_BLAS.format(arg="2"), VAE_COURSE_THREADS="1")["blas"] == [2]  # n wins


def test_zero_leaves_the_libraries_alone():
    code = """
    import json, numpy as np
    from threadpoolctl import threadpool_info
    before = [i["num_threads"] for i in threadpool_info()]
    from vae_from_scratch.course.threads import limit_threads
    print(json.dumps({"n": limit_threads(0),
                      "same": before == [i["num_threads"] for i in threadpool_info()]}))
    """
    assert _python(code) == {"n": 0, "same": True}


@pytest.mark.torch
@pytest.mark.parametrize("torch_first", [True, False], ids=["torch-imported-before",
                                                             "torch-imported-after"])
def test_torch_gets_the_same_number(torch_first):
    code = f"""
    import json
    {"import torch" if torch_first else ""}
    from vae_from_scratch.course.threads import limit_threads
    limit_threads(1)
    import torch
    print(json.dumps({{"torch": torch.get_num_threads()}}))
    """
    assert _python(code) == {"torch": 1}


@pytest.mark.parametrize("value", ["-1", "two", "1.5"])
def test_a_bad_environment_variable_is_a_clear_error(monkeypatch, value):
    monkeypatch.setenv(ENV_VAR, value)
    with pytest.raises(ValueError, match=f"{ENV_VAR} must be a whole number of threads"):
        threads_from_env()


@pytest.mark.parametrize("n", [-1, 1.5, True, "2"])
def test_a_bad_argument_is_a_clear_error(n):
    with pytest.raises(ValueError, match="whole number >= 0"):
        limit_threads(n)


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["lessons", "check"], None),
        (["--threads", "3", "lessons", "check"], 3),
        (["lessons", "check", "--threads", "2"], 2),
    ],
)
def test_the_cli_applies_its_threads_option_before_any_work(monkeypatch, tmp_path, argv,
                                                           expected):
    from vae_from_scratch.course import cli

    calls = []
    monkeypatch.setattr(threads, "limit_threads", lambda n=None: calls.append(n) or 1)
    monkeypatch.setattr(cli, "cmd_lessons", lambda args: calls.append("work") or 0)
    assert cli.main(argv) == 0
    assert calls == [expected, "work"]


def test_the_cli_refuses_a_bad_threads_option(capsys):
    from vae_from_scratch.course import cli

    with pytest.raises(SystemExit) as info:
        cli.main(["--threads", "-2", "lessons", "check"])
    assert info.value.code == 2
    assert "must be a whole number of threads" in capsys.readouterr().err
