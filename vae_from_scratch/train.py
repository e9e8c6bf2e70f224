"""One training loop for either backend (lesson 05).

:func:`fit` is the loop: for each epoch, shuffle, take the steps, record the history,
evaluate on the test set. A *backend* owns the model, the data and the optimizer, and knows
how to take one step. It provides:

    name: str                      "numpy" or "torch"
    config: VAEConfig              the model's configuration
    options: TrainingOptions       how it trains (config.py), checked once
    guard_every: int               steps between NaN checks that suit it (fit's default)
    start_epoch() -> int           shuffle the training set; return the number of steps
    steps_per_epoch() -> int       the same number, without shuffling
    step(i) -> terms               one optimizer step on batch i; terms = (loss, recon, kl)
                                   in whatever form to_floats understands (floats, tensors)
    to_floats(list_of_terms) -> np.ndarray (n, 3)   one host sync for many steps
    check_x(x, name) -> x          validate data for this model (shape, values), or raise
    check_y(y, n) -> y             validate labels for this model (None if unconditional)
    evaluate(x, y=None) -> (nelbo, recon, kl)      negative ELBO of x (beta = 1), floats
    to_vae() -> VAE                the current parameters as a NumPy model
    state_dict() -> dict           everything but the parameters that the next steps depend
    load_state_dict(state)         on (optimizer, random generator, step count, the epoch's
                                   order): str-keyed dicts, lists, JSON values, NumPy arrays

:class:`NumpyBackend` is the reference; ``vae_from_scratch.torch_vae.TorchBackend`` the
PyTorch one. The loop's bookkeeping has names of its own: :class:`History` (the figures per
epoch), :class:`LoopState` (where a run is, so that it can stop and resume exactly: save
``to_vae()``, ``state_dict()`` and the loop state; later build the backend on the saved
model, ``load_state_dict`` and call ``fit(..., loop=saved_loop)``) and :class:`NanGuard`
(which stops training at the first non-finite loss, naming the step).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vae_from_scratch.config import SGD_MOMENTUM, TrainingOptions, count
from vae_from_scratch.data import binarize as binarize_pixels
from vae_from_scratch.evaluate import negative_elbo
from vae_from_scratch.optim import SGD, Adam, NonFiniteGradientError
from vae_from_scratch.vae import VAE

EVAL_SEED = 12345  # fixed noise for test-set evaluation, so epochs compare like with like
TRAIN_STREAM = 1  # NumpyBackend(seed=s) draws from default_rng([s, TRAIN_STREAM])

#: The NumPy optimizers by TrainingOptions.optimizer: (params, lr) -> optimizer.
OPTIMIZERS = {
    "adam": lambda params, lr: Adam(params, lr=lr),
    "sgd": lambda params, lr: SGD(params, lr=lr, momentum=SGD_MOMENTUM),
}


def warmup_beta(beta: float, step: int, warmup_steps: int) -> float:
    """KL warm-up: the KL weight grows linearly from 0 to ``beta`` over ``warmup_steps``."""
    if warmup_steps <= 0:
        return beta
    return beta * min(1.0, (step + 1) / warmup_steps)


def check_order(order: Any, n: int) -> np.ndarray | None:
    """A saved epoch order is a permutation of range(n) (or None before the first epoch)."""
    if order is None:
        return None
    order = np.asarray(order)
    if order.shape != (n,) or order.dtype.kind not in "iu" or not np.array_equal(
        np.sort(order), np.arange(n)
    ):
        raise ValueError(f"the saved epoch order is not a permutation of the {n} examples")
    return order


def check_steps_done(steps_done: Any) -> int:
    return count(steps_done, "steps_done")


def check_labels(vae: VAE, y: Any, n: int, name: str = "y") -> np.ndarray | None:
    """Labels for ``vae``: y (n,) integers in 0..K-1 for a conditional model, returned as
    an int64 copy; None for an unconditional one (which refuses labels). ValueError else."""
    vae.check_y(y, n, name)
    return None if y is None else np.array(y, dtype=np.int64)


# --- the NumPy backend ------------------------------------------------------------------------


class NumpyBackend:
    """The hand-written VAE and optimizer on the CPU.

    vae: a :class:`~vae_from_scratch.vae.VAE`; x_train (N, D); y_train (N,) the labels of
    a conditional model, shuffled and batched with the images. ``options``: a
    :class:`~vae_from_scratch.config.TrainingOptions`, or its fields as keywords
    (``NumpyBackend(vae, x, lr=3e-3, seed=0)``). The seed drives both the shuffling and
    the noise eps, so a run repeats bit for bit.
    """

    name = "numpy"
    guard_every = 1  # checking a float on the host costs nothing here

    def __init__(self, vae: VAE, x_train: Any, y_train: Any = None, *,
                 options: TrainingOptions | None = None, **option_values: Any) -> None:
        self.options = TrainingOptions.given(options, **option_values)
        self.vae = vae
        self.config = vae.config
        self.x_train = np.array(vae.check_x(x_train, "x_train"))  # a copy: ours to index
        self.y_train = check_labels(vae, y_train, len(self.x_train), "y_train")
        self.steps_done = 0
        # A stream of its own: VAE(seed=s) draws its initial weights from default_rng(s),
        # and training noise must not replay those very numbers.
        self.rng = np.random.default_rng([self.options.seed, TRAIN_STREAM])
        self.opt = OPTIMIZERS[self.options.optimizer](vae.params, self.options.lr)
        self.order = None

    def start_epoch(self) -> int:
        self.order = self.rng.permutation(len(self.x_train))
        return self.steps_per_epoch()

    def steps_per_epoch(self) -> int:
        return -(-len(self.x_train) // self.options.batch_size)

    def step(self, i: int) -> tuple[float, float, float]:
        size = self.options.batch_size
        idx = self.order[i * size : (i + 1) * size]
        x = self.x_train[idx]
        y = None if self.y_train is None else self.y_train[idx]
        if self.options.binarize:
            x = binarize_pixels(x, self.rng)
        eps = self.rng.standard_normal(self.vae.bottleneck.noise_shape(len(x)),
                                       dtype=self.vae.dtype)
        beta = warmup_beta(self.config.beta, self.steps_done, self.options.kl_warmup)
        terms, grads = self.vae.loss_and_grads(x, eps, y, beta=beta)
        self.steps_done += 1
        try:
            self.opt.step(grads)
        except NonFiniteGradientError:  # the optimizer refused: NaN never reaches the params
            return (float("nan"), terms.recon, terms.kl)
        return (terms.loss, terms.recon, terms.kl)

    def to_floats(self, pending: list) -> np.ndarray:
        return np.array(pending, dtype=np.float64).reshape(-1, 3)

    def check_x(self, x: Any, name: str = "x") -> np.ndarray:
        return self.vae.check_x(x, name)

    def check_y(self, y: Any, n: int, name: str = "y") -> np.ndarray | None:
        return check_labels(self.vae, y, n, name)

    def evaluate(self, x: np.ndarray, y: np.ndarray | None = None) -> tuple[float, float, float]:
        return negative_elbo(self.vae, x, seed=EVAL_SEED, y=y)

    def to_vae(self) -> VAE:
        return self.vae

    def state_dict(self) -> dict[str, Any]:
        """The optimizer's state, the generator's state (JSON), steps taken and the current
        epoch's order: with the parameters, all that the next step depends on."""
        return {
            "optimizer": self.opt.state_dict(),
            "rng": self.rng.bit_generator.state,
            "steps_done": self.steps_done,
            "order": None if self.order is None else self.order.copy(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`; everything is checked before anything changes."""
        if not isinstance(state, dict) or set(state) != {"optimizer", "rng", "steps_done",
                                                          "order"}:
            raise ValueError("not a NumpyBackend state: expected optimizer, rng, steps_done, "
                             f"order; got {sorted(state) if isinstance(state, dict) else state}")
        probe = type(self.rng.bit_generator)()
        try:
            probe.state = state["rng"]
        except (TypeError, ValueError, KeyError) as err:
            raise ValueError(f"the saved random-generator state is unusable: {err}") from None
        order = check_order(state["order"], len(self.x_train))
        steps_done = check_steps_done(state["steps_done"])
        self.opt.load_state_dict(state["optimizer"])
        self.rng.bit_generator.state = probe.state
        self.order = None if order is None else order.astype(np.int64)
        self.steps_done = steps_done


# --- the loop's bookkeeping ----------------------------------------------------------------------


class TrainingDiverged(FloatingPointError):
    """The loss became NaN or infinite; the message names the step and a likely fix."""


@dataclass
class History:
    """Per-epoch figures, in nats per example. ``train_*`` are means over the epoch's steps."""

    epoch: list = field(default_factory=list)
    train_loss: list = field(default_factory=list)
    train_nelbo: list = field(default_factory=list)
    train_recon: list = field(default_factory=list)
    train_kl: list = field(default_factory=list)
    test_nelbo: list = field(default_factory=list)
    test_recon: list = field(default_factory=list)
    test_kl: list = field(default_factory=list)
    seconds: list = field(default_factory=list)

    def as_dict(self) -> dict[str, list]:
        return {k: list(v) for k, v in self.__dict__.items()}

    def record_train(self, epoch: int, values: np.ndarray, seconds: float) -> str:
        """Add an epoch from its steps' (loss, recon, kl) rows; returns its log line so far."""
        loss, recon, kl = values.mean(axis=0) if len(values) else (np.nan,) * 3
        self.epoch.append(epoch)
        self.train_loss.append(float(loss))
        self.train_recon.append(float(recon))
        self.train_kl.append(float(kl))
        self.train_nelbo.append(float(recon + kl))
        self.seconds.append(seconds)
        return f"epoch {epoch:3d}  train -ELBO {recon + kl:8.2f}"

    def record_test(self, nelbo: float, recon: float, kl: float) -> str:
        """Add the epoch's test figures; returns their part of the log line."""
        self.test_nelbo.append(float(nelbo))
        self.test_recon.append(float(recon))
        self.test_kl.append(float(kl))
        return f"  test -ELBO {nelbo:8.2f} (recon {recon:7.2f}, KL {kl:6.2f})"


@dataclass
class LoopState:
    """Where :func:`fit` is in a run: what resuming needs besides the backend's
    ``state_dict()`` and the parameters. ``fit`` updates it in place as it goes.

    history: the epochs finished so far; epochs_done: their number; step: batches already
    taken in epoch ``epochs_done + 1`` (0 at an epoch boundary); partial (step, 3): their
    (loss, recon, kl), so that the epoch's mean comes out as without the stop;
    global_step: steps taken in all; stopped: fit returned because ``stop()`` said so.
    """

    history: History = field(default_factory=History)
    epochs_done: int = 0
    step: int = 0
    partial: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    global_step: int = 0
    stopped: bool = False

    def stop_inside(self, step: int, rows: list[np.ndarray], global_step: int) -> None:
        """Stopped after ``step`` steps of the next epoch, whose values are ``rows``."""
        self.step, self.partial = step, np.concatenate(rows)
        self.global_step, self.stopped = global_step, True

    def finish_epoch(self, epoch: int, global_step: int) -> None:
        self.epochs_done, self.step, self.partial = epoch, 0, np.zeros((0, 3))
        self.global_step = global_step

    def to_dict(self) -> dict[str, Any]:
        """JSON values and one array (``partial``): what a state file stores."""
        return {
            "history": self.history.as_dict(),
            "epochs_done": self.epochs_done,
            "step": self.step,
            "partial": np.array(self.partial, dtype=np.float64).reshape(-1, 3),
            "global_step": self.global_step,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LoopState:
        """The inverse of :meth:`to_dict`, checked: ValueError if the pieces disagree."""
        try:
            history = History(**{k: list(v) for k, v in d["history"].items()})
            loop = cls(history, int(d["epochs_done"]), int(d["step"]),
                       np.asarray(d["partial"], dtype=np.float64), int(d["global_step"]))
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise ValueError(f"not a training loop state: {err}") from None
        lengths = {len(v) for v in history.as_dict().values() if v}
        if (
            loop.epochs_done < 0
            or loop.step < 0
            or loop.partial.shape != (loop.step, 3)
            or len(history.epoch) != loop.epochs_done
            or not lengths <= {loop.epochs_done}
        ):
            raise ValueError("not a training loop state: its counts do not agree")
        return loop


class NanGuard:
    """Turns the backend's pending step values into floats every ``every`` steps (one host
    sync each) and raises :class:`TrainingDiverged` at the first non-finite one, naming
    the step and a likely fix (``lr_hint``)."""

    def __init__(self, backend: Any, every: int, lr_hint: str) -> None:
        self.backend, self.every, self.lr_hint = backend, every, lr_hint

    def due(self, pending: list) -> bool:
        return len(pending) >= self.every

    def check(self, pending: list, epoch: int, global_step: int) -> np.ndarray:
        """The pending steps' (loss, recon, kl) rows (n, 3), all finite; ``global_step``
        counts the last of them."""
        values = self.backend.to_floats(pending)
        bad = ~np.all(np.isfinite(values), axis=1)
        if bad.any():
            first = int(np.argmax(bad))
            step = global_step - len(pending) + first + 1
            raise TrainingDiverged(self._message(step, epoch, values[first]))
        return values

    def _message(self, step: int, epoch: int, values: np.ndarray) -> str:
        loss, recon, kl = values
        bad = [n for n, v in (("reconstruction", recon), ("KL", kl)) if not np.isfinite(v)]
        which = " and ".join(bad) if bad else "gradient"
        beta = self.backend.config.beta
        return (
            f"training diverged at epoch {epoch}, step {step}: the {which} term became "
            f"non-finite (loss={loss}, recon={recon}, kl={kl}). Likely fix: lower the learning "
            f"rate ({self.lr_hint}), or check the input data for NaN/inf and the pixel range; "
            f"with beta={beta} a smaller beta or KL warm-up can also help."
        )


def _train_epoch(backend: Any, epoch: int, loop: LoopState, guard: NanGuard,
                 stop: Callable[[], bool] | None) -> np.ndarray | None:
    """The steps of one epoch -> their (loss, recon, kl) rows (n, 3). None when ``stop()``
    ended the epoch early; ``loop`` then says where (:meth:`LoopState.stop_inside`)."""
    if loop.step == 0:
        n_steps, rows = backend.start_epoch(), []
    else:  # resuming inside an epoch: the backend holds its order
        n_steps, rows = backend.steps_per_epoch(), [loop.partial]
    global_step, pending = loop.global_step, []
    for i in range(loop.step, n_steps):
        pending.append(backend.step(i))
        global_step += 1
        last = i == n_steps - 1
        stopping = not last and stop is not None and stop()
        if guard.due(pending) or last or stopping:
            rows.append(guard.check(pending, epoch, global_step))
            pending = []
        if stopping:
            loop.stop_inside(i + 1, rows, global_step)
            return None
    loop.global_step = global_step
    return np.concatenate(rows) if rows else np.zeros((0, 3))


def _progress_bar(progress: bool | None, epochs: int, done: int, name: str) -> Any:
    if not (sys.stderr.isatty() if progress is None else progress):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=epochs, initial=done, desc=f"train ({name})", unit="epoch")


def fit(
    backend: Any,
    x_test: Any = None,
    epochs: int = 50,
    *,
    y_test: Any = None,
    progress: bool | None = None,
    log: Callable[[str], Any] | None = None,
    guard_every: int | None = None,
    lr_hint: str = "try --lr 3e-4",
    loop: LoopState | None = None,
    on_epoch_end: Callable[[LoopState], Any] | None = None,
    stop: Callable[[], bool] | None = None,
) -> History:
    """Train until ``epochs`` epochs are done and return the :class:`History`.

    ``x_test`` (and ``y_test``, its labels for a conditional model) is evaluated after
    every epoch. ``progress``: show a tqdm bar (default: only when stderr is a terminal).
    ``log``: a callable given one line per epoch. ``guard_every``: how many steps
    between NaN checks (each check syncs a GPU backend with the host); by default the
    backend's own ``guard_every``.

    Stopping and resuming: ``loop`` is a :class:`LoopState`, updated in place (a fresh one
    by default; a saved one continues a run, with the backend restored by its
    ``load_state_dict``). ``on_epoch_end(loop)`` is called after every epoch (to save).
    ``stop()`` is asked after every step: when it returns True, fit checks the pending
    steps for NaN and returns at once with ``loop.stopped`` set; an epoch whose last step
    was taken is finished first. ``x_test`` is checked before the first step.
    """
    epochs = count(epochs, "epochs", "an integer >= 0")
    loop = LoopState() if loop is None else loop
    if loop.epochs_done > epochs:
        raise ValueError(f"the run has done {loop.epochs_done} epochs already, more than {epochs}")
    if x_test is not None:
        x_test = backend.check_x(x_test, "x_test")
        y_test = backend.check_y(y_test, len(x_test), "y_test")
    guard = NanGuard(backend, backend.guard_every if guard_every is None else guard_every,
                     lr_hint)
    bar = _progress_bar(progress, epochs, loop.epochs_done, backend.name)
    loop.stopped = False
    for epoch in range(loop.epochs_done + 1, epochs + 1):
        if stop is not None and stop():
            loop.stopped = True
            break
        start = time.perf_counter()
        values = _train_epoch(backend, epoch, loop, guard, stop)
        if values is None:  # stopped inside the epoch
            break
        line = loop.history.record_train(epoch, values, time.perf_counter() - start)
        if x_test is not None:
            line += loop.history.record_test(*backend.evaluate(x_test, y_test))
        line += f"  {loop.history.seconds[-1]:6.2f} s"
        loop.finish_epoch(epoch, loop.global_step)
        if bar is not None:
            bar.update(1)
            bar.set_postfix_str(line.split("  ", 1)[1])
        if log is not None:
            log(line)
        if on_epoch_end is not None:
            on_epoch_end(loop)
    if bar is not None:
        bar.close()
    return loop.history
