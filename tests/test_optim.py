"""Tests for vae_from_scratch.optim: SGD with momentum and Adam, step by step."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest

from vae_from_scratch.optim import SGD, Adam, NonFiniteGradientError

pytestmark = [pytest.mark.lesson05, pytest.mark.lesson06]

HAS_TORCH = importlib.util.find_spec("torch") is not None

# A tiny problem: two parameters and a fixed sequence of gradients.
P0 = {"w": np.array([1.0, -2.0]), "b": np.array([0.5])}
GRADS = [
    {"w": np.array([0.5, -0.25]), "b": np.array([2.0])},
    {"w": np.array([0.1, 0.3]), "b": np.array([-1.0])},
    {"w": np.array([-0.4, 0.0]), "b": np.array([0.5])},
]


def _copy(params):
    return {k: v.copy() for k, v in params.items()}


def _adam_by_hand(p0, grads, lr, b1, b2, eps):
    """Adam on each scalar separately, straight from Kingma & Ba's Algorithm 1."""
    out = []
    for key, values in p0.items():
        for j, theta in enumerate(values):
            m = v = 0.0
            for t, g in enumerate((gr[key][j] for gr in grads), start=1):
                m = b1 * m + (1 - b1) * g
                v = b2 * v + (1 - b2) * g * g
                m_hat = m / (1 - b1**t)
                v_hat = v / (1 - b2**t)
                theta = theta - lr * m_hat / (math.sqrt(v_hat) + eps)
            out.append(theta)
    return out


def _flat(params):
    return [float(x) for key in ("w", "b") for x in params[key]]


def test_adam_first_step_moves_each_parameter_by_lr():
    # After one step m_hat = g and v_hat = g^2, so the update is lr * g / (|g| + eps).
    params = _copy(P0)
    Adam(params, lr=0.1).step(GRADS[0])
    expected = [1.0 - 0.1 * 0.5 / (0.5 + 1e-8), -2.0 + 0.1 * 0.25 / (0.25 + 1e-8),
                0.5 - 0.1 * 2.0 / (2.0 + 1e-8)]
    np.testing.assert_allclose(_flat(params), expected, rtol=1e-15)
    np.testing.assert_allclose(_flat(params), [0.9, -1.9, 0.4], rtol=1e-7)


def test_adam_second_step_by_hand():
    # Parameter w[0]: g1 = 0.5, g2 = 0.1, lr = 0.1, betas (0.9, 0.999).
    # m2 = 0.9 * 0.05 + 0.1 * 0.1 = 0.055;  m_hat = 0.055 / 0.19
    # v2 = 0.999 * 0.00025 + 0.001 * 0.01 = 0.00025975;  v_hat = 0.00025975 / 0.001999
    params = _copy(P0)
    opt = Adam(params, lr=0.1)
    opt.step(GRADS[0])
    opt.step(GRADS[1])
    m_hat = 0.055 / 0.19
    v_hat = 0.00025975 / 0.001999
    w0 = 1.0 - 0.1 * 0.5 / (0.5 + 1e-8) - 0.1 * m_hat / (math.sqrt(v_hat) + 1e-8)
    assert params["w"][0] == pytest.approx(w0, rel=1e-13)
    assert params["w"][0] == pytest.approx(0.9 - 0.0803041, abs=1e-7)


@pytest.mark.parametrize(
    "lr, betas, eps",
    # betas of 0 are allowed, as in torch.optim.Adam: m = g and v = g^2
    [(0.1, (0.9, 0.999), 1e-8), (0.03, (0.5, 0.9), 1e-3), (0.05, (0.0, 0.0), 1e-8)],
)
def test_adam_matches_the_algorithm_over_several_steps(lr, betas, eps):
    params = _copy(P0)
    opt = Adam(params, lr=lr, betas=betas, eps=eps)
    for g in GRADS:
        opt.step(g)
    expected = _adam_by_hand(P0, GRADS, lr, *betas, eps)
    np.testing.assert_allclose(_flat(params), expected, rtol=1e-13)
    assert opt.t == len(GRADS)


def test_adam_updates_in_place():
    params = _copy(P0)
    w = params["w"]
    Adam(params, lr=0.1).step(GRADS[0])
    assert params["w"] is w and not np.array_equal(w, P0["w"])


def test_adam_keeps_float32_params_float32():
    params = {"w": np.array([1.0, -2.0], dtype=np.float32)}
    opt = Adam(params, lr=0.1)
    opt.step({"w": np.array([0.5, -0.25], dtype=np.float32)})
    assert params["w"].dtype == np.float32
    np.testing.assert_allclose(params["w"], [0.9, -1.9], rtol=1e-6)


def test_sgd_with_momentum_by_hand():
    # v1 = g1, p1 = p0 - lr g1;  v2 = mu g1 + g2, p2 = p1 - lr v2;  v3 = mu v2 + g3 ...
    params = _copy(P0)
    opt = SGD(params, lr=0.1, momentum=0.9)
    opt.step(GRADS[0])
    np.testing.assert_allclose(_flat(params), [1.0 - 0.05, -2.0 + 0.025, 0.5 - 0.2], rtol=1e-15)
    opt.step(GRADS[1])
    # w[0]: v2 = 0.9 * 0.5 + 0.1 = 0.55;  b: v2 = 0.9 * 2 - 1 = 0.8
    assert params["w"][0] == pytest.approx(0.95 - 0.055, rel=1e-14)
    assert params["b"][0] == pytest.approx(0.3 - 0.08, rel=1e-14)
    opt.step(GRADS[2])
    # w[0]: v3 = 0.9 * 0.55 - 0.4 = 0.095
    assert params["w"][0] == pytest.approx(0.895 - 0.0095, rel=1e-14)


def test_sgd_without_momentum_is_gradient_descent():
    params = _copy(P0)
    opt = SGD(params, lr=0.5)
    for g in GRADS:
        opt.step(g)
    for key in P0:
        np.testing.assert_allclose(params[key], P0[key] - 0.5 * sum(g[key] for g in GRADS),
                                   rtol=1e-15)


@pytest.mark.torch
@pytest.mark.skipif(not HAS_TORCH, reason="PyTorch is not installed")
@pytest.mark.parametrize("lr, betas, eps", [(0.1, (0.9, 0.999), 1e-8), (0.03, (0.5, 0.9), 1e-3)])
def test_adam_matches_torch(lr, betas, eps):
    import torch

    params = _copy(P0)
    opt = Adam(params, lr=lr, betas=betas, eps=eps)
    tparams = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in P0.items()}
    topt = torch.optim.Adam(list(tparams.values()), lr=lr, betas=betas, eps=eps)
    for g in GRADS:
        opt.step(g)
        for k, t in tparams.items():
            t.grad = torch.tensor(g[k], dtype=torch.float64)
        topt.step()
        for k in P0:
            np.testing.assert_allclose(params[k], tparams[k].detach().numpy(), rtol=1e-13)


@pytest.mark.torch
@pytest.mark.skipif(not HAS_TORCH, reason="PyTorch is not installed")
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sgd_matches_torch(momentum):
    import torch

    params = _copy(P0)
    opt = SGD(params, lr=0.1, momentum=momentum)
    tparams = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in P0.items()}
    topt = torch.optim.SGD(list(tparams.values()), lr=0.1, momentum=momentum)
    for g in GRADS:
        opt.step(g)
        for k, t in tparams.items():
            t.grad = torch.tensor(g[k], dtype=torch.float64)
        topt.step()
        for k in P0:
            np.testing.assert_allclose(params[k], tparams[k].detach().numpy(), rtol=1e-14)


@pytest.mark.parametrize(
    "make",
    [lambda p: Adam(p, lr=0.05), lambda p: SGD(p, lr=0.05, momentum=0.9), lambda p: SGD(p, lr=0.2)],
    ids=["adam", "sgd-momentum", "sgd"],
)
def test_optimizers_minimize_a_quadratic(make):
    # f(p) = 1/2 sum a (p - c)^2, an ill-conditioned bowl with its minimum at c
    a = np.array([1.0, 4.0, 0.5])
    c = np.array([3.0, -1.0, 2.0])
    params = {"p": np.zeros(3)}
    opt = make(params)
    f0 = 0.5 * np.sum(a * c**2)
    for _ in range(1000):
        opt.step({"p": a * (params["p"] - c)})
    f = 0.5 * np.sum(a * (params["p"] - c) ** 2)
    assert f < 1e-6 * f0
    np.testing.assert_allclose(params["p"], c, atol=1e-3)


@pytest.mark.parametrize(
    "kwargs",
    [dict(lr=0.0), dict(lr=-1e-3), dict(betas=(1.0, 0.999)), dict(betas=(0.9, 1.0)),
     dict(betas=(-0.1, 0.999)), dict(eps=0.0), dict(eps=-1e-8)],
    ids=["lr-0", "lr-negative", "beta1-1", "beta2-1", "beta1-negative", "eps-0", "eps-negative"],
)
def test_adam_rejects_bad_hyperparameters(kwargs):
    with pytest.raises(ValueError):
        Adam(_copy(P0), **kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [dict(lr=0.0), dict(lr=-0.1), dict(momentum=1.0), dict(momentum=-0.5), dict(momentum=1.5)],
    ids=["lr-0", "lr-negative", "momentum-1", "momentum-negative", "momentum-above-1"],
)
def test_sgd_rejects_bad_hyperparameters(kwargs):
    with pytest.raises(ValueError):
        SGD(_copy(P0), **kwargs)


@pytest.mark.parametrize("opt", [Adam, SGD])
@pytest.mark.parametrize("lr", [math.nan, math.inf])
def test_non_finite_learning_rate_is_rejected(opt, lr):
    with pytest.raises(ValueError):
        opt(_copy(P0), lr=lr)


def test_adam_state_dict_is_the_documented_dict():
    params = _copy(P0)
    opt = Adam(params, lr=0.1)
    opt.step(GRADS[0])
    state = opt.state_dict()
    assert isinstance(state, dict) and state["t"] == 1
    np.testing.assert_allclose(state["m.w"], 0.1 * GRADS[0]["w"])


def _moments_by_hand(grads, b1, b2):
    """Adam's first and second moments after ``len(grads)`` steps, per parameter."""
    m = {k: np.zeros_like(v) for k, v in P0.items()}
    v = {k: np.zeros_like(val) for k, val in P0.items()}
    for g in grads:
        for k in P0:
            m[k] = b1 * m[k] + (1 - b1) * g[k]
            v[k] = b2 * v[k] + (1 - b2) * g[k] ** 2
    return m, v


def test_adam_state_dict_holds_the_step_count_and_both_moments_of_every_parameter():
    params = _copy(P0)
    opt = Adam(params, lr=0.1, betas=(0.8, 0.9))
    for g in GRADS:
        opt.step(g)
    state = opt.state_dict()
    assert set(state) == {"t", "lr", "betas", "eps", "m.w", "m.b", "v.w", "v.b"}
    assert state["t"] == 3 and isinstance(state["t"], int)
    assert (state["lr"], tuple(state["betas"]), state["eps"]) == (0.1, (0.8, 0.9), 1e-8)
    m, v = _moments_by_hand(GRADS, 0.8, 0.9)
    for k in P0:
        np.testing.assert_allclose(state[f"m.{k}"], m[k], rtol=1e-14)
        np.testing.assert_allclose(state[f"v.{k}"], v[k], rtol=1e-14)
        assert state[f"v.{k}"].shape == P0[k].shape
        # the second moments are not the first ones (they differ for these gradients)
        assert not np.allclose(state[f"v.{k}"], state[f"m.{k}"])
        np.testing.assert_array_equal(opt.m[k], state[f"m.{k}"])
        np.testing.assert_array_equal(opt.v[k], state[f"v.{k}"])


def test_adam_state_dict_before_any_step_is_zeros():
    opt = Adam(_copy(P0))
    state = opt.state_dict()
    assert state["t"] == 0
    for k in P0:
        np.testing.assert_array_equal(state[f"m.{k}"], np.zeros_like(P0[k]))
        np.testing.assert_array_equal(state[f"v.{k}"], np.zeros_like(P0[k]))


def test_sgd_velocity_of_every_parameter_by_hand():
    params = _copy(P0)
    opt = SGD(params, lr=0.1, momentum=0.5)
    velocity = {k: np.zeros_like(v) for k, v in P0.items()}
    for g in GRADS:
        opt.step(g)
        for k in P0:
            velocity[k] = 0.5 * velocity[k] + g[k]
            np.testing.assert_allclose(opt.velocity[k], velocity[k], rtol=1e-15)
    assert set(opt.velocity) == set(P0)


# --- the gradients step() accepts, and the state that round-trips --------------------------

OPTIMIZERS = {
    "adam": lambda p: Adam(p, lr=0.1),
    "sgd": lambda p: SGD(p, lr=0.1, momentum=0.9),
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
@pytest.mark.parametrize(
    "bad, message",
    [
        ({"w": np.array([0.5]), "b": np.array([2.0])}, r"'w' has shape \(1,\), expected \(2,\)"),
        ({"w": np.ones((3, 2)), "b": np.array([2.0])}, r"'w' has shape \(3, 2\)"),
        ({"w": np.array([0.5, 0.1])}, r"missing \['b'\]"),
        ({"w": np.array([0.5, 0.1]), "b": np.array([1.0]), "c": np.zeros(1)},
         r"unexpected \['c'\]"),
        ({"w": np.array([0.5, 0.1]), "b": 2.0}, r"'b' has shape \(\), expected \(1,\)"),
        ([np.array([0.5, 0.1]), np.array([1.0])],
         r"gradients must be a dict name -> array, got list"),
    ],
    ids=["broadcast-row", "extra-axis", "missing-key", "extra-key", "scalar", "list"],
)
def test_step_refuses_gradients_that_do_not_match_and_changes_nothing(name, bad, message):
    params = _copy(P0)
    opt = OPTIMIZERS[name](params)
    opt.step(GRADS[0])
    before, state = _copy(params), opt.state_dict()
    with pytest.raises(ValueError, match=message):
        opt.step(bad)
    for key in params:
        assert params[key].tobytes() == before[key].tobytes()
    assert _same_state(opt.state_dict(), state)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_a_non_finite_gradient_never_reaches_the_parameters(name, value):
    params = _copy(P0)
    opt = OPTIMIZERS[name](params)
    before = _copy(params)
    grads = {"w": np.array([0.5, value]), "b": np.array([1.0])}
    with pytest.raises(NonFiniteGradientError, match="'w' contains NaN or infinite"):
        opt.step(grads)
    assert issubclass(NonFiniteGradientError, ValueError)
    for key in params:
        assert params[key].tobytes() == before[key].tobytes()
    assert getattr(opt, "t", 0) == 0


def test_a_gradient_whose_sum_overflows_is_still_finite():
    params = {"w": np.zeros(4, dtype=np.float32)}
    big = np.full(4, 3e38, dtype=np.float32)  # each finite; the sum is not
    SGD(params, lr=1e-40).step({"w": big})
    assert np.all(np.isfinite(params["w"]))


@pytest.mark.parametrize("opt", [Adam, SGD])
@pytest.mark.parametrize("lr", [True, False, "1e-3", None, [1e-3], np.bool_(True)])
def test_learning_rate_must_be_a_number_not_a_bool_or_text(opt, lr):
    with pytest.raises(ValueError, match="lr must be"):
        opt(_copy(P0), lr=lr)


@pytest.mark.parametrize("lr", [np.float32(1e-3), np.float64(1e-3), np.int64(1), 1])
def test_numpy_scalars_are_accepted_as_hyperparameters(lr):
    adam = Adam(_copy(P0), lr=lr, betas=(np.float32(0.9), np.float64(0.999)), eps=np.float32(1e-8))
    sgd = SGD(_copy(P0), lr=lr, momentum=np.float32(0.5))
    assert adam.lr == float(lr) and sgd.lr == float(lr)
    assert isinstance(adam.betas[0], float) and isinstance(sgd.momentum, float)


@pytest.mark.parametrize(
    "kwargs",
    [dict(betas=(True, 0.999)), dict(betas=(0.9,)), dict(betas="ab"), dict(eps=True),
     dict(betas=(0.9, np.nan))],
    ids=["beta-bool", "one-beta", "text", "eps-bool", "beta-nan"],
)
def test_adam_refuses_other_non_numbers(kwargs):
    with pytest.raises(ValueError):
        Adam(_copy(P0), **kwargs)


@pytest.mark.parametrize("momentum", [True, np.nan, "0.9"])
def test_sgd_refuses_a_momentum_that_is_not_a_number(momentum):
    with pytest.raises(ValueError, match="momentum"):
        SGD(_copy(P0), momentum=momentum)


@pytest.mark.parametrize("opt", [Adam, SGD])
def test_setting_lr_later_is_checked_too(opt):
    o = opt(_copy(P0), lr=0.1)
    o.lr = np.float32(0.5)
    assert o.lr == 0.5
    with pytest.raises(ValueError, match="lr must be"):
        o.lr = float("nan")


def _same_state(a, b):
    if set(a) != set(b):
        return False
    for key in a:
        if isinstance(a[key], np.ndarray):
            if a[key].dtype != b[key].dtype or a[key].tobytes() != b[key].tobytes():
                return False
        elif a[key] != b[key]:
            return False
    return True


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_state_dict_round_trips_exactly_and_resumes_bit_for_bit(name):
    rng = np.random.default_rng(0)
    grads = [{k: rng.standard_normal(v.shape).astype(np.float32) for k, v in P0.items()}
             for _ in range(6)]
    f32 = {k: v.astype(np.float32) for k, v in P0.items()}
    straight = _copy(f32)
    opt = OPTIMIZERS[name](straight)
    for g in grads:
        opt.step(g)

    part = _copy(f32)
    opt1 = OPTIMIZERS[name](part)
    for g in grads[:3]:
        opt1.step(g)
    state, saved = opt1.state_dict(), _copy(part)
    opt1.step(grads[3])  # the saved state is a copy: later steps do not change it
    resumed = _copy(saved)
    fresh = OPTIMIZERS[name](resumed)
    fresh.load_state_dict(state)
    assert _same_state(fresh.state_dict(), state)
    for g in grads[3:]:
        fresh.step(g)
    for key in straight:
        assert resumed[key].tobytes() == straight[key].tobytes(), key


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_load_state_dict_refuses_a_state_that_does_not_fit_and_changes_nothing(name):
    params = _copy(P0)
    opt = OPTIMIZERS[name](params)
    opt.step(GRADS[0])
    good = opt.state_dict()
    array_key = next(k for k, v in good.items() if isinstance(v, np.ndarray))
    bad_states = [
        {k: v for k, v in good.items() if k != array_key},  # a key missing
        {**good, "extra": 1},
        {**good, array_key: np.zeros(7)},  # wrong shape
        {**good, array_key: good[array_key].astype(np.float32)},  # wrong dtype
        {**good, "lr": True},
        "not a dict",
    ]
    if name == "adam":
        bad_states += [{**good, "t": -1}, {**good, "t": 1.5}, {**good, "betas": [0.9, 1.0]}]
    for bad in bad_states:
        with pytest.raises(ValueError):
            opt.load_state_dict(bad)
        assert _same_state(opt.state_dict(), good)
    with pytest.raises(ValueError, match=r"state must be a dict, got str"):
        opt.load_state_dict("not a dict")


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_load_state_dict_restores_the_hyperparameters_and_a_state_from_before_any_step(name):
    """A state saved before the first step (t = 0) loads, and loading sets the saved lr,
    momentum or betas and eps, and t, whatever the optimizer was made with."""
    state = OPTIMIZERS[name](_copy(P0)).state_dict()
    if name == "sgd":
        other = SGD(_copy(P0), lr=0.5, momentum=0.1)
    else:
        other = Adam(_copy(P0), lr=0.5, betas=(0.5, 0.6), eps=1e-3)
    other.step(GRADS[0])
    other.load_state_dict(state)
    assert _same_state(other.state_dict(), state)
