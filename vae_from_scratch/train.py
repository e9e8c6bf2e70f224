"""One training loop for either backend (lesson 05).

The loop owns what both backends share: epochs, the progress bar, the history of train
and test negative ELBO, timing, and the NaN guard. A *backend* owns the model, the data
and the optimizer, and knows how to take one step. It provides:

    name: str                      "numpy" or "torch"
    config: VAEConfig              the model's configuration
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
PyTorch one. A run that stops can resume exactly: save ``to_vae()``, ``state_dict()`` and
fit's :class:`LoopState`; later build the backend on the saved model, ``load_state_dict``
and call ``fit(..., loop=saved_loop)``.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

import numpy as np

from vae_from_scratch.data import binarize as binarize_pixels
from vae_from_scratch.evaluate import negative_elbo
from vae_from_scratch.optim import SGD, Adam, NonFiniteGradientError

EVAL_SEED = 12345  # fixed noise for test-set evaluation, so epochs compare like with like
TRAIN_STREAM = 1  # NumpyBackend(seed=s) draws from default_rng([s, TRAIN_STREAM])


def _check_count(value, minimum, message):
    """``value`` as an int if it is an int or NumPy integer (not a bool) >= ``minimum``;
    else ValueError(f"{message}, got {value!r}")."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{message}, got {value!r}")
    return int(value)


def check_batch_size(batch_size):
    """A batch size is a positive integer (not a bool, not a float); returns it as int."""
    return _check_count(batch_size, 1, "batch_size must be a positive integer")


def check_kl_warmup(kl_warmup):
    """KL warm-up is a whole number of steps >= 0 (not a bool, not NaN); returns it as int."""
    return _check_count(kl_warmup, 0, "kl_warmup must be a whole number of steps >= 0")


def check_binarize(binarize):
    """binarize is True or False (a string such as "yes" is refused); returns a bool."""
    if not isinstance(binarize, (bool, np.bool_)):
        raise ValueError(f"binarize must be True or False, got {binarize!r}")
    return bool(binarize)


def check_order(order, n):
    """A saved epoch order is a permutation of range(n) (or None before the first epoch)."""
    if order is None:
        return None
    order = np.asarray(order)
    if order.shape != (n,) or order.dtype.kind not in "iu" or not np.array_equal(
        np.sort(order), np.arange(n)
    ):
        raise ValueError(f"the saved epoch order is not a permutation of the {n} examples")
    return order


def check_steps_done(steps_done):
    return _check_count(steps_done, 0, "steps_done must be an integer >= 0")


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

    def as_dict(self):
        return {k: list(v) for k, v in self.__dict__.items()}


def check_labels(vae, y, n, name="y"):
    """Labels for ``vae``: y (n,) integers in 0..K-1 for a conditional model, returned as
    an int64 copy; None for an unconditional one (which refuses labels). ValueError else."""
    vae._check_y(y, n, name)
    return None if y is None else np.array(y, dtype=np.int64)


class NumpyBackend:
    """The hand-written VAE and optimizer on the CPU.

    vae: a :class:`~vae_from_scratch.vae.VAE`; x_train (N, D); y_train (N,) the labels of
    a conditional model, shuffled and batched with the images. The seed drives both the
    shuffling and the noise eps, so a run repeats bit for bit.
    """

    name = "numpy"
    guard_every = 1  # checking a float on the host costs nothing here

    def __init__(
        self,
        vae,
        x_train,
        y_train=None,
        *,
        lr=1e-3,
        batch_size=128,
        seed=0,
        optimizer="adam",
        binarize=False,
        kl_warmup=0,
    ):
        self.vae = vae
        self.config = vae.config
        self.x_train = np.array(vae._check_x(x_train, "x_train"))  # a copy: ours to index
        self.y_train = check_labels(vae, y_train, len(self.x_train), "y_train")
        self.batch_size = check_batch_size(batch_size)
        self.binarize = check_binarize(binarize)
        self.kl_warmup = check_kl_warmup(kl_warmup)  # steps for the KL weight to reach beta
        self.steps_done = 0
        # A stream of its own: VAE(seed=s) draws its initial weights from default_rng(s),
        # and training noise must not replay those very numbers.
        self.rng = np.random.default_rng([seed, TRAIN_STREAM])
        if optimizer == "adam":
            self.opt = Adam(vae.params, lr=lr)
        elif optimizer == "sgd":
            self.opt = SGD(vae.params, lr=lr, momentum=0.9)
        else:
            raise ValueError(f"unknown optimizer {optimizer!r}; expected adam or sgd")
        self.order = None

    def start_epoch(self):
        self.order = self.rng.permutation(len(self.x_train))
        return self.steps_per_epoch()

    def steps_per_epoch(self):
        return -(-len(self.x_train) // self.batch_size)

    def step(self, i):
        idx = self.order[i * self.batch_size : (i + 1) * self.batch_size]
        x = self.x_train[idx]
        y = None if self.y_train is None else self.y_train[idx]
        if self.binarize:
            x = binarize_pixels(x, self.rng)
        eps = self.rng.standard_normal((len(x), self.vae.latent_dim), dtype=self.vae.dtype)
        beta = warmup_beta(self.vae.config.beta, self.steps_done, self.kl_warmup)
        terms, grads = self.vae.loss_and_grads(x, eps, y, beta=beta)
        self.steps_done += 1
        try:
            self.opt.step(grads)
        except NonFiniteGradientError:  # the optimizer refused: NaN never reaches the params
            return (float("nan"), terms.recon, terms.kl)
        return (terms.loss, terms.recon, terms.kl)

    def to_floats(self, pending):
        return np.array(pending, dtype=np.float64).reshape(-1, 3)

    def check_x(self, x, name="x"):
        return self.vae._check_x(x, name)

    def check_y(self, y, n, name="y"):
        return check_labels(self.vae, y, n, name)

    def evaluate(self, x, y=None):
        return negative_elbo(self.vae, x, seed=EVAL_SEED, y=y)

    def to_vae(self):
        return self.vae

    def state_dict(self):
        """The optimizer's state, the generator's state (JSON), steps taken and the current
        epoch's order: with the parameters, all that the next step depends on."""
        return {
            "optimizer": self.opt.state_dict(),
            "rng": self.rng.bit_generator.state,
            "steps_done": self.steps_done,
            "order": None if self.order is None else self.order.copy(),
        }

    def load_state_dict(self, state):
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


def warmup_beta(beta, step, warmup_steps):
    """KL warm-up: the KL weight grows linearly from 0 to ``beta`` over ``warmup_steps``."""
    if warmup_steps <= 0:
        return beta
    return beta * min(1.0, (step + 1) / warmup_steps)


def _divergence_message(step, epoch, values, beta, lr_hint):
    loss, recon, kl = values
    bad = [n for n, v in (("reconstruction", recon), ("KL", kl)) if not np.isfinite(v)]
    which = " and ".join(bad) if bad else "gradient"
    return (
        f"training diverged at epoch {epoch}, step {step}: the {which} term became "
        f"non-finite (loss={loss}, recon={recon}, kl={kl}). Likely fix: lower the learning "
        f"rate ({lr_hint}), or check the input data for NaN/inf and the pixel range; with "
        f"beta={beta} a smaller beta or KL warm-up can also help."
    )


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

    def to_dict(self):
        """JSON values and one array (``partial``): what a state file stores."""
        return {
            "history": self.history.as_dict(),
            "epochs_done": self.epochs_done,
            "step": self.step,
            "partial": np.array(self.partial, dtype=np.float64).reshape(-1, 3),
            "global_step": self.global_step,
        }

    @classmethod
    def from_dict(cls, d):
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


def _check_epochs(epochs):
    return _check_count(epochs, 0, "epochs must be an integer >= 0")


def fit(
    backend,
    x_test=None,
    epochs=50,
    *,
    y_test=None,
    progress=None,
    log=None,
    guard_every=None,
    lr_hint="try --lr 3e-4",
    loop=None,
    on_epoch_end=None,
    stop=None,
):
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
    epochs = _check_epochs(epochs)
    loop = LoopState() if loop is None else loop
    if loop.epochs_done > epochs:
        raise ValueError(f"the run has done {loop.epochs_done} epochs already, more than {epochs}")
    if x_test is not None:
        x_test = backend.check_x(x_test, "x_test")
        y_test = backend.check_y(y_test, len(x_test), "y_test")
    if progress is None:
        progress = sys.stderr.isatty()
    if guard_every is None:
        guard_every = backend.guard_every
    history = loop.history
    beta = backend.config.beta
    global_step = loop.global_step
    loop.stopped = False
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs, initial=loop.epochs_done, desc=f"train ({backend.name})",
                   unit="epoch")
    for epoch in range(loop.epochs_done + 1, epochs + 1):
        if stop is not None and stop():
            loop.stopped = True
            break
        t0 = time.perf_counter()
        if loop.step == 0:
            n_steps, rows = backend.start_epoch(), []
        else:  # resuming inside an epoch: the backend holds its order
            n_steps, rows = backend.steps_per_epoch(), [loop.partial]
        pending = []
        for i in range(loop.step, n_steps):
            pending.append(backend.step(i))
            global_step += 1
            last = i == n_steps - 1
            stopping = not last and stop is not None and stop()
            if len(pending) >= guard_every or last or stopping:
                values = backend.to_floats(pending)
                bad = ~np.all(np.isfinite(values), axis=1)
                if bad.any():
                    first = int(np.argmax(bad))
                    step = global_step - len(pending) + first + 1
                    raise TrainingDiverged(
                        _divergence_message(step, epoch, values[first], beta, lr_hint)
                    )
                rows.append(values)
                pending = []
            if stopping:
                loop.step, loop.partial = i + 1, np.concatenate(rows)
                loop.global_step, loop.stopped = global_step, True
                break
        if loop.stopped:
            break
        values = np.concatenate(rows) if rows else np.zeros((0, 3))
        seconds = time.perf_counter() - t0
        loss, recon, kl = values.mean(axis=0) if len(values) else (np.nan,) * 3
        history.epoch.append(epoch)
        history.train_loss.append(float(loss))
        history.train_recon.append(float(recon))
        history.train_kl.append(float(kl))
        history.train_nelbo.append(float(recon + kl))
        history.seconds.append(seconds)
        line = f"epoch {epoch:3d}  train -ELBO {recon + kl:8.2f}"
        if x_test is not None:
            nelbo, t_recon, t_kl = backend.evaluate(x_test, y_test)
            history.test_nelbo.append(float(nelbo))
            history.test_recon.append(float(t_recon))
            history.test_kl.append(float(t_kl))
            line += f"  test -ELBO {nelbo:8.2f} (recon {t_recon:7.2f}, KL {t_kl:6.2f})"
        line += f"  {seconds:6.2f} s"
        loop.epochs_done, loop.step, loop.partial = epoch, 0, np.zeros((0, 3))
        loop.global_step = global_step
        if bar is not None:
            bar.update(1)
            bar.set_postfix_str(line.split("  ", 1)[1])
        if log is not None:
            log(line)
        if on_epoch_end is not None:
            on_epoch_end(loop)
    if bar is not None:
        bar.close()
    return history
