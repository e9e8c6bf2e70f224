"""The VAE's hand-derived gradients against central differences, over its configurations.

Every check runs in float64 with frozen noise ``eps``, so the loss is a deterministic
function of the parameters. The configuration axes are covered pairwise: every value of
every axis meets every value of every other axis in at least one case (the full product
of 144 cases says little more and takes several times as long).
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest

from vae_from_scratch import VAE
from vae_from_scratch import distributions as dist
from vae_from_scratch.gradcheck import check_model_gradients, numerical_gradient, rel_error

pytestmark = [pytest.mark.lesson04, pytest.mark.lesson07]

TOL = 1e-6
INPUT_DIM = 6
N = 3

AXES = {
    "likelihood": ["bernoulli", "gaussian-fixed", "gaussian-learned", "continuous-bernoulli"],
    "kl": ["analytic", "monte_carlo"],
    "latent_dim": [1, 2, 20],
    "hidden_dims": [(5,), (7, 5)],
    "activation": ["relu", "tanh"],
    "beta": [1.0, 0.3],
}
# An orthogonal array for the three two-valued axes: every pair of their values appears.
_OA = [(0, 0, 0), (0, 1, 1), (1, 0, 1), (1, 1, 0)]


def _pairwise_cases():
    cases = []
    for (li, lik), (ki, kl), (zi, latent) in itertools.product(
        enumerate(AXES["likelihood"]), enumerate(AXES["kl"]), enumerate(AXES["latent_dim"])
    ):
        h, a, b = _OA[(li + 2 * ki + zi) % 4]
        cases.append(
            dict(likelihood=lik, kl=kl, latent_dim=latent, hidden_dims=AXES["hidden_dims"][h],
                 activation=AXES["activation"][a], beta=AXES["beta"][b])
        )
    return cases


CASES = _pairwise_cases()


def _case_id(c):
    hidden = "x".join(map(str, c["hidden_dims"]))
    return (f"{c['likelihood']}-{c['kl']}-L{c['latent_dim']}-h{hidden}-{c['activation']}"
            f"-b{c['beta']}")


def _likelihood_kwargs(name):
    return {
        "bernoulli": dict(likelihood="bernoulli"),
        "gaussian-fixed": dict(likelihood="gaussian", obs_var=0.5),
        "gaussian-learned": dict(likelihood="gaussian", obs_var="learned"),
        "continuous-bernoulli": dict(likelihood="continuous_bernoulli"),
    }[name]


def _make(case, seed=1, n_components=3, prior="standard"):
    kwargs = dict(case)
    kwargs.update(_likelihood_kwargs(kwargs.pop("likelihood")))
    vae = VAE(INPUT_DIM, seed=seed, dtype=np.float64, prior=prior, n_components=n_components,
              **kwargs)
    rng = np.random.default_rng(seed + 100)
    # move the parameters that start at special values (zeros) to generic ones
    for name in ("dec.log_var", "prior.log_vars", "prior.logits"):
        if name in vae.params:
            vae.params[name] = 0.3 * rng.standard_normal(vae.params[name].shape)
    if vae.config.likelihood != "gaussian":
        x = rng.random((N, INPUT_DIM))
    else:
        x = rng.standard_normal((N, INPUT_DIM))
    eps = rng.standard_normal((N, vae.latent_dim))
    return vae, x, eps


def test_cases_cover_every_pair_of_values():
    names = list(AXES)
    for a, b in itertools.combinations(names, 2):
        seen = {(c[a], c[b]) for c in CASES}
        assert seen == set(itertools.product(AXES[a], AXES[b])), (a, b)


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_loss_and_grads_match_central_differences(case):
    vae, x, eps = _make(case)
    errors = check_model_gradients(vae, x, eps)
    assert set(errors) == set(vae.params)
    bad = {k: v for k, v in errors.items() if not v < TOL}
    assert not bad, bad


MIXTURE_CASES = [
    dict(likelihood="bernoulli", kl="auto", latent_dim=2, hidden_dims=(5,),
         activation="relu", beta=1.0),
    dict(likelihood="gaussian-learned", kl="monte_carlo", latent_dim=1, hidden_dims=(7, 5),
         activation="tanh", beta=0.3),
    dict(likelihood="gaussian-fixed", kl="monte_carlo", latent_dim=20, hidden_dims=(5,),
         activation="tanh", beta=1.0),
]


@pytest.mark.parametrize("case", MIXTURE_CASES, ids=_case_id)
def test_mixture_prior_gradients_match_central_differences(case):
    vae, x, eps = _make(case, prior="mixture")
    assert vae.config.kl_mode == "monte_carlo"
    assert {"prior.means", "prior.log_vars", "prior.logits"} <= set(vae.params)
    errors = check_model_gradients(vae, x, eps)
    bad = {k: v for k, v in errors.items() if not v < TOL}
    assert not bad, bad


@pytest.mark.parametrize("kl", ["analytic", "monte_carlo"])
@pytest.mark.parametrize("override", [0.0, 0.3, 2.5])
def test_beta_override_of_loss_and_grads(kl, override):
    case = dict(likelihood="gaussian-learned", kl=kl, latent_dim=2, hidden_dims=(5,),
                activation="tanh", beta=1.0)
    vae, x, eps = _make(case)
    terms, grads = vae.loss_and_grads(x, eps, beta=override)
    assert terms.loss == pytest.approx(terms.recon + override * terms.kl, rel=1e-14, abs=1e-14)
    for name, value in vae.params.items():

        def f():
            return vae.loss_and_grads(x, eps, beta=override)[0].loss

        assert rel_error(grads[name], numerical_gradient(f, value)) < TOL, name
    # the override is for that call only
    assert vae.config.beta == 1.0
    assert vae.loss_and_grads(x, eps)[0].loss == pytest.approx(vae.loss(x, eps).loss, rel=1e-15)


def test_beta_override_equals_a_model_configured_with_that_beta():
    case = dict(likelihood="bernoulli", kl="analytic", latent_dim=2, hidden_dims=(5,),
                activation="relu", beta=1.0)
    vae, x, eps = _make(case)
    other = VAE(config=dataclasses.replace(vae.config, beta=0.3), params=vae.params)
    t1, g1 = vae.loss_and_grads(x, eps, beta=0.3)
    t2, g2 = other.loss_and_grads(x, eps)
    assert t1 == t2
    for name in g1:
        np.testing.assert_array_equal(g1[name], g2[name])


# --- the check itself must catch mistakes ----------------------------------------------------


def _default_case():
    return dict(likelihood="bernoulli", kl="monte_carlo", latent_dim=2, hidden_dims=(7, 5),
                activation="tanh", beta=1.0)


def test_a_perturbed_gradient_is_detected(monkeypatch):
    vae, x, eps = _make(_default_case())
    original = vae.loss_and_grads

    def wrong(x, eps, beta=None):
        terms, grads = original(x, eps, beta)
        grads = dict(grads)
        g = grads["enc.0.W"].copy()
        g[2, 3] += 1e-3 * (np.abs(g).max() + 1e-3)
        grads["enc.0.W"] = g
        return terms, grads

    monkeypatch.setattr(vae, "loss_and_grads", wrong)
    errors = check_model_gradients(vae, x, eps)
    assert errors["enc.0.W"] > 1e-5
    assert all(v < TOL for k, v in errors.items() if k != "enc.0.W")


def test_a_wrong_reparameterization_backward_is_detected(monkeypatch):
    """Forgetting the 1/2 in d z / d log_var breaks exactly the log-variance head's grads."""

    def no_half(dz, cache):
        std, e = cache
        return dz, dz * std * e

    vae, x, eps = _make(_default_case())
    monkeypatch.setattr(dist, "reparameterize_backward", no_half)
    errors = check_model_gradients(vae, x, eps)
    assert errors["enc.log_var.W"] > 1e-3 and errors["enc.log_var.b"] > 1e-3
    assert errors["dec.out.W"] < TOL  # the decoder does not see the mistake


def test_a_wrong_kl_backward_is_detected(monkeypatch):
    real = dist.kl_standard_normal_backward

    def wrong_sign(dkl, mu, log_var):
        dmu, dlog_var = real(dkl, mu, log_var)
        return -dmu, dlog_var

    vae, x, eps = _make(dict(_default_case(), kl="analytic"))
    monkeypatch.setattr(dist, "kl_standard_normal_backward", wrong_sign)
    errors = check_model_gradients(vae, x, eps)
    assert errors["enc.mu.W"] > 1e-3 and errors["enc.mu.b"] > 1e-3
    assert errors["dec.out.W"] < TOL


# --- the continuous Bernoulli where its closed form is 0/0 --------------------------------------


def test_continuous_bernoulli_gradients_near_zero_logits():
    """Half the pixels get logits within 1e-4 of 0, where log C and its gradient come from
    their Taylor series (their output weights are tiny; the other half's are not, so the
    gradients upstream stay large enough for central differences to resolve)."""
    vae = VAE(INPUT_DIM, (5,), 2, likelihood="continuous_bernoulli", seed=3, dtype=np.float64)
    rng = np.random.default_rng(7)
    near = slice(0, INPUT_DIM // 2)
    vae.params["dec.out.W"][:, near] = 1e-5 * rng.standard_normal((5, INPUT_DIM // 2))
    vae.params["dec.out.b"][near] = 1e-5 * rng.standard_normal(INPUT_DIM // 2)
    x, eps = rng.random((N, INPUT_DIM)), rng.standard_normal((N, 2))
    z = vae.encode(x)[0] + np.exp(0.5 * vae.encode(x)[1]) * eps
    logits = vae.decode(z)
    assert np.abs(logits[:, near]).max() < 1e-4 and np.abs(logits[:, INPUT_DIM // 2:]).min() > 0
    errors = check_model_gradients(vae, x, eps)
    bad = {k: v for k, v in errors.items() if not v < TOL}
    assert not bad, bad


def test_continuous_bernoulli_reconstructs_with_its_mean_not_lambda():
    vae = VAE(INPUT_DIM, (5,), 2, likelihood="continuous_bernoulli", seed=0, dtype=np.float64)
    vae.params["dec.out.b"] += 3.0  # logits far from 0, where mean and lambda differ most
    x = np.random.default_rng(0).random((4, INPUT_DIM))
    logits = vae.decode(vae.encode(x)[0])
    mean = vae.reconstruct(x)
    np.testing.assert_allclose(mean, 1 / (1 - np.exp(-logits)) - 1 / logits, rtol=1e-12)
    assert np.all(mean < 1 / (1 + np.exp(-logits)))  # between 1/2 and lambda
