"""Tests for vae_from_scratch.gradcheck: the tools every other gradient test relies on."""

from __future__ import annotations

import numpy as np
import pytest

from vae_from_scratch import VAE
from vae_from_scratch.gradcheck import check_model_gradients, numerical_gradient, rel_error

pytestmark = [
    pytest.mark.lesson02,
    pytest.mark.lesson04,
    pytest.mark.lesson06,
    pytest.mark.lesson07,
]


def test_numerical_gradient_restores_every_entry_bit_for_bit():
    # (1e-7 + 1e-5) - 1e-5 != 1e-7 in floating point: "restore" must not mean "undo the step".
    x = np.array([[0.1, 1e-6, -1.3], [1e-7, 3.3, 2.0 / 3.0]])
    assert (x[1, 0] + 1e-5) - 1e-5 != x[1, 0] and (x[0, 1] - 1e-5) + 1e-5 != x[0, 1]
    before = x.tobytes()
    original = x.copy()
    seen = []

    def f():
        changed = np.argwhere(x != original)
        seen.append(len(changed))
        return float(np.sum(np.sin(x)))

    numerical_gradient(f, x)
    assert x.tobytes() == before
    assert seen and max(seen) == 1  # only the entry being differenced is ever off its value


def test_numerical_gradient_is_exact_on_a_quadratic():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((4, 4))
    A = A @ A.T
    b = rng.standard_normal(4)
    x = rng.standard_normal(4)

    def f():
        return 0.5 * x @ A @ x + b @ x

    grad = numerical_gradient(f, x)
    assert grad.shape == x.shape and grad.dtype == np.float64
    assert rel_error(grad, A @ x + b) < 1e-9


def test_numerical_gradient_handles_any_shape():
    x = np.arange(24, dtype=np.float64).reshape(2, 3, 4) / 10

    def f():
        return float(np.sum(x**3))

    assert rel_error(numerical_gradient(f, x), 3 * x**2) < 1e-9


def test_numerical_gradient_of_a_scalar_lookup_is_a_one_hot():
    x = np.zeros((2, 2))
    grad = numerical_gradient(lambda: x[1, 0] * 2.0, x)
    np.testing.assert_allclose(grad, [[0, 0], [2, 0]], atol=1e-9)


def test_numerical_gradient_steps_by_h_1e_5_by_default():
    # For f = sum(x^3) at 0 the central difference is exactly h^2 (f''' = 6): it shows h.
    x = np.zeros(3)
    np.testing.assert_allclose(numerical_gradient(lambda: np.sum(x**3), x), 1e-10, rtol=1e-6)
    np.testing.assert_allclose(numerical_gradient(lambda: np.sum(x**3), x, h=1e-3), 1e-6,
                               rtol=1e-6)


def test_rel_error_is_zero_for_equal_arrays():
    a = np.random.default_rng(1).standard_normal((3, 4))
    assert rel_error(a, a.copy()) == 0.0
    assert rel_error(np.zeros(5), np.zeros(5)) == 0.0


def test_rel_error_is_one_for_zero_against_nonzero_and_for_opposite_arrays():
    a = np.random.default_rng(2).standard_normal(10)
    assert rel_error(a, np.zeros(10)) == pytest.approx(1.0, rel=1e-15)
    assert rel_error(a, -a) == pytest.approx(1.0, rel=1e-15)


def test_rel_error_is_large_for_unrelated_arrays_and_small_for_close_ones():
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal(1000), rng.standard_normal(1000)
    assert 0.6 < rel_error(a, b) <= 1.0  # about 1/sqrt(2) for independent vectors
    assert rel_error(a, a * (1 + 1e-9)) == pytest.approx(0.5e-9, rel=1e-3)


def test_rel_error_is_symmetric_and_scale_free():
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal(6), rng.standard_normal(6)
    assert rel_error(a, b) == rel_error(b, a)
    assert rel_error(1e6 * a, 1e6 * b) == pytest.approx(rel_error(a, b), rel=1e-12)


def test_rel_error_accepts_lists_and_numbers():
    assert rel_error([1.0, 2.0], [1.0, 2.0]) == 0.0
    assert rel_error(3.0, 1.0) == pytest.approx(0.5, rel=1e-15)
    assert rel_error([[1, 2]], np.array([[1.0, 2.0]])) == 0.0


def test_rel_error_of_tiny_arrays_is_measured_against_the_floor_of_1e_12():
    # below the floor the error is an absolute one, so that round-off near 0 is not "100%"
    assert rel_error(np.array([1e-13]), np.array([0.0])) == pytest.approx(0.1, rel=1e-12)
    assert rel_error(np.array([1e-12]), np.array([0.0])) == pytest.approx(1.0, rel=1e-12)
    assert rel_error(np.array([1e-13]), np.array([0.0]), floor=1e-14) == pytest.approx(1.0)


def test_rel_error_raises_on_shape_mismatch():
    with pytest.raises(ValueError, match="shapes differ"):
        rel_error(np.zeros((2, 3)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="shapes differ"):
        rel_error(np.zeros(3), np.zeros(4))


def test_check_model_gradients_refuses_float32_models():
    vae = VAE(6, (5,), 2, seed=0)  # float32 by default
    x = np.random.default_rng(0).random((2, 6)).astype(np.float32)
    eps = np.zeros((2, 2), dtype=np.float32)
    with pytest.raises(ValueError, match="float64"):
        check_model_gradients(vae, x, eps)


def test_check_model_gradients_leaves_params_untouched_and_reports_every_param():
    vae = VAE(6, (5,), 2, seed=0, dtype=np.float64)
    rng = np.random.default_rng(0)
    x, eps = rng.random((3, 6)), rng.standard_normal((3, 2))
    before = {k: v.tobytes() for k, v in vae.params.items()}
    errors = check_model_gradients(vae, x, eps)
    assert set(errors) == set(vae.params)
    assert {k: v.tobytes() for k, v in vae.params.items()} == before
    assert max(errors.values()) < 1e-6


def test_check_model_gradients_with_max_entries_checks_a_subset(monkeypatch):
    vae = VAE(6, (5,), 2, seed=0, dtype=np.float64)
    rng = np.random.default_rng(0)
    x, eps = rng.random((3, 6)), rng.standard_normal((3, 2))
    calls = []
    real_loss = vae.loss

    def counting_loss(*args):
        calls.append(1)
        return real_loss(*args)

    monkeypatch.setattr(vae, "loss", counting_loss)
    errors = check_model_gradients(vae, x, eps, max_entries=2)
    assert max(errors.values()) < 1e-6
    # two loss evaluations per checked entry, at most two entries per parameter
    expected = sum(2 * min(2, v.size) for v in vae.params.values())
    assert len(calls) == expected


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_check_model_gradients_with_max_entries_checks_distinct_entries(monkeypatch, seed):
    vae = VAE(6, (8,), 2, seed=0, dtype=np.float64)  # enc.0.W and dec.out.W hold 48 entries
    rng = np.random.default_rng(0)
    x, eps = rng.random((3, 6)), rng.standard_normal((3, 2))
    original = {k: v.copy() for k, v in vae.params.items()}
    moved = {k: [] for k in original}
    real_loss = vae.loss

    def recording_loss(*args):
        changed = [(k, i) for k, v in vae.params.items()
                   for i in np.flatnonzero(v.reshape(-1) != original[k].reshape(-1))]
        assert len(changed) == 1, changed  # one entry at a time
        moved[changed[0][0]].append(int(changed[0][1]))
        return real_loss(*args)

    monkeypatch.setattr(vae, "loss", recording_loss)
    errors = check_model_gradients(vae, x, eps, max_entries=40, seed=seed)
    assert max(errors.values()) < 1e-6
    for k, value in original.items():
        n = min(40, value.size)
        assert len(moved[k]) == 2 * n, k  # +h and -h for each checked entry
        assert len(set(moved[k])) == n, f"{k}: an entry was checked twice"
        if value.size <= 40:
            assert set(moved[k]) == set(range(value.size))


def _perturbations(monkeypatch, vae, **kwargs):
    """(key, entry, step) of every perturbation check_model_gradients makes."""
    original = {k: v.copy() for k, v in vae.params.items()}
    steps = []
    real_loss = vae.loss

    def recording_loss(*args):
        for k, v in vae.params.items():
            for i in np.flatnonzero(v.reshape(-1) != original[k].reshape(-1)):
                steps.append((k, int(i), float(v.reshape(-1)[i] - original[k].reshape(-1)[i])))
        return real_loss(*args)

    monkeypatch.setattr(vae, "loss", recording_loss)
    rng = np.random.default_rng(0)
    check_model_gradients(vae, rng.random((3, 6)), rng.standard_normal((3, 2)), **kwargs)
    monkeypatch.undo()
    return steps


def test_check_model_gradients_defaults_step_1e_5_and_seed_0(monkeypatch):
    vae = VAE(6, (8,), 2, seed=0, dtype=np.float64)
    default = _perturbations(monkeypatch, vae, max_entries=10)
    np.testing.assert_allclose([abs(step) for _, _, step in default], 1e-5, rtol=1e-6)
    assert {step > 0 for _, _, step in default} == {True, False}  # +h and -h
    entries = [(k, i) for k, i, _ in default]
    assert entries == [(k, i) for k, i, _ in _perturbations(monkeypatch, vae, max_entries=10,
                                                             seed=0)]
    assert entries != [(k, i) for k, i, _ in _perturbations(monkeypatch, vae, max_entries=10,
                                                             seed=1)]


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint8, np.bool_, np.complex128])
def test_numerical_gradient_refuses_arrays_that_cannot_hold_x_plus_h(dtype):
    x = np.array([1, 2, 3]).astype(dtype)
    before = x.copy()
    with pytest.raises(ValueError, match="floating-point array"):
        numerical_gradient(lambda: float(np.sum(x.astype(np.float64) ** 2)), x)
    np.testing.assert_array_equal(x, before)  # refused before anything was perturbed


def test_numerical_gradient_refuses_what_it_cannot_perturb_in_place():
    with pytest.raises(TypeError, match="NumPy array"):
        numerical_gradient(lambda: 0.0, [1.0, 2.0])
