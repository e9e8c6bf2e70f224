"""Free bits (lesson 05): the training loss charges each latent dimension at least
``free_bits`` nats of KL; gradients by hand against central differences and PyTorch."""

from __future__ import annotations

import numpy as np
import pytest

from vae_from_scratch import VAE
from vae_from_scratch import distributions as dist
from vae_from_scratch.gradcheck import check_model_gradients

pytestmark = pytest.mark.lesson05

D, L, N = 6, 4, 8


def _case(kl, free_bits=None, seed=0, dtype=np.float64, **kwargs):
    """A model whose per-dimension KL means straddle ``free_bits`` (by default midway
    between the two largest, so finite differences never cross the kink)."""
    vae = VAE(D, (5,), L, kl=kl, seed=seed, dtype=dtype, **kwargs)
    rng = np.random.default_rng(seed + 1)
    for value in vae.params.values():
        value += (0.3 * rng.standard_normal(value.shape)).astype(dtype)
    x = rng.random((N, D)).astype(dtype)
    eps = rng.standard_normal((N, L)).astype(dtype)
    per_dim = _per_dim_kl_mean(vae, x, eps)
    if free_bits is None:
        low, high = np.sort(per_dim)[-2:]
        free_bits = float(low + high) / 2
        assert free_bits > 0.05 and high - low > 0.05
    cfg = {**vae.config.to_dict(), "free_bits": free_bits}
    from vae_from_scratch.config import VAEConfig

    return VAE(config=VAEConfig.from_dict(cfg), params=vae.params), x, eps, per_dim


def _per_dim_kl_mean(vae, x, eps):
    mu, log_var = vae.encode(x)
    if vae.config.kl_mode == "analytic":
        return dist.kl_standard_normal_per_dim(mu, log_var).mean(axis=0)
    z = mu + np.exp(0.5 * log_var) * eps
    return (dist.gaussian_log_density_per_dim(z, mu, log_var)
            - dist.gaussian_log_density_per_dim(z, 0.0, 0.0)).mean(axis=0)


@pytest.mark.parametrize("kl", ["analytic", "monte_carlo"])
def test_the_loss_charges_at_least_free_bits_per_dimension(kl):
    vae, x, eps, per_dim = _case(kl)
    lam = vae.config.free_bits
    terms = vae.loss(x, eps)
    assert terms.kl == pytest.approx(per_dim.sum(), rel=1e-12)  # the true KL is reported
    charged = np.maximum(per_dim, lam).sum()
    assert charged > per_dim.sum()
    assert terms.loss == pytest.approx(terms.recon + charged, rel=1e-12)
    beta = 0.5
    t2, _ = vae.loss_and_grads(x, eps, beta=beta)
    assert t2.loss == pytest.approx(terms.recon + beta * charged, rel=1e-12)


@pytest.mark.parametrize("kl", ["analytic", "monte_carlo"])
@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_free_bits_gradients_match_central_differences(kl, likelihood):
    kwargs = {} if likelihood == "bernoulli" else dict(likelihood="gaussian", obs_var="learned")
    vae, x, eps, _ = _case(kl, **kwargs)
    errors = check_model_gradients(vae, x, eps)
    bad = {k: v for k, v in errors.items() if not v < 1e-6}
    assert not bad, bad


def test_dimensions_below_the_floor_get_no_push_towards_the_prior():
    vae, x, eps, per_dim = _case("analytic")
    below = per_dim < vae.config.free_bits
    assert below.any() and (~below).any()
    # with the decoder's output layer zeroed, the loss depends on the encoder only through
    # the KL (and the reconstruction's path through z is cut), so the log_var head's
    # gradient lives only in the dimensions above the floor
    vae.params["dec.out.W"][:] = 0
    _, grads = vae.loss_and_grads(x, eps)
    np.testing.assert_array_equal(grads["enc.log_var.W"][:, below], 0)
    np.testing.assert_array_equal(grads["enc.mu.b"][below], 0)
    assert np.all(np.abs(grads["enc.mu.b"][~below]) > 0)


def test_free_bits_zero_is_the_plain_loss():
    vae, x, eps, _ = _case("analytic", free_bits=0.0)
    plain = VAE(config=vae.config, params=vae.params)
    assert vae.loss(x, eps) == plain.loss(x, eps)


def test_free_bits_configuration_is_checked():
    for bad in (-0.1, float("nan"), float("inf"), True, "1"):
        with pytest.raises(ValueError, match="free_bits must be a finite number >= 0"):
            VAE(D, (5,), L, free_bits=bad)
    with pytest.raises(ValueError, match="free bits .*mixture"):
        VAE(D, (5,), L, prior="mixture", free_bits=0.5)


@pytest.mark.torch
@pytest.mark.parametrize("kl", ["analytic", "monte_carlo"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def test_free_bits_parity_with_torch(kl, dtype):
    from tests.parity import assert_parity

    vae, x, eps, _ = _case(kl, dtype=dtype)
    assert_parity(vae, x, eps, beta=0.7)
