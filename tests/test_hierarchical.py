"""Tests for vae_from_scratch.hierarchical, the two-stochastic-layer VAE: every gradient
against central differences in float64 with frozen noise (free bits and warm-up's beta
included), the KL terms' conditioning, importance weights, active units per layer, and the
PyTorch mirror."""

from __future__ import annotations

import numpy as np
import pytest

from vae_from_scratch import distributions as dist
from vae_from_scratch.evaluate import iwae_nll, negative_elbo
from vae_from_scratch.gradcheck import check_model_gradients, rel_error
from vae_from_scratch.hierarchical import TwoLevelVAE
from vae_from_scratch.train import NumpyBackend, fit

pytestmark = [pytest.mark.lesson12]

D = 10
CONFIGS = [
    ("tanh", dict(latent_dims=(3, 2), top_hidden=(5,), activation="tanh")),
    ("relu-two-hidden", dict(hidden_dims=(7, 6), latent_dims=(4, 2), top_hidden=(6, 5))),
    ("no-top-hidden-beta", dict(latent_dims=(3, 1), top_hidden=(), activation="tanh",
                                beta=0.3)),
    ("free-bits", dict(latent_dims=(3, 2), top_hidden=(5,), activation="tanh",
                       free_bits=0.4)),
    ("gaussian-learned", dict(latent_dims=(2, 2), top_hidden=(4,), activation="tanh",
                              likelihood="gaussian", obs_var="learned")),
]
IDS = [c[0] for c in CONFIGS]


def _model(options, seed=0):
    options = {"hidden_dims": (7,), **options}
    return TwoLevelVAE(D, dtype=np.float64, seed=seed, **options)


def _data(model, n=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, D)), rng.standard_normal((n, model.latent_dim))


@pytest.mark.parametrize("name, options", CONFIGS, ids=IDS)
def test_every_gradient_matches_central_differences(name, options):
    model = _model(options)
    x, eps = _data(model)
    errors = check_model_gradients(model, x, eps)
    assert set(errors) == set(model.params)
    worst = max(errors, key=errors.get)
    tol = 1e-6 if options.get("activation", "relu") == "relu" else 1e-7
    assert errors[worst] < tol, (worst, errors[worst])


def test_the_warm_up_beta_reaches_both_kl_terms():
    model = _model(CONFIGS[0][1])
    x, eps = _data(model)
    t0, g0 = model.loss_and_grads(x, eps, beta=0.0)
    t1, g1 = model.loss_and_grads(x, eps, beta=1.0)
    assert t0.loss == pytest.approx(t0.recon) and t1.loss == pytest.approx(t1.recon + t1.kl)
    # with beta = 0 nothing reaches the top layer's inference network but the decoder's
    # gradient through z2 -> nothing; p(z1|z2) gets none either
    assert all(np.all(g0[k] == 0) for k in g0 if k.startswith(("enc2.", "prior1.")))
    assert all(np.any(g1[k] != 0) for k in g1 if k.startswith(("enc2.", "prior1.")))


def test_parameter_names_extend_the_one_level_vae():
    model = _model(CONFIGS[1][1])
    assert {k for k in model.params if not k.startswith(("enc2.", "prior1."))} == set(
        model.base.param_shapes())
    # q(z2|z1): 4 -> 6 -> 5 -> 2;  p(z1|z2): 2 -> 5 -> 6 -> 4
    assert model.params["enc2.0.W"].shape == (4, 6)
    assert model.params["enc2.mu.W"].shape == (5, 2)
    assert model.params["prior1.0.W"].shape == (2, 5)
    assert model.params["prior1.mu.W"].shape == (6, 4)
    assert model.latent_dim == 6 and model.latent_dims == (4, 2)


def test_the_top_kl_is_exact_given_z1_and_the_monte_carlo_one_agrees_on_average():
    model = _model(CONFIGS[0][1], seed=1)
    rng = np.random.default_rng(2)
    x = np.repeat(rng.random((1, D)), 40_000, axis=0)
    eps = rng.standard_normal((40_000, model.latent_dim))
    eps[:, :3] = eps[0, :3]  # one z1 for all rows: only eps2 varies
    _, _, kl2_exact = model.kl_terms(x, eps)
    _, _, kl2_mc = model.kl_terms(x, eps, kl="monte_carlo")
    assert np.ptp(kl2_exact) < 1e-12
    assert abs(kl2_mc.mean() - kl2_exact[0]) < 4 * kl2_mc.std() / np.sqrt(len(kl2_mc))


def test_the_bottom_kl_has_no_closed_form_with_z2_drawn_from_z1():
    """The slip: KL(q(z1|x) || p(z1|z2)) with the Gaussian formula, z2 the one drawn from z1.
    Its mean differs from the mean of log q(z1|x) - log p(z1|z2), the true term, because
    under q the two layers are dependent."""
    model = _model(dict(latent_dims=(2, 2), top_hidden=(6,), activation="tanh"), seed=3)
    for name in ("enc2", "prior1"):  # strong links between the layers
        for k in model.params:
            if k.startswith(name) and k.endswith(".W"):
                model.params[k] *= 4
    n = 100_000
    rng = np.random.default_rng(4)
    x = np.repeat(rng.random((1, D)), n, axis=0)
    eps = rng.standard_normal((n, model.latent_dim))
    _, kl1, _ = model.kl_terms(x, eps)
    # the wrong estimate, rebuilt from the model's pieces
    p = model.params
    mu1, lv1 = model.encode(x)
    z1 = mu1 + np.exp(0.5 * lv1) * eps[:, :2]
    mu2, lv2, _ = model.enc2.forward(p, z1)
    z2 = mu2 + np.exp(0.5 * lv2) * eps[:, 2:]
    mu_p, lv_p, _ = model.prior1.forward(p, z2)
    wrong = dist.kl_diag_gaussians(mu1, lv1, mu_p, lv_p)
    se = np.sqrt(kl1.var() / n + wrong.var() / n)
    assert abs(kl1.mean() - wrong.mean()) > 6 * se


def test_monte_carlo_terms_are_the_log_importance_weight():
    model = _model(CONFIGS[0][1], seed=5)
    x, eps = _data(model, n=4)
    recon, kl = model.elbo_terms(x, eps, kl="monte_carlo")
    p = model.params
    l1 = model.latent_dims[0]
    mu1, lv1 = model.encode(x)
    z1 = mu1 + np.exp(0.5 * lv1) * eps[:, :l1]
    mu2, lv2, _ = model.enc2.forward(p, z1)
    z2 = mu2 + np.exp(0.5 * lv2) * eps[:, l1:]
    mu_p, lv_p, _ = model.prior1.forward(p, z2)
    logits, _ = model.base.decoder.forward(p, z1)
    log_w = (dist.bernoulli_log_likelihood(x, logits) + dist.gaussian_log_density(z1, mu_p, lv_p)
             + dist.gaussian_log_density(z2, 0.0, 0.0) - dist.gaussian_log_density(z1, mu1, lv1)
             - dist.gaussian_log_density(z2, mu2, lv2))
    np.testing.assert_allclose(-(recon + kl), log_w, rtol=1e-12)


def test_active_units_per_layer_and_a_collapsed_top():
    model = _model(dict(latent_dims=(3, 2), top_hidden=(5,)), seed=6)
    rng = np.random.default_rng(7)
    x = rng.random((200, D))
    for k in model.params:  # spread the codes out so that every unit varies
        if k.startswith(("enc.mu.", "enc2.mu.")):
            model.params[k] *= 30
    assert model.active_units(x) == (3, 2)
    model.params["enc2.mu.W"][:] = 0  # the top layer's mean no longer depends on x
    assert model.active_units(x) == (3, 0)


def test_trains_with_the_package_loop_and_free_bits_hold_the_top_kl_up():
    rng = np.random.default_rng(0)
    x_train, x_test = rng.random((60, D)), rng.random((20, D))
    kls = {}
    for fb in (0.0, 0.5):
        model = TwoLevelVAE(D, (8,), (3, 2), top_hidden=(6,), free_bits=fb, seed=0)
        history = fit(NumpyBackend(model, x_train, batch_size=10, seed=0), x_test, epochs=15,
                      progress=False)
        assert np.all(np.isfinite(history.test_nelbo))
        eps = np.random.default_rng(1).standard_normal((20, 5)).astype(np.float32)
        kls[fb] = model.kl_terms(x_test, eps)[2].mean()
        nelbo, _, _ = negative_elbo(model, x_test)
        assert iwae_nll(model, x_test, k=20) <= nelbo + 1.0
        assert model.sample(3).shape == (3, D)
    assert kls[0.5] > kls[0.0]


def test_refusals():
    with pytest.raises(ValueError, match="latent_dims must be two positive integers"):
        TwoLevelVAE(D, (5,), (3,))
    with pytest.raises(ValueError, match="free_bits"):
        TwoLevelVAE(D, (5,), (3, 2), free_bits=-1)
    model = _model(CONFIGS[0][1])
    x, eps = _data(model)
    with pytest.raises(ValueError, match=r"eps must have shape \(6, 5\) \(L1 \+ L2"):
        model.loss(x, eps[:, :3])
    params = dict(model.params)
    del params["prior1.mu.b"]
    with pytest.raises(ValueError, match=r"missing \['prior1.mu.b'\]"):
        TwoLevelVAE(D, (7,), (3, 2), top_hidden=(5,), activation="tanh", params=params)
    again = TwoLevelVAE(D, (7,), (3, 2), top_hidden=(5,), activation="tanh",
                        params=model.params, dtype=np.float64)
    assert again.loss(x, eps) == model.loss(x, eps)


# --- PyTorch -------------------------------------------------------------------------------


@pytest.mark.torch
@pytest.mark.parametrize("name, options", CONFIGS, ids=IDS)
def test_torch_mirror_matches_loss_and_gradients(name, options):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    from vae_from_scratch.torch_vae.flows import TorchTwoLevelVAE, tensors

    model = _model(options, seed=8)
    x, eps = _data(model, seed=8)
    terms, grads = model.loss_and_grads(x, eps, beta=0.7)
    tp = tensors(model.params, requires_grad=True)
    mirror = TorchTwoLevelVAE(model)
    loss, recon, kl = mirror.loss(tp, torch.tensor(x), torch.tensor(eps), beta=0.7)
    loss.backward()
    assert rel_error(loss.item(), terms.loss) < 1e-12
    assert rel_error(kl.item(), terms.kl) < 1e-10
    for k, p in tp.items():
        assert rel_error(p.grad.numpy(), grads[k]) < 1e-10, k
    for kl_mode in ("analytic", "monte_carlo"):
        got = mirror.kl_terms(tensors(model.params), torch.tensor(x), torch.tensor(eps),
                              kl=kl_mode)
        for a, b in zip(got, model.kl_terms(x, eps, kl=kl_mode), strict=True):
            assert rel_error(a.numpy(), b) < 1e-11
