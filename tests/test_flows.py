"""Tests for vae_from_scratch.flows and posteriors: the planar constraint, the log-determinants
against numpy.linalg.slogdet of numerical Jacobians, densities that integrate to 1, every hand
backward against central differences in float64 at several shapes, and the PyTorch mirror
(torch_vae.flows) against them."""

from __future__ import annotations

import numpy as np
import pytest

from vae_from_scratch.distributions import softplus
from vae_from_scratch.flows import IAFStep, Planar, iaf_steps, planar_u_hat, planar_u_hat_backward
from vae_from_scratch.gradcheck import numerical_gradient, rel_error
from vae_from_scratch.posteriors import make_posterior

pytestmark = [pytest.mark.lesson12]

TOL = 1e-8
SHAPES = [(1, 1), (3, 2), (4, 5)]


def _rng(seed=0):
    return np.random.default_rng(seed)


def _numerical_jacobian(f, z, h=1e-6):
    """(N, L, L) with J[n, i, j] = d f(z)[n, i] / d z[n, j], by central differences."""
    n, L = z.shape
    jac = np.zeros((n, L, L))
    for j in range(L):
        step = np.zeros_like(z)
        step[:, j] = h
        jac[:, :, j] = (f(z + step) - f(z - step)) / (2 * h)
    return jac


def _planar_params(rng, n, L):
    return (rng.standard_normal((n, L)), rng.standard_normal((n, L)),
            rng.standard_normal((n, L)), rng.standard_normal(n))


# --- planar ------------------------------------------------------------------------------


@pytest.mark.parametrize("n, L", SHAPES + [(50, 3)])
def test_planar_u_hat_keeps_the_flow_invertible(n, L):
    rng = _rng(1)
    u, w = rng.standard_normal((n, L)) * 3, rng.standard_normal((n, L))
    u[0] = -5 * w[0]  # w^T u very negative: the case the constraint is for
    u_hat, _ = planar_u_hat(u, w)
    wu_hat = np.sum(w * u_hat, axis=1)
    # w^T u_hat >= -1 (= -1 + softplus(w^T u) > -1 exactly; here it rounds to -1 for w^T u
    # near -25, hence the round-off allowance)
    assert np.all(wu_hat >= -1 - 1e-12)
    np.testing.assert_allclose(wu_hat, -1 + softplus(np.sum(w * u, axis=1)), rtol=1e-12,
                               atol=1e-12)
    # only the component along w changes
    unit = w / np.linalg.norm(w, axis=1, keepdims=True)
    d = u_hat - u
    np.testing.assert_allclose(d - np.sum(d * unit, axis=1, keepdims=True) * unit, 0,
                               atol=1e-12)


def test_without_the_constraint_a_planar_map_folds_over():
    # w^T u < -1: z + u tanh(w z) in 1-D has derivative 1 + u w (1 - t^2) < 0 near z = 0
    z = np.linspace(-0.5, 0.5, 11)[:, None]
    u, w = np.full_like(z, -2.0), np.ones_like(z)
    folded = z + u * np.tanh(w * z)
    assert np.all(np.diff(folded[:, 0]) < 0)  # decreasing: not the identity's orientation
    u_hat, _ = planar_u_hat(u, w)
    fixed = z + u_hat * np.tanh(w * z)
    assert np.all(np.diff(fixed[:, 0]) > 0)  # the constrained map is increasing


@pytest.mark.parametrize("n, L", SHAPES)
def test_planar_u_hat_backward_matches_numerical(n, L):
    rng = _rng(2)
    u, w = rng.standard_normal((n, L)), rng.standard_normal((n, L))
    du_hat = rng.standard_normal((n, L))

    def f():
        return np.sum(planar_u_hat(u, w)[0] * du_hat)

    du, dw = planar_u_hat_backward(du_hat, planar_u_hat(u, w)[1])
    assert rel_error(du, numerical_gradient(f, u)) < TOL
    assert rel_error(dw, numerical_gradient(f, w)) < TOL


@pytest.mark.parametrize("n, L", SHAPES)
def test_planar_log_det_is_slogdet_of_the_jacobian(n, L):
    z, u, w, b = _planar_params(_rng(3), n, L)
    z_new, log_det, _ = Planar.forward(z, u, w, b)
    jac = _numerical_jacobian(lambda v: Planar.forward(v, u, w, b)[0], z)
    sign, logdet = np.linalg.slogdet(jac)
    assert np.all(sign > 0)
    np.testing.assert_allclose(log_det, logdet, rtol=1e-7, atol=1e-7)
    # and the textbook form log|1 + u_hat^T psi| gives the same number
    u_hat, _ = planar_u_hat(u, w)
    t = np.tanh(np.sum(w * z, axis=1) + b)
    psi = (1 - t * t)[:, None] * w
    np.testing.assert_allclose(log_det, np.log(np.abs(1 + np.sum(u_hat * psi, axis=1))),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n, L", SHAPES)
def test_planar_backward_matches_numerical(n, L):
    rng = _rng(4)
    z, u, w, b = _planar_params(rng, n, L)
    dz_new, dlog_det = rng.standard_normal((n, L)), rng.standard_normal(n)

    def f():
        z_new, log_det, _ = Planar.forward(z, u, w, b)
        return np.sum(z_new * dz_new) + np.sum(log_det * dlog_det)

    dz, du, dw, db = Planar.backward(dz_new, dlog_det, Planar.forward(z, u, w, b)[2])
    for got, arr in ((dz, z), (du, u), (dw, w), (db, b)):
        assert got.shape == arr.shape
        assert rel_error(got, numerical_gradient(f, arr)) < TOL


def test_planar_log_det_keeps_its_digits_where_the_textbook_form_cancels():
    # w^T u = -30 and w^T z + b = 0 (t = 0, h' = 1): 1 + u_hat^T psi = 1 + (-1 + softplus(-30))
    # loses all but a few digits to cancellation; t^2 + h' softplus(w^T u) is exact
    w, u, z = np.array([[1.0, 0.0]]), np.array([[-30.0, 0.0]]), np.array([[0.0, 0.3]])
    _, log_det, _ = Planar.forward(z, u, w, np.zeros(1))
    exact = np.log(np.log1p(np.exp(-30.0)))
    np.testing.assert_allclose(log_det, exact, rtol=1e-14)
    u_hat, _ = planar_u_hat(u, w)
    textbook = np.log(1 + np.sum(u_hat * w, axis=1))
    assert abs(textbook[0] - exact) > 1e-4


def test_planar_density_integrates_to_one_in_1d():
    # q_1(z') = q_0(z) / |dz'/dz| on a fine grid of z'; the map is increasing, so invert it
    # by bisection
    u, w, b = np.array([[2.5]]), np.array([[1.5]]), np.array([0.3])
    z0 = np.linspace(-12, 12, 200_001)[:, None]
    n = len(z0)
    z1, log_det, _ = Planar.forward(z0, np.repeat(u, n, 0), np.repeat(w, n, 0), np.repeat(b, n))
    assert np.all(np.diff(z1[:, 0]) > 0)
    log_q0 = -0.5 * (np.log(2 * np.pi) + z0[:, 0] ** 2)
    q1 = np.exp(log_q0 - log_det)
    total = np.sum(0.5 * (q1[1:] + q1[:-1]) * np.diff(z1[:, 0]))  # trapezoid over z'
    assert abs(total - 1) < 1e-6
    # with the log-det's sign flipped it does not integrate to 1
    wrong = np.exp(log_q0 + log_det)
    assert abs(np.sum(0.5 * (wrong[1:] + wrong[:-1]) * np.diff(z1[:, 0])) - 1) > 0.1


# --- IAF ---------------------------------------------------------------------------------


def _iaf(L, ctx, reverse=False, hidden=(6, 5), seed=0, activation="tanh"):
    step = IAFStep(L, hidden, ctx, reverse=reverse, name="s", activation=activation)
    params = {}
    step.init_params(_rng(seed), params)
    rng = _rng(seed + 10)
    for k, v in params.items():  # unit-variance weights, inside the masks
        i = k.split(".")[1]
        mask = step.made.masks[int(i)] if k.endswith(".W") and i.isdigit() else 1
        params[k] = rng.standard_normal(v.shape) * mask
    return step, params


IAF_CASES = [(1, 2, False), (3, 0, False), (4, 3, True), (5, 2, False)]


@pytest.mark.parametrize("L, ctx, reverse", IAF_CASES)
def test_iaf_jacobian_is_triangular_and_its_log_det_is_slogdet(L, ctx, reverse):
    step, params = _iaf(L, ctx, reverse)
    rng = _rng(5)
    z = rng.standard_normal((3, L))
    c = rng.standard_normal((3, ctx)) if ctx else None
    z_new, log_det, cache = step.forward(params, z, c)
    jac = _numerical_jacobian(lambda v: step.forward(params, v, c)[0], z)
    later = step.order[None, :] > step.order[:, None]  # J[i, j] with j after i in the order
    assert np.all(jac[:, later] == 0)
    gate = cache[2]
    np.testing.assert_allclose(np.diagonal(jac, axis1=1, axis2=2), gate, rtol=1e-7, atol=1e-9)
    sign, logdet = np.linalg.slogdet(jac)
    assert np.all(sign > 0)
    np.testing.assert_allclose(log_det, logdet, rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("L, ctx, reverse", IAF_CASES)
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_iaf_backward_matches_numerical(L, ctx, reverse, activation):
    step, params = _iaf(L, ctx, reverse, seed=1, activation=activation)
    rng = _rng(6)
    n = 4
    z = rng.standard_normal((n, L))
    c = rng.standard_normal((n, ctx)) if ctx else None
    dz_new, dlog_det = rng.standard_normal((n, L)), rng.standard_normal(n)

    def f():
        z_new, log_det, _ = step.forward(params, z, c)
        return np.sum(z_new * dz_new) + np.sum(log_det * dlog_det)

    grads = {}
    dz, dc = step.backward(dz_new, dlog_det, step.forward(params, z, c)[2], grads)
    tol = TOL if activation == "tanh" else 1e-6  # h = 1e-5 may cross a ReLU's kink
    assert rel_error(dz, numerical_gradient(f, z)) < tol
    if ctx:
        assert rel_error(dc, numerical_gradient(f, c)) < tol
    else:
        assert dc is None
    assert set(grads) == set(params)
    for k, v in params.items():
        assert rel_error(grads[k], numerical_gradient(f, v)) < tol, k


@pytest.mark.parametrize("L, ctx, reverse", IAF_CASES)
def test_iaf_inverse_undoes_forward(L, ctx, reverse):
    step, params = _iaf(L, ctx, reverse)
    rng = _rng(7)
    z = rng.standard_normal((5, L))
    c = rng.standard_normal((5, ctx)) if ctx else None
    z_new = step.forward(params, z, c)[0]
    np.testing.assert_allclose(step.inverse(params, z_new, c), z, rtol=1e-10, atol=1e-10)


def test_iaf_density_integrates_to_one_in_2d():
    """Two IAF steps (the second reversed) in 2-D: q_2(z') = q_0(f^-1(z')) / |det J| on a
    grid of z', with f^-1 the steps' inverses, sums to 1."""
    steps = iaf_steps(2, 2, hidden_sizes=(8,), activation="tanh", gate_bias=1.0)
    params = {}
    rng = _rng(8)
    for s in steps:
        s.init_params(rng, params)
    for k in params:
        params[k] = params[k] * 3  # a markedly non-Gaussian density
    g = np.linspace(-8, 8, 201)
    zz = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    z = zz
    log_det = np.zeros(len(zz))
    for s in reversed(steps):
        z = s.inverse(params, z)
        log_det += s.forward(params, z)[1]
    log_q = -0.5 * np.sum(np.log(2 * np.pi) + z * z, axis=1) - log_det
    # a plain sum over the grid: for a smooth density that vanishes at the edges it is
    # accurate far beyond what its spacing suggests
    total = np.exp(log_q).sum() * (g[1] - g[0]) ** 2
    assert abs(total - 1) < 1e-6
    # the log-det sign flipped: not a density
    wrong = -0.5 * np.sum(np.log(2 * np.pi) + z * z, axis=1) + log_det
    assert abs(np.exp(wrong).sum() * (g[1] - g[0]) ** 2 - 1) > 0.05


def test_iaf_steps_alternate_the_order_and_start_near_identity():
    steps = iaf_steps(4, 3, hidden_sizes=(8,))
    assert [s.order.tolist() for s in steps] == [[1, 2, 3, 4], [4, 3, 2, 1], [1, 2, 3, 4]]
    assert [s.made.name for s in steps] == ["flow.0", "flow.1", "flow.2"]
    params = {}
    steps[0].init_params(_rng(0), params)
    b = params["flow.0.1.b"]
    assert np.all(b[1::2] > 0.5) and np.all(np.abs(b[0::2]) < 0.5)  # gates start open


# --- posteriors --------------------------------------------------------------------------


POSTERIOR_CASES = [
    ("gaussian", 0, {}),
    ("planar", 1, {}),
    ("planar", 3, {}),
    # gates away from saturation (the default starts them at sigmoid(5)), where central
    # differences keep their digits
    ("iaf", 2, dict(context_dim=3, hidden_sizes=(6,), activation="tanh", gate_bias=1.0)),
    ("iaf", 1, dict(context_dim=0, hidden_sizes=(5, 4), activation="tanh", gate_bias=1.0)),
]
POSTERIOR_IDS = [f"{k}{s}-{o.get('context_dim', '')}" for k, s, o in POSTERIOR_CASES]


def _posterior(kind, steps, options, H=5, L=3, seed=0):
    post = make_posterior(kind, H, L, steps, **options)
    params = {}
    rng = _rng(seed)
    for name, shape in post.head_shapes().items():
        params[name] = rng.standard_normal(shape) * 0.5
    post.init_extra(rng, params)
    for k in post.extra_shapes():
        params[k] = params[k] + 0.3 * rng.standard_normal(params[k].shape) * (params[k] != 0)
    return post, params


@pytest.mark.parametrize("kind, steps, options", POSTERIOR_CASES, ids=POSTERIOR_IDS)
def test_posterior_backward_matches_numerical(kind, steps, options):
    post, params = _posterior(kind, steps, options)
    rng = _rng(9)
    n = 4
    h = rng.standard_normal((n, 5))
    eps = rng.standard_normal((n, 3))
    dz, dlog_q = rng.standard_normal((n, 3)), rng.standard_normal(n)

    def f():
        local, _ = post.local(params, h)
        z, log_q, _ = post.sample(params, local, eps)
        return np.sum(z * dz) + np.sum(log_q * dlog_q)

    local, l_cache = post.local(params, h)
    _, _, s_cache = post.sample(params, local, eps)
    grads = {}
    dlocal = post.sample_backward(dz, dlog_q, s_cache, grads)
    assert set(dlocal) == set(local)
    dh = post.local_backward(dlocal, l_cache, grads)
    assert set(grads) == set(params)
    assert rel_error(dh, numerical_gradient(f, h)) < TOL
    for k, v in params.items():
        assert rel_error(grads[k], numerical_gradient(f, v)) < TOL, k


@pytest.mark.parametrize("kind, steps, options", POSTERIOR_CASES, ids=POSTERIOR_IDS)
def test_posterior_log_q_is_the_change_of_variables(kind, steps, options):
    """log q(z_K) = log N(z_0; mu, sigma^2) - log|det dz_K/dz_0|, the Jacobian taken
    numerically through the whole flow."""
    post, params = _posterior(kind, steps, options)
    rng = _rng(10)
    h, eps = rng.standard_normal((3, 5)), rng.standard_normal((3, 3))
    local, _ = post.local(params, h)
    z, log_q, _ = post.sample(params, local, eps)
    std = np.exp(0.5 * local["log_var"])
    z0 = local["mu"] + std * eps

    def flow(v):  # z_0 -> z_K, through eps = (z_0 - mu) / sigma
        return post.sample(params, local, (v - local["mu"]) / std)[0]

    _, logdet = np.linalg.slogdet(_numerical_jacobian(flow, z0))
    diff = z0 - local["mu"]
    log_q0 = -0.5 * np.sum(np.log(2 * np.pi) + local["log_var"] + diff**2 / std**2, axis=1)
    np.testing.assert_allclose(log_q, log_q0 - logdet, rtol=1e-7, atol=1e-7)


def test_make_posterior_refuses_what_does_not_fit():
    with pytest.raises(ValueError, match="unknown posterior"):
        make_posterior("realnvp", 5, 2, 2)
    with pytest.raises(ValueError, match="no flow steps"):
        make_posterior("gaussian", 5, 2, 2)
    with pytest.raises(ValueError, match="flow_steps must be an integer >= 0"):
        make_posterior("iaf", 5, 2, -1)
    with pytest.raises(ValueError, match="takes no options"):
        make_posterior("planar", 5, 2, 2, context_dim=3)


# --- PyTorch -------------------------------------------------------------------------------


@pytest.mark.torch
@pytest.mark.parametrize("n, L", SHAPES)
def test_torch_planar_matches_numpy(n, L):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    from vae_from_scratch.torch_vae.flows import planar

    rng = _rng(11)
    arrays = _planar_params(rng, n, L)
    dz_new, dlog_det = rng.standard_normal((n, L)), rng.standard_normal(n)
    z_new, log_det, cache = Planar.forward(*arrays)
    grads = Planar.backward(dz_new, dlog_det, cache)
    t = [torch.tensor(a, requires_grad=True) for a in arrays]
    tz, tl = planar(*t)
    ((tz * torch.tensor(dz_new)).sum() + (tl * torch.tensor(dlog_det)).sum()).backward()
    assert rel_error(tz.detach().numpy(), z_new) < 1e-13
    assert rel_error(tl.detach().numpy(), log_det) < 1e-12
    for g, tt in zip(grads, t, strict=True):
        assert rel_error(tt.grad.numpy(), g) < 1e-12


@pytest.mark.torch
@pytest.mark.parametrize("kind, steps, options", POSTERIOR_CASES, ids=POSTERIOR_IDS)
def test_torch_posterior_matches_numpy(kind, steps, options):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    from vae_from_scratch.torch_vae.flows import TorchPosterior, tensors

    post, params = _posterior(kind, steps, options)
    rng = _rng(12)
    h, eps = rng.standard_normal((4, 5)), rng.standard_normal((4, 3))
    dz, dlog_q = rng.standard_normal((4, 3)), rng.standard_normal(4)
    local, l_cache = post.local(params, h)
    z, log_q, s_cache = post.sample(params, local, eps)
    grads = {}
    dh = post.local_backward(post.sample_backward(dz, dlog_q, s_cache, grads), l_cache, grads)

    tp = tensors(params, requires_grad=True)
    th = torch.tensor(h, requires_grad=True)
    tpost = TorchPosterior(post)
    tz, tlog_q = tpost.sample(tp, tpost.local(tp, th), torch.tensor(eps))
    ((tz * torch.tensor(dz)).sum() + (tlog_q * torch.tensor(dlog_q)).sum()).backward()
    assert rel_error(tz.detach().numpy(), z) < 1e-12
    assert rel_error(tlog_q.detach().numpy(), log_q) < 1e-12
    assert rel_error(th.grad.numpy(), dh) < 1e-11
    for k, v in tp.items():
        assert rel_error(v.grad.numpy(), grads[k]) < 1e-11, k
