"""A likelihood the package does not have, added as an exercise: one class per backend,
registered, and nothing else changed.

The Laplace density p(x | z) = prod_d exp(-|x_d - m_d| / b_d) / (2 b_d), with the decoder's
output m as the location and a learned log-scale per pixel (``dec.log_scale``, starting at
0, so b = 1), is written here for NumPy (with its backward) and for the torch mirror. Once
registered it is checked against central differences and against torch autograd, and
trained by ``vae-course train --likelihood laplace`` with both backends, in this process.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from vae_from_scratch import VAE
from vae_from_scratch.course.checkpoint import load_vae
from vae_from_scratch.course.cli import main
from vae_from_scratch.gradcheck import check_model_gradients, numerical_gradient, rel_error
from vae_from_scratch.likelihoods import LIKELIHOODS, Likelihood, register_likelihood

pytestmark = [pytest.mark.lesson05, pytest.mark.lesson06]

LOG_2 = float(np.log(2.0))


class Laplace(Likelihood):
    """Laplace(x; out, exp(log_scale)) per pixel; any real x."""

    name = "laplace"
    input_range = None

    def param_shapes(self):
        return {"dec.log_scale": ((self.config.input_dim,), "zeros")}

    def log_prob(self, params, x, out):
        log_b = params["dec.log_scale"]
        return -np.sum(LOG_2 + log_b + np.abs(x - out) * np.exp(-log_b), axis=-1)

    def log_prob_backward(self, dlogp, params, x, out, grads):
        # d/dout = sign(x - out) / b;  d/dlog_b = -1 + |x - out| / b
        log_b = params["dec.log_scale"]
        inv_b = np.exp(-log_b)
        d = dlogp[:, None]
        grads["dec.log_scale"] = np.sum(d * (np.abs(x - out) * inv_b - 1.0), axis=0)
        return d * np.sign(x - out) * inv_b

    def mean(self, params, out):
        return out

    def sample(self, params, out, rng):
        b = np.exp(params["dec.log_scale"].astype(np.float64))
        return out.astype(np.float64) + b * rng.laplace(size=np.shape(out))


@pytest.fixture
def laplace():
    """Laplace registered for NumPy and, where torch is installed, for the mirror; both
    registrations are taken back afterwards."""
    torch_registry = None
    register_likelihood(Laplace)
    try:
        try:
            from vae_from_scratch.torch_vae.likelihoods import TORCH_LIKELIHOODS
        except ImportError:
            pass
        else:
            torch_registry = TORCH_LIKELIHOODS
            torch_registry.register(_torch_laplace())
        yield Laplace
    finally:
        LIKELIHOODS.pop("laplace", None)
        if torch_registry is not None:
            torch_registry.pop("laplace", None)


def _torch_laplace():
    import torch

    from vae_from_scratch.torch_vae.likelihoods import TorchLikelihood

    class TorchLaplace(TorchLikelihood):
        name = "laplace"

        def log_prob(self, params, x, out):
            log_b = params["dec.log_scale"]
            return -torch.sum(LOG_2 + log_b + torch.abs(x - out) * torch.exp(-log_b), dim=-1)

        def mean(self, params, out):
            return out

    return TorchLaplace


def _case(dtype=np.float64, n=6, seed=0, **kwargs):
    vae = VAE(10, (7,), 3, likelihood="laplace", seed=seed, dtype=dtype, **kwargs)
    rng = np.random.default_rng(seed + 1)
    for value in vae.params.values():
        value += (0.2 * rng.standard_normal(value.shape)).astype(dtype)
    x = (2.0 * rng.standard_normal((n, 10))).astype(dtype)  # real values, away from the kinks
    eps = rng.standard_normal((n, 3)).astype(dtype)
    return vae, x, eps


def test_the_likelihood_is_found_by_name_with_its_parameter_and_range(laplace):
    vae = VAE(10, (7,), 3, likelihood="laplace", seed=0)
    x = _case()[1]
    assert isinstance(vae.likelihood, Laplace)
    assert vae.params["dec.log_scale"].shape == (10,)
    np.testing.assert_array_equal(vae.params["dec.log_scale"], 0.0)  # b = 1 at the start
    vae.check_x(100 * x)  # no pixel range: any real data
    np.testing.assert_array_equal(vae.decode_mean(np.zeros((2, 3))), vae.decode(np.zeros((2, 3))))


def test_its_backward_matches_central_differences(laplace):
    vae, x, _ = _case()
    out = np.random.default_rng(2).standard_normal(x.shape)
    dlogp = np.random.default_rng(3).standard_normal(len(x))
    grads = {}
    d_out = vae.likelihood.log_prob_backward(dlogp, vae.params, x, out, grads)

    def objective():
        return float(dlogp @ vae.likelihood.log_prob(vae.params, x, out))

    assert rel_error(d_out, numerical_gradient(objective, out)) < 1e-7
    assert rel_error(grads["dec.log_scale"],
                     numerical_gradient(objective, vae.params["dec.log_scale"])) < 1e-7


@pytest.mark.parametrize("kwargs", [dict(), dict(kl="monte_carlo"), dict(prior="mixture",
                                                                         n_components=2),
                                    dict(n_classes=3)], ids=["analytic", "mc", "mixture",
                                                             "conditional"])
def test_the_whole_model_is_gradient_checked(laplace, kwargs):
    vae, x, eps = _case(**kwargs)
    y = np.arange(len(x)) % 3 if vae.config.n_classes else None
    errors = check_model_gradients(vae, x, eps, y=y)
    assert max(errors.values()) < 1e-6, errors


@pytest.mark.torch
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def test_the_torch_mirror_agrees(laplace, dtype):
    from tests.parity import assert_parity

    vae, x, eps = _case(dtype)
    tvae = assert_parity(vae, x, eps)
    np.testing.assert_array_equal(tvae.to_numpy().params["dec.log_scale"],
                                  vae.params["dec.log_scale"])


def test_sampling_draws_around_the_mean_with_the_learned_scale(laplace):
    vae, _, _ = _case()
    out = np.zeros((20_000, 10))
    vae.params["dec.log_scale"][:] = np.log(0.5)
    draws = vae.likelihood.sample(vae.params, out, np.random.default_rng(4))
    # E|x - m| = b for a Laplace density
    assert np.mean(np.abs(draws)) == pytest.approx(0.5, rel=0.02)


def _train(tmp_path, *flags):
    out = tmp_path / "run"
    code = main(["--threads", "1", "train", "--likelihood", "laplace", "--limit", "64",
                 "--epochs", "2", "--batch-size", "32", "--hidden-dims", "16",
                 "--latent-dim", "2", "--iwae-k", "3", "--quiet", "--out", str(out), *flags])
    assert code == 0
    return out


def test_vae_course_trains_it(laplace, tmp_path, capsys):
    out = _train(tmp_path)
    assert "training VAE(784 -> 16 -> 2, relu, laplace" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"]["likelihood"] == "laplace" and metrics["status"] == "finished"
    assert all(np.isfinite(metrics["history"]["test_nelbo"]))
    assert np.isfinite(metrics["test_nll_iwae_k3"])
    vae = load_vae(out / "checkpoint.safetensors")
    assert isinstance(vae.likelihood, Laplace)
    assert not np.array_equal(vae.params["dec.log_scale"], 0.0)  # it learned a scale


@pytest.mark.torch
def test_vae_course_trains_it_with_the_torch_backend(laplace, tmp_path):
    out = _train(tmp_path, "--backend", "torch", "--device", "cpu")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["backend"] == "torch" and all(np.isfinite(metrics["history"]["test_nelbo"]))


def test_the_command_line_offers_only_registered_likelihoods(laplace, tmp_path, capsys):
    LIKELIHOODS.pop("laplace")
    with pytest.raises(SystemExit):
        main(["train", "--likelihood", "laplace", "--out", str(tmp_path / "x")])
    assert "invalid choice: 'laplace'" in capsys.readouterr().err


def test_a_likelihood_without_a_torch_class_is_refused_by_the_mirror(laplace):
    torch_vae = pytest.importorskip("vae_from_scratch.torch_vae")
    from vae_from_scratch.torch_vae.likelihoods import TORCH_LIKELIHOODS

    vae, _, _ = _case()
    TORCH_LIKELIHOODS.pop("laplace")
    with pytest.raises(ValueError, match="'laplace' has no PyTorch class: register one"):
        torch_vae.TorchVAE.from_numpy(vae, device="cpu")


def test_registering_checks_what_it_is_given(laplace):
    with pytest.raises(ValueError, match="a likelihood named 'laplace' is registered already"):
        register_likelihood(type("Other", (Laplace,), {}))
    with pytest.raises(TypeError, match="subclass of Likelihood"):
        register_likelihood(dict)
    with pytest.raises(ValueError, match="identifier"):
        register_likelihood(type("Unnamed", (Likelihood,), {"name": "two words"}))
