"""Lesson 12's bottlenecks through the real command line: ``vae-course train --bottleneck
iaf --flow-steps K`` (and planar, two_level) trains, saves a checkpoint that loads as the
same model, reports active units per layer and, with ``--report-gaps N``, the two gaps;
Ctrl-C and ``--resume`` end bit for bit where a straight run ends, with either backend;
flags that do not fit the bottleneck are one-line errors before training.
The runs are tiny (784-32-3, a fixed sample of the digits, one BLAS thread)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.test_run import _history, _interrupt, _params, _train
from vae_from_scratch.course import run as runs
from vae_from_scratch.course.checkpoint import load_vae

pytestmark = pytest.mark.lesson12

TINY = ["--hidden-dims", "32", "--latent-dim", "3", "--iwae-k", "0", "--quiet"]
LONG = [*TINY, "--limit", "2048", "--batch-size", "8"]  # epochs long enough to stop inside


@pytest.mark.parametrize("model", [["--bottleneck", "iaf", "--flow-steps", "2"],
                                   ["--bottleneck", "planar", "--flow-steps", "3"],
                                   ["--bottleneck", "two_level", "--top-latent-dim", "2"]],
                         ids=["iaf", "planar", "two_level"])
def test_train_saves_the_bottleneck_and_reports_it(model, tmp_path):
    gaps = [] if "two_level" in model else ["--report-gaps", "5"]
    result = _train(*TINY, *model, *gaps, "--limit", "128", "--epochs", "2", "--out",
                    tmp_path / "run")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "run" / runs.METRICS).read_text())
    assert metrics["model"]["bottleneck"] == model[1]
    assert metrics["kl_estimator"] == ("analytic" if "two_level" in model else "monte_carlo")
    vae = load_vae(tmp_path / "run" / runs.CHECKPOINT)
    assert vae.config.bottleneck == model[1]
    assert len(metrics["active_units"]) == (2 if "two_level" in model else 1)
    if gaps:
        g = metrics["gaps"]
        assert g["digits"] == 5
        assert g["approximation_gap"]["mean"] + g["amortization_gap"]["mean"] == pytest.approx(
            g["inference_gap"]["mean"])
        assert g["elbo_optimized"]["mean"] >= g["elbo_amortized"]["mean"] - 0.5
        assert "gaps on 5 test digits: approximation" in result.stdout
    else:
        assert "gaps" not in metrics


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_ctrl_c_and_resume_end_bit_for_bit_where_a_straight_run_ends(backend, tmp_path):
    if backend == "torch":
        pytest.importorskip("torch", reason="PyTorch is not installed")
    flags = [*LONG, "--epochs", "3", "--bottleneck", "iaf", "--flow-steps", "2", "--seed",
             "1", "--backend", backend]
    straight = tmp_path / "straight"
    assert _train(*flags, "--out", straight).returncode == 0
    stopped = tmp_path / "stopped"
    code, _, err = _interrupt(stopped, *flags, "--out", stopped, after_epoch=1)
    assert code == 130, err
    result = _train("--resume", stopped)
    assert result.returncode == 0, result.stderr
    assert (stopped / runs.CHECKPOINT).read_bytes() == (straight / runs.CHECKPOINT).read_bytes()
    a, b = _params(straight), _params(stopped)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert _history(stopped) == _history(straight)


@pytest.mark.slow
def test_two_level_resumes_bit_for_bit_with_free_bits(tmp_path):
    flags = [*LONG, "--epochs", "2", "--bottleneck", "two_level", "--free-bits", "0.2",
             "--kl-warmup", "100"]
    straight = tmp_path / "straight"
    assert _train(*flags, "--out", straight).returncode == 0
    stopped = tmp_path / "stopped"
    code, _, err = _interrupt(stopped, *flags, "--out", stopped, after_epoch=1)
    assert code == 130, err
    assert _train("--resume", stopped).returncode == 0
    assert (stopped / runs.CHECKPOINT).read_bytes() == (straight / runs.CHECKPOINT).read_bytes()
    assert json.loads((stopped / runs.METRICS).read_text())["model"]["top_latent_dim"] == 10


@pytest.mark.parametrize("args, fragment", [
    (["--bottleneck", "iaf"], "needs flow_steps >= 1"),
    (["--flow-steps", "4"], "flow_steps belongs to bottleneck='planar' or 'iaf'"),
    (["--bottleneck", "iaf", "--flow-steps", "2", "--free-bits", "1"],
     "does not split over dimensions"),
    (["--bottleneck", "two_level", "--report-gaps", "10"],
     "--report-gaps optimizes the local parameters"),
    (["--conditional", "--report-gaps", "10"], "--report-gaps measures an unconditional"),
])
def test_flags_that_do_not_fit_are_one_line_errors_before_training(args, fragment, tmp_path):
    result = _train(*TINY, "--limit", "64", *args, "--out", tmp_path / "x")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert fragment in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_the_bottleneck_flags_are_in_the_help():
    result = _train("--help")
    choices = result.stdout.split("--bottleneck {", 1)[1].split("}", 1)[0].split(",")
    assert {"gaussian", "planar", "iaf", "two_level"} <= set(choices)
    assert "--flow-steps K" in result.stdout and "--top-latent-dim N" in result.stdout
    assert "--report-gaps N" in result.stdout
