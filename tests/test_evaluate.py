"""Tests for vae_from_scratch.evaluate: negative ELBO, the IWAE bound and active units."""

from __future__ import annotations

import numpy as np
import pytest

from vae_from_scratch import VAE
from vae_from_scratch.evaluate import active_units, iwae_nll, log_importance_weights, negative_elbo
from vae_from_scratch.optim import Adam

pytestmark = pytest.mark.lesson05

D, L = 6, 2


def _log_normal(x, mu, var):
    return -0.5 * np.log(2 * np.pi * var) - (x - mu) ** 2 / (2 * var)


def _terms(vae, x, eps, kl):
    """Per-example recon and KL (analytic or one-sample Monte Carlo), written out."""
    mu, log_var = vae.encode(x)
    var = np.exp(log_var)
    z = mu + np.sqrt(var) * eps
    logits = vae.decode(z)
    recon = -np.sum(x * logits - np.log1p(np.exp(logits)), axis=1)
    if kl == "analytic":
        k = 0.5 * np.sum(mu**2 + var - 1 - log_var, axis=1)
    else:
        k = np.sum(_log_normal(z, mu, var) - _log_normal(z, 0.0, 1.0), axis=1)
    return recon, k


def _data(n=120, seed=0):
    """Binary images near one of two prototypes, so that a tiny VAE has something to learn."""
    rng = np.random.default_rng(seed)
    protos = np.array([[1, 1, 1, 0, 0, 0], [0, 0, 1, 1, 1, 1]], dtype=np.float64)
    x = protos[rng.integers(0, 2, n)]
    flip = rng.random(x.shape) < 0.05
    return np.where(flip, 1 - x, x)


@pytest.fixture(scope="module")
def trained():
    vae = VAE(D, (8,), L, seed=0, dtype=np.float64)
    x = _data(200, seed=1)
    opt = Adam(vae.params, lr=1e-2)
    rng = np.random.default_rng(2)
    for _ in range(150):
        batch = x[rng.integers(0, len(x), 32)]
        _, grads = vae.loss_and_grads(batch, rng.standard_normal((32, L)))
        opt.step(grads)
    return vae


def test_negative_elbo_equals_mean_recon_plus_mean_kl_with_the_same_noise():
    vae = VAE(D, (5,), L, seed=0, dtype=np.float64)
    x = _data(37)
    eps = np.random.default_rng(5).standard_normal((37, L))
    recon, kl = _terms(vae, x, eps, "analytic")
    nelbo, r, k = negative_elbo(vae, x, seed=5)
    assert all(isinstance(v, float) for v in (nelbo, r, k))
    assert r == pytest.approx(recon.mean(), rel=1e-12)
    assert k == pytest.approx(kl.mean(), rel=1e-12)
    assert nelbo == pytest.approx(recon.mean() + kl.mean(), rel=1e-12)
    assert negative_elbo(vae, x, seed=6)[0] != nelbo  # the seed is really used


def test_negative_elbo_in_batches_draws_the_noise_batch_after_batch():
    vae = VAE(D, (5,), L, seed=0, dtype=np.float64)
    x = _data(25)
    rng = np.random.default_rng(3)
    recon, kl = [], []
    for start in range(0, 25, 10):
        xb = x[start : start + 10]
        r, k = _terms(vae, xb, rng.standard_normal((len(xb), L)), "analytic")
        recon.append(r)
        kl.append(k)
    expected = np.concatenate(recon).mean() + np.concatenate(kl).mean()
    assert negative_elbo(vae, x, seed=3, batch_size=10)[0] == pytest.approx(expected, rel=1e-12)


def test_negative_elbo_ignores_the_training_beta():
    a = VAE(D, (5,), L, seed=0, dtype=np.float64)
    b = VAE(D, (5,), L, seed=0, dtype=np.float64, beta=0.1)
    x = _data(20)
    assert negative_elbo(a, x, seed=1) == negative_elbo(b, x, seed=1)


def test_iwae_with_one_sample_is_the_monte_carlo_negative_elbo():
    vae = VAE(D, (5,), L, seed=0, dtype=np.float64)
    x = _data(30)
    eps = np.random.default_rng(4).standard_normal((30, L))
    recon, kl = _terms(vae, x, eps, "monte_carlo")
    assert iwae_nll(vae, x, k=1, seed=4) == pytest.approx(np.mean(recon + kl), rel=1e-12)


def test_iwae_with_k_samples_matches_the_estimator_written_out():
    vae = VAE(D, (5,), L, seed=0, dtype=np.float64)
    x, k = _data(8), 5
    eps = np.random.default_rng(7).standard_normal((8 * k, L))  # example i, sample j: row i*k+j
    recon, kl = _terms(vae, np.repeat(x, k, axis=0), eps, "monte_carlo")
    w = np.exp(-(recon + kl)).reshape(8, k)
    expected = -np.mean(np.log(w.mean(axis=1)))
    assert iwae_nll(vae, x, k=k, seed=7) == pytest.approx(expected, rel=1e-12)
    log_w = log_importance_weights(vae, x, k, np.random.default_rng(7))
    np.testing.assert_allclose(np.exp(log_w), w, rtol=1e-12)


def test_iwae_is_tighter_with_more_samples(trained):
    x = _data(150, seed=9)
    nll_1 = iwae_nll(trained, x, k=1, seed=0)
    nll_50 = iwae_nll(trained, x, k=50, seed=0)
    nelbo = negative_elbo(trained, x, seed=0)[0]
    assert nll_50 < nll_1
    assert nll_50 < nelbo
    assert nll_50 > 0  # -log p(x) of binary data is positive


def test_iwae_rejects_k_below_one():
    vae = VAE(D, (5,), L, seed=0)
    with pytest.raises(ValueError, match="k must be at least 1"):
        iwae_nll(vae, _data(3), k=0)


@pytest.mark.parametrize("k", [2.5, True, "10", np.float64(3.0)])
def test_iwae_k_must_be_an_integer(k):
    vae = VAE(D, (5,), L, seed=0)
    with pytest.raises(ValueError, match=r"k must be an integer \(samples per example\)"):
        iwae_nll(vae, _data(3), k=k)


def test_iwae_takes_a_numpy_integer_k():
    vae, x = VAE(D, (5,), L, seed=0), _data(5)
    assert iwae_nll(vae, x, k=np.int64(3), seed=1) == iwae_nll(vae, x, k=3, seed=1)


def test_active_units_is_zero_when_the_mean_head_is_constant():
    vae = VAE(D, (5,), 3, seed=0, dtype=np.float64)
    vae.params["enc.mu.W"][:] = 0.0
    vae.params["enc.mu.b"][:] = [0.5, -2.0, 3.0]  # constant, however far from 0
    assert active_units(vae, np.random.default_rng(0).random((200, D))) == 0


def test_active_units_counts_units_whose_mean_varies_above_the_threshold():
    # no hidden layer: mu_j = x_j * c_j, so Var(mu_j) = c_j^2 Var(x_j) = c_j^2 / 12 for U(0, 1)
    vae = VAE(D, (), 4, seed=0, dtype=np.float64)
    W = np.zeros((D, 4))
    scales = np.array([3.0, 1.0, 0.1, 2.0])  # variances 0.75, 0.083, 0.00083, 0.33
    W[np.arange(4), np.arange(4)] = scales
    vae.params["enc.mu.W"] = W
    x = np.random.default_rng(1).random((5000, D))
    assert active_units(vae, x) == 3
    assert active_units(vae, x, threshold=1e-4) == 4
    assert active_units(vae, x, threshold=0.5) == 1


def test_active_units_default_threshold_is_0_01_and_strict():
    # no hidden layer, x in {0, 1} half and half: Var(mu_j) = c_j^2 / 4 exactly
    vae = VAE(D, (), 3, seed=0, dtype=np.float64)
    W = np.zeros((D, 3))
    W[0, 0], W[1, 1], W[2, 2] = 0.25, 0.15, 0.25  # variances 1/64, 0.005625, 1/64
    vae.params["enc.mu.W"], vae.params["enc.mu.b"] = W, np.zeros(3)
    x = np.zeros((64, D))
    x[:32, :3] = 1.0
    assert active_units(vae, x) == 2  # 1/64 = 0.0156 > 0.01 > 0.0056
    assert active_units(vae, x, threshold=1 / 64) == 0  # "more than", not "at least"
    assert active_units(vae, x, threshold=0.005) == 3


def test_active_units_of_a_random_network_on_varied_inputs_is_all_units():
    vae = VAE(D, (5,), L, seed=0, dtype=np.float64)
    vae.params["enc.mu.W"] *= 20.0
    assert active_units(vae, np.random.default_rng(0).random((300, D))) == L


# -- many batches: the CLI evaluates 10,000 test images in batches -------------------------------


@pytest.mark.parametrize("batch_size", [1, 4, 7, 22, 23, 1000])
def test_negative_elbo_in_batches_equals_one_batch_on_sizes_that_do_not_divide(batch_size):
    vae = VAE(D, (5,), L, seed=0, dtype=np.float64)
    x = _data(23, seed=4)
    whole = negative_elbo(vae, x, seed=9, batch_size=len(x))
    batched = negative_elbo(vae, x, seed=9, batch_size=batch_size)
    np.testing.assert_allclose(batched, whole, rtol=1e-12)
    # and both are the estimator written out, every row with its own noise draw
    recon, kl = _terms(vae, x, np.random.default_rng(9).standard_normal((23, L)), "analytic")
    np.testing.assert_allclose(whole, [np.mean(recon + kl), recon.mean(), kl.mean()],
                               rtol=1e-12)


def _iwae_written_out(vae, x, k, seed):
    n = len(x)
    eps = np.random.default_rng(seed).standard_normal((n * k, L))  # row i*k+j: example i
    recon, kl = _terms(vae, np.repeat(x, k, axis=0), eps, "monte_carlo")
    log_w = -(recon + kl).reshape(n, k)
    m = log_w.max(axis=1, keepdims=True)
    return -np.mean(m[:, 0] + np.log(np.mean(np.exp(log_w - m), axis=1)))


@pytest.mark.parametrize("batch_size", [1, 2, 5, 7, 22, 23, 100])
def test_iwae_in_batches_equals_one_batch_on_sizes_that_do_not_divide(batch_size):
    vae = VAE(D, (5,), L, seed=0, dtype=np.float64)
    x, k = _data(23, seed=5), 4
    expected = _iwae_written_out(vae, x, k, seed=11)
    assert iwae_nll(vae, x, k=k, seed=11, batch_size=len(x)) == pytest.approx(expected,
                                                                               rel=1e-12)
    assert iwae_nll(vae, x, k=k, seed=11, batch_size=batch_size) == pytest.approx(expected,
                                                                                  rel=1e-12)


def _recorded_batches(monkeypatch, vae):
    """A list that fills with a copy of every batch of rows ``vae.elbo_terms`` is given."""
    rows = []
    real = vae.elbo_terms

    def recording(xb, eps, y=None, *, kl=None):
        rows.append(xb.copy())
        return real(xb, eps, y, kl=kl)

    monkeypatch.setattr(vae, "elbo_terms", recording)
    return rows


def test_iwae_with_its_default_batches_covers_every_example_once(monkeypatch):
    # k=100 -> 100 examples (10,000 rows) per batch: 250 examples are three uneven batches
    vae = VAE(D, (5,), L, seed=0, dtype=np.float64)
    x = _data(250, seed=6)
    rows = _recorded_batches(monkeypatch, vae)
    value = iwae_nll(vae, x, k=100, seed=2)
    assert [len(r) for r in rows] == [10_000, 10_000, 5_000]
    np.testing.assert_array_equal(np.concatenate(rows)[::100], x)
    assert value == pytest.approx(_iwae_written_out(vae, x, 100, seed=2), rel=1e-12)


def test_iwae_with_more_than_10000_samples_takes_one_example_per_batch(monkeypatch):
    vae = VAE(D, (5,), L, seed=0, dtype=np.float64)
    x = _data(3, seed=7)
    rows = _recorded_batches(monkeypatch, vae)
    iwae_nll(vae, x, k=12_000, seed=0)
    assert [len(r) for r in rows] == [12_000, 12_000, 12_000]


@pytest.mark.parametrize(
    "architecture, k, budget",
    [("mlp", 1, 10_000), ("mlp", 73, 10_000), ("mlp", 137, 10_000), ("conv", 1, 1_000),
     ("conv", 7, 1_000), ("conv", 11, 1_000)],
)
def test_iwae_batches_stay_within_their_documented_rows(monkeypatch, architecture, k, budget):
    """The default batches bound the memory of one forward pass: at most 10,000 rows
    (examples x k) for the MLP and 1,000 for the conv VAE, and as many as fit."""
    if architecture == "mlp":
        vae = VAE(D, (5,), L, seed=0)
    else:
        vae = VAE(64, latent_dim=L, architecture="conv", image_shape=(1, 8, 8), channels=(2,))
    per_batch = budget // k
    x = np.zeros((2 * per_batch + 1, vae.config.input_dim), np.float32)
    rows = []

    def recording(xb, eps, y=None, *, kl=None):  # only the sizes matter here
        rows.append(len(xb))
        return np.zeros(len(xb)), np.zeros(len(xb))

    monkeypatch.setattr(vae, "elbo_terms", recording)
    iwae_nll(vae, x, k=k)
    assert rows == [per_batch * k, per_batch * k, k]  # budget // k examples of k rows each
