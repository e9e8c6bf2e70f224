"""Tests for vae_from_scratch.hierarchical, the two_level bottleneck (Burda et al.'s two
stochastic layers): every gradient through the VAE's loss against central differences in
float64 with frozen noise (free bits, warm-up's beta and both KL estimators included), the KL
terms' conditioning, importance weights, active units per layer, and the PyTorch mirror."""

from __future__ import annotations

import numpy as np
import pytest

from vae_from_scratch import distributions as dist
from vae_from_scratch.config import VAEConfig
from vae_from_scratch.evaluate import active_units_per_layer, iwae_nll, layer_kls, negative_elbo
from vae_from_scratch.gradcheck import check_model_gradients
from vae_from_scratch.hierarchical import TOP_HIDDEN
from vae_from_scratch.train import NumpyBackend, fit
from vae_from_scratch.vae import VAE

pytestmark = [pytest.mark.lesson12]

D = 10
CONFIGS = [
    ("tanh", dict(latent_dim=3, top_latent_dim=2, activation="tanh")),
    ("relu-two-hidden", dict(hidden_dims=(7, 6), latent_dim=4, top_latent_dim=2)),
    ("monte-carlo-beta", dict(latent_dim=3, top_latent_dim=1, activation="tanh", beta=0.3,
                              kl="monte_carlo")),
    ("free-bits", dict(latent_dim=3, top_latent_dim=2, activation="tanh", free_bits=0.08)),
    ("gaussian-learned", dict(latent_dim=2, top_latent_dim=2, activation="tanh",
                              likelihood="gaussian", obs_var="learned")),
]
IDS = [c[0] for c in CONFIGS]


def _model(options, seed=0):
    options = {"hidden_dims": (7,), **options}
    vae = VAE(D, dtype=np.float64, seed=seed, bottleneck="two_level", **options)
    if "dec.log_var" in vae.params:
        vae.params["dec.log_var"] = 0.3 * np.random.default_rng(seed).standard_normal(D)
    return vae


def _data(model, n=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, D)), rng.standard_normal(model.bottleneck.noise_shape(n))


@pytest.mark.parametrize("name, options", CONFIGS, ids=IDS)
def test_every_gradient_matches_central_differences(name, options):
    model = _model(options)
    x, eps = _data(model)
    errors = check_model_gradients(model, x, eps)
    assert set(errors) == set(model.params)
    worst = max(errors, key=errors.get)
    tol = 1e-6 if options.get("activation", "relu") == "relu" else 1e-7
    assert errors[worst] < tol, (worst, errors[worst])


def test_free_bits_are_active_in_the_gradient_check():
    # some dimensions of each layer below the floor, some above: both branches are checked
    model = _model(CONFIGS[3][1])
    x, eps = _data(model)
    h, _ = model.encoder.forward(model.params, x)
    _, cache = model.bottleneck.forward(model.params, h, eps, None, "analytic")
    _, floors = model.bottleneck.charged_kl(model.bottleneck.rate(cache), cache)
    below = np.concatenate(floors) < model.config.free_bits
    assert below.any() and not below.all()


def test_the_warm_up_beta_reaches_both_kl_terms():
    model = _model(CONFIGS[0][1])
    x, eps = _data(model)
    t0, g0 = model.loss_and_grads(x, eps, beta=0.0)
    t1, g1 = model.loss_and_grads(x, eps, beta=1.0)
    assert t0.loss == pytest.approx(t0.recon) and t1.loss == pytest.approx(t1.recon + t1.kl)
    # with beta = 0 nothing reaches the top layer's networks: they enter the KL only
    assert all(np.all(g0[k] == 0) for k in g0 if k.startswith(("enc2.", "prior1.")))
    assert all(np.any(g1[k] != 0) for k in g1 if k.startswith(("enc2.", "prior1.")))


def test_parameter_names_extend_the_one_level_vae():
    model = _model(CONFIGS[1][1])
    one_level = VAE(D, (7, 6), 4)
    assert {k for k in model.params if not k.startswith(("enc2.", "prior1."))} == set(
        one_level.params)
    # q(z2|z1): 4 -> 100 -> 2;  p(z1|z2): 2 -> 100 -> 4
    assert TOP_HIDDEN == (100,)
    assert model.params["enc2.0.W"].shape == (4, 100)
    assert model.params["enc2.mu.W"].shape == (100, 2)
    assert model.params["prior1.0.W"].shape == (2, 100)
    assert model.params["prior1.mu.W"].shape == (100, 4)
    assert model.bottleneck.noise_shape(3) == (3, 6) and model.latent_dim == 4
    assert VAEConfig(bottleneck="two_level").top_latent_dim == 10


def test_the_top_kl_is_exact_given_z1_and_the_monte_carlo_one_agrees_on_average():
    model = _model(CONFIGS[0][1], seed=1)
    rng = np.random.default_rng(2)
    x = np.repeat(rng.random((1, D)), 40_000, axis=0)
    eps = rng.standard_normal((40_000, 5))
    eps[:, :3] = eps[0, :3]  # one z1 for all rows: only eps2 varies
    _, kl2_exact = layer_kls(model, x, eps)
    _, kl2_mc = layer_kls(model, x, eps, kl="monte_carlo")
    assert np.ptp(kl2_exact) < 1e-12
    assert abs(kl2_mc.mean() - kl2_exact[0]) < 4 * kl2_mc.std() / np.sqrt(len(kl2_mc))


def test_the_bottom_kl_has_no_closed_form_with_z2_drawn_from_z1():
    """The slip: KL(q(z1|x) || p(z1|z2)) with the Gaussian formula, z2 the one drawn from z1.
    Its mean differs from the mean of log q(z1|x) - log p(z1|z2), the true term, because
    under q the two layers are dependent."""
    model = _model(dict(latent_dim=2, top_latent_dim=2, activation="tanh"), seed=3)
    for name in ("enc2", "prior1"):  # strong links between the layers
        for k in model.params:
            if k.startswith(name) and k.endswith(".W"):
                model.params[k] *= 4
    n = 100_000
    rng = np.random.default_rng(4)
    x = np.repeat(rng.random((1, D)), n, axis=0)
    eps = rng.standard_normal((n, 4))
    kl1, _ = layer_kls(model, x, eps)
    # the wrong estimate, rebuilt from the model's pieces
    p, b = model.params, model.bottleneck
    mu1, lv1 = model.encode(x)
    z1 = mu1 + np.exp(0.5 * lv1) * eps[:, :2]
    mu2, lv2, _ = b.enc2.forward(p, z1)
    z2 = mu2 + np.exp(0.5 * lv2) * eps[:, 2:]
    mu_p, lv_p, _ = b.prior1.forward(p, z2)
    wrong = dist.kl_diag_gaussians(mu1, lv1, mu_p, lv_p)
    se = np.sqrt(kl1.var() / n + wrong.var() / n)
    assert abs(kl1.mean() - wrong.mean()) > 6 * se


def test_monte_carlo_terms_are_the_log_importance_weight():
    model = _model(CONFIGS[0][1], seed=5)
    x, eps = _data(model, n=4)
    recon, kl = model.elbo_terms(x, eps, kl="monte_carlo")
    p, b = model.params, model.bottleneck
    mu1, lv1 = model.encode(x)
    z1 = mu1 + np.exp(0.5 * lv1) * eps[:, :3]
    mu2, lv2, _ = b.enc2.forward(p, z1)
    z2 = mu2 + np.exp(0.5 * lv2) * eps[:, 3:]
    mu_p, lv_p, _ = b.prior1.forward(p, z2)
    logits = model.decode(z1)
    log_w = (dist.bernoulli_log_likelihood(x, logits) + dist.gaussian_log_density(z1, mu_p, lv_p)
             + dist.gaussian_log_density(z2, 0.0, 0.0) - dist.gaussian_log_density(z1, mu1, lv1)
             - dist.gaussian_log_density(z2, mu2, lv2))
    np.testing.assert_allclose(-(recon + kl), log_w, rtol=1e-12)


def test_active_units_per_layer_and_a_collapsed_top():
    model = _model(dict(latent_dim=3, top_latent_dim=2), seed=6)
    rng = np.random.default_rng(7)
    x = rng.random((200, D))
    for k in model.params:  # spread the codes out so that every unit varies
        if k.startswith(("enc.mu.", "enc2.mu.")):
            model.params[k] *= 30
    assert active_units_per_layer(model, x) == (3, 2)
    model.params["enc2.mu.W"][:] = 0  # the top layer's mean no longer depends on x
    assert active_units_per_layer(model, x) == (3, 0)
    assert len(active_units_per_layer(VAE(D, (7,), 3), x)) == 1


def test_trains_with_the_package_loop_and_free_bits_hold_the_top_kl_up():
    rng = np.random.default_rng(0)
    x_train, x_test = rng.random((60, D)), rng.random((20, D))
    kls = {}
    for fb in (0.0, 0.5):
        model = VAE(D, (8,), 3, bottleneck="two_level", top_latent_dim=2, free_bits=fb, seed=0)
        history = fit(NumpyBackend(model, x_train, batch_size=10, seed=0), x_test, epochs=15,
                      progress=False)
        assert np.all(np.isfinite(history.test_nelbo))
        eps = np.random.default_rng(1).standard_normal((20, 5)).astype(np.float32)
        kls[fb] = layer_kls(model, x_test, eps)[1].mean()
        nelbo, _, _ = negative_elbo(model, x_test)
        assert iwae_nll(model, x_test, k=20) <= nelbo + 1.0
        assert model.sample(3).shape == (3, D)
    assert kls[0.5] > kls[0.0]


def test_refusals():
    with pytest.raises(ValueError, match="top_latent_dim must be a positive integer"):
        VAEConfig(bottleneck="two_level", top_latent_dim=0)
    with pytest.raises(ValueError, match="flow_steps belongs to"):
        VAEConfig(bottleneck="two_level", flow_steps=2)
    with pytest.raises(ValueError, match="top_latent_dim belongs to bottleneck='two_level'"):
        VAEConfig(top_latent_dim=3)
    with pytest.raises(ValueError, match="p\\(z2\\) is N\\(0, I\\): use prior='standard'"):
        VAEConfig(bottleneck="two_level", prior="mixture")
    model = _model(CONFIGS[0][1])
    x, eps = _data(model)
    with pytest.raises(ValueError, match=r"eps must have shape \(6, 5\)"):
        model.loss(x, eps[:, :3])
    params = dict(model.params)
    del params["prior1.mu.b"]
    with pytest.raises(ValueError, match=r"missing \['prior1.mu.b'\]"):
        VAE(config=model.config, params=params)
    again = VAE(config=model.config, params=model.params)
    assert again.loss(x, eps) == model.loss(x, eps)


# --- PyTorch -------------------------------------------------------------------------------


@pytest.mark.torch
@pytest.mark.parametrize("name, options", CONFIGS, ids=IDS)
def test_torch_mirror_matches_loss_and_gradients(name, options):
    pytest.importorskip("torch", reason="PyTorch is not installed")
    from tests.parity import assert_parity

    model = _model(options, seed=8)
    x, eps = _data(model, seed=8)
    assert_parity(model, x, eps, beta=0.7)
    assert_parity(model, x, eps)


@pytest.mark.torch
def test_the_torch_mirror_samples_ancestrally():
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    from vae_from_scratch.torch_vae import TorchVAE

    model = _model(CONFIGS[0][1])
    tvae = TorchVAE.from_numpy(model, device="cpu")
    z1 = tvae.sample_prior(2000, seed=0)
    assert tuple(z1.shape) == (2000, 3)
    # z1 ~ p(z1|z2): the mean over z2 ~ N(0, I) of prior1's mean, as NumPy draws it
    z_np = model.sample_prior(2000, np.random.default_rng(0))
    assert torch.allclose(z1.mean(0), torch.tensor(z_np.mean(0)), atol=0.15)
