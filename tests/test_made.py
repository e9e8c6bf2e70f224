"""Tests for vae_from_scratch.made: the masks, the autoregressive property measured on the
network's own outputs, the hand backward against central differences, and the PyTorch
mirror (torch_vae.made) against it."""

from __future__ import annotations

import numpy as np
import pytest

from vae_from_scratch.gradcheck import numerical_gradient, rel_error
from vae_from_scratch.made import (
    MADE,
    MaskedLinear,
    connectivity,
    cyclic_degrees,
    hidden_degrees,
    layer_mask,
    position_degrees,
)

pytestmark = [pytest.mark.lesson12]

TOL = 1e-8

# (id, positions P, input units per position, output units per position, hidden sizes,
#  context size, activation, reversed order)
CASES = [
    ("iaf-L3-ctx", 3, 1, 2, (6,), 4, "relu", False),
    ("iaf-L5-two-hidden-reversed", 5, 1, 2, (7, 6), 3, "tanh", True),
    ("codes-P4-K3", 4, 3, 3, (9,), 0, "relu", False),
    ("codes-P6-K2-two-hidden", 6, 2, 2, (10, 8), 0, "tanh", True),
    ("L1-ctx-only", 1, 1, 2, (3,), 2, "tanh", False),
    ("P2-no-ctx", 2, 1, 1, (2,), 0, "relu", False),
]
IDS = [c[0] for c in CASES]


def _build(case, seed=0, activation=None):
    _, P, g_in, g_out, sizes, ctx, act, rev = case
    act = activation or act
    order = np.arange(1, P + 1)
    if rev:
        order = order[::-1].copy()
    made = MADE(position_degrees(order, g_in), hidden_degrees(sizes, P, context=ctx > 0),
                position_degrees(order, g_out), context_dim=ctx, activation=act, name="m")
    rng = np.random.default_rng(seed)
    params = {}
    made.init_params(rng, params)
    # unit-variance weights, larger than the initialisation, so that no path is near zero
    for i, m in enumerate(made.masks):
        params[f"m.{i}.W"] = rng.standard_normal(m.shape) * m
        params[f"m.{i}.b"] = rng.standard_normal(m.shape[1])
    if ctx:
        params["m.context.W"] = rng.standard_normal(params["m.context.W"].shape)
    n = 4
    x = rng.standard_normal((n, made.in_dim))
    c = rng.standard_normal((n, ctx)) if ctx else None
    return made, params, x, c, order


def _positions(made, degrees, order):
    """Position index (0..P-1, in the array's layout) of each unit, from its degree."""
    where = {int(d): p for p, d in enumerate(order)}
    return np.array([where[int(d)] for d in degrees])


def _numerical_jacobian(f, x, h=1e-6):
    """d f(x)[n, j] / d x[n, i] for one row n=0: (D_out, D_in)."""
    x = x.copy()
    out0 = f(x)
    jac = np.zeros((out0.shape[1], x.shape[1]))
    for i in range(x.shape[1]):
        old = x[0, i]
        x[0, i] = old + h
        plus = f(x)[0]
        x[0, i] = old - h
        minus = f(x)[0]
        x[0, i] = old
        jac[:, i] = (plus - minus) / (2 * h)
    return jac


# --- degrees and masks ------------------------------------------------------------------


def test_position_degrees_are_position_major():
    np.testing.assert_array_equal(position_degrees([1, 2, 3], 2), [1, 1, 2, 2, 3, 3])
    np.testing.assert_array_equal(position_degrees([3, 2, 1]), [3, 2, 1])


def test_cyclic_and_hidden_degrees():
    np.testing.assert_array_equal(cyclic_degrees(7, 1, 3), [1, 2, 3, 1, 2, 3, 1])
    without, with_ctx = hidden_degrees((5,), 4)[0], hidden_degrees((5,), 4, context=True)[0]
    assert without.min() == 1 and without.max() == 3
    assert with_ctx.min() == 0 and with_ctx.max() == 3
    assert [len(h) for h in hidden_degrees((5, 3), 4)] == [5, 3]


@pytest.mark.parametrize("bad, match", [
    (dict(order=[0, 1]), "integers >= 1"),
    (dict(order=[1.0, 2.0]), "integers"),
    (dict(order=[[1, 2]]), "1-D"),
    (dict(order=[1, 2], group_size=0), "group_size"),
    (dict(order=[1, 2], group_size=True), "group_size"),
])
def test_position_degrees_refuses_bad_input(bad, match):
    with pytest.raises(ValueError, match=match):
        position_degrees(**bad)


def test_one_position_needs_a_context():
    with pytest.raises(ValueError, match="at least 2 positions or a context"):
        hidden_degrees((4,), 1)
    assert hidden_degrees((4,), 1, context=True)[0].tolist() == [0, 0, 0, 0]


def test_layer_masks_follow_the_degree_rule():
    m = layer_mask([1, 2, 3], [1, 2], strict=False)
    np.testing.assert_array_equal(m, [[1, 1], [0, 1], [0, 0]])
    s = layer_mask([0, 1, 2], [1, 2, 3], strict=True)
    np.testing.assert_array_equal(s, [[1, 1, 1], [0, 1, 1], [0, 0, 1]])


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_paths_exist_exactly_from_earlier_positions(case):
    made, _, _, _, _ = _build(case)
    paths = connectivity(made.masks)
    earlier = made.in_degrees[:, None] < made.out_degrees[None, :]
    assert np.all(paths[~earlier] == 0)
    if case[1] > 1:  # with cyclic hidden degrees every allowed pair is connected
        assert np.all(paths[earlier] > 0)


# --- the autoregressive property, measured on the outputs -------------------------------


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_output_jacobian_is_strictly_triangular_in_position_order(case):
    made, params, x, c, order = _build(case)
    jac = _numerical_jacobian(lambda v: made.forward(params, v, c)[0], x)
    pos_out = made.out_degrees[:, None]
    pos_in = made.in_degrees[None, :]
    # zero wherever the input's position is not before the output's (j >= i) ...
    assert np.all(jac[pos_in >= pos_out] == 0.0)
    # ... and uses every earlier position (with tanh, which has no dead units)
    if case[1] > 1:
        made, params, x, c, order = _build(case, activation="tanh")
        jac = _numerical_jacobian(lambda v: made.forward(params, v, c)[0], x)
        assert np.abs(jac[pos_in < pos_out]).min() > 0


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_changing_a_position_leaves_outputs_up_to_it_bit_for_bit(case):
    made, params, x, c, order = _build(case)
    out = made.forward(params, x, c)[0]
    rng = np.random.default_rng(5)
    for d in np.unique(made.in_degrees):
        x2 = x.copy()
        cols = made.in_degrees == d
        x2[:, cols] = rng.standard_normal((len(x), cols.sum())) * 10
        out2 = made.forward(params, x2, c)[0]
        upto = made.out_degrees <= d
        np.testing.assert_array_equal(out2[:, upto], out[:, upto])


def test_a_mask_off_by_one_lets_a_unit_see_itself_and_the_jacobian_shows_it():
    made, params, x, c, _ = _build(CASES[0])
    # the slip: >= instead of > on the way out
    made.masks[-1] = layer_mask(made.hidden_degrees[-1], made.out_degrees, strict=False)
    params["m.1.W"] = np.random.default_rng(7).standard_normal(made.masks[-1].shape)
    jac = _numerical_jacobian(lambda v: made.forward(params, v, c)[0], x)
    same = made.in_degrees[None, :] == made.out_degrees[:, None]
    assert np.abs(jac[same]).max() > 1e-3


def test_the_context_reaches_every_position_even_the_first():
    made, params, x, c, _ = _build(CASES[0])
    out = made.forward(params, x, c)[0]
    out2 = made.forward(params, x, c + 1.0)[0]
    changed = np.abs(out2 - out).min(axis=0) > 0
    assert changed.all()


def test_weights_outside_the_masks_change_nothing():
    made, params, x, c, _ = _build(CASES[1])
    out = made.forward(params, x, c)[0]
    noisy = dict(params)
    for i, m in enumerate(made.masks):
        noisy[f"m.{i}.W"] = params[f"m.{i}.W"] + 100.0 * (1 - m)
    np.testing.assert_array_equal(made.forward(noisy, x, c)[0], out)


# --- gradients --------------------------------------------------------------------------


@pytest.mark.parametrize("n, d_in, d_out", [(1, 1, 1), (3, 4, 2), (5, 3, 6)])
def test_masked_linear_backward_matches_numerical(n, d_in, d_out):
    rng = np.random.default_rng(1)
    x, W, b = (rng.standard_normal((n, d_in)), rng.standard_normal((d_in, d_out)),
               rng.standard_normal(d_out))
    mask = (rng.random((d_in, d_out)) < 0.6).astype(float)
    dout = rng.standard_normal((n, d_out))

    def f():
        return np.sum(MaskedLinear.forward(x, W, b, mask)[0] * dout)

    dx, dW, db = MaskedLinear.backward(dout, MaskedLinear.forward(x, W, b, mask)[1])
    assert rel_error(dx, numerical_gradient(f, x)) < TOL
    assert rel_error(dW, numerical_gradient(f, W)) < TOL
    assert rel_error(db, numerical_gradient(f, b)) < TOL
    assert np.all(dW[mask == 0] == 0)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_made_backward_matches_numerical(case):
    made, params, x, c, _ = _build(case, seed=2)
    dout = np.random.default_rng(3).standard_normal((len(x), made.out_dim))

    def f():
        return np.sum(made.forward(params, x, c)[0] * dout)

    grads = {}
    dx, dc = made.backward(dout, made.forward(params, x, c)[1], grads)
    assert set(grads) == set(made.param_shapes())
    for name, value in params.items():
        assert grads[name].shape == value.shape
        assert rel_error(grads[name], numerical_gradient(f, value)) < TOL, name
    assert rel_error(dx, numerical_gradient(f, x)) < TOL
    if c is None:
        assert dc is None
    else:
        assert rel_error(dc, numerical_gradient(f, c)) < TOL
    for i, m in enumerate(made.masks):
        assert np.all(grads[f"m.{i}.W"][m == 0] == 0)


def test_backward_can_skip_dx():
    made, params, x, c, _ = _build(CASES[2])
    out, cache = made.forward(params, x, c)
    g1, g2 = {}, {}
    dx, _ = made.backward(np.ones_like(out), cache, g1, need_dx=False)
    made.backward(np.ones_like(out), cache, g2)
    assert dx is None
    for k in g1:
        np.testing.assert_array_equal(g1[k], g2[k])


# --- construction and input errors -------------------------------------------------------


def test_param_shapes_and_init():
    made = MADE(position_degrees([1, 2, 3], 2), hidden_degrees((5,), 3, context=True),
                position_degrees([1, 2, 3], 4), context_dim=7, name="f")
    assert made.param_shapes() == {"f.0.W": (6, 5), "f.0.b": (5,), "f.1.W": (5, 12),
                                   "f.1.b": (12,), "f.context.W": (7, 5)}
    params = {}
    made.init_params(np.random.default_rng(0), params)
    assert {k: v.shape for k, v in params.items()} == made.param_shapes()
    for i, m in enumerate(made.masks):
        assert np.all(params[f"f.{i}.W"][m == 0] == 0)
        assert np.abs(params[f"f.{i}.W"]).max() <= 1 / np.sqrt(m.shape[0])


def test_made_refuses_bad_configuration_and_input():
    deg = position_degrees([1, 2])
    with pytest.raises(ValueError, match="at least one hidden layer"):
        MADE(deg, [], deg)
    with pytest.raises(ValueError, match="context_dim"):
        MADE(deg, hidden_degrees((3,), 2), deg, context_dim=-1)
    with pytest.raises(ValueError, match="activation"):
        MADE(deg, hidden_degrees((3,), 2), deg, activation="gelu")
    with pytest.raises(ValueError, match="integers >= 0"):
        MADE(deg, [np.array([-1, 1])], deg)
    made = MADE(deg, hidden_degrees((3,), 2, context=True), deg, context_dim=2)
    params = {}
    made.init_params(np.random.default_rng(0), params)
    x = np.zeros((3, 2))
    with pytest.raises(ValueError, match=r"inputs of shape \(N, 2\)"):
        made.forward(params, np.zeros((3, 5)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"needs a context of shape \(3, 2\)"):
        made.forward(params, x)
    plain = MADE(deg, hidden_degrees((3,), 2), deg)
    with pytest.raises(ValueError, match="has no context"):
        plain.forward(params, x, np.zeros((3, 2)))


# --- PyTorch ---------------------------------------------------------------------------


@pytest.mark.torch
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_torch_made_matches_numpy_to_round_off(case):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    from vae_from_scratch.torch_vae.made import TorchMADE

    made, params, x, c, _ = _build(case, seed=4)
    dout = np.random.default_rng(6).standard_normal((len(x), made.out_dim))
    out, cache = made.forward(params, x, c)
    grads = {}
    dx, dc = made.backward(dout, cache, grads)

    tp = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    tx = torch.tensor(x, requires_grad=True)
    tc = None if c is None else torch.tensor(c, requires_grad=True)
    t_out = TorchMADE(made)(tp, tx, tc)
    (t_out * torch.tensor(dout)).sum().backward()
    assert rel_error(t_out.detach().numpy(), out) < 1e-13
    assert rel_error(tx.grad.numpy(), dx) < 1e-12
    if c is not None:
        assert rel_error(tc.grad.numpy(), dc) < 1e-12
    for k, v in tp.items():
        assert rel_error(v.grad.numpy(), grads[k]) < 1e-12, k
