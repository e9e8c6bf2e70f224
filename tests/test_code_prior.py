"""Tests for the priors over code grids (vae_from_scratch.code_prior) and the categorical
functions they use (vae_from_scratch.categorical): the softmax cross-entropy and its gradient,
stable sampling, the independent prior's counts, and the autoregressive prior's ordering,
normalisation, gradients (central differences and torch autograd, float64) and samples."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from vae_from_scratch import categorical
from vae_from_scratch.code_prior import AutoregressivePrior, IndependentPrior, train_prior
from vae_from_scratch.gradcheck import numerical_gradient, rel_error

pytestmark = pytest.mark.lesson11

TOL = 1e-7


# -- the categorical functions -------------------------------------------------------------------


def test_softmax_cross_entropy_value_and_gradient():
    rng = np.random.default_rng(0)
    logits, y = rng.normal(0, 2, (5, 4)), np.array([0, 3, 1, 1, 2])
    loss, dlogits = categorical.softmax_cross_entropy(logits, y)
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert loss == pytest.approx(-np.mean(np.log(p[np.arange(5), y])), rel=1e-12)
    numeric = numerical_gradient(lambda: categorical.softmax_cross_entropy(logits, y)[0], logits)
    assert rel_error(dlogits, numeric) < TOL
    np.testing.assert_allclose(dlogits.sum(axis=1), 0.0, atol=1e-15)  # softmax minus one-hot


def test_softmax_cross_entropy_is_stable_for_large_logits():
    logits, y = np.array([[800.0, 0.0, -800.0], [0.0, 1000.0, 2.0]]), np.array([0, 2])
    with np.errstate(over="raise", divide="raise", invalid="raise"):  # underflow to 0 is right
        loss, dlogits = categorical.softmax_cross_entropy(logits, y)
    assert loss == pytest.approx(998.0 / 2, rel=1e-12)
    np.testing.assert_allclose(dlogits, [[0, 0, 0], [0, 0.5, -0.5]], atol=1e-12)


def test_softmax_cross_entropy_checks_its_labels():
    with pytest.raises(ValueError, match="y must be in 0..2"):
        categorical.softmax_cross_entropy(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(ValueError, match=r"y must be integer labels of shape \(2,\)"):
        categorical.softmax_cross_entropy(np.zeros((2, 3)), np.array([0.0, 1.0]))


def test_sample_follows_the_probabilities():
    p = np.array([0.5, 0.0, 0.2, 0.3])
    logits = np.log(np.where(p > 0, p, 1e-300))
    draws = categorical.sample(np.broadcast_to(logits, (100_000, 4)), np.random.default_rng(1))
    freq = np.bincount(draws, minlength=4) / len(draws)
    assert freq[1] == 0
    np.testing.assert_allclose(freq, p, atol=4 * np.sqrt(0.25 / len(draws)))
    # a low temperature concentrates on the most probable class
    cold = categorical.sample(np.broadcast_to(logits, (1000, 4)), np.random.default_rng(2), 0.01)
    assert np.all(cold == 0)
    with np.errstate(over="raise", divide="raise", invalid="raise"):  # underflow to 0 is right
        categorical.sample(np.array([[1000.0, -1000.0]]), np.random.default_rng(3))


# -- the independent prior -----------------------------------------------------------------------


def test_independent_prior_counts_with_laplace_smoothing():
    codes = np.array([[[0, 1]], [[0, 2]], [[1, 2]]])  # (N=3, H=1, W=2), K = 3
    prior = IndependentPrior.fit(codes, 3, alpha=1.0)
    np.testing.assert_allclose(np.exp(prior.log_probs), [[3, 2, 1], [1, 2, 3]] / np.array(6.0))
    want = np.log(3 / 6) + np.log(1 / 6)
    assert prior.log_prob(np.array([[[0, 0]]]))[0] == pytest.approx(want)
    draws = prior.sample(60_000, np.random.default_rng(4))
    assert draws.shape == (60_000, 1, 2)
    for pos in range(2):
        freq = np.bincount(draws[:, 0, pos], minlength=3) / len(draws)
        np.testing.assert_allclose(freq, np.exp(prior.log_probs[pos]), atol=0.01)


# -- the autoregressive prior ---------------------------------------------------------------------


def _prior(grid=(2, 3), k=3, hidden=(12,), seed=0):
    prior = AutoregressivePrior(grid, k, hidden, seed=seed, dtype=np.float64)
    rng = np.random.default_rng(seed + 100)  # larger weights than the initialisation's
    for name in prior.params:
        prior.params[name] = prior.params[name] * 3 + (
            0 if name.endswith(".W") else rng.normal(0, 1, prior.params[name].shape))
    return prior


def test_logits_depend_only_on_earlier_positions():
    prior = _prior()
    rng = np.random.default_rng(5)
    codes = rng.integers(0, 3, (4, 2, 3))
    base = prior.logits(codes)
    for j in range(6):
        changed = codes.reshape(4, 6).copy()
        changed[:, j] = (changed[:, j] + 1) % 3
        logits = prior.logits(changed)
        np.testing.assert_array_equal(logits[:, : j + 1], base[:, : j + 1])
        if j < 5:
            assert not np.allclose(logits[:, j + 1 :], base[:, j + 1 :])


@pytest.mark.parametrize("grid, k", [((1, 3), 3), ((2, 2), 2)])
def test_the_prior_is_normalised(grid, k):
    prior = _prior(grid, k, hidden=(8,))
    p = np.prod(grid)
    every = np.array(list(itertools.product(range(k), repeat=p))).reshape(-1, *grid)
    assert np.exp(prior.log_prob(every)).sum() == pytest.approx(1.0, rel=1e-12)


@pytest.mark.parametrize("grid, k, hidden", [((2, 3), 3, (12,)), ((2, 2), 4, (7, 9))])
def test_loss_gradients_match_central_differences(grid, k, hidden):
    prior = _prior(grid, k, hidden)
    codes = np.random.default_rng(6).integers(0, k, (5, *grid))
    loss, grads = prior.loss_and_grads(codes)
    assert loss == pytest.approx(-prior.log_prob(codes).mean(), rel=1e-12)
    assert set(grads) == set(prior.params)
    for name, value in prior.params.items():
        numeric = numerical_gradient(lambda: prior.loss_and_grads(codes)[0], value)
        assert rel_error(grads[name], numeric) < TOL, name
    # weights outside the masks get no gradient
    for i, mask in enumerate(prior.made.masks):
        assert np.all(grads[f"code_prior.{i}.W"][mask == 0] == 0)


def test_samples_follow_the_prior():
    prior = _prior((1, 2), 2, hidden=(6,), seed=1)
    every = np.array(list(itertools.product(range(2), repeat=2))).reshape(-1, 1, 2)
    probs = np.exp(prior.log_prob(every))
    draws = prior.sample(40_000, np.random.default_rng(7)).reshape(-1, 2)
    freq = np.bincount(draws[:, 0] * 2 + draws[:, 1], minlength=4) / len(draws)
    np.testing.assert_allclose(freq, probs, atol=4 * np.sqrt(0.25 / len(draws)))


def test_training_learns_what_the_independent_prior_cannot():
    """Grids whose every position repeats the first one's code: the independent prior pays
    log K at every position, the autoregressive one learns to pay it once."""
    rng = np.random.default_rng(8)
    k, grid = 4, (2, 3)
    first = rng.integers(0, k, 600)
    codes = np.repeat(first[:, None], 6, axis=1).reshape(-1, *grid)
    independent = -IndependentPrior.fit(codes, k).log_prob(codes).mean()
    assert independent == pytest.approx(6 * np.log(k), rel=0.02)
    prior = AutoregressivePrior(grid, k, (32,), seed=0, dtype=np.float64)
    history = train_prior(prior, codes, epochs=40, lr=1e-2, batch_size=100, seed=0,
                          test_codes=codes[:50])
    assert history["train"][-1] < history["train"][0] and len(history["test"]) == 40
    assert history["test"][-1] == pytest.approx(-prior.log_prob(codes[:50]).mean(), rel=1e-12)
    assert -prior.log_prob(codes).mean() < np.log(k) + 0.3
    samples = prior.sample(200, np.random.default_rng(9)).reshape(200, -1)
    assert np.mean(np.all(samples == samples[:, :1], axis=1)) > 0.9


def test_codes_are_checked():
    prior = AutoregressivePrior((2, 2), 3, (4,))
    with pytest.raises(ValueError, match="codes must be in 0..2"):
        prior.log_prob(np.full((1, 2, 2), 3))
    with pytest.raises(ValueError, match=r"codes must be integers of shape \(N, 2, 2\)"):
        prior.log_prob(np.zeros((1, 3, 2), dtype=int))


def test_torch_autograd_agrees():
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    from vae_from_scratch.torch_vae.made import TorchMADE

    prior = _prior((2, 3), 3, (12,))
    codes = np.random.default_rng(10).integers(0, 3, (5, 2, 3))
    loss, grads = prior.loss_and_grads(codes)
    params = {k: torch.tensor(v, requires_grad=True) for k, v in prior.params.items()}
    out = TorchMADE(prior.made)(params, torch.tensor(prior.one_hot(codes)))
    t_loss = torch.nn.functional.cross_entropy(
        out.reshape(-1, 3), torch.tensor(codes.reshape(-1)), reduction="sum") / len(codes)
    t_loss.backward()
    assert t_loss.item() == pytest.approx(loss, rel=1e-12)
    for name, p in params.items():
        assert rel_error(p.grad.numpy(), grads[name]) < 1e-12, name
