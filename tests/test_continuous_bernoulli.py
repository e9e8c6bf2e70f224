"""Tests for the continuous Bernoulli likelihood (distributions.py, likelihoods.py,
torch_vae/distributions.py).

References nobody here wrote: an arbitrary-precision evaluation (mpmath, from the
definitions: A(l) = log((e^l - 1) / l) is the log of the integral of e^(lx) over [0, 1],
log C = softplus - A, and derivatives by mpmath's numerical differentiation, not by the
formulas derived in the code), quadrature (scipy), central differences, and
torch.distributions.ContinuousBernoulli where it is accurate.

``python tests/test_continuous_bernoulli.py`` prints the accuracy figures these tests bound.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from vae_from_scratch import distributions as dist
from vae_from_scratch.gradcheck import numerical_gradient, rel_error

pytestmark = pytest.mark.lesson09

T = dist.CB_TAYLOR_BELOW
ELEMENTWISE = (dist.cb_log_norm, dist.cb_log_norm_grad, dist.continuous_bernoulli_mean)

#: float64 relative error allowed against the 50-digit reference for log C, its derivative and
#: the mean. The contract is ~1e-12; the implementation reaches a few ulp (figures in the
#: report printed by running this file), so the bound is 1e-14 (~45 ulp): loose enough for
#: any libm, tight enough that a threshold too low for the cancelling closed forms (e.g.
#: 1/l - 1/sinh(l) used from |l| = 0.1 loses 6e-14) fails.
REL_MP = 1e-14

#: Logit grids on which the mpmath comparisons run: tiny (the Taylor branch, down to 1e-12),
#: the rest of the Taylor branch, both sides of the threshold, and large, up to |l| = 200.
_TINY = np.geomspace(1e-12, 1e-2, 21)
_GRID_MP = {
    "tiny": np.r_[_TINY, -_TINY],
    "taylor": np.r_[np.linspace(0.01, 0.99, 25), -np.linspace(0.01, 0.99, 25)],
    "threshold": np.array([np.nextafter(T, 0), T, np.nextafter(T, 2), T * (1 + 1e-9),
                           -np.nextafter(T, 0), -T, -np.nextafter(T, 2)]),
    "large": np.r_[np.linspace(1.0, 200.0, 45), -np.linspace(1.0, 200.0, 45), 36.7, -36.7],
}
_X_MP = np.array([0.0, 1e-3, 0.25, 0.5, 0.9, 1.0])


# --- references ---------------------------------------------------------------------------


def _mp_refs(logits, dps=50):
    """50-digit log C, d log C / dl, mean, d mean / dl (floats) and A (mpf) for each logit,
    from the definitions. mpmath's diff differentiates numerically at that precision."""
    mpmath = pytest.importorskip("mpmath")
    mp = mpmath.mp
    refs = {"log_norm": [], "grad": [], "mean": [], "dmean": [], "A": []}
    with mpmath.workdps(dps):

        def A(l):
            return mp.mpf(0) if l == 0 else mp.log(mp.expm1(l) / l)

        def log_norm(l):
            return mp.log1p(mp.exp(l)) - A(l)

        for v in np.asarray(logits, dtype=np.float64).ravel():
            l = mp.mpf(float(v))
            refs["log_norm"].append(float(log_norm(l)))
            refs["grad"].append(float(mp.diff(log_norm, l)))
            refs["mean"].append(float(mp.diff(A, l)))
            refs["dmean"].append(float(mp.diff(A, l, 2)))
            refs["A"].append(A(l))  # kept at full precision for the log-density
    return refs


def _mp_log_density(x, logits):
    """50-digit x l - A(l), elementwise over the outer product of x and logits: (X, L)."""
    mpmath = pytest.importorskip("mpmath")
    a = _mp_refs(logits)["A"]
    with mpmath.workdps(50):
        return np.array([[float(mpmath.mpf(float(xi)) * mpmath.mpf(float(l)) - ai)
                          for l, ai in zip(logits, a, strict=True)] for xi in x])


def _max_rel(got, ref):
    ref = np.asarray(ref, dtype=np.float64)
    got = np.asarray(got, dtype=np.float64)
    zero = ref == 0
    assert np.array_equal(got[zero], ref[zero]), "expected exact zeros"
    return float(np.max(np.abs(got[~zero] - ref[~zero]) / np.abs(ref[~zero]), initial=0.0))


# --- exact values, symmetries, shapes and dtypes -----------------------------------------


def test_values_at_zero_are_exact():
    for dtype in (np.float64, np.float32):
        zero = np.zeros(3, dtype=dtype)
        assert np.all(dist.cb_log_norm(zero) == dtype(np.log(2.0)))
        assert np.all(dist.cb_log_norm_grad(zero) == 0)
        assert np.all(dist.continuous_bernoulli_mean(zero) == 0.5)


def test_symmetries():
    """C(-l) = C(l), so log C is even and its derivative odd; CB(x; -l) = CB(1 - x; l), so
    mean(-l) = 1 - mean(l)."""
    l = np.r_[np.geomspace(1e-9, 300, 200), np.nextafter(T, 0), T]
    np.testing.assert_array_equal(dist.cb_log_norm(-l), dist.cb_log_norm(l))
    np.testing.assert_array_equal(dist.cb_log_norm_grad(-l), -dist.cb_log_norm_grad(l))
    mean = dist.continuous_bernoulli_mean
    np.testing.assert_allclose(mean(-l), 1 - mean(l), rtol=0, atol=2.3e-16)


@pytest.mark.parametrize("shape", [(), (1,), (7,), (2, 3), (2, 3, 4)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_elementwise_functions_keep_shape_and_dtype(shape, dtype):
    rng = np.random.default_rng(3)
    l = (rng.standard_normal(shape) * 3).astype(dtype)  # both branches when size allows
    for f in ELEMENTWISE:
        out = f(l)
        assert np.shape(out) == shape and out.dtype == dtype, f.__name__
        np.testing.assert_allclose(out, f(l.astype(np.float64)), rtol=2e-6, atol=1e-7)
    assert np.ndim(dist.cb_log_norm(0.5)) == 0


def test_integer_logits_become_float64():
    for f in ELEMENTWISE:
        out = f(np.array([0, 1, -3]))
        assert out.dtype == np.float64
        np.testing.assert_array_equal(out, f(np.array([0.0, 1.0, -3.0])))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log_likelihood_shapes_and_dtype(dtype):
    rng = np.random.default_rng(4)
    x = rng.uniform(size=(5, 6)).astype(dtype)
    logits = (rng.standard_normal((5, 6)) * 4).astype(dtype)
    out = dist.continuous_bernoulli_log_likelihood(x, logits)
    assert out.shape == (5,) and out.dtype == dtype
    dout = np.ones(5, dtype=dtype)
    grad = dist.continuous_bernoulli_log_likelihood_backward(dout, x, logits)
    assert grad.shape == (5, 6) and grad.dtype == dtype


def test_the_mean_is_not_lambda():
    """The docstring's example, lambda = 0.9: the mean lies between 1/2 and lambda."""
    l = np.log(0.9 / 0.1)
    mean = dist.continuous_bernoulli_mean(l)
    assert round(float(mean), 2) == 0.67
    l = np.linspace(-30, 30, 61)
    mean, lam = dist.continuous_bernoulli_mean(l), dist.sigmoid(l)
    assert np.all(np.minimum(lam, 0.5) <= mean) and np.all(mean <= np.maximum(lam, 0.5))
    assert np.all((mean != lam)[l != 0])


def test_mean_is_sigmoid_minus_the_log_norm_gradient():
    """A' = softplus' - (log C)': two independently computed functions agree."""
    l = np.r_[0.0, np.geomspace(1e-10, 700, 300), -np.geomspace(1e-10, 700, 300)]
    expected = dist.sigmoid(l) - dist.cb_log_norm_grad(l)
    np.testing.assert_allclose(dist.continuous_bernoulli_mean(l), expected, rtol=0, atol=3e-16)


# --- against a 50-digit evaluation (mpmath) ------------------------------------------------


@pytest.mark.parametrize("region", sorted(_GRID_MP))
def test_log_norm_gradient_and_mean_match_mpmath(region):
    l = _GRID_MP[region]
    ref = _mp_refs(l)
    for name, f in (("log_norm", dist.cb_log_norm), ("grad", dist.cb_log_norm_grad),
                    ("mean", dist.continuous_bernoulli_mean)):
        err = _max_rel(f(l), ref[name])
        assert err < REL_MP, f"{name} in {region}: max relative error {err:.2e}"


@pytest.mark.parametrize("region", sorted(_GRID_MP))
def test_log_density_matches_mpmath(region):
    """The log-density x l - softplus(l) + log C(l) sums terms as large as |l|, so its
    round-off is absolute, a few ulp of |l|: the error is bounded by 1e-14 (1 + |l|), which
    is also 1e-14 relative wherever the density's log is not near 0."""
    l = _GRID_MP[region]
    ref = _mp_log_density(_X_MP, l)  # (X, L)
    x = np.repeat(_X_MP[:, None], len(l), axis=1)
    got = np.stack([dist.continuous_bernoulli_log_likelihood(xi[:, None], l[:, None])
                    for xi in x])
    scale = 1 + np.abs(l)[None, :]
    err = float(np.max(np.abs(got - ref) / scale))
    assert err < 1e-14, f"{region}: max error / (1 + |l|) = {err:.2e}"


def test_taylor_series_coefficients_are_those_of_the_functions():
    """The first coefficients, as derived by hand in the docstrings (l^2/12 - 7 l^4/1440,
    l/6 - 7 l^3/360, 1/2 + l/12 - l^3/720), and the last kept term is below 2^-60 at
    |l| = T while the first dropped one is not needed (checked by the mpmath tests above)."""
    np.testing.assert_allclose(dist.CB_LOG_NORM_SERIES[:2], [1 / 12, -7 / 1440], rtol=1e-15)
    np.testing.assert_allclose(dist.CB_LOG_NORM_GRAD_SERIES[:2], [1 / 6, -7 / 360],
                               rtol=1e-15)
    np.testing.assert_allclose(dist.CB_MEAN_SERIES[:2], [1 / 12, -1 / 720], rtol=1e-15)
    for series in (dist.CB_LOG_NORM_SERIES, dist.CB_LOG_NORM_GRAD_SERIES,
                   dist.CB_MEAN_SERIES):
        assert abs(series[-1]) >= 2.0**-60 and 8 <= len(series) <= 25


@pytest.mark.parametrize("below", sorted({T, 1.85, *np.arange(0.25, 1.8, 1 / 16).tolist()}))
def test_each_series_is_its_formula_cut_at_the_first_term_below_2_to_the_minus_60(below):
    """Every kept coefficient is its formula in the Bernoulli numbers (mpmath's, to 1e-15),
    and each series is cut where its terms at |l| = threshold fall below 2^-60, wherever the
    threshold is set (0.25 to 1.85, the most that n_max allows): the last kept term is not
    below, the first dropped one is. So the Taylor branch is accurate to float64 up to its
    threshold, with no term to spare."""
    mpmath = pytest.importorskip("mpmath")
    series = dist.cb_series(below)
    if below == T:
        assert series == (dist.CB_LOG_NORM_SERIES, dist.CB_LOG_NORM_GRAD_SERIES,
                          dist.CB_MEAN_SERIES)
    with mpmath.workdps(40):
        B, fac = mpmath.bernoulli, mpmath.factorial
        formulas = (  # coefficient n (n >= 1) and the power of l that it multiplies
            (lambda n: (4**n - 2) * B(2 * n) / (2 * n * fac(2 * n)), lambda n: 2 * n),
            (lambda n: (4**n - 2) * B(2 * n) / fac(2 * n), lambda n: 2 * n - 1),
            (lambda n: B(2 * n) / fac(2 * n), lambda n: 2 * n - 1),
        )
        for coefs, (coef, power) in zip(series, formulas, strict=True):
            exact = [coef(n) for n in range(1, len(coefs) + 2)]
            np.testing.assert_allclose(coefs, [float(c) for c in exact[:-1]], rtol=1e-15)
            last, first_dropped = (abs(exact[n - 1]) * mpmath.mpf(below) ** power(n)
                                   for n in (len(coefs), len(coefs) + 1))
            assert last >= 2.0**-60 > first_dropped, (below, len(coefs))


# --- the density is normalized (quadrature) -------------------------------------------------


_LAMBDAS = [1e-6, 1e-3, 0.1, 0.3, 0.5 - 1e-9, 0.5, 0.5 + 1e-6, 0.7, 0.9, 0.999, 1 - 1e-6]


@pytest.mark.parametrize("lam", _LAMBDAS)
def test_density_integrates_to_one_and_has_the_stated_mean(lam):
    quad = pytest.importorskip("scipy.integrate").quad
    l = np.log(lam) - np.log1p(-lam)

    def density(x):
        return float(np.exp(dist.continuous_bernoulli_log_likelihood(
            np.array([[x]]), np.array([[l]]))[0]))

    total, _ = quad(density, 0, 1, epsabs=1e-12, epsrel=1e-12, limit=200)
    first, _ = quad(lambda x: x * density(x), 0, 1, epsabs=1e-12, epsrel=1e-12, limit=200)
    assert abs(total - 1) < 1e-10, f"lambda={lam}: integral {total!r}"
    assert abs(first - dist.continuous_bernoulli_mean(l)) < 1e-10, f"lambda={lam}: mean"


@pytest.mark.parametrize("lam", [1e-6, 0.1, 0.5, 0.9, 1 - 1e-6])
def test_bernoulli_term_alone_integrates_to_one_over_c(lam):
    """Lesson 05's statement: the Bernoulli 'likelihood' of a grey pixel integrates to
    (2 lam - 1) / log(lam / (1 - lam)) = 1 / C <= 1/2, not 1."""
    quad = pytest.importorskip("scipy.integrate").quad
    l = np.log(lam) - np.log1p(-lam)

    def bernoulli(x):
        return float(np.exp(dist.bernoulli_log_likelihood(np.array([[x]]), np.array([[l]]))[0]))

    total, _ = quad(bernoulli, 0, 1, epsabs=1e-12, epsrel=1e-12, limit=200)
    np.testing.assert_allclose(total, np.exp(-dist.cb_log_norm(l)), rtol=1e-10)
    assert total <= 0.5 + 1e-15


# --- gradients ----------------------------------------------------------------------------------


def _logits(kind, shape, rng):
    if kind == "normal":
        return rng.standard_normal(shape) * 3
    if kind == "near_zero":  # the Taylor branch, within 1e-4 of 0
        return rng.uniform(-1e-4, 1e-4, shape)
    if kind == "crossing":  # both sides of the threshold, both signs
        return rng.choice([-1.0, 1.0], shape) * (T + rng.uniform(-1e-3, 1e-3, shape))
    if kind == "large":
        return rng.choice([-1.0, 1.0], shape) * rng.uniform(20, 200, shape)
    raise ValueError(kind)


_KINDS = ["normal", "near_zero", "crossing", "large"]
_SHAPES = [(1, 1), (3, 4), (5, 7)]


def _case(kind, shape, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=shape)
    x.flat[0] = 0.0
    x.flat[-1] = 1.0
    return x, _logits(kind, shape, rng), rng.standard_normal(shape[0])


@pytest.mark.parametrize("shape", _SHAPES)
@pytest.mark.parametrize("kind", _KINDS)
def test_log_likelihood_backward_matches_central_differences(kind, shape):
    x, logits, dout = _case(kind, shape)

    def f():
        return np.sum(dout * dist.continuous_bernoulli_log_likelihood(x, logits))

    numeric = numerical_gradient(f, logits)
    analytic = dist.continuous_bernoulli_log_likelihood_backward(dout, x, logits)
    assert rel_error(analytic, numeric) < 1e-6


@pytest.mark.parametrize("kind", ["normal", "crossing", "large"])
def test_log_norm_gradient_matches_central_differences(kind):
    """(Within 1e-4 of 0 the derivative is ~l/6 and central differences of a function near
    log 2 cannot resolve it to 1e-6; the mpmath test covers it there.)"""
    _, logits, _ = _case(kind, (4, 6), seed=1)
    numeric = numerical_gradient(lambda: np.sum(dist.cb_log_norm(logits)), logits)
    assert rel_error(dist.cb_log_norm_grad(logits), numeric) < 1e-6


def test_mean_is_the_derivative_of_the_log_partition():
    """mean = A'(l) with A = softplus - log C, by central differences."""
    _, logits, _ = _case("normal", (4, 6), seed=2)

    def a():
        return np.sum(dist.softplus(logits) - dist.cb_log_norm(logits))

    numeric = numerical_gradient(a, logits)
    assert rel_error(dist.continuous_bernoulli_mean(logits), numeric) < 1e-6


# --- float32 and extreme inputs -------------------------------------------------------------


_F32_LOGITS = [0.0, 1e-30, -1e-30, 1e-8, -1e-8, 1e-3, -1e-3, 1.0, -1.0, 100.0, -100.0,
               1e4, -1e4]


def test_float32_is_finite_and_close_to_float64():
    l32 = np.array(_F32_LOGITS, dtype=np.float32)
    l64 = l32.astype(np.float64)
    with np.errstate(all="raise"):
        for f in ELEMENTWISE:
            out = f(l32)
            assert out.dtype == np.float32 and np.all(np.isfinite(out)), f.__name__
            np.testing.assert_allclose(out, f(l64), rtol=5e-7, atol=0, err_msg=f.__name__)
    x = np.linspace(0, 1, len(l32), dtype=np.float32)[None, :].repeat(3, axis=0)
    logits = np.broadcast_to(l32, x.shape).copy()
    # e^-|l| underflowing to 0 inside the shared softplus is harmless, and not an error here
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        out = dist.continuous_bernoulli_log_likelihood(x, logits)
        grad = dist.continuous_bernoulli_log_likelihood_backward(np.ones(3, np.float32), x,
                                                                 logits)
    assert out.dtype == grad.dtype == np.float32
    assert np.all(np.isfinite(out)) and np.all(np.isfinite(grad))
    ref = dist.continuous_bernoulli_log_likelihood(x.astype(np.float64), logits.astype(np.float64))
    np.testing.assert_allclose(out, ref, rtol=1e-6)


def test_float64_extremes_raise_no_floating_point_flag():
    # 354.2 = -log(tiny) / 2: beyond it e^-|l| is set to 0, so that its square (up to
    # 708.4, where e^-|l| itself reaches tiny) cannot underflow
    l = np.array([0.0, 1e-306, 1e-300, 1e-160, 1e-8, 0.5, 1.0, 30.0, 354.0, 354.5, 500.0,
                  708.0, 709.0, 710.0, 1e4, 1e300])
    l = np.r_[l, -l]
    with np.errstate(all="raise"):
        outs = [f(l) for f in ELEMENTWISE]
    for out in outs:
        assert np.all(np.isfinite(out))
    big = np.abs(l) >= 1e4
    np.testing.assert_allclose(outs[0][big], np.log(np.abs(l[big])), rtol=1e-15)
    np.testing.assert_allclose(outs[1][big], 1 / l[big], rtol=1e-15)
    np.testing.assert_allclose(outs[2][big], np.where(l[big] > 0, 1 - 1 / l[big], -1 / l[big]),
                               rtol=1e-15)


def test_subnormal_results_give_no_warning():
    """Where l/6 is subnormal, d log C / dl sets NumPy's underflow flag, which only warns (or
    raises) when asked to, like any NumPy arithmetic; by default nothing is printed."""
    l = np.array([5e-324, -1e-310, 2.3e-308], dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        outs = [f(l) for f in ELEMENTWISE]
    np.testing.assert_array_equal(outs[0], np.log(2.0))
    assert np.all(np.abs(outs[1]) <= np.abs(l)) and np.all(outs[2] == 0.5)


# --- continuity at the threshold -------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_continuous_at_the_taylor_threshold(dtype, sign):
    """Just below T (Taylor) and at T (closed form) the values differ only by round-off:
    a few ulp of the value plus the slope (< 0.25 there) times the step."""
    at = dtype(sign * T)
    below = np.nextafter(at, dtype(0))
    assert abs(below) < T <= abs(at)
    eps = np.finfo(dtype).eps
    for f in ELEMENTWISE:
        v_at, v_below = np.float64(f(at)), np.float64(f(below))
        allowed = 4 * eps * abs(v_at) + 0.25 * abs(np.float64(at) - np.float64(below))
        assert abs(v_at - v_below) <= allowed, (f.__name__, v_at, v_below)


# --- PyTorch: torch.distributions and the mirror's autograd ----------------------------------

#: Where torch.distributions.ContinuousBernoulli is itself accurate to 1e-10 (absolute; the
#: log-density is O(1)-O(|l|) and crosses 0, so a relative bound would mean nothing near
#: the crossing). It works from probs = sigmoid(l), rounded: for l > 0, 1 - probs carries
#: an absolute error of ~1e-16, which reaches log C through log(1 - probs) as
#: ~1e-16 e^l / l nats: 1.5e-11 at l = 15, 2e-10 at 17, 3e-5 at 30; past |l| = 36.7 (both
#: signs) probs is clamped to [eps, 1 - eps] and it is 0.1 nats off at |l| = 40. For
#: 0.499 < probs < 0.501 (|l| < 0.004) it uses a Taylor expansion, accurate to 2e-16; just
#: outside, its closed form cancels (mean off by 3e-12 at |l| = 0.004). So [-15, 15], the
#: range where its worst measured error (1.5e-11) is well inside the tolerance.
TORCH_RANGE = 15.0
TORCH_TOL = 1e-10


def _torch_grid():
    l = np.r_[0.0, np.geomspace(1e-12, 1e-4, 9), np.linspace(0.0039, 0.0041, 5),
              np.linspace(1e-4, TORCH_RANGE, 120)]
    return np.r_[l, -l[1:]]


@pytest.mark.torch
def test_log_prob_and_mean_match_torch_distributions():
    import torch

    l = _torch_grid()
    x = np.r_[0.0, 1e-6, 0.1, 0.5, 0.77, 1 - 1e-6, 1.0]
    cb = torch.distributions.ContinuousBernoulli(logits=torch.tensor(l))
    for xi in x:
        ours = dist.continuous_bernoulli_log_likelihood(np.full((len(l), 1), xi), l[:, None])
        theirs = cb.log_prob(torch.full((len(l),), xi, dtype=torch.float64)).numpy()
        err = np.max(np.abs(ours - theirs))
        assert err < TORCH_TOL, f"x={xi}: max |ours - torch| = {err:.2e}"
    err = np.max(np.abs(dist.continuous_bernoulli_mean(l) - cb.mean.numpy()))
    assert err < TORCH_TOL, f"mean: max |ours - torch| = {err:.2e}"


def _torch_cases():
    for kind in _KINDS:
        for shape in _SHAPES:
            yield _case(kind, shape)
    extremes = np.array([[0.0, 1e-30, -1e-300, 1e4, -1e4, np.nextafter(T, 0), T, -T]])
    yield np.linspace(0, 1, extremes.size)[None, :], extremes, np.array([1.5])


@pytest.mark.torch
def test_torch_functions_equal_numpy_and_their_autograd_the_hand_backward():
    import torch

    from vae_from_scratch.torch_vae import distributions as tdist

    for x, logits, dout in _torch_cases():
        lt = torch.tensor(logits, requires_grad=True)
        log_prob = tdist.continuous_bernoulli_log_prob(torch.tensor(x), lt)
        (torch.tensor(dout) * log_prob).sum().backward()
        expected = dist.continuous_bernoulli_log_likelihood(x, logits)
        # absolute: near l = 0 the row sums are ~1e-5 after cancelling terms of size log 2
        np.testing.assert_allclose(log_prob.detach().numpy(), expected, rtol=0,
                                   atol=1e-15 * np.sum(1 + np.abs(logits)))
        grad = dist.continuous_bernoulli_log_likelihood_backward(dout, x, logits)
        assert rel_error(lt.grad.numpy(), grad) < 1e-10
        assert rel_error(tdist.cb_log_norm(lt).detach().numpy(),
                         dist.cb_log_norm(logits)) < 1e-15
        assert rel_error(tdist.continuous_bernoulli_mean(lt).detach().numpy(),
                         dist.continuous_bernoulli_mean(logits)) < 1e-15


@pytest.mark.torch
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_torch_gradients_are_finite_everywhere(dtype):
    """No NaN from the branch a torch.where does not take; d log C / dl = 0 and
    d mean / dl = 1/12 at exactly 0."""
    import torch

    from vae_from_scratch.torch_vae import distributions as tdist

    l = torch.tensor(_F32_LOGITS, dtype=getattr(torch, dtype), requires_grad=True)
    ref = _mp_refs(_F32_LOGITS)
    rtol = 1e-12 if dtype == "float64" else 1e-5
    for f, name in ((tdist.cb_log_norm, "grad"),
                    (tdist.continuous_bernoulli_mean, "dmean")):
        (grad,) = torch.autograd.grad(f(l).sum(), l)
        assert bool(torch.isfinite(grad).all()), f.__name__
        assert float(grad[0]) == {"grad": 0.0, "dmean": pytest.approx(1 / 12)}[name]
        np.testing.assert_allclose(grad.numpy(), ref[name], rtol=rtol, atol=1e-50,
                                   err_msg=f.__name__)
    x = torch.rand(4, len(_F32_LOGITS), dtype=l.dtype, generator=torch.Generator().manual_seed(0))
    (grad,) = torch.autograd.grad(
        tdist.continuous_bernoulli_log_prob(x, l.expand(4, -1)).sum(), l)
    assert bool(torch.isfinite(grad).all())


# --- the figures the tests bound ------------------------------------------------------------


def _report():
    """Measured accuracy, printed: ours vs 50 digits, and torch vs 50 digits, per region."""
    print("max relative error vs 50-digit mpmath (float64)")
    for region in sorted(_GRID_MP):
        l = _GRID_MP[region]
        ref = _mp_refs(l)
        errs = [_max_rel(f(l), ref[k]) for k, f in (("log_norm", dist.cb_log_norm),
                ("grad", dist.cb_log_norm_grad), ("mean", dist.continuous_bernoulli_mean))]
        ld = _mp_log_density(_X_MP, l)
        got = np.stack([dist.continuous_bernoulli_log_likelihood(np.full((len(l), 1), xi),
                                                                  l[:, None]) for xi in _X_MP])
        errs.append(float(np.max(np.abs(got - ld) / (1 + np.abs(l)))))
        print(f"  {region:10s} log C {errs[0]:.1e}  dlogC {errs[1]:.1e}  mean {errs[2]:.1e}"
              f"  log-density/(1+|l|) {errs[3]:.1e}")
    _dense_sweep()
    l32 = np.array(_F32_LOGITS, dtype=np.float32)
    print("float32 vs float64, max relative difference over", _F32_LOGITS)
    for f in ELEMENTWISE:
        a, b = f(l32).astype(np.float64), f(l32.astype(np.float64))
        print(f"  {f.__name__:28s} {np.max(np.abs(a - b) / np.abs(np.where(b == 0, 1, b))):.1e}")
    try:
        import torch
    except ImportError:
        return
    print("max absolute error vs 50-digit mpmath: ours | torch.distributions (x = 0, 0.5, 1)")
    ranges = [("|l| < 1e-4", np.geomspace(1e-12, 1e-4, 20)),
              ("1e-4..0.004 (torch Taylor)", np.linspace(1e-4, 0.004, 20)),
              ("0.004..0.05", np.linspace(0.004, 0.05, 40)), ("0.05..1", np.linspace(0.05, 1, 20)),
              ("1..10", np.linspace(1, 10, 20)), ("10..15", np.linspace(10, 15, 20)),
              ("15..20", np.linspace(15, 20, 20)), ("20..30", np.linspace(20, 30, 20)),
              ("30..40", np.linspace(30, 40, 20)), ("40..200", np.linspace(40, 200, 20))]
    for name, pos in ranges:
        for sign in (1, -1):
            l = sign * pos
            ld = _mp_log_density([0.0, 0.5, 1.0], l)
            cb = torch.distributions.ContinuousBernoulli(logits=torch.tensor(l))
            ours = np.stack([dist.continuous_bernoulli_log_likelihood(np.full((len(l), 1), xi),
                                                                       l[:, None])
                             for xi in (0.0, 0.5, 1.0)])
            theirs = np.stack([cb.log_prob(torch.full((len(l),), xi, dtype=torch.float64))
                               .numpy() for xi in (0.0, 0.5, 1.0)])
            mean_ref = np.array(_mp_refs(l)["mean"])
            print(f"  {'+' if sign > 0 else '-'}{name:27s} log-density "
                  f"{np.max(np.abs(ours - ld)):.1e} | {np.max(np.abs(theirs - ld)):.1e}   "
                  f"mean {np.max(np.abs(dist.continuous_bernoulli_mean(l) - mean_ref)):.1e} | "
                  f"{np.max(np.abs(cb.mean.numpy() - mean_ref)):.1e}")


def _dense_sweep():
    """Worst relative error over 7,600 logits in |l| < 800 against mpmath at a precision
    that grows with 1/|l| (the closed forms are evaluated there without cancellation loss)."""
    import mpmath

    mp = mpmath.mp
    rng = np.random.default_rng(1)
    l = np.r_[rng.uniform(0, 3, 3000), np.geomspace(1e-300, 1, 300), rng.uniform(3, 800, 500)]
    l = np.r_[l, -l]
    ref = np.empty((len(l), 3))
    for i, v in enumerate(l):
        with mpmath.workdps(40 + 2 * max(0, int(-np.log10(abs(v))))):
            m = mp.mpf(float(v))
            ref[i] = [float(mp.log(m / mp.tanh(m / 2))), float(1 / m - 1 / mp.sinh(m)),
                      float(-1 / mp.expm1(-m) - 1 / m)]
    print("dense sweep, max relative error (float64) by |l|: [0, 1) | [1, 3) | [3, 800)")
    for i, f in enumerate(ELEMENTWISE):
        rel = np.abs(f(l) - ref[:, i]) / np.abs(ref[:, i])
        bands = [np.max(rel[(np.abs(l) >= lo) & (np.abs(l) < hi)]) for lo, hi in
                 ((0, 1), (1, 3), (3, 801))]
        print(f"  {f.__name__:28s} " + " | ".join(f"{b:.1e}" for b in bands))


if __name__ == "__main__":
    _report()
