"""The core works without PyTorch: only the torch mirror (the subpackage
``vae_from_scratch.torch_vae``) may import torch; every other module, the course's tooling
included, imports without it. Each check runs in a fresh interpreter, so nothing this test
session has imported (torch included) can hide an import."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = [pytest.mark.lesson00, pytest.mark.lesson06]

ROOT = Path(__file__).resolve().parents[1]
TORCH_PACKAGE = "vae_from_scratch.torch_vae"

SCRIPT = textwrap.dedent(
    """
    import importlib, json, pkgutil, sys, tempfile
    from pathlib import Path
    {prelude}
    import numpy as np
    import vae_from_scratch
    from vae_from_scratch import VAE

    # every module but the torch package's (pkgutil.walk_packages would import that
    # package to look inside it)
    names, todo = [], [vae_from_scratch]
    while todo:
        package = todo.pop()
        for m in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
            if m.name == {torch_package!r}:
                continue
            names.append(m.name)
            module = importlib.import_module(m.name)
            if m.ispkg:
                todo.append(module)

    from vae_from_scratch.course.checkpoint import load_vae, save_checkpoint
    from vae_from_scratch.train import NumpyBackend, fit

    rng = np.random.default_rng(0)
    vae = VAE(6, (5,), 2, dtype=np.float64)
    x = rng.random((4, 6))
    terms, grads = vae.loss_and_grads(x, rng.standard_normal((4, 2)))
    assert np.isfinite(terms.loss) and set(grads) == set(vae.params)
    fit(NumpyBackend(vae, rng.random((20, 6)), batch_size=8), x, epochs=1, progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        loaded = load_vae(save_checkpoint(Path(tmp) / "m.safetensors", vae))
    assert all((loaded.params[k] == v).all() for k, v in vae.params.items())

    leaked = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
    print(json.dumps({{"modules": names, "torch_modules": leaked,
                       "torch_entry": repr(sys.modules.get("torch", "absent"))}}))
    """
)


def _run(script):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env["MPLBACKEND"] = "Agg"
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=ROOT,
        timeout=600,  # hang guards, not speed tests: a busy machine may take minutes
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_core_modules_never_import_torch():
    report = _run(SCRIPT.format(prelude="", torch_package=TORCH_PACKAGE))
    assert report["torch_modules"] == []
    assert report["torch_entry"] == "'absent'"
    names = set(report["modules"])
    for core in ("layers", "distributions", "likelihoods", "priors", "bottleneck", "config",
                 "vae", "gradcheck", "optim", "evaluate", "train", "plots", "data",
                 "course.checkpoint", "course.cli", "course.compare", "course.train_command"):
        assert f"vae_from_scratch.{core}" in names, core
    assert not any(name.startswith(TORCH_PACKAGE) for name in names)


def test_numpy_path_works_when_torch_cannot_be_imported():
    prelude = 'sys.modules["torch"] = None  # any "import torch" now raises ImportError'
    report = _run(SCRIPT.format(prelude=prelude, torch_package=TORCH_PACKAGE))
    assert report["torch_entry"] == "None"
    assert report["torch_modules"] == ["torch"]  # only the blocker itself
    assert "vae_from_scratch.vae" in report["modules"]


def test_without_torch_the_torch_commands_fail_with_an_install_hint(tmp_path):
    unused = tmp_path / "unused"
    script = textwrap.dedent(
        f"""
        import contextlib, io, sys
        sys.modules["torch"] = None
        from vae_from_scratch.course.cli import main
        out = []
        for argv in (["compare"],
                     ["train", "--backend", "torch", "--epochs", "0", "--out", {str(unused)!r}]):
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                code = main(argv)
            out.append(f"{{code}} {{err.getvalue().strip()}}")
        try:
            import vae_from_scratch.torch_vae
            out.append("imported")
        except ImportError:
            out.append("ImportError")
        print("\\n".join(out))
        """
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT), MPLBACKEND="Agg")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr
    compare, train, torch_vae = proc.stdout.strip().splitlines()
    assert compare.startswith("2 vae-course compare: error: compare needs PyTorch")
    assert train.startswith("2 vae-course train: error: the torch backend needs PyTorch")
    assert "pip install" in compare and "pip install" in train
    assert torch_vae == "ImportError"
    assert not unused.exists()


TORCH_NOTEBOOKS = ("06_numpy_vs_pytorch.ipynb", "08_convolutional_vae.ipynb")


def test_without_torch_the_torch_notebooks_are_skipped_with_an_install_hint(tmp_path):
    # Kernels inherit PYTHONPATH, so this sitecustomize hides torch from them too.
    (tmp_path / "sitecustomize.py").write_text('import sys\nsys.modules["torch"] = None\n')
    env = dict(os.environ, MPLBACKEND="Agg",
               PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT)]))
    notebooks = [f"{folder}/{name}" for folder in ("lessons", "solutions")
                 for name in TORCH_NOTEBOOKS]
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", "0", "-q", "-rs",
         *notebooks], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    summary = proc.stdout.strip().splitlines()[-1]
    assert "skipped" in summary and "passed" not in summary and "failed" not in summary, summary
    skipped = [line for line in proc.stdout.splitlines() if line.startswith("SKIPPED")]
    assert {line.split(": ")[0].split()[-1] for line in skipped} == set(notebooks)
    for line in skipped:
        assert "needs PyTorch" in line and "pip install -e '.[torch]'" in line, line


def test_only_notebooks_that_import_torch_outside_a_try_need_it():
    from conftest import _needs_torch

    for name in TORCH_NOTEBOOKS:
        assert _needs_torch(ROOT / "solutions" / name) and _needs_torch(ROOT / "lessons" / name)
    # 00 and 04 try to import torch and say so when it is absent: they run without it
    for name in ("00_tour.ipynb", "04_reparameterization_backprop.ipynb"):
        assert not _needs_torch(ROOT / "solutions" / name)
