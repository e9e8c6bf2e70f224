"""The conditional VAE (lesson 09): labels enter both networks' first layers and nothing
else; gradients against central differences; the labels' checks; PyTorch parity."""

from __future__ import annotations

import numpy as np
import pytest

from vae_from_scratch import VAE
from vae_from_scratch.evaluate import iwae_nll, negative_elbo
from vae_from_scratch.gradcheck import check_model_gradients

pytestmark = pytest.mark.lesson09

D, K = 6, 3
TOL = 1e-6

CASES = {
    "mlp-bern-analytic": dict(hidden_dims=(5,), latent_dim=2),
    "mlp-bern-mc-tanh": dict(hidden_dims=(7, 5), latent_dim=3, kl="monte_carlo",
                             activation="tanh"),
    "mlp-gauss-learned": dict(hidden_dims=(5,), latent_dim=2, likelihood="gaussian",
                              obs_var="learned", beta=0.5),
    "mlp-gauss-fixed-mc": dict(hidden_dims=(5,), latent_dim=2, likelihood="gaussian",
                               obs_var=0.5, kl="monte_carlo"),
    "mlp-mixture": dict(hidden_dims=(5,), latent_dim=2, prior="mixture", n_components=2),
    "mlp-no-hidden": dict(hidden_dims=(), latent_dim=2),
    "mlp-cb-mc": dict(hidden_dims=(5,), latent_dim=2, likelihood="continuous_bernoulli",
                      kl="monte_carlo"),
}


def _case(kwargs, dtype=np.float64, n=7, seed=0):
    vae = VAE(D, n_classes=K, seed=seed, dtype=dtype, **kwargs)
    rng = np.random.default_rng(seed + 10)
    for value in vae.params.values():
        value += (0.1 * rng.standard_normal(value.shape)).astype(dtype)
    x = rng.random((n, D)).astype(dtype)
    eps = rng.standard_normal((n, vae.latent_dim)).astype(dtype)
    y = rng.integers(0, K, n)
    return vae, x, eps, y


@pytest.mark.parametrize("name", list(CASES))
def test_conditional_gradients_match_central_differences(name):
    vae, x, eps, y = _case(CASES[name])
    errors = check_model_gradients(vae, x, eps, y=y)
    assert set(errors) == set(vae.params)
    bad = {k: v for k, v in errors.items() if not v < TOL}
    assert not bad, bad


def test_the_label_changes_the_loss_and_only_first_layer_label_rows_see_it():
    vae, x, eps, y = _case(CASES["mlp-bern-analytic"])
    other = (y + 1) % K
    assert vae.loss(x, eps, y).loss != vae.loss(x, eps, other).loss
    _, grads = vae.loss_and_grads(x, eps, y)
    assert grads["enc.0.W"].shape == (D + K, 5) and grads["dec.0.W"].shape == (2 + K, 5)
    # a batch of label 0 only: the first layers' weight rows of labels 1 and 2 get no
    # gradient (their one-hot input is 0), the row of label 0 does
    _, g0 = vae.loss_and_grads(x[:3], eps[:3], np.zeros(3, dtype=int))
    for name, width in (("enc.0.W", D), ("dec.0.W", vae.latent_dim)):
        label_rows = g0[name][width:]
        assert np.all(label_rows[1:] == 0) and np.any(label_rows[0] != 0), name


def test_a_class_label_is_an_input_like_any_other():
    """Concatenating the one-hot by hand and using an unconditional model on the wider
    input gives the encoder's output exactly."""
    vae, x, _, y = _case(CASES["mlp-bern-analytic"])
    onehot = np.eye(K)[y]
    h = np.maximum(np.hstack([x, onehot]) @ vae.params["enc.0.W"] + vae.params["enc.0.b"], 0)
    mu = h @ vae.params["enc.mu.W"] + vae.params["enc.mu.b"]
    np.testing.assert_allclose(vae.encode(x, y)[0], mu, rtol=1e-12)


def test_labels_are_checked():
    vae, x, eps, y = _case(CASES["mlp-bern-analytic"])
    with pytest.raises(ValueError, match="conditional .*pass the labels y"):
        vae.loss(x, eps)
    with pytest.raises(ValueError, match=r"must have shape \(7,\)"):
        vae.loss(x, eps, y[:3])
    with pytest.raises(ValueError, match=r"in 0\.\.2, got values from"):
        vae.encode(x, np.full(7, 3))
    with pytest.raises(ValueError, match=r"in 0\.\.2"):
        vae.encode(x, np.full(7, -1))
    with pytest.raises(ValueError, match="must be integers"):
        vae.encode(x, y.astype(float))
    with pytest.raises(ValueError, match="must be integers"):
        vae.encode(x, y > 0)
    plain = VAE(D, (5,), 2)
    with pytest.raises(ValueError, match="not conditional"):
        plain.encode(x.astype(np.float32), y)
    with pytest.raises(ValueError, match="n_classes must be an integer >= 2"):
        VAE(D, (5,), 2, n_classes=1)
    with pytest.raises(ValueError, match="n_classes"):
        VAE(D, (5,), 2, n_classes=2.5)


def test_sample_reconstruct_and_evaluate_take_labels():
    vae, x, _, y = _case(CASES["mlp-bern-analytic"])
    s = vae.sample(4, y=np.array([0, 1, 2, 0]), seed=0)
    assert s.shape == (4, D) and np.all((s > 0) & (s < 1))
    np.testing.assert_array_equal(vae.sample(3, y=2, seed=1), vae.sample(3, y=[2, 2, 2], seed=1))
    assert not np.allclose(vae.sample(3, y=0, seed=1), vae.sample(3, y=1, seed=1))
    with pytest.raises(ValueError, match="pass the labels"):
        vae.sample(3)
    assert vae.reconstruct(x, y).shape == x.shape
    nelbo, recon, kl = negative_elbo(vae, x, y=y)
    assert np.isfinite(nelbo) and nelbo == pytest.approx(recon + kl)
    # batches split the labels with the data
    assert negative_elbo(vae, x, y=y, batch_size=3) == pytest.approx(
        negative_elbo(vae, x, y=y), rel=1e-12)
    iw = iwae_nll(vae, x, k=5, y=y, batch_size=2)
    assert iw == pytest.approx(iwae_nll(vae, x, k=5, y=y), rel=1e-12)
    assert iw < nelbo + 5  # a bound of the same scale


# --- PyTorch parity -------------------------------------------------------------------------


@pytest.mark.torch
@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def test_conditional_parity_with_torch(name, dtype):
    from tests.parity import TOL, assert_parity, torch

    vae, x, eps, y = _case(CASES[name], dtype=dtype)
    tvae = assert_parity(vae, x, eps, y)
    tol = TOL[dtype]
    np.testing.assert_allclose(tvae.encode(x, y)[0].detach().numpy(), vae.encode(x, y)[0],
                               rtol=tol, atol=tol)
    with pytest.raises(ValueError, match="pass the labels"):
        tvae.encode(x)
    assert tvae.sample(3, y=1, seed=0).shape == (3, D)
    # one label for all n, as the NumPy model takes it: an int, a NumPy or a 0-d torch one
    three = tvae.sample(3, y=torch.tensor([1, 1, 1]), seed=0)
    for one in (1, np.int64(1), torch.tensor(1)):
        torch.testing.assert_close(tvae.sample(3, y=one, seed=0), three, rtol=0, atol=0)
    with pytest.raises(ValueError, match="must be integers"):
        tvae.sample(3, y=torch.tensor(1.0))


# --- training carries the labels with their images -------------------------------------------


def _labelled_data(n=40, seed=3):
    rng = np.random.default_rng(seed)
    x = rng.random((n, D))
    return x, rng.integers(0, K, n)


def test_numpy_backend_shuffles_and_batches_labels_with_their_images():
    from vae_from_scratch.train import NumpyBackend, fit

    x, y = _labelled_data()
    vae = VAE(D, (5,), 2, n_classes=K, seed=0, dtype=np.float64)
    seen = []
    real = vae.loss_and_grads

    def recording(xb, eps, yb=None, *, beta=None):
        seen.append((np.array(xb), np.array(yb)))
        return real(xb, eps, yb, beta=beta)

    vae.loss_and_grads = recording
    history = fit(NumpyBackend(vae, x, y, batch_size=16), x[:10], epochs=2, y_test=y[:10],
                  progress=False)
    assert len(seen) == 6 and np.all(np.isfinite(history.test_nelbo))
    label_of = {row.tobytes(): label for row, label in zip(x, y, strict=True)}
    for xb, yb in seen:
        assert [label_of[row.tobytes()] for row in xb] == yb.tolist()
    with pytest.raises(ValueError, match="pass the labels y_train"):
        NumpyBackend(vae, x)
    with pytest.raises(ValueError, match="labels y_test"):
        fit(NumpyBackend(VAE(D, (5,), 2, n_classes=K), x, y), x[:5], epochs=1,
            y_test=np.full(5, K), progress=False)


@pytest.mark.torch
def test_torch_backend_trains_a_conditional_model_with_its_labels():
    import torch

    from vae_from_scratch.torch_vae import TorchBackend
    from vae_from_scratch.train import fit

    x, y = _labelled_data()
    vae = VAE(D, (5,), 2, n_classes=K, seed=0, dtype=np.float64)
    backend = TorchBackend(vae, x, torch.from_numpy(y), batch_size=16, device="cpu")
    history = fit(backend, x[:10], epochs=2, y_test=y[:10], progress=False)
    assert np.all(np.isfinite(history.test_nelbo))
    trained = backend.to_vae()
    # the evaluation used the labels: the same figure as the NumPy evaluation with them
    from vae_from_scratch.train import EVAL_SEED

    assert history.test_nelbo[-1] == pytest.approx(
        negative_elbo(trained, x[:10], seed=EVAL_SEED, y=y[:10])[0], rel=1e-10)
    with pytest.raises(ValueError, match="pass the labels y_train"):
        TorchBackend(vae, x, device="cpu")
