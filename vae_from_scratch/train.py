"""One training loop for either backend (lesson 05).

The loop owns what both backends share: epochs, the progress bar, the history of train
and test negative ELBO, timing, and the NaN guard. A *backend* owns the model, the data
and the optimizer, and knows how to take one step. It provides:

    name: str                      "numpy" or "torch"
    config: VAEConfig              the model's configuration
    guard_every: int               steps between NaN checks that suit it (fit's default)
    start_epoch() -> int           shuffle the training set; return the number of steps
    step(i) -> terms               one optimizer step on batch i; terms = (loss, recon, kl)
                                   in whatever form to_floats understands (floats, tensors)
    to_floats(list_of_terms) -> np.ndarray (n, 3)   one host sync for many steps
    evaluate(x) -> (nelbo, recon, kl)              negative ELBO of x (beta = 1), floats
    to_vae() -> VAE                the current parameters as a NumPy model

:class:`NumpyBackend` is the reference; ``vae_from_scratch.torch_vae.TorchBackend`` the
PyTorch one.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

import numpy as np

from vae_from_scratch.data import binarize as binarize_pixels
from vae_from_scratch.evaluate import negative_elbo
from vae_from_scratch.optim import SGD, Adam

EVAL_SEED = 12345  # fixed noise for test-set evaluation, so epochs compare like with like
TRAIN_STREAM = 1  # NumpyBackend(seed=s) draws from default_rng([s, TRAIN_STREAM])


def check_batch_size(batch_size):
    """A batch size is a positive integer (not a bool, not a float); returns it as int."""
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, (int, np.integer))
        or batch_size < 1
    ):
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    return int(batch_size)


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


class NumpyBackend:
    """The hand-written VAE and optimizer on the CPU.

    vae: a :class:`~vae_from_scratch.vae.VAE`; x_train (N, D). The seed drives both the
    shuffling and the noise eps, so a run repeats bit for bit.
    """

    name = "numpy"
    guard_every = 1  # checking a float on the host costs nothing here

    def __init__(
        self,
        vae,
        x_train,
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
        self.batch_size = check_batch_size(batch_size)
        self.binarize = binarize
        self.kl_warmup = kl_warmup  # steps over which the KL weight ramps from 0 to beta
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
        return -(-len(self.x_train) // self.batch_size)

    def step(self, i):
        idx = self.order[i * self.batch_size : (i + 1) * self.batch_size]
        x = self.x_train[idx]
        if self.binarize:
            x = binarize_pixels(x, self.rng)
        eps = self.rng.standard_normal((len(x), self.vae.latent_dim), dtype=self.vae.dtype)
        beta = warmup_beta(self.vae.config.beta, self.steps_done, self.kl_warmup)
        terms, grads = self.vae.loss_and_grads(x, eps, beta=beta)
        self.steps_done += 1
        if not all(np.all(np.isfinite(g)) for g in grads.values()):
            return (float("nan"), terms.recon, terms.kl)  # stop before NaN reaches params
        self.opt.step(grads)
        return (terms.loss, terms.recon, terms.kl)

    def to_floats(self, pending):
        return np.array(pending, dtype=np.float64).reshape(-1, 3)

    def evaluate(self, x):
        return negative_elbo(self.vae, x, seed=EVAL_SEED)

    def to_vae(self):
        return self.vae


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


def fit(
    backend,
    x_test=None,
    epochs=50,
    *,
    progress=None,
    log=None,
    guard_every=None,
    lr_hint="try --lr 3e-4",
):
    """Train for ``epochs`` and return a :class:`History`.

    ``progress``: show a tqdm bar (default: only when stderr is a terminal).
    ``log``: a callable given one line per epoch. ``guard_every``: how many steps
    between NaN checks (each check syncs a GPU backend with the host); by default the
    backend's own ``guard_every``.
    """
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    if progress is None:
        progress = sys.stderr.isatty()
    if guard_every is None:
        guard_every = backend.guard_every
    history = History()
    beta = backend.config.beta
    global_step = 0
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs, desc=f"train ({backend.name})", unit="epoch")
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        n_steps = backend.start_epoch()
        pending, rows = [], []
        for i in range(n_steps):
            pending.append(backend.step(i))
            global_step += 1
            if len(pending) >= guard_every or i == n_steps - 1:
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
            nelbo, t_recon, t_kl = backend.evaluate(x_test)
            history.test_nelbo.append(float(nelbo))
            history.test_recon.append(float(t_recon))
            history.test_kl.append(float(t_kl))
            line += f"  test -ELBO {nelbo:8.2f} (recon {t_recon:7.2f}, KL {t_kl:6.2f})"
        line += f"  {seconds:6.2f} s"
        if bar is not None:
            bar.update(1)
            bar.set_postfix_str(line.split("  ", 1)[1])
        if log is not None:
            log(line)
    if bar is not None:
        bar.close()
    return history
