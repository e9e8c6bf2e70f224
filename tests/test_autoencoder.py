"""Tests for vae_from_scratch.autoencoder: the autoencoder's gradients, PCA, principal angles
and the training loop (lesson 01)."""

from __future__ import annotations

import numpy as np
import pytest

from vae_from_scratch.autoencoder import Autoencoder, fit, pca, principal_angles
from vae_from_scratch.gradcheck import numerical_gradient, rel_error

pytestmark = pytest.mark.lesson01


def _data(n=7, d=6, seed=0):
    return np.random.default_rng(seed).uniform(0.0, 1.0, size=(n, d))


# -- the autoencoder ---------------------------------------------------------------------------


@pytest.mark.parametrize("hidden_dims", [(), (5,), (4, 3)])
@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.parametrize("output", ["linear", "bernoulli"])
def test_gradients_match_central_differences(hidden_dims, activation, output):
    x = _data()
    ae = Autoencoder(6, hidden_dims, 2, activation=activation, output=output, seed=1,
                     dtype=np.float64)
    _, grads = ae.loss_and_grads(x)
    assert set(grads) == set(ae.params)
    for name, value in ae.params.items():
        assert grads[name].shape == value.shape
        numeric = numerical_gradient(lambda: ae.loss(x), value)
        assert rel_error(grads[name], numeric) < 1e-6, name


def test_linear_autoencoder_is_two_affine_maps_with_squared_error():
    x = _data()
    ae = Autoencoder(6, (), 3, output="linear", seed=0, dtype=np.float64)
    p = ae.params
    assert sorted(p) == ["dec.out.W", "dec.out.b", "enc.z.W", "enc.z.b"]
    z = x @ p["enc.z.W"] + p["enc.z.b"]
    x_hat = z @ p["dec.out.W"] + p["dec.out.b"]
    np.testing.assert_allclose(ae.encode(x), z)
    np.testing.assert_allclose(ae.reconstruct(x), x_hat)
    expected = np.mean(np.sum((x_hat - x) ** 2, axis=1))
    assert ae.loss(x) == pytest.approx(expected)
    assert ae.loss_and_grads(x)[0] == pytest.approx(expected)


def test_bernoulli_output_decodes_to_probabilities_and_uses_cross_entropy():
    x = _data()
    ae = Autoencoder(6, (4,), 2, output="bernoulli", seed=0, dtype=np.float64)
    probs = ae.reconstruct(x)
    assert np.all((probs > 0) & (probs < 1))
    expected = -np.mean(np.sum(x * np.log(probs) + (1 - x) * np.log(1 - probs), axis=1))
    assert ae.loss(x) == pytest.approx(expected)
    assert ae.per_example_loss(x).shape == (len(x),)


def test_shapes_dtype_and_seed():
    ae = Autoencoder(6, (5, 4), 3, seed=3)
    assert ae.params["enc.0.W"].shape == (6, 5)
    assert ae.params["enc.1.W"].shape == (5, 4)
    assert ae.params["enc.z.W"].shape == (4, 3)
    assert ae.params["dec.0.W"].shape == (3, 4)
    assert ae.params["dec.1.W"].shape == (4, 5)
    assert ae.params["dec.out.W"].shape == (5, 6)
    assert all(v.dtype == np.float32 for v in ae.params.values())
    assert ae.encode(_data()).dtype == np.float32
    again = Autoencoder(6, (5, 4), 3, seed=3)
    for name in ae.params:
        np.testing.assert_array_equal(ae.params[name], again.params[name])
    other = Autoencoder(6, (5, 4), 3, seed=4)
    assert not np.array_equal(ae.params["enc.0.W"], other.params["enc.0.W"])
    assert "6 -> 5 -> 4 -> 3" in repr(ae)


def test_given_params_are_used_and_checked():
    source = Autoencoder(6, (), 2, output="linear", seed=0, dtype=np.float64)
    ae = Autoencoder(6, (), 2, output="linear", dtype=np.float64, params=source.params)
    assert ae.params is source.params
    bad = dict(source.params)
    bad["enc.z.W"] = np.zeros((6, 3))
    with pytest.raises(ValueError, match="shape"):
        Autoencoder(6, (), 2, output="linear", params=bad)
    with pytest.raises(ValueError, match="keys"):
        Autoencoder(6, (), 2, output="linear", params={"enc.z.W": np.zeros((6, 2))})


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(activation="gelu"), "activation"),
        (dict(output="poisson"), "output"),
        (dict(latent_dim=0), "positive"),
        (dict(hidden_dims=(4, -1)), "positive"),
    ],
)
def test_bad_configurations_are_refused(kwargs, match):
    args = dict(input_dim=6, hidden_dims=(4,), latent_dim=2)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        Autoencoder(**args)


def test_wrong_input_width_is_refused():
    ae = Autoencoder(6, (4,), 2)
    with pytest.raises(ValueError, match=r"\(N, 6\)"):
        ae.encode(np.zeros((3, 5)))
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        ae.decode(np.zeros((3, 3)))


# -- PCA ---------------------------------------------------------------------------------------


def _anisotropic(n=200, d=5, seed=0):
    rng = np.random.default_rng(seed)
    rotation, _ = np.linalg.qr(rng.normal(size=(d, d)))
    scales = np.array([4.0, 2.0, 1.0, 0.5, 0.2])[:d]
    return rng.normal(size=(n, d)) * scales @ rotation + rng.normal(size=d)


def test_pca_matches_the_covariance_eigenvectors():
    x = _anisotropic()
    mean, comps = pca(x, 3)
    np.testing.assert_allclose(mean, x.mean(axis=0))
    np.testing.assert_allclose(comps @ comps.T, np.eye(3), atol=1e-12)
    cov = np.cov(x, rowvar=False, bias=True)
    values, vectors = np.linalg.eigh(cov)
    top = vectors[:, ::-1][:, :3].T
    for row, want in zip(comps, top, strict=True):
        assert min(np.abs(row - want).max(), np.abs(row + want).max()) < 1e-10
    # the variance along each component is its eigenvalue, in decreasing order
    variances = np.var((x - mean) @ comps.T, axis=0)
    np.testing.assert_allclose(variances, values[::-1][:3], rtol=1e-10)


def test_pca_sign_convention_and_reconstruction_error():
    x = _anisotropic()
    mean, comps = pca(x, 2)
    biggest = comps[np.arange(2), np.argmax(np.abs(comps), axis=1)]
    assert np.all(biggest > 0)
    recon = mean + (x - mean) @ comps.T @ comps
    error = np.mean(np.sum((recon - x) ** 2, axis=1))
    eigenvalues = np.linalg.eigvalsh(np.cov(x, rowvar=False, bias=True))[::-1]
    assert error == pytest.approx(eigenvalues[2:].sum(), rel=1e-10)


def test_pca_refuses_bad_k():
    with pytest.raises(ValueError, match="k must be"):
        pca(np.zeros((4, 3)), 4)
    with pytest.raises(ValueError, match="k must be"):
        pca(np.zeros((4, 3)), 0)


# -- principal angles --------------------------------------------------------------------------


def test_principal_angles_of_known_subspaces():
    e = np.eye(4)
    # the same plane, given by another basis
    a = e[:, :2]
    np.testing.assert_allclose(principal_angles(a, a @ np.array([[2.0, 1.0], [1.0, 3.0]])),
                               [0.0, 0.0], atol=1e-7)
    # orthogonal planes
    np.testing.assert_allclose(principal_angles(e[:, :2], e[:, 2:]), [np.pi / 2] * 2)
    # planes sharing one axis, the other pair at 30 degrees
    t = np.radians(30.0)
    b = np.stack([e[:, 0], np.cos(t) * e[:, 1] + np.sin(t) * e[:, 2]], axis=1)
    np.testing.assert_allclose(principal_angles(a, b), [0.0, t], atol=1e-7)


def test_principal_angles_are_symmetric_and_ascending():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(8, 3)), rng.normal(size=(8, 3))
    ab = principal_angles(a, b)
    np.testing.assert_allclose(ab, principal_angles(b, a), atol=1e-12)
    assert np.all(np.diff(ab) >= 0)
    assert np.all((ab >= 0) & (ab <= np.pi / 2))
    assert principal_angles(a, b[:, :2]).shape == (2,)


# -- training ----------------------------------------------------------------------------------


def test_fit_is_deterministic_and_lowers_the_loss():
    x = _data(n=40, d=6)
    runs = []
    for _ in range(2):
        ae = Autoencoder(6, (8,), 2, output="bernoulli", seed=0, dtype=np.float64)
        before = ae.loss(x)
        history = fit(ae, x, epochs=5, lr=1e-2, batch_size=8, seed=0)
        runs.append((history, ae.params["dec.out.W"].copy()))
        assert len(history) == 5
        assert ae.loss(x) < before
    assert runs[0][0] == runs[1][0]
    np.testing.assert_array_equal(runs[0][1], runs[1][1])


def test_fit_uses_the_given_gradient_function_schedule_and_callback():
    x = _data(n=12, d=6)
    ae = Autoencoder(6, (), 2, output="linear", seed=0, dtype=np.float64)
    calls, seen_lr = [], []

    def loss_and_grads(params, xb):
        calls.append(len(xb))
        return Autoencoder(6, (), 2, output="linear", dtype=np.float64,
                           params=params).loss_and_grads(xb)

    def schedule(epoch):
        seen_lr.append(epoch)
        return 0.1 if epoch == 0 else 0.01

    epochs_seen = []
    fit(ae, x, epochs=2, lr=schedule, batch_size=5, loss_and_grads=loss_and_grads,
        on_epoch=lambda epoch, model: epochs_seen.append((epoch, model is ae)))
    assert calls == [5, 5, 2, 5, 5, 2]
    assert epochs_seen == [(0, True), (1, True)]
    assert 0 in seen_lr and 1 in seen_lr


def test_fit_refuses_bad_arguments_and_stops_on_nan():
    ae = Autoencoder(6, (), 2, output="linear", dtype=np.float64)
    x = _data()
    with pytest.raises(ValueError, match="batch_size"):
        fit(ae, x, epochs=1, batch_size=0)
    with pytest.raises(ValueError, match="epochs"):
        fit(ae, x, epochs=-1)
    with pytest.raises(FloatingPointError, match="loss"):
        fit(ae, x, epochs=1, loss_and_grads=lambda p, xb: (float("nan"), None))


def test_a_trained_linear_autoencoder_finds_the_pca_subspace():
    x = _anisotropic(n=300, d=5)
    ae = Autoencoder(5, (), 2, output="linear", seed=0, dtype=np.float64)
    fit(ae, x, epochs=150, lr=lambda e: 3e-2 if e < 100 else 3e-3, batch_size=50, seed=0)
    mean, comps = pca(x, 2)
    angles = np.degrees(principal_angles(ae.params["dec.out.W"].T, comps.T))
    assert angles.max() < 1.0
    best = np.mean(np.sum((mean + (x - mean) @ comps.T @ comps - x) ** 2, axis=1))
    assert ae.loss(x) == pytest.approx(best, rel=1e-3)
