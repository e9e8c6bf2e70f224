"""TorchBackend: the PyTorch training backend of ``train.fit``.

A few epochs on a slice of the embedded MNIST digits on the CPU: the figures are finite and
go down, the same seed repeats them exactly, the NaN guard names the step that diverged,
and what the backend trained is a NumPy model and a checkpoint either backend reads.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from tests.parity import one_thread, torch  # noqa: F401
from vae_from_scratch.course.checkpoint import (  # noqa: E402
    load_torch_vae,
    load_vae,
    read_state,
    save_checkpoint,
    save_state,
)
from vae_from_scratch.data import load_mnist  # noqa: E402
from vae_from_scratch.evaluate import negative_elbo  # noqa: E402
from vae_from_scratch.torch_vae import (  # noqa: E402
    RECOMMENDED_GUARD_EVERY,
    TorchBackend,
    TorchVAE,
    available_devices,
    default_device,
    resolve_device,
)
from vae_from_scratch.train import EVAL_SEED, LoopState, TrainingDiverged, fit  # noqa: E402
from vae_from_scratch.vae import VAE  # noqa: E402

pytestmark = [pytest.mark.lesson06, pytest.mark.torch]


@pytest.fixture(scope="module")
def digits():
    data = load_mnist()
    return data.x_train[:512], data.x_test[:200]


def small_vae(**kwargs):
    return VAE(input_dim=784, hidden_dims=(64,), latent_dim=4, seed=0, **kwargs)


def train(x_train, x_test, epochs=3, guard_every=RECOMMENDED_GUARD_EVERY, vae=None, **kwargs):
    kwargs = {"batch_size": 64, "lr": 3e-3, "device": "cpu", **kwargs}
    backend = TorchBackend(vae or small_vae(), x_train, **kwargs)
    history = fit(backend, x_test, epochs=epochs, progress=False, guard_every=guard_every)
    return backend, history


def test_trains_on_cpu_and_the_figures_go_down(digits):
    backend, history = train(*digits, epochs=4)
    for key in ("train_loss", "train_recon", "train_kl", "test_nelbo", "test_recon", "test_kl"):
        assert np.all(np.isfinite(getattr(history, key))), key
    assert history.train_nelbo[-1] < history.train_nelbo[0] - 50
    assert history.test_nelbo[-1] < history.test_nelbo[0]
    assert history.test_nelbo[-1] < 300  # nats per example on binarized-ish MNIST pixels
    assert backend.x_train.device.type == "cpu"
    assert backend.generator.device.type == "cpu"
    assert backend.guard_every == RECOMMENDED_GUARD_EVERY


def test_same_seed_same_numbers_and_guard_every_changes_nothing(digits):
    _, a = train(*digits, epochs=2, seed=3, guard_every=1)
    _, b = train(*digits, epochs=2, seed=3, guard_every=50)
    _, c = train(*digits, epochs=2, seed=4)
    for key in ("train_loss", "train_recon", "train_kl", "test_nelbo"):
        assert getattr(a, key) == getattr(b, key), key
    assert a.train_loss != c.train_loss


def test_step_returns_a_device_tensor_and_evaluate_matches_numpy(digits):
    x_train, x_test = digits
    backend = TorchBackend(small_vae(), x_train, batch_size=100, device="cpu")
    n_steps = backend.start_epoch()
    assert n_steps == 6  # 512 rows: five of 100 and one of 12
    terms = [backend.step(i) for i in range(n_steps)]
    assert all(isinstance(t, torch.Tensor) and t.shape == (3,) for t in terms)
    values = backend.to_floats(terms)
    assert values.shape == (6, 3) and values.dtype == np.float64
    np.testing.assert_allclose(values[:, 0], values[:, 1] + values[:, 2], rtol=1e-5)
    expected = negative_elbo(backend.to_vae(), x_test, seed=EVAL_SEED)
    np.testing.assert_allclose(backend.evaluate(x_test), expected, rtol=1e-5)


def test_kl_warmup_binarize_and_sgd(digits):
    x_train, x_test = digits
    backend = TorchBackend(
        small_vae(beta=2.0),
        x_train,
        batch_size=64,
        device="cpu",
        kl_warmup=10,
        binarize=True,
        optimizer="sgd",
        lr=1e-3,
    )
    backend.start_epoch()
    loss, recon, kl = backend.to_floats([backend.step(0)])[0]
    assert loss == pytest.approx(recon + 0.2 * kl, rel=1e-5)  # beta * 1/10 at the first step
    history = fit(backend, x_test, epochs=1, progress=False)
    assert np.isfinite(history.test_nelbo[0])
    with pytest.raises(ValueError, match="optimizer"):
        TorchBackend(small_vae(), x_train, optimizer="rmsprop", device="cpu")
    with pytest.raises(ValueError, match="batch_size"):
        TorchBackend(small_vae(), x_train, batch_size=0, device="cpu")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        TorchBackend(small_vae(), x_train * 255, device="cpu")


def test_trained_model_round_trips_through_a_checkpoint(digits, tmp_path):
    x_train, x_test = digits
    model = TorchVAE.from_numpy(small_vae(), device="cpu")
    backend, _ = train(x_train, None, epochs=1, vae=model)
    assert backend.model is model  # a TorchVAE is trained in place
    vae = backend.to_vae()
    for name, p in model.params.items():
        assert np.array_equal(vae.params[name], p.detach().numpy())
    save_checkpoint(tmp_path / "torch.safetensors", model, {"epoch": 1})
    from_numpy = load_vae(tmp_path / "torch.safetensors")
    assert negative_elbo(from_numpy, x_test, seed=1) == negative_elbo(vae, x_test, seed=1)
    again = load_torch_vae(tmp_path / "torch.safetensors", device="cpu")
    assert all(torch.equal(again.params[k], p) for k, p in model.params.items())


def test_nan_guard_names_the_first_bad_step(digits):
    x_train, _ = digits
    backend = TorchBackend(small_vae(), x_train, batch_size=64, device="cpu")
    with torch.no_grad():
        backend.model.params["dec.out.b"][3] = float("nan")
    with pytest.raises(TrainingDiverged, match=r"epoch 1, step 1\b"):
        fit(backend, epochs=1, progress=False, guard_every=50)


class PoisonedBackend(TorchBackend):
    """Puts a NaN into one weight just before step ``at`` (counting from 1)."""

    at = 11

    def step(self, i):
        if self.steps_done + 1 == self.at:
            with torch.no_grad():
                self.model.params["enc.0.W"][0, 0] = float("nan")
        return super().step(i)


@pytest.mark.parametrize("guard_every", [1, 7, 50])
def test_nan_guard_with_batched_checks(digits, guard_every):
    backend = PoisonedBackend(small_vae(), digits[0], batch_size=64, device="cpu")
    with pytest.raises(TrainingDiverged, match=r"epoch 2, step 11\b"):  # 8 steps per epoch
        fit(backend, epochs=3, progress=False, guard_every=guard_every)


def test_huge_learning_rate_diverges_cleanly(digits):
    backend = TorchBackend(small_vae(), digits[0], batch_size=64, lr=1e4, device="cpu")
    with pytest.raises(TrainingDiverged, match=r"diverged at epoch \d+, step \d+"):
        fit(backend, epochs=5, progress=False, guard_every=50)


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("VAE_COURSE_TEST_COMPILE"),
    reason="torch.compile takes a minute or more; set VAE_COURSE_TEST_COMPILE=1",
)
def test_compiled_step_gives_the_same_numbers(digits):
    _, plain = train(*digits, epochs=1, seed=2, dtype=torch.float64)
    _, compiled = train(*digits, epochs=1, seed=2, dtype=torch.float64, compile=True)
    np.testing.assert_allclose(compiled.train_loss, plain.train_loss, rtol=1e-9)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_short_training_run_on_cuda(digits):
    backend, history = train(*digits, epochs=3, device="cuda")
    assert backend.x_train.device.type == "cuda"
    assert backend.generator.device.type == "cuda"
    assert backend.order.device.type == "cuda"
    assert np.all(np.isfinite(history.test_nelbo))
    assert history.train_nelbo[-1] < history.train_nelbo[0]
    _, again = train(*digits, epochs=3, device="cuda")
    np.testing.assert_allclose(again.train_loss, history.train_loss, rtol=1e-6)  # seeded
    # the trained parameters come back to the host exactly
    vae = backend.to_vae()
    for name, p in backend.model.params.items():
        assert np.array_equal(vae.params[name], p.detach().cpu().numpy())


# --- checks shared with the NumPy backend, devices, and resuming ---------------------------


@pytest.mark.parametrize("kwargs, message", [
    (dict(kl_warmup=-1), "kl_warmup must be a whole number"),
    (dict(kl_warmup=float("nan")), "kl_warmup must be a whole number"),
    (dict(kl_warmup=2.5), "kl_warmup must be a whole number"),
    (dict(binarize="yes"), "binarize must be True or False"),
])
def test_backend_refuses_bad_schedule_options_like_the_numpy_backend(digits, kwargs, message):
    with pytest.raises(ValueError, match=message):
        TorchBackend(small_vae(), digits[0], device="cpu", **kwargs)


def test_a_bad_test_set_fails_before_the_first_step(digits):
    backend = TorchBackend(small_vae(), digits[0], device="cpu")
    with pytest.raises(ValueError, match=r"x_test must have shape \(N, 784\)"):
        fit(backend, digits[1][:, :100], epochs=1, progress=False)
    assert backend.steps_done == 0


@pytest.mark.parametrize("name, message", [
    ("foo", "unknown device 'foo'; this machine has: cpu"),
    ("cuda:99", "device 'cuda:99' is not available"),
    ("mps", "device 'mps' is not available"),
    ("meta", "not one the course runs on"),
    (3, "device must be a name"),
])
def test_resolve_device_names_the_devices_this_machine_has(name, message):
    if name == "cuda:99" and not torch.cuda.is_available():
        message = "device 'cuda:99' is not available: "
    if name == "mps" and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    with pytest.raises(ValueError, match=message) as info:
        resolve_device(name)
    text = str(info.value)
    assert "\n" not in text
    if name != 3:
        assert "this machine has: cpu" in text
    assert available_devices()[0] == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_a_value_error_everywhere(digits, tmp_path):
    with pytest.raises(ValueError, match="'cuda' is not available.*this machine has: cpu"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="this machine has: cpu"):
        TorchBackend(small_vae(), digits[0], device="cuda")
    path = save_checkpoint(tmp_path / "m.safetensors", small_vae())
    with pytest.raises(ValueError, match="this machine has: cpu"):
        load_torch_vae(path, device="cuda")
    with pytest.raises(ValueError, match="this machine has: cpu"):
        load_torch_vae(tmp_path / "no-such-file", device="cuda")  # the device is checked first


def test_resolve_device_passes_what_is_there():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device(None) == default_device()


def _stoppable(x_train, vae=None, **kwargs):
    kwargs = {"batch_size": 64, "lr": 3e-3, "device": "cpu", "seed": 7, "binarize": True,
              "kl_warmup": 5, **kwargs}
    return TorchBackend(vae or small_vae(), x_train, **kwargs)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
@pytest.mark.parametrize("stop_at", [3, 8, 13])  # 8 steps per epoch
def test_cpu_run_stopped_and_resumed_ends_bit_for_bit(digits, tmp_path, optimizer, stop_at):
    x_train, x_test = digits
    straight = _stoppable(x_train, optimizer=optimizer)
    h_straight = fit(straight, x_test, epochs=3, progress=False)

    first = _stoppable(x_train, optimizer=optimizer)
    loop = LoopState()
    fit(first, x_test, epochs=3, progress=False, loop=loop,
        stop=lambda: first.steps_done >= stop_at)
    assert loop.stopped and loop.global_step == stop_at
    path = save_state(tmp_path / "state.safetensors", first.to_vae(),
                      {"backend": first.state_dict(), "loop": loop.to_dict()})
    params, config, state, _ = read_state(path)
    resumed = _stoppable(x_train, VAE(config=config, params=params), optimizer=optimizer)
    resumed.load_state_dict(state["backend"])
    h = fit(resumed, x_test, epochs=3, progress=False, loop=LoopState.from_dict(state["loop"]))
    for name, p in straight.model.params.items():
        assert torch.equal(resumed.model.params[name], p), name
    for key in ("train_loss", "train_recon", "train_kl", "test_nelbo"):
        assert getattr(h, key) == getattr(h_straight, key), key


def test_torch_load_state_dict_refuses_states_that_do_not_fit(digits):
    backend = _stoppable(digits[0])
    fit(backend, None, epochs=1, progress=False)
    good = backend.state_dict()
    name = next(iter(good["optimizer"]["state"]))
    bad_opt = {**good["optimizer"], "state": {
        **good["optimizer"]["state"],
        name: {**good["optimizer"]["state"][name], "exp_avg": np.zeros(3, np.float32)}}}
    bad_states = [
        {k: v for k, v in good.items() if k != "generator"},
        {**good, "generator": np.zeros(5, np.uint8)},  # not a CPU generator's state
        {**good, "generator": good["generator"].astype(np.int64)},
        {**good, "order": np.arange(3)},
        {**good, "steps_done": True},
        {**good, "optimizer": bad_opt},
        {**good, "optimizer": {**good["optimizer"], "state": {"nope": {}}}},
    ]
    before = backend.state_dict()
    for bad in bad_states:
        with pytest.raises(ValueError):
            backend.load_state_dict(bad)
        after = backend.state_dict()
        assert np.array_equal(after["generator"], before["generator"])
        assert after["steps_done"] == before["steps_done"]
        for n, entry in before["optimizer"]["state"].items():
            for key, value in entry.items():
                assert np.array_equal(after["optimizer"]["state"][n][key], value)
