"""The convolutional VAE (lesson 08): the whole model's hand-derived gradients against
central differences and PyTorch autograd, for every likelihood, KL estimator and prior,
conditional or not; its configuration checks; and the same public API as the MLP VAE."""

from __future__ import annotations

import numpy as np
import pytest

from vae_from_scratch import VAE
from vae_from_scratch.gradcheck import check_model_gradients

pytestmark = pytest.mark.lesson08

TOL = 1e-6
N = 3

# Small images, so that central differences over every parameter stay quick; odd and even
# sizes, one and two channels, one and two convolutions.
CASES = {
    "8x8-bern-analytic": dict(image_shape=(1, 8, 8), channels=(2, 3), latent_dim=2),
    "7x9-bern-mc": dict(image_shape=(1, 7, 9), channels=(3,), latent_dim=3, kl="monte_carlo"),
    "2x6x6-gauss-learned": dict(image_shape=(2, 6, 6), channels=(2, 2), latent_dim=2,
                                likelihood="gaussian", obs_var="learned", beta=0.5),
    "8x8-gauss-fixed-mc": dict(image_shape=(1, 8, 8), channels=(3,), latent_dim=2,
                               likelihood="gaussian", obs_var=0.3, kl="monte_carlo"),
    "8x8-mixture": dict(image_shape=(1, 8, 8), channels=(2, 2), latent_dim=2, prior="mixture",
                        n_components=3),
    "9x9-cb": dict(image_shape=(1, 9, 9), channels=(2, 2), latent_dim=2,
                   likelihood="continuous_bernoulli"),
    "8x8-conditional": dict(image_shape=(1, 8, 8), channels=(2, 3), latent_dim=2, n_classes=3),
    "8x8-free-bits": dict(image_shape=(1, 8, 8), channels=(2,), latent_dim=3, free_bits=0.02),
}


def _case(name, dtype=np.float64, seed=0, n=N):
    kwargs = dict(CASES[name])
    d = int(np.prod(kwargs["image_shape"]))
    vae = VAE(d, architecture="conv", seed=seed, dtype=dtype, **kwargs)
    rng = np.random.default_rng(seed + 1)
    for key in ("dec.log_var", "prior.log_vars", "prior.logits"):
        if key in vae.params:
            vae.params[key] = (0.3 * rng.standard_normal(vae.params[key].shape)).astype(dtype)
    x = rng.random((n, d)).astype(dtype)
    eps = rng.standard_normal((n, vae.latent_dim)).astype(dtype)
    y = rng.integers(0, 3, n) if vae.config.n_classes else None
    return vae, x, eps, y


@pytest.mark.parametrize("name", list(CASES))
def test_conv_vae_gradients_match_central_differences(name):
    vae, x, eps, y = _case(name)
    errors = check_model_gradients(vae, x, eps, y=y)
    assert set(errors) == set(vae.params)
    bad = {k: v for k, v in errors.items() if not v < TOL}
    assert not bad, bad


def test_the_course_conv_vae_has_the_documented_shapes():
    vae = VAE(784, latent_dim=20, architecture="conv", channels=(32, 64), seed=0)
    assert vae.config.hidden_dims == () and vae.config.image_shape == (1, 28, 28)
    shapes = vae.param_shapes()
    assert shapes["enc.0.W"] == (32, 1, 4, 4) and shapes["enc.1.W"] == (64, 32, 4, 4)
    assert shapes["enc.mu.W"] == (3136, 20) and shapes["dec.0.W"] == (20, 3136)
    assert shapes["dec.1.W"] == (64, 32, 4, 4) and shapes["dec.out.W"] == (32, 1, 4, 4)
    x = np.random.default_rng(0).random((5, 784)).astype(np.float32)
    mu, log_var = vae.encode(x)
    assert mu.shape == (5, 20) and mu.dtype == np.float32
    assert vae.decode(mu).shape == (5, 784) and vae.reconstruct(x).shape == (5, 784)
    assert vae.sample(4, seed=0).shape == (4, 784)
    terms, grads = vae.loss_and_grads(x, np.zeros((5, 20), np.float32))
    assert all(grads[k].dtype == np.float32 and grads[k].shape == shapes[k] for k in shapes)
    assert np.isfinite(terms.loss)


def test_conv_init_bounds_are_pytorchs():
    vae = VAE(784, latent_dim=20, architecture="conv", seed=0, dtype=np.float64)
    for name, fan_in in (("enc.0.W", 16), ("enc.1.W", 32 * 16), ("dec.1.W", 32 * 16),
                         ("dec.out.W", 16)):
        w = np.abs(vae.params[name])
        assert w.max() <= 1 / np.sqrt(fan_in) and w.max() > 0.9 / np.sqrt(fan_in), name


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(image_shape=(1, 28, 27)), r"channels \* height \* width = input_dim = 784"),
        (dict(image_shape=(28, 28)), "image_shape must be"),
        (dict(image_shape=(1, 0, 784)), "image_shape must be"),
        (dict(channels=()), "channels must be a non-empty sequence"),
        (dict(channels=(32, 0)), "channels must be a non-empty sequence of positive integers"),
        (dict(channels=(32, -1)), "channels must be"),
        (dict(channels=(8, 8, 8, 8, 8)), "too small for 5 convolutions"),
        (dict(hidden_dims=(400,)), "hidden_dims belongs to architecture='mlp'"),
        (dict(architecture="mlp", channels=(32,)), "channels belongs to architecture='conv'"),
        (dict(architecture="cnn"), "unknown architecture 'cnn'"),
    ],
)
def test_bad_conv_configurations_are_refused(kwargs, message):
    kwargs = {"architecture": "conv", **kwargs}
    with pytest.raises(ValueError, match=message):
        VAE(784, latent_dim=2, **kwargs)


def test_non_square_input_needs_an_image_shape():
    with pytest.raises(ValueError, match="not a square image"):
        VAE(780, latent_dim=2, architecture="conv")
    vae = VAE(780, latent_dim=2, architecture="conv", image_shape=(3, 20, 13), channels=(4,))
    assert vae.sample(2).shape == (2, 780)


@pytest.mark.parametrize("name", list(CASES))
def test_checkpoints_keep_the_architecture(tmp_path, name):
    from vae_from_scratch.course.checkpoint import load_vae, save_checkpoint

    vae, x, eps, y = _case(name)
    loaded = load_vae(save_checkpoint(tmp_path / "m.safetensors", vae))
    assert loaded.config == vae.config
    assert loaded.loss(x, eps, y) == vae.loss(x, eps, y)


# --- PyTorch ------------------------------------------------------------------------------------


@pytest.mark.torch
@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def test_conv_vae_parity_with_torch_autograd(name, dtype):
    from tests.parity import assert_parity

    vae, x, eps, y = _case(name, dtype=dtype, n=5)
    back = assert_parity(vae, x, eps, y).to_numpy()
    for pname, value in vae.params.items():
        np.testing.assert_array_equal(back.params[pname], value)


@pytest.mark.torch
def test_the_torch_mirror_runs_the_course_conv_vae():
    import torch

    from vae_from_scratch.torch_vae import TorchVAE

    tvae = TorchVAE(784, latent_dim=20, architecture="conv", seed=0, device="cpu")
    vae = VAE(784, latent_dim=20, architecture="conv", seed=0)
    for name, p in tvae.params.items():
        np.testing.assert_array_equal(p.detach().numpy(), vae.params[name])
    x = torch.rand(4, 784, generator=torch.Generator().manual_seed(0))
    assert tvae.reconstruct(x).shape == (4, 784)
    assert tvae.sample(3, seed=0).shape == (3, 784)
