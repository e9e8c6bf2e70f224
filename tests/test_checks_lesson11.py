"""Lesson 11's checkers: their references agree with the package, right answers written
differently pass, each slip the lesson names is caught and named, and a stub is "not done"."""

from __future__ import annotations

import numpy as np
import pytest

from vae_from_scratch import quantize
from vae_from_scratch.checks import core
from vae_from_scratch.checks import lesson11 as check
from vae_from_scratch.checks.core import NOT_DONE, PASSED, WRONG
from vae_from_scratch.gradcheck import numerical_gradient, rel_error

pytestmark = pytest.mark.lesson11


def test_the_lesson_registers_exercises_11_1_to_11_5():
    assert [(c.exercise, c.name) for c in core.checkers(11)] == [
        ("11.1", "squared_distances"), ("11.2", "nearest_codes"), ("11.3", "vq_backward"),
        ("11.4", "ema_update"), ("11.5", "perplexity")]


def _wrong(checker, fn, named):
    result = checker.run(fn)
    assert result.status == WRONG, result.message
    assert named in result.message, result.message
    return result


# -- 11.1 and 11.2 --------------------------------------------------------------------------------


def test_distances_written_as_a_broadcast_pass():
    def broadcast(z, codebook):
        return np.sum((z[:, None, :] - codebook[None]) ** 2, axis=2)

    assert check.squared_distances.run(broadcast).status == PASSED


def test_distance_slips_are_named():
    def no_two(z, codebook):
        return np.sum(z**2, 1)[:, None] - z @ codebook.T + np.sum(codebook**2, 1)

    def no_z_norm(z, codebook):
        return np.sum(codebook**2, 1)[None, :] - 2 * z @ codebook.T

    def transposed(z, codebook):
        return quantize.squared_distances(z, codebook).T

    _wrong(check.squared_distances, no_two, "the cross term needs its factor 2")
    _wrong(check.squared_distances, no_z_norm, "It lacks ||z||^2")
    _wrong(check.squared_distances, transposed, "transpose")


def test_nearest_code_slips_are_named():
    def wrong_axis(z, codebook):
        return np.argmin(quantize.squared_distances(z, codebook), axis=0)

    def farthest(z, codebook):
        return np.argmax(quantize.squared_distances(z, codebook), axis=1)

    _wrong(check.nearest_codes, wrong_axis, "argmin over axis 0")
    _wrong(check.nearest_codes, farthest, "the argmax")
    assert check.nearest_codes.run(
        lambda z, e: np.argmin(np.linalg.norm(z[:, None] - e[None], axis=2), axis=1)
    ).status == PASSED  # the distance itself, not its square: the same argmin


# -- 11.3 -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", range(len(check.vq_backward.cases)))
def test_vq_backward_reference_is_the_surrogates_gradient(case):
    """Against central differences of the surrogate: <dz_q, z_e + offset> (the decoder's
    first-order part, offset frozen) + the mean codebook loss + beta * the mean commitment."""
    dz_q, z_e, codebook, codes, beta = check.vq_backward.cases[case].fresh()[0]
    n = len(z_e)
    z0, cb0 = z_e.copy(), codebook.copy()

    def loss():
        return (np.sum(dz_q * z_e)
                + quantize.codebook_loss(z0, codebook, codes).sum() / n
                + beta * quantize.commitment_loss(z_e, cb0, codes).sum() / n)

    dz_e, dcodebook = check._vq_backward(dz_q, z_e, codebook, codes, beta)
    assert rel_error(dz_e, numerical_gradient(loss, z_e)) < 1e-8
    assert rel_error(dcodebook, numerical_gradient(loss, codebook)) < 1e-8
    # and the package's pieces say the same
    d = np.full(n, 1.0 / n)
    np.testing.assert_allclose(
        dz_e, dz_q + quantize.commitment_loss_backward(beta * d, z_e, codebook, codes))
    np.testing.assert_allclose(
        dcodebook, quantize.codebook_loss_backward(d, z_e, codebook, codes))


def _vq(st=True, z_weight="beta", cb_weight=1.0, st_to_codebook=False, fancy=False):
    def answer(dz_q, z_e, codebook, codes, beta):
        n = len(z_e)
        err = 2 * (z_e - codebook[codes]) / n
        w = {"beta": beta, "one": 1.0, "both": 1 + beta}[z_weight]
        dz_e = (dz_q if st else 0) + w * err
        dcodebook = np.zeros_like(codebook)
        for i, k in enumerate(codes):
            if fancy and np.any(codes[i + 1 :] == k):  # a buffered += keeps the last
                continue
            dcodebook[k] -= err[i]
            if st_to_codebook:
                dcodebook[k] += dz_q[i]
        return dz_e, {"beta": beta, 1.0: 1.0, "both": 1 + beta}[cb_weight] * dcodebook
    return answer


def test_vq_backward_written_with_a_loop_passes():
    assert check.vq_backward.run(_vq()).status == PASSED


@pytest.mark.parametrize("answer, named", [
    (_vq(st=False), "straight-through estimator copies dz_q"),
    (_vq(z_weight="one", cb_weight="beta"), "Commitment and codebook are swapped"),
    (_vq(z_weight="both", cb_weight="both"), "stop-gradient is on the wrong side"),
    (_vq(z_weight="both"), "codebook loss's gradient reached z_e"),
    (_vq(cb_weight="both"), "commitment's gradient reached the codebook"),
    (_vq(st_to_codebook=True), "decoder's gradient reached the codebook"),
    (_vq(fancy=True), "np.add.at"),
])
def test_vq_backward_slips_are_named(answer, named):
    _wrong(check.vq_backward, answer, named)


def test_vq_backward_names_the_wrong_output_otherwise():
    def sign(dz_q, z_e, codebook, codes, beta):
        dz_e, dcodebook = check._vq_backward(dz_q, z_e, codebook, codes, beta)
        return dz_e, -dcodebook

    result = _wrong(check.vq_backward, sign, "dcodebook is wrong")
    assert "opposite sign" in result.message


# -- 11.4 -----------------------------------------------------------------------------------------


def _ema(smooth=True, swap=False):
    def answer(cluster_size, embed_sum, z, codes, decay, eps):
        k = len(cluster_size)
        n_k = np.array([np.sum(codes == j) for j in range(k)], dtype=float)
        s_k = np.array([z[codes == j].sum(axis=0) for j in range(k)])
        a, b = (1 - decay, decay) if swap else (decay, 1 - decay)
        size, total = a * cluster_size + b * n_k, a * embed_sum + b * s_k
        n = size.sum()
        return total / ((size + eps) / (n + k * eps) * n if smooth else size)[:, None], size, total
    return answer


def test_ema_written_with_loops_passes():
    assert check.ema_update.run(_ema()).status == PASSED


def test_ema_without_laplace_smoothing_is_named():
    result = check.ema_update.run(_ema(smooth=False))
    assert result.status == WRONG
    assert "without Laplace smoothing" in result.message


def test_ema_without_smoothing_fails_the_dead_code_case_with_its_reason():
    # right on the cases where every code is used, with a large eps: only the strict case
    # with a dead code tells the two apart, and says why
    checker = core.Checker("11.4", reference=check._ema_update,
                           cases=[check.ema_update.cases[2]], name="ema_dead_code_only")
    try:
        result = checker.run(_ema(smooth=False))
    finally:  # a checker registers itself: leave lesson 11's set as the lesson has it
        core._REGISTRY.pop(("11.4", "ema_dead_code_only"))
    assert result.status == WRONG
    assert "0/0" in result.message and "Laplace" in result.message


def test_ema_decay_on_the_wrong_term_is_named():
    _wrong(check.ema_update, _ema(swap=True), "decay is on the wrong term")


# -- 11.5 -----------------------------------------------------------------------------------------


def _entropy_of(codes, k, base=np.e, zero_terms=False):
    counts = np.bincount(np.ravel(codes), minlength=k)
    p = counts / counts.sum()
    if not zero_terms:
        p = p[p > 0]
    return -np.sum(p * np.log(p)) / np.log(base)


@pytest.mark.parametrize("answer, named", [
    (lambda codes, k: _entropy_of(codes, k), "It is the entropy"),
    (lambda codes, k: np.exp(_entropy_of(codes, k, base=2)), "bases mixed"),
    (lambda codes, k: float(len(np.unique(codes))), "the number of codes used"),
])
def test_perplexity_slips_are_named(answer, named):
    _wrong(check.perplexity, answer, named)


def test_perplexity_with_0_log_0_fails_the_strict_case():
    result = check.perplexity.run(lambda codes, k: np.exp(_entropy_of(codes, k, zero_terms=True)))
    assert result.status == WRONG
    assert "Leave out the unused codes" in result.message


def test_perplexity_in_bits_passes():
    assert check.perplexity.run(
        lambda codes, k: 2.0 ** _entropy_of(codes, k, base=2)).status == PASSED


def test_every_check_reports_a_stub_as_not_done():
    def stub(*args, **kwargs):
        raise NotImplementedError("Exercise 11.x")

    for checker in core.checkers(11):
        assert checker.run(stub).status == NOT_DONE
