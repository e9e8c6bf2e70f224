"""Tests for vae_from_scratch.gaps on a model where every answer is known: the linear-Gaussian
VAE of lesson 03 (a decoder z W^T + b with Gaussian noise), whose log p(x), posterior and best
diagonal Gaussian q are closed forms (``linear_gaussian``)."""

from __future__ import annotations

import numpy as np
import pytest

from vae_from_scratch import gaps
from vae_from_scratch import linear_gaussian as lg
from vae_from_scratch.gradcheck import rel_error
from vae_from_scratch.vae import VAE

pytestmark = [pytest.mark.lesson12]

D, L, SIGMA2 = 6, 2, 1.0


@pytest.fixture(scope="module")
def setup():
    """A VAE whose decoder is the linear-Gaussian model (W, b, SIGMA2), its encoder a
    linear map that is not the optimal one, and 8 examples drawn from the model."""
    W, b = lg.random_model(D, L, seed=0)
    # a correlated posterior (correlation -0.63), which a diagonal q cannot match; more
    # correlation would make the IWAE's weights heavy-tailed (a mode-seeking q is narrower
    # than the posterior: here by a factor 1.65 in variance, and at 2 the weights' variance
    # is infinite), and its log p(x) too noisy to test against
    W[:, 1] = 0.3 * W[:, 0] + 1.0 * W[:, 1]
    model = VAE(D, (), L, likelihood="gaussian", obs_var=SIGMA2, dtype=np.float64, seed=1)
    model.params["dec.out.W"][:] = W.T
    model.params["dec.out.b"][:] = b
    # an encoder whose q is about as narrow as the posterior, but not the best one: its
    # ELBO's Monte Carlo estimates are then precise enough to compare with closed forms
    model.params["enc.log_var.W"] *= 0.1
    model.params["enc.log_var.b"][:] = -1.0
    _, x = lg.sample(8, W, b, SIGMA2, np.random.default_rng(2))
    return model, x, W, b


def _exact_elbo(local, x, W, b):
    return lg.elbo_gaussian(x, W, b, SIGMA2, local["mu"], lg.diag_cov(local["log_var"]))


def test_the_per_example_optimum_is_the_best_diagonal_gaussian(setup):
    model, x, W, b = setup
    start = gaps.encode_local(model, x)
    before = {k: v.copy() for k, v in start.items()}
    # this posterior is narrow and correlated, an ill-conditioned ELBO: a large rate
    local, trace = gaps.optimize_local(model, x, start, steps=1500, lr=0.1, seed=0,
                                       trace_every=500)
    for k in start:  # the starting point is left as it was
        np.testing.assert_array_equal(start[k], before[k])
    mu, log_var = lg.best_diagonal_q(x, W, b, SIGMA2)
    best = lg.elbo_gaussian(x, W, b, SIGMA2, mu, lg.diag_cov(log_var))
    reached = _exact_elbo(local, x, W, b)
    assert np.all(reached <= best + 1e-9)
    assert np.max(best - reached) < 0.03
    assert np.all(reached > _exact_elbo(start, x, W, b) + 0.1)  # it did improve each one
    assert [s for s, _ in trace] == [1, 500, 1000, 1500]


def test_elbo_estimate_and_iwae_against_the_closed_forms(setup):
    model, x, W, b = setup
    mu, log_var = lg.best_diagonal_q(x, W, b, SIGMA2)
    local = {"mu": mu, "log_var": log_var}
    est = gaps.elbo_estimate(model, x, local, samples=4000, seed=0, rows=5000)
    exact = _exact_elbo(local, x, W, b)
    # the analytic KL leaves only the reconstruction's noise, a standard error of ~0.02 here
    assert np.all(np.abs(est - exact) < 0.1)
    log_px = lg.log_marginal(x, W, b, SIGMA2)
    iwae = gaps.iwae_log_px(model, x, {"mu": mu, "log_var": log_var}, k=20_000, seed=1)
    assert np.all(np.abs(iwae - log_px) < 0.06)
    assert abs(np.mean(iwae - log_px)) < 0.02


def test_estimate_gaps_splits_the_inference_gap(setup):
    model, x, W, b = setup
    est = gaps.estimate_gaps(model, x, steps=1500, lr=0.1, elbo_samples=2000, k=20_000,
                             seed=3)
    log_px = lg.log_marginal(x, W, b, SIGMA2)
    mu, log_var = lg.best_diagonal_q(x, W, b, SIGMA2)
    kl_best = log_px - lg.elbo_gaussian(x, W, b, SIGMA2, mu, lg.diag_cov(log_var))
    assert kl_best.min() > 0.2  # this posterior is correlated: the family falls short
    np.testing.assert_allclose(est.approximation_gap, kl_best, atol=0.2)
    assert abs(np.mean(est.approximation_gap - kl_best)) < 0.06
    amortized = log_px - _exact_elbo(gaps.encode_local(model, x), x, W, b) - kl_best
    assert amortized.min() > 0.2
    np.testing.assert_allclose(est.amortization_gap, amortized, atol=0.15)
    np.testing.assert_allclose(est.inference_gap, est.approximation_gap + est.amortization_gap)
    s = est.summary()
    assert s["approximation_gap"][0] == pytest.approx(np.mean(est.approximation_gap))
    assert s["approximation_gap"][1] == pytest.approx(
        np.std(est.approximation_gap, ddof=1) / np.sqrt(len(x)))
    assert np.mean(est.iwae_amortized) <= np.mean(est.log_px) + 0.05


def test_flow_parameters_are_optimized_per_example_too():
    model = VAE(D, (5,), L, bottleneck="planar", flow_steps=2, dtype=np.float64,
                likelihood="gaussian", seed=0)
    x = np.random.default_rng(0).standard_normal((4, D))
    start = gaps.encode_local(model, x)
    local, _ = gaps.optimize_local(model, x, start, steps=50, lr=1e-2)
    assert set(local) == {"mu", "log_var", "u", "w", "b"}
    for k in local:
        assert local[k].shape == start[k].shape
        assert not np.allclose(local[k], start[k])
    before = gaps.elbo_estimate(model, x, start, 500, seed=1)
    after = gaps.elbo_estimate(model, x, local, 500, seed=1)
    assert after.mean() > before.mean()


def test_refusals(setup):
    model, x, _, _ = setup
    with pytest.raises(ValueError, match="needs a bottleneck with local parameters"):
        gaps.encode_local(VAE(D, (5,), L, bottleneck="two_level"), x)
    with pytest.raises(ValueError, match="unconditional"):
        gaps.estimate_gaps(VAE(D, (5,), L, n_classes=3), x)
    with pytest.raises(ValueError, match=r"x must have shape \(N, 6\)"):
        gaps.optimize_local(model, x[:, :3])


def test_optimize_local_with_several_samples_per_step(setup):
    model, x, W, b = setup
    local, _ = gaps.optimize_local(model, x, steps=1000, lr=0.1, samples=4, seed=0)
    mu, log_var = lg.best_diagonal_q(x, W, b, SIGMA2)
    best = lg.elbo_gaussian(x, W, b, SIGMA2, mu, lg.diag_cov(log_var))
    assert np.max(best - _exact_elbo(local, x, W, b)) < 0.03


@pytest.mark.torch
@pytest.mark.parametrize("options", [dict(), dict(bottleneck="iaf", flow_steps=2,
                                                   activation="tanh")],
                         ids=["gaussian", "iaf"])
def test_torch_optimize_local_follows_the_numpy_run(options):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    from vae_from_scratch.torch_vae import TorchVAE
    from vae_from_scratch.torch_vae.flows import optimize_local as torch_optimize_local
    from vae_from_scratch.torch_vae.flows import tensors

    model = VAE(D, (5,), L, dtype=np.float64, seed=2, likelihood="gaussian", **options)
    x = np.random.default_rng(3).standard_normal((4, D))
    start = gaps.encode_local(model, x)
    steps = 25
    local, _ = gaps.optimize_local(model, x, start, steps=steps, lr=3e-2, seed=5)
    rng = np.random.default_rng(5)  # the draws optimize_local made, in its order
    noises = [torch.tensor(rng.standard_normal((4, L))) for _ in range(steps)]
    t_local = torch_optimize_local(TorchVAE.from_numpy(model, device="cpu"), torch.tensor(x),
                                   tensors(start), noises, lr=3e-2)
    for k in local:
        assert rel_error(t_local[k].numpy(), local[k]) < 1e-10, k
        assert not np.allclose(local[k], start[k])
