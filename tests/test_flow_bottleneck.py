"""Tests for vae_from_scratch.flow_bottleneck: the planar and IAF bottlenecks of the VAE.
Every parameter's gradient through the VAE's loss against central differences in float64
with frozen noise, the gradient with respect to the local variational parameters (what the
gap estimate climbs), the Gaussian family against the VAE's own bottleneck, the
configuration's refusals, training with the package's loop, and the PyTorch mirror."""

from __future__ import annotations

import numpy as np
import pytest

from vae_from_scratch import gaps
from vae_from_scratch.config import VAEConfig
from vae_from_scratch.evaluate import iwae_nll, negative_elbo
from vae_from_scratch.flow_bottleneck import GaussianFamily, local_bottleneck
from vae_from_scratch.gradcheck import check_model_gradients, numerical_gradient, rel_error
from vae_from_scratch.train import NumpyBackend, fit
from vae_from_scratch.vae import VAE

pytestmark = [pytest.mark.lesson12]

TOL = 1e-7

CONFIGS = [
    ("gaussian", dict()),
    ("gaussian-mc-tanh-gauss-learned", dict(activation="tanh", likelihood="gaussian",
                                            obs_var="learned", kl="monte_carlo")),
    ("planar-2", dict(bottleneck="planar", flow_steps=2)),
    ("planar-1-tanh-beta", dict(bottleneck="planar", flow_steps=1, activation="tanh",
                                beta=0.5)),
    ("planar-2-mixture", dict(bottleneck="planar", flow_steps=2, prior="mixture",
                              n_components=3)),
    ("iaf-2", dict(bottleneck="iaf", flow_steps=2, activation="tanh")),
    ("iaf-1-gauss", dict(bottleneck="iaf", flow_steps=1, likelihood="gaussian", obs_var=0.5)),
]
IDS = [c[0] for c in CONFIGS]
D, H, L = 10, (7,), 3


def _data(n=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, D)), rng.standard_normal((n, L))


def _model(options, seed=0):
    vae = VAE(D, H, L, dtype=np.float64, seed=seed, **options)
    rng = np.random.default_rng(seed + 50)
    for name in ("dec.log_var", "prior.log_vars", "prior.logits"):  # off their zeros
        if name in vae.params:
            vae.params[name] = 0.3 * rng.standard_normal(vae.params[name].shape)
    for k in range(vae.config.flow_steps if vae.config.bottleneck == "iaf" else 0):
        # the IAF's gates start saturated (sigmoid(5)), where central differences lose
        # digits: check the gradient at a generic gate bias
        vae.params[f"flow.{k}.2.b"] = rng.standard_normal(2 * L)
    return vae


@pytest.mark.parametrize("name, options", CONFIGS, ids=IDS)
def test_every_gradient_matches_central_differences(name, options):
    model = _model(options)
    x, eps = _data()
    errors = check_model_gradients(model, x, eps)
    assert set(errors) == set(model.params)
    worst = max(errors, key=errors.get)
    assert errors[worst] < TOL, (worst, errors[worst])


@pytest.mark.parametrize("name, options", CONFIGS, ids=IDS)
def test_gradient_with_respect_to_the_local_parameters(name, options):
    model = _model(options, seed=1)
    x, eps = _data(seed=1)
    local = gaps.encode_local(model, x)
    elbo, dlocal = gaps.local_elbo_and_grads(model, x, local, eps)
    assert set(dlocal) == set(local)
    for k, v in local.items():
        v = v.copy()
        probe = dict(local, **{k: v})

        def f(probe=probe):
            return np.sum(gaps.local_elbo(model, x, probe, eps))

        assert rel_error(dlocal[k], numerical_gradient(f, v)) < TOL, k
    np.testing.assert_allclose(elbo, -np.sum(model.elbo_terms(x, eps), axis=0), rtol=1e-12)


def test_each_example_gets_the_gradient_of_its_own_elbo():
    model = _model(CONFIGS[5][1])
    x, eps = _data(n=6)
    local = gaps.encode_local(model, x)
    _, dlocal = gaps.local_elbo_and_grads(model, x, local, eps)
    one = {k: v[2:3] for k, v in local.items()}
    _, d_one = gaps.local_elbo_and_grads(model, x[2:3], one, eps[2:3])
    for k in local:
        np.testing.assert_allclose(dlocal[k][2:3], d_one[k], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("kl", ["analytic", "monte_carlo"])
def test_the_gaussian_family_is_the_vae_s_own_bottleneck(kl):
    vae = VAE(D, H, L, dtype=np.float64, seed=4, kl=kl)
    family = local_bottleneck(vae)
    assert isinstance(family, GaussianFamily)
    x, eps = _data()
    h, _ = vae.encoder.forward(vae.params, x)
    assert family.param_shapes(H[-1]) == vae.bottleneck.param_shapes(H[-1])
    fresh_a, fresh_b = {}, {}
    family.init_params(np.random.default_rng(3), fresh_a, H[-1])
    vae.bottleneck.init_params(np.random.default_rng(3), fresh_b, H[-1])
    for k in fresh_a:
        np.testing.assert_array_equal(fresh_a[k], fresh_b[k])
    z_a, cache_a = family.forward(vae.params, h, eps, None, kl)
    z_b, cache_b = vae.bottleneck.forward(vae.params, h, eps, None, kl)
    np.testing.assert_allclose(z_a, z_b, rtol=1e-14)
    np.testing.assert_allclose(family.rate(cache_a), vae.bottleneck.rate(cache_b), rtol=1e-12)
    dz = np.random.default_rng(1).standard_normal(z_a.shape)
    dkl = np.full(len(x), 0.3)
    g_a, g_b = {}, {}
    dh_a = family.backward(dz, dkl, cache_a, g_a)
    dh_b = vae.bottleneck.backward(dz, dkl, cache_b, g_b)
    np.testing.assert_allclose(dh_a, dh_b, rtol=1e-12, atol=1e-15)
    for k in g_b:
        np.testing.assert_allclose(g_a[k], g_b[k], rtol=1e-12, atol=1e-15)


def test_the_flows_code_is_the_flow_of_the_mean():
    model = _model(CONFIGS[2][1])
    x, _ = _data()
    h, _ = model.encoder.forward(model.params, x)
    local, _ = model.bottleneck.local(model.params, h)
    z0 = np.zeros((len(x), L))
    z, _ = model.bottleneck.sample(model.params, local, z0, None, "monte_carlo", H[-1])
    np.testing.assert_array_equal(model.bottleneck.code(model.params, h), z)
    assert not np.allclose(z, local["mu"])  # the flow moved it
    np.testing.assert_allclose(model.encode(x)[0], local["mu"])


def test_a_fresh_iaf_is_close_to_the_identity():
    # the gate starts at sigmoid(5) = 0.99: z_K is nearly z_0, log det = sum log sigma small
    model = VAE(D, H, L, dtype=np.float64, bottleneck="iaf", flow_steps=8)
    x, eps = _data()
    h, _ = model.encoder.forward(model.params, x)
    local, _ = model.bottleneck.local(model.params, h)
    z, cache = model.bottleneck.sample(model.params, local, eps, None, "monte_carlo", H[-1])
    z0 = local["mu"] + np.exp(0.5 * local["log_var"]) * eps
    assert np.max(np.abs(z - z0)) < 0.2
    assert model.config.kl_mode == "monte_carlo"


def test_refusals():
    with pytest.raises(ValueError, match="flow_steps >= 1"):
        VAEConfig(bottleneck="planar")
    with pytest.raises(ValueError, match="flow_steps belongs to bottleneck='planar' or 'iaf'"):
        VAEConfig(flow_steps=2)
    with pytest.raises(ValueError, match="top_latent_dim belongs to bottleneck='two_level'"):
        VAEConfig(bottleneck="iaf", flow_steps=2, top_latent_dim=4)
    with pytest.raises(ValueError, match="does not split over dimensions"):
        VAEConfig(bottleneck="iaf", flow_steps=2, free_bits=0.5)
    with pytest.raises(ValueError, match="bottleneck's KL has no closed form"):
        VAEConfig(bottleneck="planar", flow_steps=2, kl="analytic")
    with pytest.raises(ValueError, match="unknown bottleneck 'maf'; expected one of gaussian"):
        VAEConfig(bottleneck="maf")
    with pytest.raises(ValueError, match="flow_steps must be an integer >= 0"):
        VAEConfig(bottleneck="planar", flow_steps=-1)
    model = _model(CONFIGS[2][1])
    x, eps = _data()
    with pytest.raises(ValueError, match="no analytic KL"):
        model.elbo_terms(x, eps, kl="analytic")
    with pytest.raises(ValueError, match=r"eps must have shape \(5, 3\)"):
        model.loss(x, eps[:, :2])
    params = dict(model.params)
    del params["enc.flow.W"]
    with pytest.raises(ValueError, match=r"missing \['enc.flow.W'\]"):
        VAE(D, H, L, bottleneck="planar", flow_steps=2, params=params)
    params = dict(model.params, **{"enc.flow.W": np.zeros((2, 2))})
    with pytest.raises(ValueError, match="enc.flow.W"):
        VAE(D, H, L, bottleneck="planar", flow_steps=2, params=params)


def test_a_config_round_trips_through_its_dict():
    config = VAEConfig(bottleneck="iaf", flow_steps=8)
    assert VAEConfig.from_dict(config.to_dict()) == config
    # a checkpoint written before these fields existed reads as the Gaussian bottleneck
    old = {k: v for k, v in VAEConfig().to_dict().items()
           if k not in ("bottleneck", "flow_steps", "top_latent_dim")}
    assert VAEConfig.from_dict(old).bottleneck == "gaussian"


@pytest.mark.parametrize("options", [dict(bottleneck="iaf", flow_steps=2),
                                     dict(bottleneck="planar", flow_steps=2)])
def test_trains_with_the_package_loop_and_repeats_bit_for_bit(options):
    rng = np.random.default_rng(0)
    prototypes, label = rng.random((2, D)), rng.integers(0, 2, 50)  # two kinds of pattern
    x = (rng.random((50, D)) < prototypes[label]).astype(float)
    x_train, x_test = x[:40], x[40:]
    runs = []
    for _ in range(2):
        model = VAE(D, H, L, seed=0, **options)
        history = fit(NumpyBackend(model, x_train, batch_size=8, seed=0, lr=3e-3), x_test,
                      epochs=10, progress=False)
        runs.append((model, history))
    (m1, h1), (m2, h2) = runs
    assert h1.test_nelbo == h2.test_nelbo
    assert h1.test_nelbo[-1] < h1.test_nelbo[0]
    for k in m1.params:
        np.testing.assert_array_equal(m1.params[k], m2.params[k])
    nelbo, _, _ = negative_elbo(m1, x_test)
    assert iwae_nll(m1, x_test, k=20) <= nelbo + 1.0
    assert m1.sample(3).shape == (3, D)


# --- PyTorch -------------------------------------------------------------------------------


@pytest.mark.torch
@pytest.mark.parametrize("name, options", CONFIGS, ids=IDS)
def test_torch_mirror_matches_loss_and_gradients(name, options):
    pytest.importorskip("torch", reason="PyTorch is not installed")
    from tests.parity import assert_parity

    model = _model(options, seed=2)
    x, eps = _data(seed=2)
    assert_parity(model, x, eps)
    assert_parity(model, x, eps, beta=0.3)


@pytest.mark.torch
@pytest.mark.parametrize("name, options", CONFIGS, ids=IDS)
def test_torch_mirror_matches_the_local_gradient(name, options):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    from vae_from_scratch.torch_vae import TorchVAE
    from vae_from_scratch.torch_vae.flows import local_elbo, tensors

    model = _model(options, seed=3)
    x, eps = _data(seed=3)
    local = gaps.encode_local(model, x)
    elbo, dlocal = gaps.local_elbo_and_grads(model, x, local, eps)
    tvae = TorchVAE.from_numpy(model, device="cpu")
    tlocal = tensors(local, requires_grad=True)
    t_elbo = local_elbo(tvae, tvae.params, torch.tensor(x), tlocal, torch.tensor(eps))
    t_elbo.sum().backward()
    assert rel_error(t_elbo.detach().numpy(), elbo) < 1e-12
    for k, v in tlocal.items():
        assert rel_error(v.grad.numpy(), dlocal[k]) < 1e-10, k


@pytest.mark.torch
def test_the_torch_mirror_samples_and_reconstructs():
    pytest.importorskip("torch", reason="PyTorch is not installed")
    from vae_from_scratch.torch_vae import TorchVAE

    model = _model(CONFIGS[5][1])
    x, _ = _data()
    tvae = TorchVAE.from_numpy(model, device="cpu")
    np.testing.assert_allclose(tvae.reconstruct(x).numpy(), model.reconstruct(x), rtol=1e-12)
    assert tuple(tvae.sample(4).shape) == (4, D)
