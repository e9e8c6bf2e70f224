"""Tests for vae_from_scratch.train: the NumPy backend, the loop, its history and NaN guard."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vae_from_scratch import VAE, data
from vae_from_scratch.course.checkpoint import read_state, save_state
from vae_from_scratch.evaluate import negative_elbo
from vae_from_scratch.train import (
    EVAL_SEED,
    History,
    LoopState,
    NumpyBackend,
    TrainingDiverged,
    fit,
    warmup_beta,
)

pytestmark = [pytest.mark.lesson05, pytest.mark.lesson06, pytest.mark.lesson07]

N_TRAIN, N_TEST, BATCH = 256, 100, 64
STEPS = math.ceil(N_TRAIN / BATCH)


@pytest.fixture(scope="module")
def mnist():
    ds = data.load_mnist()
    x_train, x_test = ds.x_train[:N_TRAIN].copy(), ds.x_test[:N_TEST].copy()
    x_train.flags.writeable = False  # tests that poison data must poison their own copy
    x_test.flags.writeable = False
    return x_train, x_test


def _run(mnist, seed=0, epochs=2, **kwargs):
    x_train, x_test = mnist
    vae = VAE(784, (16,), 2, seed=seed)
    backend = NumpyBackend(vae, x_train, batch_size=BATCH, seed=seed, **kwargs)
    history = fit(backend, x_test, epochs=epochs, progress=False)
    return vae, history


def _without_timing(history):
    d = history.as_dict()
    d.pop("seconds")
    return d


def test_same_seed_repeats_bit_for_bit(mnist):
    a, ha = _run(mnist, seed=3, lr=3e-3)
    b, hb = _run(mnist, seed=3, lr=3e-3)
    for key in a.params:
        assert a.params[key].tobytes() == b.params[key].tobytes(), key
    assert _without_timing(ha) == _without_timing(hb)


def test_different_seeds_differ(mnist):
    a, ha = _run(mnist, seed=3, lr=3e-3)
    b, hb = _run(mnist, seed=4, lr=3e-3)
    assert not np.array_equal(a.params["dec.out.W"], b.params["dec.out.W"])
    assert ha.train_loss != hb.train_loss


def test_loss_decreases_and_history_has_one_entry_per_epoch(mnist):
    vae, h = _run(mnist, epochs=4, lr=1e-2)
    assert h.epoch == [1, 2, 3, 4]
    for key, values in h.as_dict().items():
        assert len(values) == 4, key
        assert all(math.isfinite(v) for v in values), key
    assert h.train_nelbo[-1] < h.train_nelbo[0] - 50
    assert h.test_nelbo[-1] < h.test_nelbo[0] - 50
    assert all(s >= 0 for s in h.seconds)
    # beta = 1: loss and negative ELBO are the same figure, the sum of its two parts
    np.testing.assert_allclose(h.train_loss, h.train_nelbo, rtol=1e-12)
    np.testing.assert_allclose(h.train_nelbo, np.add(h.train_recon, h.train_kl), rtol=1e-12)
    # the test figures are the evaluation of the final model with the fixed evaluation noise
    nelbo, recon, kl = negative_elbo(vae, mnist[1], seed=EVAL_SEED)
    assert (h.test_nelbo[-1], h.test_recon[-1], h.test_kl[-1]) == (nelbo, recon, kl)


def test_history_without_a_test_set_and_with_zero_epochs(mnist):
    x_train, _ = mnist
    vae = VAE(784, (16,), 2, seed=0)
    before = {k: v.copy() for k, v in vae.params.items()}
    h = fit(NumpyBackend(vae, x_train, batch_size=BATCH), None, epochs=0, progress=False)
    assert isinstance(h, History) and h.epoch == [] and h.train_loss == []
    assert all(np.array_equal(before[k], vae.params[k]) for k in before)
    h = fit(NumpyBackend(vae, x_train[:100], batch_size=BATCH), None, epochs=2, progress=False)
    assert len(h.train_nelbo) == 2 and h.test_nelbo == []
    with pytest.raises(ValueError, match="epochs"):
        fit(NumpyBackend(vae, x_train, batch_size=BATCH), None, epochs=-1, progress=False)


def test_train_loss_with_beta_below_one_weights_the_kl(mnist):
    x_train, x_test = mnist
    vae = VAE(784, (16,), 2, seed=0, beta=0.25)
    h = fit(NumpyBackend(vae, x_train, batch_size=BATCH), x_test, epochs=1, progress=False)
    assert h.train_loss[0] == pytest.approx(h.train_recon[0] + 0.25 * h.train_kl[0], rel=1e-12)
    assert h.train_nelbo[0] == pytest.approx(h.train_recon[0] + h.train_kl[0], rel=1e-12)


def test_log_gets_one_line_per_epoch(mnist):
    lines = []
    x_train, x_test = mnist
    vae = VAE(784, (16,), 2, seed=0)
    fit(NumpyBackend(vae, x_train, batch_size=BATCH), x_test, epochs=2, progress=False,
        log=lines.append)
    assert len(lines) == 2
    assert lines[0].startswith("epoch   1") and "test -ELBO" in lines[0]


def _params_finite(vae):
    return all(np.all(np.isfinite(v)) for v in vae.params.values())


def test_nan_in_a_parameter_stops_training_at_the_first_step(mnist):
    x_train, x_test = mnist
    vae = VAE(784, (16,), 2, seed=0)
    vae.params["enc.0.b"][0] = np.nan
    with pytest.raises(TrainingDiverged, match=r"epoch 1, step 1\b") as info:
        fit(NumpyBackend(vae, x_train, batch_size=BATCH), x_test, epochs=2, progress=False)
    assert "learning rate" in str(info.value)


def _nan_gradient_at(vae, bad_call):
    """Make the ``bad_call``-th call (1-based) of loss_and_grads return a NaN gradient."""
    real = vae.loss_and_grads
    calls = []

    def wrapper(x, eps, y=None, *, beta=None):
        calls.append(1)
        terms, grads = real(x, eps, y, beta=beta)
        if len(calls) == bad_call:
            grads = dict(grads)
            grads["enc.0.W"] = grads["enc.0.W"].copy()
            grads["enc.0.W"][3, 2] = np.nan
        return terms, grads

    vae.loss_and_grads = wrapper
    return calls


@pytest.mark.parametrize("bad_call", [3, STEPS + 2])
def test_a_nan_gradient_stops_training_before_it_reaches_the_params(mnist, bad_call):
    x_train, x_test = mnist
    vae = VAE(784, (16,), 2, seed=0)
    calls = _nan_gradient_at(vae, bad_call)
    backend = NumpyBackend(vae, x_train, batch_size=BATCH, seed=0)
    epoch = 1 + (bad_call - 1) // STEPS
    with pytest.raises(TrainingDiverged, match=rf"epoch {epoch}, step {bad_call}\b") as info:
        fit(backend, x_test, epochs=3, progress=False, lr_hint="try --lr 1e-4")
    message = str(info.value)
    assert "gradient" in message and "try --lr 1e-4" in message
    assert len(calls) == bad_call  # it stopped at once
    assert _params_finite(vae)
    # the bad step changed nothing: a rerun of the good steps reaches the same params
    ref = VAE(784, (16,), 2, seed=0)
    ref_backend = NumpyBackend(ref, x_train, batch_size=BATCH, seed=0)
    for e in range(epoch):
        n = ref_backend.start_epoch()
        last = n if e < epoch - 1 else (bad_call - 1) % STEPS
        for i in range(last):
            ref_backend.step(i)
    for key in vae.params:
        np.testing.assert_array_equal(vae.params[key], ref.params[key])


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_a_huge_learning_rate_diverges_with_a_message_and_finite_params(mnist, optimizer):
    x_train, x_test = mnist
    vae = VAE(784, (16,), 2, seed=0)
    backend = NumpyBackend(vae, x_train, batch_size=BATCH, lr=1e6, optimizer=optimizer)
    with np.errstate(all="ignore"), pytest.raises(TrainingDiverged) as info:
        fit(backend, x_test, epochs=5, progress=False)
    message = str(info.value)
    assert "diverged at epoch" in message and "step" in message
    assert "lower the learning rate" in message
    assert _params_finite(vae)


def test_training_diverged_is_a_floating_point_error():
    assert issubclass(TrainingDiverged, FloatingPointError)


def test_warmup_beta_ramps_linearly_to_beta():
    assert warmup_beta(1.0, 0, 0) == 1.0
    assert warmup_beta(0.5, 123, 0) == 0.5
    assert [warmup_beta(2.0, s, 4) for s in range(6)] == [0.5, 1.0, 1.5, 2.0, 2.0, 2.0]
    assert warmup_beta(1.0, 0, 10) == pytest.approx(0.1)


def _recording(vae):
    calls = []
    real = vae.loss_and_grads

    def wrapper(x, eps, y=None, *, beta=None):
        calls.append((np.array(x), eps.dtype, beta))
        return real(x, eps, y, beta=beta)

    vae.loss_and_grads = wrapper
    return calls


def test_kl_warmup_is_passed_step_by_step(mnist):
    x_train, _ = mnist
    vae = VAE(784, (16,), 2, seed=0, beta=0.5)
    calls = _recording(vae)
    fit(NumpyBackend(vae, x_train, batch_size=BATCH, kl_warmup=6), None, epochs=2,
        progress=False)
    betas = [c[2] for c in calls]
    assert len(betas) == 2 * STEPS
    np.testing.assert_allclose(betas, [0.5 * min(1, (s + 1) / 6) for s in range(2 * STEPS)])


def test_binarize_feeds_zero_one_batches_that_change_every_epoch(mnist):
    x_train, _ = mnist
    vae = VAE(784, (16,), 2, seed=0)
    calls = _recording(vae)
    fit(NumpyBackend(vae, x_train, batch_size=N_TRAIN, binarize=True), None, epochs=2,
        progress=False)
    assert len(calls) == 2
    for x, _, _ in calls:
        assert set(np.unique(x)) <= {0.0, 1.0}
        assert x.dtype == np.float32
    first, second = (np.sort(c[0].sum(axis=1)) for c in calls)
    assert not np.array_equal(first, second)  # a fresh draw each epoch
    # each pixel is 1 with probability equal to its grey level
    assert abs(calls[0][0].mean() - x_train.mean()) < 0.01


def test_without_binarize_the_batches_are_the_data(mnist):
    x_train, _ = mnist
    vae = VAE(784, (16,), 2, seed=0)
    calls = _recording(vae)
    backend = NumpyBackend(vae, x_train, batch_size=100)
    fit(backend, None, epochs=1, progress=False)
    seen = np.concatenate([c[0] for c in calls])
    assert [len(c[0]) for c in calls] == [100, 100, 56]  # the last batch is short
    np.testing.assert_array_equal(seen, x_train[backend.order])
    assert sorted(backend.order) == list(range(N_TRAIN))  # each example once an epoch


def test_backend_rejects_bad_arguments(mnist):
    x_train, _ = mnist
    vae = VAE(784, (16,), 2)
    with pytest.raises(ValueError, match="batch_size"):
        NumpyBackend(vae, x_train, batch_size=0)
    with pytest.raises(ValueError, match="optimizer"):
        NumpyBackend(vae, x_train, optimizer="rmsprop")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        NumpyBackend(vae, x_train * 255)
    with pytest.raises(ValueError, match="shape"):
        NumpyBackend(vae, x_train[:, :100])


# --- checks before the first step ---------------------------------------------------------


@pytest.mark.parametrize("kl_warmup", [-1, 2.5, float("nan"), True, "10", None])
def test_backend_refuses_a_kl_warmup_that_is_not_a_step_count(mnist, kl_warmup):
    with pytest.raises(ValueError, match="kl_warmup must be a whole number of steps"):
        NumpyBackend(VAE(784, (16,), 2), mnist[0], kl_warmup=kl_warmup)


@pytest.mark.parametrize("binarize", ["yes", "False", 1, 0, None])
def test_backend_refuses_a_binarize_that_is_not_a_bool(mnist, binarize):
    with pytest.raises(ValueError, match="binarize must be True or False"):
        NumpyBackend(VAE(784, (16,), 2), mnist[0], binarize=binarize)


def test_numpy_integers_and_bools_are_fine(mnist):
    backend = NumpyBackend(VAE(784, (16,), 2), mnist[0], kl_warmup=np.int64(5),
                           binarize=np.bool_(True))
    assert backend.options.kl_warmup == 5 and backend.options.binarize is True


@pytest.mark.parametrize("x_test, message", [
    (np.zeros((10, 100), np.float32), r"x_test must have shape \(N, 784\)"),
    (np.zeros((0, 784), np.float32), "x_test is empty"),
    (np.full((3, 784), 2.0, np.float32), r"\[0, 1\]"),
])
def test_a_bad_test_set_fails_before_the_first_step(mnist, x_test, message):
    vae = VAE(784, (16,), 2, seed=0)
    calls = _recording(vae)
    with pytest.raises(ValueError, match=message):
        fit(NumpyBackend(vae, mnist[0], batch_size=BATCH), x_test, epochs=2, progress=False)
    assert calls == []


@pytest.mark.parametrize("epochs", [2.5, True, "3"])
def test_epochs_must_be_an_integer(mnist, epochs):
    with pytest.raises(ValueError, match="epochs must be an integer"):
        fit(NumpyBackend(VAE(784, (16,), 2), mnist[0]), None, epochs=epochs, progress=False)


# --- stopping and resuming ----------------------------------------------------------------


def _stop_after(backend, n):
    """A stop() that says yes once the backend has taken n steps."""
    return lambda: backend.steps_done >= n


def _backend(x_train, optimizer="adam", vae=None):
    vae = vae or VAE(784, (16,), 2, seed=1)
    return NumpyBackend(vae, x_train, batch_size=BATCH, lr=3e-3, seed=5, optimizer=optimizer,
                        binarize=True, kl_warmup=6)


def _save_and_restore(tmp_path, backend, loop, x_train, optimizer):
    """Through a state file and back into fresh objects, as a resumed process does."""
    path = save_state(tmp_path / "state.safetensors", backend.to_vae(),
                      {"backend": backend.state_dict(), "loop": loop.to_dict()})
    params, config, state, _ = read_state(path)
    fresh = _backend(x_train, optimizer, VAE(config=config, params=params))
    fresh.load_state_dict(state["backend"])
    return fresh, LoopState.from_dict(state["loop"])


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
@pytest.mark.parametrize("stop_at", [1, 3, STEPS, STEPS + 2, 2 * STEPS + 1])
def test_stopped_and_resumed_run_ends_bit_for_bit_where_the_straight_run_ends(
    mnist, tmp_path, optimizer, stop_at
):
    x_train, x_test = mnist
    epochs = 3
    straight = _backend(x_train, optimizer)
    h_straight = fit(straight, x_test, epochs=epochs, progress=False)

    first = _backend(x_train, optimizer)
    loop = LoopState()
    saved = []
    fit(first, x_test, epochs=epochs, progress=False, loop=loop, stop=_stop_after(first, stop_at),
        on_epoch_end=lambda lp: saved.append(lp.epochs_done))
    assert loop.stopped
    assert loop.global_step == stop_at
    assert (loop.epochs_done, loop.step) == divmod(stop_at, STEPS)
    assert saved == list(range(1, loop.epochs_done + 1))
    resumed, loop2 = _save_and_restore(tmp_path, first, loop, x_train, optimizer)
    h = fit(resumed, x_test, epochs=epochs, progress=False, loop=loop2)
    assert not loop2.stopped and loop2.epochs_done == epochs
    for key, value in straight.vae.params.items():
        assert resumed.vae.params[key].tobytes() == value.tobytes(), key
    assert _without_timing(h) == _without_timing(h_straight)
    assert resumed.steps_done == straight.steps_done == epochs * STEPS


def test_a_stop_inside_the_last_step_finishes_the_epoch_first(mnist):
    loop, backend = LoopState(), _backend(mnist[0])
    fit(backend, None, epochs=2, progress=False, loop=loop,
        stop=_stop_after(backend, STEPS))  # says yes after the epoch's last step
    assert loop.stopped and loop.epochs_done == 1 and loop.step == 0
    assert loop.history.epoch == [1]


def test_a_stop_before_anything_returns_at_once(mnist):
    backend = _backend(mnist[0])
    loop = LoopState()
    fit(backend, None, epochs=2, progress=False, loop=loop, stop=lambda: True)
    assert loop.stopped and loop.epochs_done == 0 and backend.steps_done == 0


def test_a_nan_in_the_steps_before_a_stop_is_still_caught(mnist):
    vae = VAE(784, (16,), 2, seed=0)
    _nan_gradient_at(vae, 2)
    backend = NumpyBackend(vae, mnist[0], batch_size=BATCH)
    with pytest.raises(TrainingDiverged, match=r"step 2\b"):
        fit(backend, None, epochs=1, progress=False, guard_every=50,
            stop=_stop_after(backend, 2))


def test_a_finished_loop_does_nothing_and_more_epochs_continue_it(mnist, tmp_path):
    x_train, x_test = mnist
    straight = _backend(x_train)
    fit(straight, x_test, epochs=3, progress=False)
    backend, loop = _backend(x_train), LoopState()
    fit(backend, x_test, epochs=2, progress=False, loop=loop)
    fit(backend, x_test, epochs=2, progress=False, loop=loop)  # nothing left to do
    assert loop.epochs_done == 2 and backend.steps_done == 2 * STEPS
    fit(backend, x_test, epochs=3, progress=False, loop=loop)  # a longer run
    for key, value in straight.vae.params.items():
        assert backend.vae.params[key].tobytes() == value.tobytes(), key
    with pytest.raises(ValueError, match="done 3 epochs already"):
        fit(backend, x_test, epochs=1, progress=False, loop=loop)


def test_load_state_dict_refuses_states_that_do_not_fit(mnist):
    backend = _backend(mnist[0])
    fit(backend, None, epochs=1, progress=False)
    good = backend.state_dict()
    bad_states = [
        {k: v for k, v in good.items() if k != "rng"},
        {**good, "rng": {"bit_generator": "MT19937", "state": {}}},
        {**good, "order": np.arange(10)},
        {**good, "order": np.zeros(N_TRAIN, dtype=np.int64)},
        {**good, "steps_done": -1},
        {**good, "optimizer": {**good["optimizer"], "t": "x"}},
    ]
    before = backend.state_dict()
    for bad in bad_states:
        with pytest.raises(ValueError):
            backend.load_state_dict(bad)
        after = backend.state_dict()
        assert after["rng"] == before["rng"] and after["steps_done"] == before["steps_done"]
        assert np.array_equal(after["order"], before["order"])


def test_loop_state_from_dict_checks_its_counts():
    good = LoopState(History(epoch=[1], train_loss=[2.0]), 1, 2, np.zeros((2, 3)), 9).to_dict()
    assert LoopState.from_dict(good).to_dict()["global_step"] == 9
    for bad in (
        {**good, "step": 3},  # partial has two rows
        {**good, "epochs_done": 2},
        {**good, "history": {"colour": []}},
        {k: v for k, v in good.items() if k != "partial"},
    ):
        with pytest.raises(ValueError, match="not a training loop state"):
            LoopState.from_dict(bad)
