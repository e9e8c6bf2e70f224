"""The gap fraction and the prior's holes (``vae_from_scratch.diagnostics``, lesson 07)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vae_from_scratch import VAE
from vae_from_scratch import diagnostics as diag
from vae_from_scratch import distributions as dist

pytestmark = pytest.mark.lesson07


# -- gap_fraction ------------------------------------------------------------------------------


def test_gap_fraction_counts_strictly_inside():
    x = np.array([[-2.0], [-1.0], [-0.5], [0.0], [1.0], [3.0]])
    assert diag.gap_fraction(x) == pytest.approx(2 / 6)  # the ends are not inside
    assert diag.gap_fraction(x[:, 0], low=-3, high=2) == pytest.approx(5 / 6)  # 1-D input


def test_gap_fraction_uses_the_chosen_axis():
    x = np.array([[0.0, 5.0], [5.0, 0.0], [0.2, 0.2]])
    assert diag.gap_fraction(x, axis=0) == pytest.approx(2 / 3)
    assert diag.gap_fraction(x, axis=1) == pytest.approx(2 / 3)
    assert diag.gap_fraction(x, low=-0.1, high=0.1, axis=1) == pytest.approx(1 / 3)


@pytest.mark.parametrize("bad", [np.zeros((0, 1)), np.zeros((2, 2, 2))])
def test_gap_fraction_rejects_bad_shapes(bad):
    with pytest.raises(ValueError, match="shape"):
        diag.gap_fraction(bad)


def test_gap_fraction_rejects_an_empty_interval():
    with pytest.raises(ValueError, match="low < high"):
        diag.gap_fraction(np.zeros((3, 1)), low=1.0, high=1.0)


# -- generate ------------------------------------------------------------------------------------


def test_generate_adds_the_gaussian_decoders_noise():
    vae = VAE(3, (4,), 2, likelihood="gaussian", obs_var=0.25, seed=0, dtype=np.float64)
    x = diag.generate(vae, 20_000, seed=1)
    rng = np.random.default_rng(1)
    mean = vae.decode_mean(vae.sample_prior(20_000, rng))
    assert x.shape == (20_000, 3) and x.dtype == np.float64
    np.testing.assert_allclose(np.std(x - mean, axis=0), 0.5, rtol=0.03)
    np.testing.assert_array_equal(x, diag.generate(vae, 20_000, seed=1))  # seeded


def test_generate_uses_a_learned_variance():
    vae = VAE(3, (4,), 2, likelihood="gaussian", obs_var="learned", seed=0, dtype=np.float64)
    vae.params["dec.log_var"][:] = np.log([0.01, 1.0, 4.0])
    x = diag.generate(vae, 20_000, seed=2)
    mean = vae.decode_mean(vae.sample_prior(20_000, np.random.default_rng(2)))
    np.testing.assert_allclose(np.std(x - mean, axis=0), [0.1, 1.0, 2.0], rtol=0.03)


def test_generate_draws_bits_for_a_bernoulli_decoder():
    vae = VAE(5, (4,), 2, seed=0, dtype=np.float64)
    x = diag.generate(vae, 4000, seed=3)
    assert set(np.unique(x)) <= {0.0, 1.0}
    rng = np.random.default_rng(3)
    probs = vae.decode_mean(vae.sample_prior(4000, rng))
    np.testing.assert_allclose(x.mean(axis=0), probs.mean(axis=0), atol=0.03)


# -- densities -----------------------------------------------------------------------------------


def test_aggregate_posterior_matches_a_direct_average_and_is_batched():
    rng = np.random.default_rng(4)
    z, mu, log_var = rng.normal(size=(7, 2)), rng.normal(size=(5, 2)), rng.normal(0, 0.3, (5, 2))
    direct = np.log(np.mean(
        [np.exp(dist.gaussian_log_density(z, mu[n], log_var[n])) for n in range(5)], axis=0))
    np.testing.assert_allclose(diag.aggregate_posterior_log_density(z, mu, log_var), direct,
                               rtol=1e-12)
    np.testing.assert_allclose(
        diag.aggregate_posterior_log_density(z, mu, log_var, batch_size=3), direct, rtol=1e-12)


def test_aggregate_posterior_is_finite_far_away():
    out = diag.aggregate_posterior_log_density(np.array([[100.0]]), np.zeros((3, 1)),
                                               np.zeros((3, 1)))
    assert np.isfinite(out).all()
    assert out[0] == pytest.approx(-0.5 * (math.log(2 * math.pi) + 100.0**2))


def test_aggregate_posterior_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="need z"):
        diag.aggregate_posterior_log_density(np.zeros((3, 2)), np.zeros((4, 1)), np.zeros((4, 1)))


def test_prior_log_density_follows_the_prior():
    z = np.array([[0.0, 1.0], [2.0, -1.0]])
    standard = VAE(3, (4,), 2, seed=0, dtype=np.float64)
    np.testing.assert_allclose(diag.prior_log_density(standard, z),
                               dist.gaussian_log_density(z, 0.0, 0.0))
    mixture = VAE(3, (4,), 2, prior="mixture", n_components=3, seed=0, dtype=np.float64)
    p = mixture.params
    np.testing.assert_allclose(
        diag.prior_log_density(mixture, z),
        dist.mixture_log_density(z, p["prior.means"], p["prior.log_vars"], p["prior.logits"]))


# -- holes ---------------------------------------------------------------------------------------


class _FixedEncoder(VAE):
    """A VAE whose encoder returns given posteriors, whatever the input."""

    def __init__(self, mu, log_var, **kwargs):
        super().__init__(1, (2,), mu.shape[1], dtype=np.float64, **kwargs)
        self._mu, self._log_var = mu, log_var

    def encode(self, x):
        return self._mu, self._log_var


def test_no_holes_when_the_posteriors_cover_the_prior():
    # many posteriors drawn from the prior itself, each N(mu_n, 1): q is broader than p.
    mu = np.random.default_rng(5).standard_normal((400, 1))
    vae = _FixedEncoder(mu, np.zeros((400, 1)))
    assert diag.prior_hole_mass(vae, np.zeros((400, 1)), n=2000, seed=0) == 0.0


def test_two_far_clusters_leave_a_hole_in_the_middle():
    # narrow posteriors at -3 and +3: the standard prior's middle is a hole
    mu = np.repeat([[-3.0], [3.0]], 50, axis=0)
    vae = _FixedEncoder(mu, np.full((100, 1), np.log(0.1**2)))
    z, in_hole = diag.prior_holes(vae, np.zeros((100, 1)), n=4000, seed=1)
    assert z.shape == (4000, 1) and in_hole.dtype == bool
    assert in_hole[np.abs(z[:, 0]) < 2].all()
    mass = diag.prior_hole_mass(vae, np.zeros((100, 1)), n=4000, seed=1)
    assert mass == pytest.approx(np.mean(in_hole))
    assert mass > 0.9  # nearly all of N(0, 1) lies more than 0.5 from +-3


def test_hole_ratio_must_be_positive():
    vae = _FixedEncoder(np.zeros((2, 1)), np.zeros((2, 1)))
    with pytest.raises(ValueError, match="ratio"):
        diag.prior_hole_mass(vae, np.zeros((2, 1)), ratio=0.0)


def test_hole_mass_is_seeded():
    # narrow posteriors at -1.5 and +1.5: part of the prior's draws land in holes, part not,
    # so the share depends on which draws the seed gives
    mu = np.repeat([[-1.5], [1.5]], 20, axis=0)
    vae = _FixedEncoder(mu, np.full((40, 1), np.log(0.2**2)))
    x = np.zeros((40, 1))
    masses = [diag.prior_hole_mass(vae, x, n=500, seed=s) for s in range(4)]
    assert all(0.1 < m < 0.9 for m in masses), masses
    assert len(set(masses)) > 1, f"every seed gave the same hole mass {masses[0]}"
    assert diag.prior_hole_mass(vae, x, n=500, seed=2) == masses[2]
    # a Generator is used as it is: the same stream gives the same draws
    from_generator = diag.prior_hole_mass(vae, x, n=500, seed=np.random.default_rng(3))
    assert from_generator == masses[3]
