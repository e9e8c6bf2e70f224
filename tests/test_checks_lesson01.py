"""Lesson 01's checkers catch the mistakes learners make, and accept right answers written
differently from the reference."""

from __future__ import annotations

import numpy as np
import pytest

from vae_from_scratch.checks import core
from vae_from_scratch.checks import lesson01 as check
from vae_from_scratch.checks.core import NOT_DONE, PASSED, WRONG

pytestmark = pytest.mark.lesson01


def test_the_lesson_registers_exercises_1_1_to_1_4():
    found = [(c.exercise, c.name) for c in core.checkers(1)]
    assert found == [
        ("1.1", "linear_ae_loss_and_grads"),
        ("1.2", "pca"),
        ("1.3", "principal_angles"),
        ("1.4", "nearest_distances"),
    ]


# -- right answers, written another way --------------------------------------------------------


def linear_ae_by_matrices(params, x):
    We, be, Wd, bd = (params[k] for k in ("enc.z.W", "enc.z.b", "dec.out.W", "dec.out.b"))
    z = x @ We + be
    r = z @ Wd + bd - x
    n = len(x)
    g = 2 * r / n
    dz = g @ Wd.T
    grads = {"dec.out.W": z.T @ g, "dec.out.b": g.sum(0), "enc.z.W": x.T @ dz,
             "enc.z.b": dz.sum(0)}
    return np.float64(np.mean(np.sum(r**2, axis=1))), grads


def pca_by_eigh_with_flipped_signs(x, k):
    mean = x.mean(axis=0)
    values, vectors = np.linalg.eigh(np.cov(x, rowvar=False))
    comps = vectors[:, ::-1][:, :k].T
    return mean, -comps  # any sign is right


def angles_by_projection(a, b):
    # cosines from the singular values of the projection of one orthonormal basis onto the other
    qa = np.linalg.svd(a, full_matrices=False)[0]
    qb = np.linalg.svd(b, full_matrices=False)[0]
    s = np.linalg.svd(qa.T @ qb, compute_uv=False)
    return np.sort(np.arccos(np.minimum(s, 1.0)))


def nearest_by_broadcasting(a, b):
    return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)).min(axis=1)


@pytest.mark.parametrize(
    "checker, fn",
    [
        (check.linear_ae_loss_and_grads, linear_ae_by_matrices),
        (check.pca, pca_by_eigh_with_flipped_signs),
        (check.principal_angles, angles_by_projection),
        (check.nearest_distances, nearest_by_broadcasting),
    ],
)
def test_right_answers_written_differently_pass(checker, fn):
    result = checker.run(fn)
    assert result.status == PASSED, result.message


def test_pca_accepts_any_sign_per_component():
    def pca_mixed_signs(x, k):
        mean, comps = check.pca.reference(x, k)
        signs = np.where(np.arange(k) % 2 == 0, 1.0, -1.0)
        return mean, comps * signs[:, None]

    assert check.pca.run(pca_mixed_signs).status == PASSED


# -- typical mistakes -----------------------------------------------------------------------------


def linear_ae_sum_not_mean(params, x):
    loss, grads = linear_ae_by_matrices(params, x)
    return loss * len(x), {k: v * len(x) for k, v in grads.items()}


def linear_ae_mean_over_pixels(params, x):
    loss, grads = linear_ae_by_matrices(params, x)
    d = x.shape[1]
    return loss / d, {k: v / d for k, v in grads.items()}


def linear_ae_without_the_2(params, x):
    loss, grads = linear_ae_by_matrices(params, x)
    return loss, {k: v / 2 for k, v in grads.items()}


def linear_ae_bias_grad_not_summed(params, x):
    loss, grads = linear_ae_by_matrices(params, x)
    grads["dec.out.b"] = grads["dec.out.b"] / len(x)  # a mean instead of a sum
    return loss, grads


def pca_not_centred(x, k):
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    return x.mean(axis=0), vt[:k]


def pca_columns_not_rows(x, k):
    mean = x.mean(axis=0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    return mean, vt[:k].T


def pca_smallest_first(x, k):
    mean = x.mean(axis=0)
    values, vectors = np.linalg.eigh(np.cov(x, rowvar=False))
    return mean, vectors[:, :k].T


def angles_without_orthonormalizing(a, b):
    s = np.linalg.svd(a.T @ b, compute_uv=False)
    return np.arccos(np.clip(s, -1, 1))


def angles_in_degrees(a, b):
    return np.degrees(check.principal_angles.reference(a, b))


def angles_descending(a, b):
    return check.principal_angles.reference(a, b)[::-1]


def angles_without_clipping(a, b):
    qa, qb = np.linalg.qr(a)[0], np.linalg.qr(b)[0]
    with np.errstate(invalid="ignore"):
        return np.arccos(np.linalg.svd(qa.T @ qb, compute_uv=False))


def nearest_squared(a, b):
    return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1).min(axis=1)


def nearest_farthest(a, b):
    return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)).max(axis=1)


@pytest.mark.parametrize(
    "checker, fn",
    [
        (check.linear_ae_loss_and_grads, linear_ae_sum_not_mean),
        (check.linear_ae_loss_and_grads, linear_ae_mean_over_pixels),
        (check.linear_ae_loss_and_grads, linear_ae_without_the_2),
        (check.linear_ae_loss_and_grads, linear_ae_bias_grad_not_summed),
        (check.pca, pca_not_centred),
        (check.pca, pca_columns_not_rows),
        (check.pca, pca_smallest_first),
        (check.principal_angles, angles_without_orthonormalizing),
        (check.principal_angles, angles_in_degrees),
        (check.principal_angles, angles_descending),
        (check.nearest_distances, nearest_squared),
        (check.nearest_distances, nearest_farthest),
    ],
)
def test_typical_mistakes_are_wrong(checker, fn):
    result = checker.run(fn)
    assert result.status == WRONG, result.message


def test_pca_with_transposed_components_gets_a_hint():
    result = check.pca.run(pca_columns_not_rows)
    assert "V instead of V.T" in result.message


def test_unclipped_arccos_is_caught_by_the_same_subspace_case_or_passes():
    # Whether round-off pushes a cosine above 1 depends on the machine; if it does, the NaN
    # must be reported as wrong rather than crash the check.
    result = check.principal_angles.run(angles_without_clipping)
    assert result.status in (PASSED, WRONG)
    if result.status == WRONG:
        assert "nan" in result.message.lower()


def test_a_lesson_stub_is_not_done():
    def pca(x, k):
        raise NotImplementedError("Exercise 1.2: implement pca")

    result = check.pca.run(pca)
    assert result.status == NOT_DONE
    assert result.detail == "Exercise 1.2: implement pca"


def test_the_reference_nearest_distances_handles_large_inputs_in_chunks():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2100, 3)), rng.normal(size=(50, 3))
    np.testing.assert_allclose(check.nearest_distances.reference(a, b),
                               nearest_by_broadcasting(a, b), atol=1e-9)


def test_cases_print_without_negative_zeros():
    for checker in core.checkers(1):
        for case in checker.cases:
            assert "-0. " not in repr(case) and "-0.," not in repr(case)
