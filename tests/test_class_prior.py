"""The conditional VAE's prior p(z | y) = N(m_y, A_y A_y^T) (priors.ClassGaussian, lesson 09):
its KL and log-density against torch.distributions, their gradients by hand against central
differences and torch autograd, the closed-form refit as the exact minimiser of the KL, the
samples, the training backends (fitted, not trained), a stopped run resumed bit for bit, and
the command's default for --conditional."""

from __future__ import annotations

import numpy as np
import pytest

from vae_from_scratch import VAE, data
from vae_from_scratch.config import CONDITIONAL_PRIOR, VAEConfig
from vae_from_scratch.course.checkpoint import load_vae, read_checkpoint, read_state, save_state
from vae_from_scratch.course.cli import main
from vae_from_scratch.gradcheck import check_model_gradients, rel_error
from vae_from_scratch.priors import PRIORS, ClassGaussian
from vae_from_scratch.train import LoopState, NumpyBackend, fit

pytestmark = pytest.mark.lesson09

D, K = 6, 3
FITTED = ("prior.class_means", "prior.class_chol")


def _prior_params(rng, k, l, dtype=np.float64):
    """Means and a lower-triangular factor well away from singular (the upper triangle
    holds junk that must be ignored)."""
    a = rng.normal(0, 0.3, (k, l, l)) + np.eye(l) * rng.uniform(0.5, 1.5, (k, 1, l))
    return {"prior.class_means": rng.normal(0, 1, (k, l)).astype(dtype),
            "prior.class_chol": a.astype(dtype)}


def _case(dtype=np.float64, n=9, seed=0, **kwargs):
    options = dict(hidden_dims=(5,), latent_dim=3, prior="class_gaussian")
    options.update(kwargs)
    vae = VAE(D, n_classes=K, seed=seed, dtype=dtype, **options)
    rng = np.random.default_rng(seed + 10)
    for value in vae.params.values():
        value += (0.1 * rng.standard_normal(value.shape)).astype(dtype)
    vae.params.update(_prior_params(rng, K, vae.latent_dim, dtype))
    x = rng.random((n, D)).astype(dtype)
    eps = rng.standard_normal((n, vae.latent_dim)).astype(dtype)
    y = rng.integers(0, K, n)
    y[:K] = np.arange(K)  # every class present
    return vae, x, eps, y


# -- the configuration ----------------------------------------------------------------------------


def test_it_is_registered_with_an_analytic_kl_and_fitted_parameters():
    assert PRIORS["class_gaussian"] is ClassGaussian
    config = VAEConfig(n_classes=10, prior="class_gaussian")
    assert config.kl_mode == "analytic"
    vae = VAE(784, (8,), 4, n_classes=10, prior="class_gaussian")
    assert vae.params["prior.class_means"].shape == (10, 4)
    assert vae.params["prior.class_chol"].shape == (10, 4, 4)
    np.testing.assert_array_equal(vae.params["prior.class_means"], 0)
    np.testing.assert_array_equal(vae.params["prior.class_chol"], np.broadcast_to(np.eye(4),
                                                                                   (10, 4, 4)))
    assert ClassGaussian.fitted == FITTED


def test_it_needs_labels_and_refuses_free_bits():
    with pytest.raises(ValueError, match="needs a conditional model"):
        VAEConfig(prior="class_gaussian")
    with pytest.raises(ValueError, match="free bits"):
        VAEConfig(n_classes=3, prior="class_gaussian", free_bits=0.5)


def test_at_its_start_it_is_the_standard_normal_for_every_class():
    vae, x, eps, y = _case()
    standard = VAE(D, n_classes=K, hidden_dims=(5,), latent_dim=3, dtype=np.float64,
                   params={k: v for k, v in vae.params.items() if not k.startswith("prior.")})
    fresh = VAE(D, n_classes=K, hidden_dims=(5,), latent_dim=3, dtype=np.float64,
                prior="class_gaussian", params={**standard.params, **{
                    k: v for k, v in VAE(D, n_classes=K, hidden_dims=(5,), latent_dim=3,
                                         prior="class_gaussian").params.items()
                    if k.startswith("prior.")}})
    for kl in ("analytic", "monte_carlo"):
        a = fresh.elbo_terms(x, eps, y, kl=kl)[1]
        b = standard.elbo_terms(x, eps, y, kl=kl)[1]
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


# -- the formulas against an independent implementation --------------------------------------------


def test_kl_and_log_density_equal_torch_distributions():
    torch = pytest.importorskip("torch")
    from torch.distributions import MultivariateNormal, kl_divergence

    rng = np.random.default_rng(1)
    n, k, l = 12, 4, 5
    params = _prior_params(rng, k, l)
    prior = ClassGaussian(VAEConfig(n_classes=k, latent_dim=l, prior="class_gaussian",
                                    dtype="float64"))
    mu, log_var, z = (rng.normal(0, 1, (n, l)) for _ in range(3))
    y = rng.integers(0, k, n)
    c = np.eye(k)[y]
    m = torch.from_numpy(params["prior.class_means"][y])
    tril = torch.from_numpy(np.tril(params["prior.class_chol"])[y])
    p = MultivariateNormal(m, scale_tril=tril)
    q = MultivariateNormal(torch.from_numpy(mu),
                           covariance_matrix=torch.diag_embed(torch.from_numpy(np.exp(log_var))))
    np.testing.assert_allclose(prior.kl(params, mu, log_var, c), kl_divergence(q, p).numpy(),
                               rtol=1e-10)
    np.testing.assert_allclose(prior.log_prob(params, z, c),
                               p.log_prob(torch.from_numpy(z)).numpy(), rtol=1e-10)


# -- the gradients: central differences and torch autograd -----------------------------------------


@pytest.mark.parametrize("options", [
    dict(),
    dict(kl="monte_carlo"),
    dict(latent_dim=1),
    dict(latent_dim=4, hidden_dims=(7, 5), activation="tanh"),
    dict(likelihood="gaussian", obs_var="learned", beta=0.5),
    dict(likelihood="continuous_bernoulli", kl="monte_carlo"),
], ids=["analytic", "monte-carlo", "latent-1", "tanh-latent-4", "gaussian-beta", "cb-mc"])
def test_gradients_match_central_differences(options):
    vae, x, eps, y = _case(**options)
    errors = check_model_gradients(vae, x, eps, y=y)
    assert set(errors) == set(vae.params)
    bad = {k: v for k, v in errors.items() if not v < 1e-6}
    assert not bad, bad


def test_the_kl_backward_alone_matches_central_differences_in_mu_log_var_and_the_prior():
    """The KL's own backward, away from any network: d/dmu, d/dlog_var and the prior's
    parameters, with an upstream gradient that is not all ones."""
    from vae_from_scratch.gradcheck import numerical_gradient

    rng = np.random.default_rng(2)
    n, k, l = 7, 3, 4
    params = _prior_params(rng, k, l)
    prior = ClassGaussian(VAEConfig(n_classes=k, latent_dim=l, prior="class_gaussian",
                                    dtype="float64"))
    mu, log_var = rng.normal(0, 1, (n, l)), rng.normal(0, 0.5, (n, l))
    c = np.eye(k)[rng.integers(0, k, n)]
    dkl = rng.uniform(0.5, 2.0, n)
    grads = {}
    dmu, dlog_var = prior.kl_backward(dkl, params, mu, log_var, c, grads)

    def total():
        return float(np.sum(dkl * prior.kl(params, mu, log_var, c)))

    assert rel_error(dmu, numerical_gradient(total, mu)) < 1e-7
    assert rel_error(dlog_var, numerical_gradient(total, log_var)) < 1e-7
    for name in FITTED:
        assert rel_error(grads[name], numerical_gradient(total, params[name])) < 1e-7, name
    assert np.all(np.triu(grads["prior.class_chol"], 1) == 0)  # the upper triangle is unused


@pytest.mark.parametrize("kl", ["analytic", "monte_carlo"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_numpy_and_torch_agree(kl, dtype):
    from tests.parity import assert_parity

    vae, x, eps, y = _case(dtype=dtype, kl=kl)
    assert_parity(vae, x, eps, y)


# -- the refit: the exact minimiser of the mean KL -------------------------------------------------


def _posteriors(rng, n, k, l):
    mu = rng.normal(0, 1, (n, l)) @ rng.normal(0, 1, (l, l))  # correlated codes
    log_var = rng.normal(-1, 0.5, (n, l))
    y = np.concatenate([np.arange(k - 1), rng.integers(0, k - 1, n - (k - 1))])
    return mu, log_var, np.eye(k)[y]  # class k-1 never occurs


def test_refit_is_the_moment_match_and_the_kl_is_stationary_there():
    rng = np.random.default_rng(3)
    n, k, l = 200, 4, 3
    prior = ClassGaussian(VAEConfig(n_classes=k, latent_dim=l, prior="class_gaussian",
                                    dtype="float64"))
    params = _prior_params(rng, k, l)
    absent = {name: params[name][k - 1].copy() for name in FITTED}
    mu, log_var, c = _posteriors(rng, n, k, l)
    prior.refit(params, mu, log_var, c)
    for j in range(k - 1):
        rows = c[:, j] == 1
        np.testing.assert_allclose(params["prior.class_means"][j], mu[rows].mean(axis=0))
        cov = np.cov(mu[rows].T, bias=True) + np.diag(np.exp(log_var[rows]).mean(axis=0))
        a = params["prior.class_chol"][j]
        np.testing.assert_allclose(a @ a.T, cov, rtol=1e-12)
        assert np.all(np.diag(a) > 0) and np.all(np.triu(a, 1) == 0)
    for name in FITTED:  # a class absent from the data keeps its values
        np.testing.assert_array_equal(params[name][k - 1], absent[name])
    # the M-step: the summed KL's gradient in the prior's parameters vanishes there...
    grads = {}
    prior.kl_backward(np.ones(n), params, mu, log_var, c, grads)
    for name in FITTED:
        assert np.abs(grads[name][: k - 1]).max() < 1e-10, name
    # ...and any other Gaussian gives a larger summed KL
    best = prior.kl(params, mu, log_var, c).sum()
    for _ in range(5):
        other = {name: params[name] + rng.normal(0, 0.05, params[name].shape)
                 for name in FITTED}
        assert prior.kl(other, mu, log_var, c).sum() > best


def test_the_torch_refit_equals_the_numpy_refit():
    torch = pytest.importorskip("torch")
    from vae_from_scratch.torch_vae.priors import TORCH_PRIORS

    rng = np.random.default_rng(4)
    n, k, l = 150, 4, 5
    config = VAEConfig(n_classes=k, latent_dim=l, prior="class_gaussian", dtype="float64")
    params = _prior_params(rng, k, l)
    tparams = {name: torch.tensor(value) for name, value in params.items()}
    mu, log_var, c = _posteriors(rng, n, k, l)
    ClassGaussian(config).refit(params, mu, log_var, c)
    TORCH_PRIORS["class_gaussian"](config).refit(
        tparams, *(torch.from_numpy(a) for a in (mu, log_var, c)))
    for name in FITTED:
        np.testing.assert_allclose(tparams[name].numpy(), params[name], rtol=1e-12, atol=1e-14)


def test_samples_follow_the_class_gaussian():
    rng = np.random.default_rng(5)
    vae = VAE(D, (4,), 3, n_classes=K, prior="class_gaussian", dtype=np.float64)
    vae.params.update(_prior_params(rng, K, 3))
    for k in range(K):
        z = vae.sample_prior(20000, np.random.default_rng(k), y=np.full(20000, k))
        a = np.tril(vae.params["prior.class_chol"][k])
        # 20,000 draws: the mean to a few hundredths, the covariance to a few percent
        np.testing.assert_allclose(z.mean(axis=0), vae.params["prior.class_means"][k],
                                   atol=0.05)
        np.testing.assert_allclose(np.cov(z.T), a @ a.T, atol=0.08)
    images = vae.sample(5, y=2, seed=0)
    np.testing.assert_array_equal(images, vae.sample(5, y=2, seed=0))
    assert not np.array_equal(images, vae.sample(5, y=1, seed=0))


# -- training: fitted at each epoch's end, never by the optimizer ----------------------------------


@pytest.fixture(scope="module")
def digits():
    ds = data.load_mnist()
    pick = np.random.default_rng(0).permutation(len(ds.x_train))[:300]
    return ds.x_train[pick], ds.y_train[pick], ds.x_test[:100], ds.y_test[:100]


def _backend(x, y, vae=None):
    vae = vae or VAE(784, (16,), 3, n_classes=10, prior="class_gaussian", seed=1)
    return NumpyBackend(vae, x, y, batch_size=64, lr=3e-3, seed=2)


def test_the_numpy_backend_refits_after_every_epoch_and_leaves_the_prior_to_it(digits):
    x, y, x_test, y_test = digits
    backend = _backend(x, y)
    assert not set(FITTED) & set(backend.opt.m)  # the optimizer holds no moments for them
    fit(backend, x_test, y_test=y_test, epochs=2, progress=False)
    vae = backend.to_vae()
    expected = VAE(config=vae.config, params={k: v.copy() for k, v in vae.params.items()})
    expected.refit_prior(x, y)  # the same encoder: the same fit, to the bit
    for name in FITTED:
        assert vae.params[name].tobytes() == expected.params[name].tobytes(), name
    assert not np.array_equal(vae.params["prior.class_means"], 0)


def test_the_torch_backend_refits_like_the_numpy_one(digits):
    pytest.importorskip("torch")
    from vae_from_scratch.torch_vae import TorchBackend

    x, y, _, _ = digits
    backend = TorchBackend(VAE(784, (16,), 3, n_classes=10, prior="class_gaussian", seed=1,
                               dtype=np.float64), x, y, batch_size=64, lr=3e-3, seed=2,
                           device="cpu")
    assert len(backend.opt.param_groups[0]["params"]) == len(backend.model.params) - 2
    fit(backend, None, epochs=2, progress=False)
    vae = backend.to_vae()
    expected = VAE(config=vae.config, params={k: v.copy() for k, v in vae.params.items()})
    expected.refit_prior(x, y)
    for name in FITTED:
        np.testing.assert_allclose(vae.params[name], expected.params[name], rtol=1e-10,
                                   atol=1e-12)
    state = backend.state_dict()["optimizer"]["state"]
    assert set(state) == set(backend.model.params) - set(FITTED)


@pytest.mark.parametrize("stop_at", [3, 5, 9])  # inside epoch 1, at its end, inside epoch 2
def test_a_stopped_run_resumes_bit_for_bit(digits, tmp_path, stop_at):
    x, y, x_test, y_test = digits
    straight = _backend(x, y)
    h_straight = fit(straight, x_test, y_test=y_test, epochs=3, progress=False)
    first = _backend(x, y)
    loop = LoopState()
    fit(first, x_test, y_test=y_test, epochs=3, progress=False, loop=loop,
        stop=lambda: first.steps_done >= stop_at)
    assert loop.stopped
    path = save_state(tmp_path / "state.safetensors", first.to_vae(),
                      {"backend": first.state_dict(), "loop": loop.to_dict()})
    params, config, state, _ = read_state(path)
    resumed = _backend(x, y, VAE(config=config, params=params))
    resumed.load_state_dict(state["backend"])
    h = fit(resumed, x_test, y_test=y_test, epochs=3, progress=False,
            loop=LoopState.from_dict(state["loop"]))
    for name, value in straight.vae.params.items():
        assert resumed.vae.params[name].tobytes() == value.tobytes(), name
    assert h.test_nelbo == h_straight.test_nelbo


# -- the command -----------------------------------------------------------------------------------


QUICK = ["train", "--conditional", "--hidden-dims", "16", "--latent-dim", "3", "--limit", "300",
         "--iwae-k", "0", "--quiet"]


def test_the_command_draws_conditional_models_with_the_class_prior_by_default(tmp_path):
    assert CONDITIONAL_PRIOR == "class_gaussian"
    assert main([*QUICK, "--epochs", "1", "--out", str(tmp_path / "a")]) == 0
    assert load_vae(tmp_path / "a" / "checkpoint.safetensors").config.prior == "class_gaussian"
    assert main([*QUICK, "--epochs", "1", "--prior", "standard",
                 "--out", str(tmp_path / "b")]) == 0
    assert load_vae(tmp_path / "b" / "checkpoint.safetensors").config.prior == "standard"
    # an unconditional run keeps the standard normal prior
    assert main(["train", "--hidden-dims", "16", "--latent-dim", "3", "--limit", "100",
                 "--epochs", "1", "--iwae-k", "0", "--quiet", "--out",
                 str(tmp_path / "c")]) == 0
    assert load_vae(tmp_path / "c" / "checkpoint.safetensors").config.prior == "standard"


def test_the_class_prior_without_labels_is_one_line_and_status_2(tmp_path, capsys):
    assert main(["train", "--prior", "class_gaussian", "--epochs", "1", "--quiet",
                 "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs a conditional model" in err[0]
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())


def test_the_help_says_what_conditional_runs_default_to(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "default: standard; with --conditional: class_gaussian" in text


def test_a_resumed_command_keeps_the_prior_and_ends_where_a_straight_run_ends(tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert main([*QUICK, "--epochs", "3", "--out", str(straight)]) == 0
    assert main([*QUICK, "--epochs", "2", "--out", str(resumed)]) == 0
    assert main(["train", "--resume", str(resumed), "--epochs", "3", "--quiet"]) == 0
    a = read_checkpoint(straight / "checkpoint.safetensors")
    b = read_checkpoint(resumed / "checkpoint.safetensors")
    assert b[1].prior == "class_gaussian"
    for name, value in a[0].items():
        assert np.asarray(b[0][name]).tobytes() == np.asarray(value).tobytes(), name
