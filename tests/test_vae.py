"""Tests for vae_from_scratch.vae: the loss against its definition, shapes, dtypes, seeds,
sampling, and the validation of every input."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vae_from_scratch import VAE, LossTerms
from vae_from_scratch.config import VAEConfig
from vae_from_scratch.vae import check_params, param_shapes

pytestmark = [pytest.mark.lesson04, pytest.mark.lesson05, pytest.mark.lesson07]

D = 6


def _rng(seed=0):
    return np.random.default_rng(seed)


def _x01(n=5, seed=0, dtype=np.float64):
    return _rng(seed).random((n, D)).astype(dtype)


def _eps(n, latent, seed=1, dtype=np.float64):
    return _rng(seed).standard_normal((n, latent)).astype(dtype)


def _log_normal(x, mu, var):
    """log N(x; mu, var) entry by entry, from the density's formula."""
    return -0.5 * np.log(2 * np.pi * var) - (x - mu) ** 2 / (2 * var)


def _log_sigmoid(a):
    return -np.log1p(np.exp(-a))


def _reference_terms(vae, x, eps):
    """recon (N,), kl (N,) written out from the definitions, in float64."""
    cfg, p = vae.config, vae.params
    mu, log_var = (a.astype(np.float64) for a in vae.encode(x))
    var = np.exp(log_var)
    z = mu + np.sqrt(var) * eps
    out = vae.decode(z).astype(np.float64)
    x = x.astype(np.float64)
    if cfg.likelihood == "bernoulli":
        log_px = x * _log_sigmoid(out) + (1 - x) * _log_sigmoid(-out)
    elif cfg.likelihood == "continuous_bernoulli":
        # the density proportional to exp(l x) on [0, 1]: x l - log((e^l - 1) / l)
        log_px = x * out - np.log(np.expm1(out) / out)
    else:
        obs_var = np.exp(p["dec.log_var"]) if cfg.obs_var == "learned" else cfg.obs_var
        log_px = _log_normal(x, out, obs_var)
    recon = -log_px.sum(axis=1)
    if cfg.kl_mode == "analytic":
        kl = 0.5 * np.sum(mu**2 + var - 1 - log_var, axis=1)
    else:
        log_q = _log_normal(z, mu, var).sum(axis=1)
        if cfg.prior == "mixture":
            pi = np.exp(p["prior.logits"]) / np.exp(p["prior.logits"]).sum()
            dens = sum(
                pi[k] * np.exp(_log_normal(z, p["prior.means"][k],
                                           np.exp(p["prior.log_vars"][k])).sum(axis=1))
                for k in range(len(pi))
            )
            log_p = np.log(dens)
        else:
            log_p = _log_normal(z, 0.0, 1.0).sum(axis=1)
        kl = log_q - log_p
    return recon, kl


CONFIGS = {
    "bernoulli-analytic": dict(likelihood="bernoulli"),
    "bernoulli-mc": dict(likelihood="bernoulli", kl="monte_carlo"),
    "gaussian-fixed": dict(likelihood="gaussian", obs_var=0.25),
    "gaussian-learned-mc": dict(likelihood="gaussian", obs_var="learned", kl="monte_carlo"),
    "mixture": dict(likelihood="bernoulli", prior="mixture", n_components=3),
    "cb-analytic": dict(likelihood="continuous_bernoulli"),
    "cb-mixture": dict(likelihood="continuous_bernoulli", prior="mixture", n_components=2),
    "mixture-tanh-gaussian": dict(likelihood="gaussian", obs_var="learned", prior="mixture",
                                  n_components=2, activation="tanh"),
}


def _model(name, dtype=np.float64, beta=0.3, hidden=(7, 5), latent=3, seed=0):
    vae = VAE(D, hidden, latent, beta=beta, seed=seed, dtype=dtype, **CONFIGS[name])
    rng = _rng(seed + 50)
    for key in ("dec.log_var", "prior.log_vars", "prior.logits"):
        if key in vae.params:
            vae.params[key] = (0.3 * rng.standard_normal(vae.params[key].shape)).astype(dtype)
    return vae


def _data_for(vae, n=5, seed=0):
    if vae.config.likelihood != "gaussian":
        return _x01(n, seed, vae.dtype)
    return (2 * _rng(seed).standard_normal((n, D))).astype(vae.dtype)


# --- the loss is what the course says it is ----------------------------------------------------


@pytest.mark.parametrize("name", list(CONFIGS))
def test_loss_matches_its_definition(name):
    vae = _model(name)
    x, eps = _data_for(vae), _eps(5, 3)
    recon, kl = _reference_terms(vae, x, eps)
    terms = vae.loss(x, eps)
    assert isinstance(terms, LossTerms)
    assert all(isinstance(v, float) for v in (terms.loss, terms.recon, terms.kl))
    assert terms.recon == pytest.approx(recon.mean(), rel=1e-12)
    assert terms.kl == pytest.approx(kl.mean(), rel=1e-10, abs=1e-12)
    assert terms.loss == pytest.approx(recon.mean() + 0.3 * kl.mean(), rel=1e-12)
    r, k = vae.elbo_terms(x, eps)
    np.testing.assert_allclose(r, recon, rtol=1e-12)
    np.testing.assert_allclose(k, kl, rtol=1e-10, atol=1e-12)


def test_loss_is_a_mean_over_examples_and_a_sum_over_pixels():
    vae = _model("bernoulli-analytic")
    x, eps = _x01(6), _eps(6, 3)
    whole = vae.loss(x, eps)
    halves = [vae.loss(x[:3], eps[:3]), vae.loss(x[3:], eps[3:])]
    assert whole.recon == pytest.approx(np.mean([h.recon for h in halves]), rel=1e-13)
    assert whole.kl == pytest.approx(np.mean([h.kl for h in halves]), rel=1e-13)
    # one all-0.5 image under logits 0: each pixel costs log 2 nats, summed over the D pixels
    vae.params["dec.out.W"][:] = 0.0
    vae.params["dec.out.b"][:] = 0.0
    assert vae.loss(np.full((4, D), 0.5), _eps(4, 3)).recon == pytest.approx(D * math.log(2))


def test_monte_carlo_kl_averages_to_the_analytic_kl():
    vae = _model("bernoulli-analytic")
    x = _x01(1)
    n = 20_000
    eps = _eps(n, 3, seed=7)
    _, analytic = vae.elbo_terms(np.repeat(x, n, axis=0), eps)
    _, mc = vae.elbo_terms(np.repeat(x, n, axis=0), eps, kl="monte_carlo")
    assert np.allclose(analytic, analytic[0])
    assert abs(mc.mean() - analytic[0]) < 4 * mc.std() / math.sqrt(n)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.parametrize("hidden", [(), (5,), (7, 5)])
def test_encode_and_decode_are_the_described_mlps(activation, hidden):
    vae = VAE(D, hidden, 2, activation=activation, seed=3, dtype=np.float64)
    p = vae.params
    act = (lambda a: np.maximum(a, 0)) if activation == "relu" else np.tanh
    x = _x01(4)
    h = x
    for i in range(len(hidden)):
        h = act(h @ p[f"enc.{i}.W"] + p[f"enc.{i}.b"])
    mu, log_var = vae.encode(x)
    np.testing.assert_allclose(mu, h @ p["enc.mu.W"] + p["enc.mu.b"], rtol=1e-13)
    np.testing.assert_allclose(log_var, h @ p["enc.log_var.W"] + p["enc.log_var.b"], rtol=1e-13)
    z = _eps(4, 2)
    h = z
    for i in range(len(hidden)):
        h = act(h @ p[f"dec.{i}.W"] + p[f"dec.{i}.b"])
    np.testing.assert_allclose(vae.decode(z), h @ p["dec.out.W"] + p["dec.out.b"], rtol=1e-13)
    # the decoder mirrors the encoder's hidden sizes
    for i, width in enumerate(reversed(hidden)):
        assert p[f"dec.{i}.b"].shape == (width,)


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_loss_and_grads_returns_the_loss_and_grads_shaped_like_params(name, dtype):
    vae = _model(name, dtype=dtype)
    x, eps = _data_for(vae), _eps(5, 3, dtype=dtype)
    terms, grads = vae.loss_and_grads(x, eps)
    assert terms == vae.loss(x, eps)
    assert list(grads) == list(vae.params)
    for key, value in vae.params.items():
        assert grads[key].shape == value.shape, key
        assert grads[key].dtype == value.dtype == dtype, key
        assert np.all(np.isfinite(grads[key])), key
    assert vae.param_shapes() == {k: v.shape for k, v in vae.params.items()}


def test_float32_and_float64_models_agree():
    x = _x01(4)
    eps = _eps(4, 3)
    v32 = VAE(D, (7, 5), 3, seed=4, dtype=np.float32)
    v64 = VAE(D, (7, 5), 3, seed=4, dtype=np.float64)
    for key in v64.params:
        np.testing.assert_allclose(v32.params[key], v64.params[key], rtol=1e-6)
    t32 = v32.loss(x.astype(np.float32), eps.astype(np.float32))
    t64 = v64.loss(x, eps)
    assert t32.loss == pytest.approx(t64.loss, rel=1e-5)


# --- dtype and seeds ----------------------------------------------------------------------------


def test_float32_is_the_default():
    vae = VAE(D, (5,), 2)
    assert vae.dtype == np.float32 and vae.config.dtype == "float32"
    assert all(v.dtype == np.float32 for v in vae.params.values())
    mu, log_var = vae.encode(_x01(3))  # float64 input is cast to the model's dtype
    assert mu.dtype == log_var.dtype == np.float32
    _, grads = vae.loss_and_grads(_x01(3), _eps(3, 2))
    assert all(g.dtype == np.float32 for g in grads.values())


def test_default_configuration_is_the_course_model():
    cfg = VAEConfig()
    assert (cfg.input_dim, cfg.hidden_dims, cfg.latent_dim) == (784, (400,), 20)
    assert (cfg.likelihood, cfg.activation, cfg.prior, cfg.kl_mode) == (
        "bernoulli", "relu", "standard", "analytic")
    assert VAEConfig(prior="mixture").kl_mode == "monte_carlo"


@pytest.mark.parametrize("name", ["bernoulli-analytic", "mixture", "gaussian-learned-mc"])
def test_same_seed_gives_identical_params_and_other_seeds_differ(name):
    a, b, c = (VAE(D, (5,), 2, seed=s, **CONFIGS[name]) for s in (11, 11, 12))
    assert list(a.params) == list(b.params)
    for key in a.params:
        np.testing.assert_array_equal(a.params[key], b.params[key])
    random_keys = [k for k in a.params if k not in ("dec.log_var", "prior.log_vars",
                                                     "prior.logits")]
    for key in random_keys:
        assert not np.array_equal(a.params[key], c.params[key]), key


def test_init_follows_the_pytorch_linear_default():
    vae = VAE(D, (400,), 20, seed=0, dtype=np.float64)
    W, b = vae.params["enc.0.W"], vae.params["enc.0.b"]
    bound = 1 / math.sqrt(D)
    assert W.shape == (D, 400) and np.abs(W).max() <= bound and np.abs(b).max() <= bound
    assert np.abs(W).max() > 0.95 * bound  # uniform over the whole interval
    W2 = vae.params["dec.out.W"]
    assert np.abs(W2).max() <= 1 / math.sqrt(400)
    assert np.std(W2) == pytest.approx(1 / math.sqrt(400) / math.sqrt(3), rel=0.05)


def test_learned_variance_and_mixture_start_at_their_documented_values():
    vae = VAE(D, (5,), 3, likelihood="gaussian", obs_var="learned", prior="mixture",
              n_components=4)
    np.testing.assert_array_equal(vae.params["dec.log_var"], np.zeros(D))
    np.testing.assert_array_equal(vae.params["prior.log_vars"], np.zeros((4, 3)))
    np.testing.assert_array_equal(vae.params["prior.logits"], np.zeros(4))
    assert vae.params["prior.means"].shape == (4, 3)
    assert "dec.log_var" not in VAE(D, (5,), 3, likelihood="gaussian").params
    # the components' means start spread like the standard normal prior: a N(0, 1) draw
    means = VAE(D, (5,), 20, prior="mixture", n_components=50, seed=1).params["prior.means"]
    assert abs(means.mean()) < 0.1 and 0.9 < means.std() < 1.1


# --- sampling and reconstruction ----------------------------------------------------------------


def test_sample_shapes_ranges_and_seeding():
    vae = VAE(D, (5,), 2, seed=0)
    s = vae.sample(30, seed=3)
    assert s.shape == (30, D) and s.dtype == np.float32
    assert s.min() >= 0.0 and s.max() <= 1.0
    np.testing.assert_array_equal(s, vae.sample(30, seed=3))
    assert not np.array_equal(s, vae.sample(30, seed=4))
    gen = np.random.default_rng(3)
    np.testing.assert_array_equal(vae.sample(30, seed=gen), s)


def test_sample_decodes_draws_from_the_standard_prior():
    vae = VAE(D, (5,), 2, seed=0, dtype=np.float64)
    z = np.random.default_rng(9).standard_normal((10, 2))
    expected = 1 / (1 + np.exp(-vae.decode(z)))
    np.testing.assert_allclose(vae.sample(10, seed=9), expected, rtol=1e-12)


def test_gaussian_samples_are_means_not_probabilities():
    vae = VAE(D, (5,), 2, likelihood="gaussian", seed=0, dtype=np.float64)
    vae.params["dec.out.b"][:] = 5.0  # means far above 1: nothing may squash them
    s = vae.sample(20, seed=0)
    assert s.shape == (20, D) and s.max() > 1.0
    z = np.random.default_rng(0).standard_normal((20, 2))
    np.testing.assert_allclose(s, vae.decode(z), rtol=1e-12)


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_reconstruct_decodes_the_posterior_mean(likelihood):
    vae = VAE(D, (5,), 2, likelihood=likelihood, seed=0, dtype=np.float64)
    x = _x01(7)
    r = vae.reconstruct(x)
    assert r.shape == x.shape
    out = vae.decode(vae.encode(x)[0])
    expected = 1 / (1 + np.exp(-out)) if likelihood == "bernoulli" else out
    np.testing.assert_allclose(r, expected, rtol=1e-12)
    if likelihood == "bernoulli":
        assert r.min() >= 0 and r.max() <= 1
        np.testing.assert_allclose(vae.decode_mean(vae.encode(x)[0]), r, rtol=1e-15)


def test_mixture_prior_sampling_follows_the_mixture():
    vae = VAE(D, (5,), 2, prior="mixture", n_components=2, seed=0, dtype=np.float64)
    vae.params["prior.means"] = np.array([[-10.0, 0.0], [10.0, 5.0]])
    vae.params["prior.log_vars"] = np.log(np.array([[0.01, 0.01], [0.04, 0.04]]))
    vae.params["prior.logits"] = np.log(np.array([1.0, 3.0]))  # pi = (0.25, 0.75)
    n = 4000
    z = vae.sample_prior(n, np.random.default_rng(0))
    assert z.shape == (n, 2)
    second = z[:, 0] > 0
    assert abs(second.mean() - 0.75) < 5 * math.sqrt(0.75 * 0.25 / n)
    np.testing.assert_allclose(z[~second].mean(axis=0), [-10, 0], atol=0.03)
    np.testing.assert_allclose(z[second].mean(axis=0), [10, 5], atol=0.03)
    np.testing.assert_allclose(z[~second].std(axis=0), [0.1, 0.1], rtol=0.1)
    np.testing.assert_allclose(z[second].std(axis=0), [0.2, 0.2], rtol=0.1)
    assert vae.sample(5, seed=1).shape == (5, D)


# --- validation ---------------------------------------------------------------------------------


@pytest.fixture
def bern():
    return VAE(D, (5,), 2, seed=0, dtype=np.float64)


BAD_X = [
    pytest.param(np.zeros(D), "shape", id="1-d"),
    pytest.param(np.zeros((2, D, 1)), "shape", id="3-d"),
    pytest.param(np.zeros((2, D + 1)), "shape", id="wide"),
    pytest.param(np.zeros((0, D)), "empty", id="empty"),
    pytest.param(np.where(np.eye(2, D) > 0, np.nan, 0.5), "NaN", id="nan"),
    pytest.param(np.where(np.eye(2, D) > 0, np.inf, 0.5), "infinite", id="inf"),
    pytest.param(np.full((2, D), 1.5), r"\[0, 1\]", id="above-1"),
    pytest.param(np.full((2, D), -0.1), r"\[0, 1\]", id="below-0"),
]


@pytest.mark.parametrize("x, message", BAD_X)
def test_bad_x_is_rejected_with_a_message(bern, x, message):
    eps = _eps(max(len(x), 1), 2) if np.ndim(x) == 2 else _eps(2, 2)
    for call in (lambda: bern.loss(x, eps[: len(x)]),
                 lambda: bern.loss_and_grads(x, eps[: len(x)]),
                 lambda: bern.elbo_terms(x, eps[: len(x)]),
                 lambda: bern.encode(x)):
        with pytest.raises(ValueError, match=message):
            call()


def test_gaussian_likelihood_accepts_any_finite_pixels():
    vae = VAE(D, (5,), 2, likelihood="gaussian", seed=0, dtype=np.float64)
    x = np.full((2, D), -3.0)
    assert np.isfinite(vae.loss(x, _eps(2, 2)).loss)
    with pytest.raises(ValueError, match="NaN"):
        vae.loss(np.full((2, D), np.nan), _eps(2, 2))


BAD_EPS = [
    pytest.param(_eps(3, 2), "shape", id="wrong-rows"),
    pytest.param(_eps(2, 3), "shape", id="wrong-latent"),
    pytest.param(np.zeros(4), "shape", id="1-d"),
    pytest.param(np.array([[0.0, np.nan], [0.0, 0.0]]), "NaN", id="nan"),
]


@pytest.mark.parametrize("eps, message", BAD_EPS)
def test_bad_eps_is_rejected_with_a_message(bern, eps, message):
    x = _x01(2)
    with pytest.raises(ValueError, match=f"eps.*{message}|{message}.*eps"):
        bern.loss(x, eps)
    with pytest.raises(ValueError, match=message):
        bern.loss_and_grads(x, eps)
    with pytest.raises(ValueError, match=message):
        bern.elbo_terms(x, eps)


def test_bad_z_is_rejected(bern):
    with pytest.raises(ValueError, match="shape"):
        bern.decode(np.zeros((3, 5)))
    with pytest.raises(ValueError, match="NaN"):
        bern.decode(np.array([[np.nan, 0.0]]))


BAD_CONFIG = [
    pytest.param(dict(activation="gelu"), "activation", id="activation"),
    pytest.param(dict(likelihood="poisson"), "likelihood", id="likelihood"),
    pytest.param(dict(kl="exact"), "kl", id="kl"),
    pytest.param(dict(prior="vamp"), "prior", id="prior"),
    pytest.param(dict(dtype=np.float16), "dtype", id="dtype-float16"),
    pytest.param(dict(dtype="int32"), "dtype", id="dtype-int"),
    pytest.param(dict(latent_dim=0), "latent_dim", id="latent-0"),
    pytest.param(dict(latent_dim=-2), "latent_dim", id="latent-negative"),
    pytest.param(dict(latent_dim=2.5), "latent_dim", id="latent-float"),
    pytest.param(dict(input_dim=0), "input_dim", id="input-0"),
    pytest.param(dict(input_dim=-6), "input_dim", id="input-negative"),
    pytest.param(dict(hidden_dims=(0,)), "hidden_dims", id="hidden-0"),
    pytest.param(dict(hidden_dims=(5, -1)), "hidden_dims", id="hidden-negative"),
    pytest.param(dict(n_components=0, prior="mixture"), "n_components", id="components-0"),
    pytest.param(dict(likelihood="gaussian", obs_var=0.0), "obs_var", id="obs-var-0"),
    pytest.param(dict(likelihood="gaussian", obs_var=-1.0), "obs_var", id="obs-var-negative"),
    pytest.param(dict(likelihood="gaussian", obs_var=math.inf), "obs_var", id="obs-var-inf"),
    pytest.param(dict(likelihood="gaussian", obs_var=math.nan), "obs_var", id="obs-var-nan"),
    pytest.param(dict(likelihood="gaussian", obs_var="learnt"), "obs_var", id="obs-var-typo"),
    pytest.param(dict(beta=-0.5), "beta", id="beta-negative"),
    pytest.param(dict(beta=math.nan), "beta", id="beta-nan"),
    pytest.param(dict(beta=math.inf), "beta", id="beta-inf"),
    pytest.param(dict(prior="mixture", kl="analytic"), "closed form", id="analytic-mixture"),
]


@pytest.mark.parametrize("kwargs, message", BAD_CONFIG)
def test_bad_configuration_is_rejected_with_a_message(kwargs, message):
    args = dict(input_dim=D, hidden_dims=(5,), latent_dim=2)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        VAE(**args)


def test_unknown_dtype_name_is_a_value_error():
    with pytest.raises(ValueError, match="dtype"):
        VAE(D, (5,), 2, dtype="foo")


def test_no_hidden_layers_is_allowed():
    vae = VAE(D, (), 2, seed=0)
    assert not any(k.startswith(("enc.0", "dec.0")) for k in vae.params)
    assert np.isfinite(vae.loss(_x01(2), _eps(2, 2)).loss)


def test_elbo_terms_rejects_analytic_kl_for_a_mixture_and_unknown_estimators():
    vae = VAE(D, (5,), 2, prior="mixture", n_components=2, seed=0)
    x, eps = _x01(2), _eps(2, 2)
    with pytest.raises(ValueError, match="analytic"):
        vae.elbo_terms(x, eps, kl="analytic")
    with pytest.raises(ValueError, match="kl"):
        VAE(D, (5,), 2).elbo_terms(x, eps, kl="exact")


def test_config_round_trips_through_a_dict():
    cfg = VAEConfig(input_dim=D, hidden_dims=(7, 5), latent_dim=3, likelihood="gaussian",
                    obs_var="learned", prior="mixture", n_components=4, beta=0.5,
                    dtype="float64")
    d = cfg.to_dict()
    assert d["hidden_dims"] == [7, 5]
    assert VAEConfig.from_dict(d) == cfg
    with pytest.raises(ValueError, match="unknown configuration keys"):
        VAEConfig.from_dict({**d, "learning_rate": 1e-3})


# --- check_params -----------------------------------------------------------------------------


def _params():
    vae = VAE(D, (5,), 2, seed=0, dtype=np.float64)
    return dict(vae.params), vae.config


def test_check_params_accepts_and_copies_valid_params():
    params, cfg = _params()
    out = check_params(params, cfg)
    for key in params:
        np.testing.assert_array_equal(out[key], params[key])
        assert out[key] is not params[key]
    f32 = check_params(params, VAEConfig(**{**cfg.to_dict(), "dtype": "float32"}))
    assert all(v.dtype == np.float32 for v in f32.values())


def test_check_params_rejects_missing_params():
    params, cfg = _params()
    del params["enc.mu.b"]
    with pytest.raises(ValueError, match=r"missing \['enc.mu.b'\]"):
        check_params(params, cfg)


def test_check_params_rejects_extra_params():
    params, cfg = _params()
    params["dec.log_var"] = np.zeros(D)
    with pytest.raises(ValueError, match=r"unexpected \['dec.log_var'\]"):
        check_params(params, cfg)


def test_check_params_rejects_misshaped_params():
    params, cfg = _params()
    params["enc.0.W"] = params["enc.0.W"].T
    with pytest.raises(ValueError, match=r"'enc.0.W' has shape \(5, 6\), expected \(6, 5\)"):
        check_params(params, cfg)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_check_params_rejects_non_finite_params(bad):
    params, cfg = _params()
    params["dec.out.b"] = params["dec.out.b"].copy()
    params["dec.out.b"][1] = bad
    with pytest.raises(ValueError, match="'dec.out.b' contains NaN"):
        check_params(params, cfg)
    with pytest.raises(ValueError, match="dec.out.b"):
        VAE(config=cfg, params=params)


def test_param_shapes_match_a_fresh_model():
    for name in CONFIGS:
        vae = _model(name)
        assert param_shapes(vae.config) == {k: v.shape for k, v in vae.params.items()}


def test_param_shapes_never_computes_with_uninitialized_memory():
    cfg = VAEConfig(input_dim=D, hidden_dims=(5,), latent_dim=2)  # float32
    params = VAE(config=cfg).params
    for _ in range(3):
        for size in (30, 10, 5, 2):  # leave huge numbers in freed blocks of the sizes needed
            junk = np.full(size, 1e300)
            del junk
        with np.errstate(over="raise", invalid="raise"):
            param_shapes(cfg)
            check_params(params, cfg)


# --- inputs the model refuses with a clear message ------------------------------------------


@pytest.mark.parametrize("beta", [float("nan"), -0.5, float("inf"), True, "1"])
def test_loss_and_grads_validates_beta_like_the_constructor(beta):
    vae = _model("bernoulli-analytic")
    with pytest.raises(ValueError, match="beta must be a finite number >= 0"):
        vae.loss_and_grads(_x01(), _eps(5, 3), beta=beta)


@pytest.mark.parametrize("z", [np.float64(0.5), np.zeros(3), np.zeros((2, 3, 1))])
def test_decode_of_a_wrong_shape_is_a_value_error(z):
    vae = _model("bernoulli-analytic")
    with pytest.raises(ValueError, match=r"z must have shape \((N|2), 3\)"):
        vae.decode(z)


@pytest.mark.parametrize("n", [-1, 0, 2.7, True, "3", None])
def test_sample_needs_a_positive_integer(n):
    with pytest.raises(ValueError, match="n must be a positive integer"):
        _model("bernoulli-analytic").sample(n)


def test_sample_accepts_numpy_integers():
    assert _model("bernoulli-analytic").sample(np.int64(2)).shape == (2, D)


@pytest.mark.parametrize("hidden", [3, "400", (4, 0), (4.0,), (True,)])
def test_hidden_dims_must_be_a_sequence_of_positive_integers(hidden):
    with pytest.raises(ValueError, match="hidden_dims must be a sequence of positive integers"):
        VAE(D, hidden, 2)


@pytest.mark.parametrize("likelihood", ["bernoulli"])
@pytest.mark.parametrize("obs_var", ["learned", 0.5])
def test_obs_var_belongs_to_the_gaussian_decoder(likelihood, obs_var):
    with pytest.raises(ValueError, match="obs_var applies to likelihood='gaussian' only"):
        VAE(D, (5,), 2, likelihood=likelihood, obs_var=obs_var)
    # the old stored default of every likelihood still loads
    assert VAE(D, (5,), 2, likelihood=likelihood, obs_var=1.0).config.obs_var is None
    assert VAE(D, (5,), 2, likelihood="gaussian").config.obs_var == 1.0


def test_complex_or_text_input_is_refused_not_cast():
    vae = _model("gaussian-fixed")
    with pytest.raises(ValueError, match="x must hold real numbers, got an array of dtype complex"):
        vae.encode(_x01().astype(np.complex128))
    with pytest.raises(ValueError, match="eps must hold real numbers"):
        vae.loss(_x01(), _eps(5, 3).astype(np.complex64))
    with pytest.raises(ValueError, match="x must hold real numbers"):
        vae.encode(np.full((2, D), "a"))


def test_param_shapes_allocates_nothing_for_a_huge_configuration():
    cfg = VAEConfig(input_dim=10**6, hidden_dims=(10**6,), latent_dim=10**12)
    shapes = param_shapes(cfg)  # would need exabytes if it built arrays
    assert shapes["enc.mu.W"] == (10**6, 10**12)
