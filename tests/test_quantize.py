"""Tests for vae_from_scratch.quantize: the vector quantizer, its losses, the EMA codebook,
dead-code restarts, perplexity and finite scalar quantization.

A quantizer has no derivative to check (it is 0 almost everywhere, which one test shows).
What is checked against central differences, in float64, is the *surrogate* whose exact
gradient the hand-written backward passes compute: the loss as a function of the encoder
output z_e and of the codebook, with the code assignment frozen and the straight-through
offset e_k - z_e held constant, codebook and commitment terms included.
"""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest

from vae_from_scratch import distributions as dist
from vae_from_scratch.gradcheck import numerical_gradient, rel_error
from vae_from_scratch.networks import Layer, Network
from vae_from_scratch.quantize import (
    COMMITMENT_BETA,
    FSQ,
    VectorQuantizer,
    code_counts,
    codebook_loss,
    codebook_loss_backward,
    commitment_loss,
    commitment_loss_backward,
    ema_init,
    ema_update,
    from_rows,
    fsq_codes,
    fsq_values,
    lookup,
    nearest_codes,
    perplexity,
    rate_bits,
    restart_dead_codes,
    squared_distances,
    to_rows,
)

pytestmark = pytest.mark.lesson11

TOL = 1e-7  # central differences against the hand-derived backward, float64

# z_e shapes: grids (N, D, H, W), and plain rows (M, D) where each row is an example
SHAPES = [(2, 3, 4, 4), (3, 2, 2, 3), (1, 4, 7, 7), (5, 4)]


def _grid(shape, k, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(shape), rng.standard_normal((k, shape[1]))


def _brute_distances(rows, codebook):
    """The (M, K, D) way the module must not take: every difference, squared and summed."""
    diff = rows[:, None, :] - codebook[None, :, :]
    return np.sum(diff * diff, axis=2)


# -- layout ----------------------------------------------------------------------------------


def test_to_rows_orders_positions_example_row_column():
    z = np.arange(2 * 3 * 2 * 2, dtype=np.float64).reshape(2, 3, 2, 2)
    rows = to_rows(z)
    assert rows.shape == (8, 3)
    for n in range(2):
        for h in range(2):
            for w in range(2):
                np.testing.assert_array_equal(rows[(n * 2 + h) * 2 + w], z[n, :, h, w])
    np.testing.assert_array_equal(from_rows(rows, z.shape), z)


# -- distances and the nearest code ----------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("k", [1, 5, 64])
def test_distances_match_brute_force(shape, k):
    z, codebook = _grid(shape, k)
    d = squared_distances(z, codebook)
    brute = _brute_distances(to_rows(z), codebook)
    assert d.shape == (math.prod(shape) // shape[1], k)
    np.testing.assert_allclose(d, brute, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(nearest_codes(to_rows(z), codebook), brute.argmin(axis=1))


def test_distances_are_never_negative_and_zero_on_a_code():
    rng = np.random.default_rng(1)
    codebook = rng.standard_normal((6, 5)) * 1e3  # large norms: the expansion cancels
    d = squared_distances(codebook[[2, 4, 4]], codebook)
    assert d.min() >= 0.0  # round-off of the expansion is clipped, never negative
    scale = np.sum(codebook**2, axis=1).max()  # about 5e6: the terms that cancel
    assert d[[0, 1, 2], [2, 4, 4]].max() <= 1e-14 * scale
    np.testing.assert_array_equal(nearest_codes(codebook[[2, 4, 4]], codebook), [2, 4, 4])


def test_distances_keep_float32():
    z, codebook = _grid((2, 3, 4, 4), 7)
    d = squared_distances(z.astype(np.float32), codebook.astype(np.float32))
    assert d.dtype == np.float32
    np.testing.assert_allclose(d, _brute_distances(to_rows(z), codebook), rtol=1e-4, atol=1e-4)


def test_distances_never_build_an_m_by_k_by_d_array():
    rng = np.random.default_rng(2)
    m, k, d = 2000, 256, 64
    z, codebook = rng.standard_normal((m, d)), rng.standard_normal((k, d))
    tracemalloc.start()
    squared_distances(z, codebook)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    result_bytes = m * k * 8
    assert peak < 4 * result_bytes, (peak, result_bytes)  # (M, K, D) would be 64 times it


def test_ties_go_to_the_lower_index():
    codebook = np.array([[1.0, 0.0], [-1.0, 0.0], [1.0, 0.0]])
    np.testing.assert_array_equal(nearest_codes(np.array([[0.0, 1.0], [2.0, 0.0]]), codebook),
                                  [0, 0])


# -- the quantizer's forward and straight-through backward -----------------------------------


@pytest.mark.parametrize("shape", SHAPES)
def test_forward_picks_the_nearest_codebook_vector(shape):
    z, codebook = _grid(shape, 9, seed=3)
    z_q, cache = VectorQuantizer.forward(z, codebook)
    assert z_q.shape == z.shape
    want_codes = _brute_distances(to_rows(z), codebook).argmin(axis=1)
    np.testing.assert_array_equal(cache.codes.reshape(-1), want_codes)
    expected_codes_shape = (shape[0], shape[2], shape[3]) if len(shape) == 4 else (shape[0],)
    assert cache.codes.shape == expected_codes_shape
    np.testing.assert_array_equal(to_rows(z_q), codebook[want_codes])
    np.testing.assert_array_equal(lookup(cache.codes, codebook), z_q)


def test_forward_on_a_grid_quantizes_each_position_separately():
    z, codebook = _grid((2, 3, 4, 4), 6, seed=4)
    z_q, cache = VectorQuantizer.forward(z, codebook)
    for n, h, w in [(0, 0, 0), (1, 3, 2), (0, 2, 3)]:
        k = np.argmin(np.sum((codebook - z[n, :, h, w]) ** 2, axis=1))
        assert cache.codes[n, h, w] == k
        np.testing.assert_array_equal(z_q[n, :, h, w], codebook[k])


def test_backward_is_the_identity():
    z, codebook = _grid((2, 3, 4, 4), 6)
    _, cache = VectorQuantizer.forward(z, codebook)
    dz_q = np.random.default_rng(5).standard_normal(z.shape)
    dz_e = VectorQuantizer.backward(dz_q, cache)
    np.testing.assert_array_equal(dz_e, dz_q)
    assert dz_e is not dz_q


def _decoder(d):
    """A small conv decoder from a (N, d, H, W) grid to logits, built from the package's
    layers: conv 3x3 -> ReLU -> transposed conv 4x4/2 -> flatten."""
    layers = [Layer("conv", "dec.0", (4, d, 3, 3), stride=1, padding=1), Layer("relu"),
              Layer("conv_transpose", "dec.out", (4, 1, 4, 4), stride=2, padding=1),
              Layer("reshape", shape=(-1,))]
    return Network(layers, None, None)


def _surrogate_setup(shape, k, seed):
    """A decoder, data and a frozen code assignment; returns the surrogate loss and its
    hand-derived gradients (recon + codebook + beta * commitment, mean over the batch)."""
    rng = np.random.default_rng(seed)
    z_e, codebook = rng.standard_normal(shape), rng.standard_normal((k, shape[1]))
    net = _decoder(shape[1])
    params = {}
    net.init_params(rng, params)
    n, _, h, w = shape
    x = rng.uniform(0, 1, (n, 4 * h * w))
    beta = COMMITMENT_BETA

    # the assignment and the straight-through offset, frozen at the current values
    z_q0, cache = VectorQuantizer.forward(z_e, codebook)
    z_e0, codebook0, offset = z_e.copy(), codebook.copy(), z_q0 - z_e

    def loss():
        logits, _ = net.forward(params, z_e + offset)  # value z_q; derivative in z_e: 1
        recon = -dist.bernoulli_log_likelihood(x, logits)
        per_example = (recon + codebook_loss(z_e0, codebook, cache.codes)
                       + beta * commitment_loss(z_e, codebook0, cache.codes))
        return per_example.mean()

    # the hand-written backward: decoder, straight-through, and the two losses
    logits, caches = net.forward(params, z_q0)
    d = np.full(n, 1.0 / n)
    dlogits = dist.bernoulli_log_likelihood_backward(-d, x, logits)
    dz_q = net.backward(dlogits, caches, {})
    dz_e = VectorQuantizer.backward(dz_q, cache) + commitment_loss_backward(
        beta * d, z_e, codebook, cache.codes)
    dcodebook = codebook_loss_backward(d, z_e, codebook, cache.codes)
    return z_e, codebook, loss, dz_e, dcodebook


@pytest.mark.parametrize("shape, k", [((2, 3, 4, 4), 5), ((3, 2, 2, 3), 4), ((1, 4, 3, 3), 16)])
def test_surrogate_gradients_match_central_differences(shape, k):
    z_e, codebook, loss, dz_e, dcodebook = _surrogate_setup(shape, k, seed=6)
    assert rel_error(dz_e, numerical_gradient(loss, z_e)) < TOL
    assert rel_error(dcodebook, numerical_gradient(loss, codebook)) < TOL


def test_the_reconstruction_sends_no_gradient_to_the_codebook():
    # with the codebook and commitment terms left out, the surrogate is flat in the codebook
    z_e, codebook, loss, _, _ = _surrogate_setup((2, 3, 4, 4), 5, seed=7)
    base = float(loss())
    codebook += 0.1  # moves the codebook term only: z_q's value is frozen in the offset
    moved = float(loss())
    codebook -= 0.1
    z_q, cache = VectorQuantizer.forward(z_e, codebook)
    expected = (codebook_loss(z_e, codebook + 0.1, cache.codes)
                - codebook_loss(z_e, codebook, cache.codes)).mean()
    assert moved - base == pytest.approx(expected, rel=1e-10)


def test_the_true_derivative_of_the_quantized_output_is_zero():
    """Central differences of z_q (and of a loss of z_q) in z_e are exactly 0 away from the
    boundaries between codes, while the straight-through estimate is not."""
    rng = np.random.default_rng(8)
    z_e, codebook = rng.standard_normal((2, 3, 4, 4)), rng.standard_normal((6, 3))
    d = np.sort(squared_distances(z_e, codebook), axis=1)
    assert np.min(d[:, 1] - d[:, 0]) > 1e-4  # no position within reach of a boundary
    g = rng.standard_normal(z_e.shape)

    def loss_of_quantized():
        return np.sum(g * VectorQuantizer.forward(z_e, codebook)[0] ** 2)

    true = numerical_gradient(loss_of_quantized, z_e, h=1e-6)
    np.testing.assert_array_equal(true, 0.0)
    z_q, cache = VectorQuantizer.forward(z_e, codebook)
    straight_through = VectorQuantizer.backward(2 * g * z_q, cache)
    assert np.abs(straight_through).min() > 0
    # the estimate is the loss's gradient evaluated at z_q, not at z_e: biased by the gap
    assert not np.allclose(straight_through, 2 * g * z_e)


def test_a_code_changes_only_across_a_boundary():
    codebook = np.array([[0.0], [1.0]])
    z = np.array([[0.5 - 1e-9], [0.5 + 1e-9]])
    np.testing.assert_array_equal(VectorQuantizer.forward(z, codebook)[0], [[0.0], [1.0]])


# -- the two losses --------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
def test_losses_sum_over_channels_and_positions_per_example(shape):
    z, codebook = _grid(shape, 7, seed=9)
    _, cache = VectorQuantizer.forward(z, codebook)
    z_q = lookup(cache.codes, codebook)
    want = np.sum(((z - z_q) ** 2).reshape(shape[0], -1), axis=1)
    np.testing.assert_allclose(codebook_loss(z, codebook, cache.codes), want, rtol=1e-12)
    np.testing.assert_allclose(commitment_loss(z, codebook, cache.codes), want, rtol=1e-12)


@pytest.mark.parametrize("shape", SHAPES)
def test_each_loss_gradient_matches_central_differences_on_its_own_side(shape):
    z, codebook = _grid(shape, 5, seed=10)
    codes = VectorQuantizer.forward(z, codebook)[1].codes
    dout = np.random.default_rng(11).uniform(0.5, 2.0, shape[0])
    dcodebook = codebook_loss_backward(dout, z, codebook, codes)
    dz = commitment_loss_backward(dout, z, codebook, codes)
    assert dcodebook.shape == codebook.shape and dz.shape == z.shape

    def weighted(fn):
        return lambda: np.dot(dout, fn(z, codebook, codes))

    assert rel_error(dcodebook, numerical_gradient(weighted(codebook_loss), codebook)) < TOL
    assert rel_error(dz, numerical_gradient(weighted(commitment_loss), z)) < TOL
    # the codebook loss pulls codes towards the outputs, the commitment the outputs towards
    # the codes: summed over a code's positions, the two gradients cancel
    np.testing.assert_allclose(
        codebook_loss_backward(dout, z, codebook, codes).sum(axis=0),
        -to_rows(dz).sum(axis=0), rtol=1e-10, atol=1e-12)


def test_an_unused_code_gets_no_codebook_gradient():
    codebook = np.array([[0.0, 0.0], [10.0, 10.0], [1.0, 0.0]])
    z = np.array([[0.1, 0.2], [0.9, -0.1], [0.2, 0.0]])
    codes = nearest_codes(z, codebook)
    grad = codebook_loss_backward(np.ones(3), z, codebook, codes)
    np.testing.assert_array_equal(grad[1], 0.0)
    # two outputs share code 0: their gradients add (a fancy-indexed += would keep one)
    np.testing.assert_allclose(grad[0], 2 * (codebook[0] - z[0]) + 2 * (codebook[0] - z[2]))


def test_losses_check_their_inputs():
    z, codebook = _grid((2, 3, 4, 4), 5)
    codes = VectorQuantizer.forward(z, codebook)[1].codes
    with pytest.raises(ValueError, match="codes must be in 0..4"):
        codebook_loss(z, codebook, codes + 5)
    with pytest.raises(ValueError, match=r"codes must be integers of shape \(2, 4, 4\)"):
        codebook_loss(z, codebook, codes.reshape(2, -1))
    with pytest.raises(ValueError, match="dout must have one entry per example"):
        commitment_loss_backward(np.ones(32), z, codebook, codes)
    with pytest.raises(ValueError, match="codebook must be"):
        VectorQuantizer.forward(z, codebook[:, :2])
    with pytest.raises(ValueError, match="dz_q must have z_e's shape"):
        VectorQuantizer.backward(np.ones((2, 3, 4)), VectorQuantizer.forward(z, codebook)[1])
    with pytest.raises(ValueError, match="floating-point"):
        VectorQuantizer.forward(np.ones((3, 3), dtype=np.int64), codebook)


# -- the EMA codebook ----------------------------------------------------------------------


def _assigned_batch(k, seed, n=67, d=3):
    """Rows around k well separated centres, every code used (not equally often), and their
    codes."""
    rng = np.random.default_rng(seed)
    codebook = rng.standard_normal((k, d)) * 5
    rows = codebook[np.arange(n) % k] + rng.standard_normal((n, d))
    return codebook, rows, nearest_codes(rows, codebook)


def test_ema_with_no_memory_is_a_k_means_step():
    codebook, rows, codes = _assigned_batch(4, seed=12)
    assert len(np.unique(codes)) == 4
    size, total = ema_init(codebook)
    new, _, _ = ema_update(size, total, rows, codes, decay=0.0, eps=0.0)
    means = np.stack([rows[codes == j].mean(axis=0) for j in range(4)])
    np.testing.assert_allclose(new, means, rtol=1e-12)
    # with Laplace smoothing the step stays within eps of it
    smoothed, _, _ = ema_update(size, total, rows, codes, decay=0.0, eps=1e-5)
    np.testing.assert_allclose(smoothed, means, rtol=1e-4)
    assert np.abs(smoothed - means).max() > 0  # unequal counts: smoothing moves them


def test_ema_step_is_gradient_descent_on_the_codebook_loss():
    """e_k <- e_k - (1 - gamma) / (2 N_k) d/de_k sum_{i: k_i = k} ||z_i - e_k||^2."""
    codebook, rows, codes = _assigned_batch(5, seed=13)
    rng = np.random.default_rng(14)
    size = rng.uniform(1, 20, 5)  # moving averages of some history, consistent with codebook
    total = size[:, None] * codebook
    gamma = 0.9
    new, new_size, _ = ema_update(size, total, rows, codes, decay=gamma, eps=0.0)
    grad = codebook_loss_backward(np.ones(len(rows)), rows, codebook, codes)
    step = (1 - gamma) / (2 * new_size)
    np.testing.assert_allclose(new, codebook - step[:, None] * grad, rtol=1e-12)


def test_ema_averages_over_steps():
    codebook, rows, codes = _assigned_batch(3, seed=15)
    size, total = ema_init(codebook, count=2.0)
    gamma, batches = 0.8, [slice(0, 20), slice(20, 45), slice(45, 67)]
    for s in batches:
        _, size, total = ema_update(size, total, rows[s], codes[s], decay=gamma, eps=0.0)
    # the same sums written out: initial pseudo-counts discounted, then each batch's
    n_k = [np.bincount(codes[s], minlength=3) for s in batches]
    s_k = [np.stack([rows[s][codes[s] == j].sum(axis=0) for j in range(3)]) for s in batches]
    want_size = gamma**3 * 2.0 + sum((1 - gamma) * gamma ** (2 - t) * n_k[t] for t in range(3))
    want_total = gamma**3 * 2.0 * codebook + sum((1 - gamma) * gamma ** (2 - t) * s_k[t]
                                                 for t in range(3))
    np.testing.assert_allclose(size, want_size, rtol=1e-12)
    np.testing.assert_allclose(total, want_total, rtol=1e-12)


def test_laplace_smoothing_keeps_a_dead_code_finite():
    codebook, rows, codes = _assigned_batch(3, seed=16)
    codebook = np.vstack([codebook, [[100.0, 100.0, 100.0]]])  # code 3: nobody's nearest
    size, total = ema_init(codebook)
    size[3], total[3] = 0.0, 0.0  # its moving averages have decayed away
    with np.errstate(invalid="ignore"):
        unsmoothed, _, _ = ema_update(size, total, rows, codes, decay=0.5, eps=0.0)
    assert np.isnan(unsmoothed[3]).all()  # 0 / 0
    new, new_size, _ = ema_update(size, total, rows, codes, decay=0.5, eps=1e-5)
    assert np.isfinite(new).all()
    n = new_size.sum()
    smoothed = (new_size + 1e-5) / (n + 4e-5) * n
    assert smoothed.sum() == pytest.approx(n, rel=1e-12)  # smoothing keeps the total count


def test_ema_checks_its_arguments():
    codebook, rows, codes = _assigned_batch(3, seed=17)
    size, total = ema_init(codebook)
    with pytest.raises(ValueError, match="decay must be in"):
        ema_update(size, total, rows, codes, decay=1.0)
    with pytest.raises(ValueError, match="cluster_size must be"):
        ema_update(size[:2], total, rows, codes)
    with pytest.raises(ValueError, match="count must be a positive number"):
        ema_init(codebook, count=0)


# -- usage: counts, perplexity, restarts ---------------------------------------------------------


def test_perplexity():
    assert perplexity(np.arange(8), 8) == pytest.approx(8.0)
    assert perplexity(np.zeros(10, dtype=int), 8) == pytest.approx(1.0)
    assert perplexity(np.array([0, 0, 3, 3]), 8) == pytest.approx(2.0)
    codes = np.array([0, 0, 0, 1, 2, 2]).reshape(2, 3)
    p = np.array([3, 1, 2]) / 6
    assert perplexity(codes, 5) == pytest.approx(np.exp(-np.sum(p * np.log(p))), rel=1e-12)
    np.testing.assert_array_equal(code_counts(codes, 5), [3, 1, 2, 0, 0])
    with pytest.raises(ValueError, match="integers in 0..4"):
        code_counts(np.array([5]), 5)


def test_restart_moves_dead_codes_onto_encoder_outputs():
    rng = np.random.default_rng(18)
    codebook = rng.standard_normal((6, 3))
    z = rng.standard_normal((2, 3, 4, 4))
    counts = np.array([5, 0, 3, 0, 0, 1])
    new, dead = restart_dead_codes(codebook, counts, z, np.random.default_rng(0))
    np.testing.assert_array_equal(dead, [1, 3, 4])
    np.testing.assert_array_equal(new[[0, 2, 5]], codebook[[0, 2, 5]])
    rows = to_rows(z)
    for j in dead:
        assert np.any(np.all(rows == new[j], axis=1))
    assert len({tuple(new[j]) for j in dead}) == 3  # distinct outputs
    # each restarted code is now the nearest code of the output it sits on
    np.testing.assert_array_equal(nearest_codes(new[dead], new), dead)
    # a threshold above 1 counts rarely used codes as dead too; none dead: nothing changes
    assert list(restart_dead_codes(codebook, counts, z, rng, threshold=2)[1]) == [1, 3, 4, 5]
    same, none = restart_dead_codes(codebook, counts + 1, z, rng)
    assert none.size == 0 and np.array_equal(same, codebook)


def test_restart_raises_the_perplexity_of_a_collapsed_codebook():
    rng = np.random.default_rng(19)
    rows = rng.standard_normal((400, 2)) * 3
    codebook = np.vstack([[0.0, 0.0], rng.standard_normal((7, 2)) * 0.01 + 50])  # 7 far off
    codes = nearest_codes(rows, codebook)
    assert perplexity(codes, 8) == pytest.approx(1.0)
    new, _ = restart_dead_codes(codebook, code_counts(codes, 8), rows, rng)
    assert perplexity(nearest_codes(rows, new), 8) > 4


# -- the rate ------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [2, 16, 512])
def test_the_kl_of_a_one_hot_posterior_to_a_uniform_prior_is_log_k(k):
    q = np.zeros(k)
    q[k // 3] = 1.0
    p = np.full(k, 1.0 / k)
    nonzero = q > 0
    kl = np.sum(q[nonzero] * np.log(q[nonzero] / p[nonzero]))
    assert kl == pytest.approx(math.log(k), rel=1e-12)
    assert rate_bits(k) == pytest.approx(49 * kl / math.log(2), rel=1e-12)
    assert rate_bits(k, positions=16) == pytest.approx(16 * math.log2(k))


def test_fsq_rate_is_log2_of_the_product_of_the_levels():
    assert rate_bits(math.prod((8, 5, 5, 5))) == pytest.approx(49 * math.log2(1000))
    with pytest.raises(ValueError):
        rate_bits(0)


# -- finite scalar quantization -----------------------------------------------------------------

LEVELS = [(3,), (2, 5), (4, 4, 4), (8, 5, 5, 5), (7, 6, 2)]


@pytest.mark.parametrize("levels", LEVELS)
def test_fsq_rounds_each_channel_to_its_levels(levels):
    d = len(levels)
    z = np.random.default_rng(20).standard_normal((500, d)) * 2
    z_q, cache = FSQ.forward(z, levels)
    for i, n_levels in enumerate(levels):
        np.testing.assert_allclose(np.unique(z_q[:, i]), np.linspace(-1, 1, n_levels),
                                   atol=1e-12)  # every level reached, nothing else
    # each value is the level centre nearest to the bounded value (L/2) tanh(z)
    half_l = np.array(levels) / 2
    b = half_l * np.tanh(z)
    centres = [np.arange(n) - (n - 1) / 2 for n in levels]
    for i in range(d):
        nearest = centres[i][np.argmin(np.abs(b[:, i, None] - centres[i][None]), axis=1)]
        np.testing.assert_allclose(z_q[:, i], nearest / ((levels[i] - 1) / 2), atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fsq_keeps_saturated_values_in_the_outermost_levels(dtype):
    # tanh(z) rounds to exactly 1 for large z: b = L/2 is the outer edge of the last bin
    z = np.array([[-40.0, 40.0, 40.0, 25.0], [40.0, -40.0, -25.0, 12.0]], dtype=dtype)
    assert np.tanh(z).max() == 1.0
    z_q, cache = FSQ.forward(z, (3, 4, 5, 2))
    np.testing.assert_array_equal(z_q, np.sign(z))
    np.testing.assert_array_equal(cache.digits, np.where(z > 0, [2, 3, 4, 1], 0))
    assert fsq_codes(cache).max() < 3 * 4 * 5 * 2


def test_fsq_two_levels_is_the_sign():
    z = np.array([[-2.0], [-0.1], [0.3], [4.0]])
    np.testing.assert_array_equal(FSQ.forward(z, (2,))[0], np.sign(z))


def test_fsq_bins_are_equally_wide_in_the_bounded_value():
    b = np.linspace(-2.5, 2.5, 100_001)[1:-1]  # L = 5: (-5/2, 5/2)
    z = np.arctanh(b / 2.5)
    _, cache = FSQ.forward(z[:, None], (5,))
    widths = np.bincount(cache.digits[:, 0], minlength=5) / len(b) * 5
    np.testing.assert_allclose(widths, 1.0, atol=1e-3)


@pytest.mark.parametrize("levels", LEVELS)
def test_fsq_codes_round_trip(levels):
    z = np.random.default_rng(21).standard_normal((3, len(levels), 4, 5)) * 2
    z_q, cache = FSQ.forward(z, levels)
    codes = fsq_codes(cache)
    assert codes.shape == (3, 4, 5)
    assert codes.min() >= 0 and codes.max() < math.prod(levels)
    np.testing.assert_allclose(fsq_values(codes, levels), z_q, atol=1e-12)
    # distinct points of the grid get distinct codes
    rows = to_rows(z_q)
    n_points = len(np.unique(rows, axis=0))
    assert len(np.unique(codes)) == n_points


@pytest.mark.parametrize("shape, levels", [((2, 3, 4, 4), (4, 4, 4)), ((6, 2), (5, 3)),
                                           ((1, 4, 3, 3), (8, 5, 5, 5))])
def test_fsq_backward_matches_central_differences_of_its_surrogate(shape, levels):
    rng = np.random.default_rng(22)
    z = rng.standard_normal(shape)
    g = rng.standard_normal(shape)
    z_q0, cache = FSQ.forward(z, levels)
    half_l = np.array(levels, dtype=np.float64) / 2
    half_range = (np.array(levels, dtype=np.float64) - 1) / 2
    b0 = half_l * np.tanh(to_rows(z))
    offset = to_rows(z_q0) * half_range - b0  # round(b) - b, frozen

    def surrogate():
        b = half_l * np.tanh(to_rows(z))
        return np.sum(to_rows(g) * (b + offset) / half_range)

    assert surrogate() == pytest.approx(np.sum(g * z_q0), rel=1e-12)
    dz = FSQ.backward(g, cache)
    assert rel_error(dz, numerical_gradient(surrogate, z)) < TOL
    # the true derivative of the rounded output is 0
    true = numerical_gradient(lambda: np.sum(g * FSQ.forward(z, levels)[0]), z, h=1e-7)
    np.testing.assert_array_equal(true, 0.0)


def test_fsq_checks_its_levels():
    with pytest.raises(ValueError, match="levels must be 3 integers >= 2"):
        FSQ.forward(np.zeros((4, 3)), (4, 4))
    with pytest.raises(ValueError, match="levels must be 2 integers >= 2"):
        FSQ.forward(np.zeros((4, 2)), (4, 1))
    with pytest.raises(ValueError, match="dz_q must have z's shape"):
        FSQ.backward(np.zeros((3, 2)), FSQ.forward(np.zeros((4, 2)), (3, 3))[1])
