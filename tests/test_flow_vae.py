"""Tests for vae_from_scratch.flow_vae: the VAE with a flow posterior. Every parameter's
gradient against central differences in float64 with frozen noise, the gradient with respect
to the local variational parameters (what the gap estimate climbs), agreement with vae.VAE
for the Gaussian posterior, training with the package's loop, and the PyTorch mirror."""

from __future__ import annotations

import numpy as np
import pytest

from vae_from_scratch.evaluate import iwae_nll, negative_elbo
from vae_from_scratch.flow_vae import FlowVAE
from vae_from_scratch.gradcheck import check_model_gradients, numerical_gradient, rel_error
from vae_from_scratch.train import NumpyBackend, fit
from vae_from_scratch.vae import VAE

pytestmark = [pytest.mark.lesson12]

TOL = 1e-7

CONFIGS = [
    ("gaussian", dict()),
    ("gaussian-tanh-gauss-learned", dict(activation="tanh", likelihood="gaussian",
                                         obs_var="learned")),
    ("planar-2", dict(posterior="planar", flow_steps=2)),
    ("planar-1-tanh-beta", dict(posterior="planar", flow_steps=1, activation="tanh", beta=0.5)),
    ("iaf-2-context", dict(posterior="iaf", flow_steps=2, context_dim=3, hidden_sizes=(6,),
                           activation="tanh")),
    ("iaf-3-global", dict(posterior="iaf", flow_steps=3, context_dim=0, hidden_sizes=(5, 4),
                          activation="tanh")),
    ("iaf-1-relu-gauss", dict(posterior="iaf", flow_steps=1, context_dim=2, hidden_sizes=(6,),
                              likelihood="gaussian", obs_var=0.5)),
]
IDS = [c[0] for c in CONFIGS]
D, H, L = 10, (7,), 3


def _data(n=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, D)), rng.standard_normal((n, L))


def _model(options, seed=0):
    return FlowVAE(D, H, L, dtype=np.float64, seed=seed, **options)


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
    local = model.encode_local(x)
    elbo, dlocal = model.local_elbo_and_grads(x, local, eps)
    assert set(dlocal) == set(local)
    for k, v in local.items():
        v = v.copy()
        probe = dict(local, **{k: v})

        def f(probe=probe):
            return np.sum(model.local_elbo(x, probe, eps))

        assert rel_error(dlocal[k], numerical_gradient(f, v)) < TOL, k
    np.testing.assert_allclose(elbo, -np.sum(model.elbo_terms(x, eps), axis=0), rtol=1e-12)


def test_each_example_gets_the_gradient_of_its_own_elbo():
    model = _model(CONFIGS[4][1])
    x, eps = _data(n=6)
    local = model.encode_local(x)
    _, dlocal = model.local_elbo_and_grads(x, local, eps)
    one = {k: v[2:3] for k, v in local.items()}
    _, d_one = model.local_elbo_and_grads(x[2:3], one, eps[2:3])
    for k in local:
        np.testing.assert_allclose(dlocal[k][2:3], d_one[k], rtol=1e-12, atol=1e-14)


def test_the_gaussian_posterior_is_the_vae_itself():
    x, eps = _data()
    vae = VAE(D, H, L, dtype=np.float64, seed=4)
    model = FlowVAE(D, H, L, dtype=np.float64, seed=4)
    assert model.params.keys() == vae.params.keys()
    for k in vae.params:
        np.testing.assert_array_equal(model.params[k], vae.params[k])
    terms, grads = model.loss_and_grads(x, eps)
    v_terms, v_grads = vae.loss_and_grads(x, eps)
    assert terms == v_terms
    for k in grads:
        np.testing.assert_allclose(grads[k], v_grads[k], rtol=1e-13, atol=1e-15)
    # and its Monte Carlo KL is the VAE's
    mc = VAE(D, H, L, dtype=np.float64, seed=4, kl="monte_carlo")
    np.testing.assert_allclose(model.elbo_terms(x, eps, kl="monte_carlo"),
                               mc.elbo_terms(x, eps), rtol=1e-12)


def test_the_gaussian_can_train_with_the_flows_kl_estimator():
    x, eps = _data()
    vae = VAE(D, H, L, dtype=np.float64, seed=4, kl="monte_carlo")
    model = FlowVAE(D, H, L, dtype=np.float64, seed=4, kl="monte_carlo")
    terms, grads = model.loss_and_grads(x, eps)
    v_terms, v_grads = vae.loss_and_grads(x, eps)
    assert terms.loss == pytest.approx(v_terms.loss, rel=1e-13)
    for k in grads:
        np.testing.assert_allclose(grads[k], v_grads[k], rtol=1e-12, atol=1e-14)
    assert FlowVAE.from_vae(vae).kl == "monte_carlo"
    assert FlowVAE.from_vae(VAE(D, H, L)).kl == "analytic"
    with pytest.raises(ValueError, match="no analytic KL"):
        FlowVAE(D, H, L, posterior="planar", flow_steps=1, kl="analytic")
    with pytest.raises(ValueError, match="unknown kl"):
        FlowVAE(D, H, L, kl="exact")


def test_from_vae_copies_a_trained_model():
    vae = VAE(D, H, L, dtype=np.float64, seed=5)
    model = FlowVAE.from_vae(vae)
    x, eps = _data()
    assert model.loss(x, eps) == vae.loss(x, eps)
    model.params["enc.mu.b"][0] += 1  # a copy: the VAE is untouched
    assert vae.loss(x, eps) != model.loss(x, eps)
    with pytest.raises(ValueError, match="unconditional MLP VAE"):
        FlowVAE.from_vae(VAE(D, H, L, n_classes=3))


def test_a_flow_at_initialisation_is_close_to_its_gaussian():
    x, eps = _data()
    gauss = _model({})
    for options in (dict(posterior="planar", flow_steps=4),
                    dict(posterior="iaf", flow_steps=4, context_dim=3)):
        flow = _model(options)
        for k in gauss.params:
            np.testing.assert_array_equal(flow.params[k], gauss.params[k])
        assert abs(flow.loss(x, eps).loss - gauss.loss(x, eps).loss) < 5


def test_refusals():
    model = _model(CONFIGS[2][1])
    x, eps = _data()
    with pytest.raises(ValueError, match="no analytic KL"):
        model.elbo_terms(x, eps, kl="analytic")
    with pytest.raises(ValueError, match="eps must have shape"):
        model.loss(x, eps[:, :2])
    with pytest.raises(ValueError, match="not conditional"):
        model.loss(x, eps, np.zeros(5, dtype=int))
    params = dict(model.params)
    del params["enc.flow.W"]
    with pytest.raises(ValueError, match=r"missing \['enc.flow.W'\]"):
        _model(CONFIGS[2][1]).__class__(D, H, L, posterior="planar", flow_steps=2,
                                        params=params)
    params = dict(model.params, **{"enc.flow.W": np.zeros((2, 2))})
    with pytest.raises(ValueError, match="enc.flow.W"):
        FlowVAE(D, H, L, posterior="planar", flow_steps=2, params=params)


def test_params_round_trip():
    model = _model(CONFIGS[4][1], seed=3)
    again = FlowVAE(D, H, L, dtype=np.float64, params=model.params, **CONFIGS[4][1])
    x, eps = _data()
    assert again.loss(x, eps) == model.loss(x, eps)


def test_trains_with_the_package_loop_and_repeats_bit_for_bit():
    rng = np.random.default_rng(0)
    x_train, x_test = rng.random((40, D)), rng.random((10, D))
    runs = []
    for _ in range(2):
        model = FlowVAE(D, H, L, posterior="iaf", flow_steps=2, context_dim=2,
                        hidden_sizes=(6,), seed=0)
        history = fit(NumpyBackend(model, x_train, batch_size=8, seed=0), x_test, epochs=3,
                      progress=False)
        runs.append((model, history))
    (m1, h1), (m2, h2) = runs
    assert h1.test_nelbo == h2.test_nelbo
    assert h1.test_nelbo[-1] < h1.test_nelbo[0]
    for k in m1.params:
        np.testing.assert_array_equal(m1.params[k], m2.params[k])
    nelbo, _, _ = negative_elbo(m1, x_test)
    assert iwae_nll(m1, x_test, k=20) <= nelbo + 1.0


# --- PyTorch -------------------------------------------------------------------------------


@pytest.mark.torch
@pytest.mark.parametrize("name, options", CONFIGS, ids=IDS)
def test_torch_mirror_matches_loss_and_gradients(name, options):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    from vae_from_scratch.torch_vae.flows import TorchFlowVAE, tensors

    model = _model(options, seed=2)
    x, eps = _data(seed=2)
    terms, grads = model.loss_and_grads(x, eps)
    tp = tensors(model.params, requires_grad=True)
    loss, recon, kl = TorchFlowVAE(model).loss(tp, torch.tensor(x), torch.tensor(eps))
    loss.backward()
    assert rel_error(loss.item(), terms.loss) < 1e-12
    assert rel_error(recon.item(), terms.recon) < 1e-12
    assert rel_error(kl.item(), terms.kl) < 1e-10
    for k, p in tp.items():
        assert rel_error(p.grad.numpy(), grads[k]) < 1e-10, k


@pytest.mark.torch
@pytest.mark.parametrize("name, options", CONFIGS, ids=IDS)
def test_torch_mirror_matches_the_local_gradient(name, options):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    from vae_from_scratch.torch_vae.flows import TorchFlowVAE, tensors

    model = _model(options, seed=3)
    x, eps = _data(seed=3)
    local = model.encode_local(x)
    elbo, dlocal = model.local_elbo_and_grads(x, local, eps)
    tlocal = tensors(local, requires_grad=True)
    t_elbo = TorchFlowVAE(model).local_elbo(tensors(model.params), torch.tensor(x), tlocal,
                                            torch.tensor(eps))
    t_elbo.sum().backward()
    assert rel_error(t_elbo.detach().numpy(), elbo) < 1e-12
    for k, v in tlocal.items():
        assert rel_error(v.grad.numpy(), dlocal[k]) < 1e-10, k
