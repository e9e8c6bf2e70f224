"""The PyTorch training backend of ``train.fit``, built for speed on a GPU.

The training set is moved to the device once, batches are gathered there by a permutation
drawn on the device, the noise comes from a seeded generator on the device, and each step
hands back a device tensor, so the loop waits for the device only when it checks for NaN
(every ``guard_every`` steps; :data:`RECOMMENDED_GUARD_EVERY`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from vae_from_scratch.config import SGD_MOMENTUM, TrainingOptions
from vae_from_scratch.torch_vae.devices import dtype_name, resolve_device
from vae_from_scratch.torch_vae.mirror import TorchVAE, negative_elbo
from vae_from_scratch.train import (
    EVAL_SEED,
    check_labels,
    check_order,
    check_steps_done,
    warmup_beta,
)
from vae_from_scratch.vae import VAE

#: Steps between NaN checks that suits :class:`TorchBackend` (``fit(..., guard_every=...)``).
#: Each check copies the pending loss values to the host, which makes the host wait for the
#: GPU; checking every 50 steps keeps the GPU's queue full, and a divergence is still
#: reported with the exact step at which it happened. On the CPU the value hardly matters.
RECOMMENDED_GUARD_EVERY = 50


def torch_adam(params: list, lr: float, fused: bool = True) -> torch.optim.Optimizer:
    """torch.optim.Adam; with ``fused``, fused into one kernel where this torch build can
    (CUDA; the CPU since torch 2.4): the same update as the hand-written Adam, in fewer
    passes."""
    if fused:
        try:
            return torch.optim.Adam(params, lr=lr, fused=True)
        except (RuntimeError, ValueError, TypeError):
            pass
    return torch.optim.Adam(params, lr=lr)


#: The torch optimizers by TrainingOptions.optimizer: (params, lr) -> optimizer.
OPTIMIZERS = {
    "adam": torch_adam,
    "sgd": lambda params, lr: torch.optim.SGD(params, lr=lr, momentum=SGD_MOMENTUM),
}


def _nan_if_nonfinite(grads: list[torch.Tensor]) -> torch.Tensor:
    """A device scalar: 0 when every gradient is finite, NaN otherwise (0 * inf = NaN).

    Found without a host sync from the gradients' norms (one fused kernel on a GPU). A
    norm also overflows for entries above ~1e19 in float32: training that far gone is
    reported as diverged too.
    """
    foreach_norm = getattr(torch, "_foreach_norm", None)
    norms = foreach_norm(grads) if foreach_norm is not None else [g.norm() for g in grads]
    return torch.stack(norms).sum() * 0


def _host(value: Any) -> Any:
    """A tensor (labels, optimizer state) as a NumPy array on the host; anything else as it
    is (0-d stays 0-d)."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy().copy()
    return value


class TorchBackend:
    """The training backend of ``train.fit`` for :class:`TorchVAE`, on any device.

    vae: a NumPy :class:`~vae_from_scratch.vae.VAE` (copied to the device; it is not
    updated, use :meth:`to_vae`) or a :class:`TorchVAE` (trained in place, moved to
    ``device`` if one is given). x_train (N, D) array or tensor: moved to the device once,
    with y_train (N,), the labels of a conditional model (kept there as one-hot rows).

    ``options`` (a :class:`~vae_from_scratch.config.TrainingOptions`, or its fields as
    keywords) mean what they mean for :class:`~vae_from_scratch.train.NumpyBackend`
    ('adam' is torch.optim.Adam, fused into one kernel where the build supports it). The
    seed drives a torch.Generator on the device that draws the shuffling, the binarization
    and the noise, so a run repeats exactly on the same device (CPU and CUDA draw different
    numbers). ``compile=True`` runs the loss through ``torch.compile``: off by default, as
    it did not pay on the CPU (benchmarks/README.md).

    ``step`` returns a device tensor (loss, recon, kl); the loss is NaN when a gradient
    was NaN or infinite. Unlike the NumPy backend the update of that step is still
    applied (skipping it would make the host wait for the device every step), so after
    a divergence restart from a checkpoint rather than from the backend's parameters.
    """

    name = "torch"
    guard_every = RECOMMENDED_GUARD_EVERY  # fit's default for this backend

    def __init__(self, vae: VAE | TorchVAE, x_train: Any, y_train: Any = None, *,
                 options: TrainingOptions | None = None, device: Any = None, dtype: Any = None,
                 compile: bool = False, **option_values: Any) -> None:
        self.options = TrainingOptions.given(options, **option_values)  # before the data move
        if isinstance(vae, TorchVAE):
            if dtype is not None and dtype_name(dtype) != vae.config.dtype:
                raise ValueError(
                    f"the model is {vae.config.dtype}; convert it with "
                    "TorchVAE.from_numpy(model.to_numpy(), dtype=...) first"
                )
            model = vae if device is None else vae.to(resolve_device(device))
        else:
            model = TorchVAE.from_numpy(vae, device=resolve_device(device), dtype=dtype)
        self.model = model
        self.config = model.config
        self.device = model.device
        self.x_train = model.check_x(x_train, "x_train")  # on the device, checked once
        self.c_train = model.check_y(y_train, self.x_train.shape[0], "y_train")  # one-hot
        self.steps_done = 0
        self.generator = torch.Generator(device=self.device).manual_seed(int(self.options.seed))
        self._params = list(model.parameters())
        self.opt = OPTIMIZERS[self.options.optimizer](self._params, self.options.lr)
        self._beta = torch.zeros((), dtype=model.dtype, device=self.device)
        self._loss_fn = torch.compile(model.batch_loss) if compile else model.batch_loss
        self.order = None

    def start_epoch(self) -> int:
        n = self.x_train.shape[0]
        self.order = torch.randperm(n, generator=self.generator, device=self.device)
        return self.steps_per_epoch()

    def steps_per_epoch(self) -> int:
        return -(-self.x_train.shape[0] // self.options.batch_size)

    def step(self, i: int) -> torch.Tensor:
        model, g, size = self.model, self.generator, self.options.batch_size
        idx = self.order[i * size : (i + 1) * size]
        x = self.x_train.index_select(0, idx)
        c = None if self.c_train is None else self.c_train.index_select(0, idx)
        kw = dict(generator=g, device=self.device, dtype=model.dtype)
        if self.options.binarize:
            x = (torch.rand(x.shape, **kw) < x).to(model.dtype)
        eps = torch.randn(model.bottleneck.noise_shape(x.shape[0]), **kw)
        # fill_ sets the KL weight without a host-to-device copy or a recompilation
        self._beta.fill_(warmup_beta(model.config.beta, self.steps_done, self.options.kl_warmup))
        self.opt.zero_grad(set_to_none=True)
        loss, recon, kl = self._loss_fn(x, eps, self._beta, c)
        loss.backward()
        bad = _nan_if_nonfinite([p.grad for p in self._params if p.grad is not None])
        self.opt.step()
        self.steps_done += 1
        return torch.stack([loss.detach() + bad, recon.detach(), kl.detach()])

    def to_floats(self, pending: list) -> np.ndarray:
        if not len(pending):
            return np.zeros((0, 3))
        return torch.stack(pending).to("cpu", torch.float64).numpy().reshape(-1, 3)

    def check_x(self, x: Any, name: str = "x") -> torch.Tensor:
        return self.model.check_x(x, name)

    def check_y(self, y: Any, n: int, name: str = "y") -> np.ndarray | None:
        return check_labels(self.model.reference, _host(y), n, name)

    def evaluate(self, x: Any, y: Any = None) -> tuple[float, float, float]:
        return negative_elbo(self.model, x, seed=EVAL_SEED, y=y)

    def to_vae(self) -> VAE:
        """The current parameters as a NumPy VAE (a copy; NaN is copied, not refused)."""
        return self.model.to_numpy(check=False)

    # --- saving and restoring (NumPy arrays and JSON values only: no pickle) --------------

    def state_dict(self) -> dict[str, Any]:
        """torch's optimizer state keyed by parameter name, the generator's state (uint8),
        steps taken and the current epoch's order, all as NumPy arrays and JSON values."""
        names = list(self.model.params)
        saved = self.opt.state_dict()
        return {
            "optimizer": {
                "state": {
                    names[i]: {key: _host(value) for key, value in entry.items()}
                    for i, entry in saved["state"].items()
                },
                "param_groups": [
                    {k: list(v) if isinstance(v, tuple) else v for k, v in group.items()}
                    for group in saved["param_groups"]
                ],
            },
            "generator": self.generator.get_state().numpy().copy(),
            "steps_done": self.steps_done,
            "order": None if self.order is None else self.order.cpu().numpy().copy(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`; everything is checked before anything changes."""
        keys = {"optimizer", "generator", "steps_done", "order"}
        if not isinstance(state, dict) or set(state) != keys:
            raise ValueError(f"not a TorchBackend state: expected {sorted(keys)}")
        restored, groups = self._optimizer_state(state["optimizer"])
        generator = self._generator_state(state["generator"])
        order = check_order(state["order"], self.x_train.shape[0])
        steps_done = check_steps_done(state["steps_done"])
        snapshot = self.opt.state_dict()
        try:
            self.opt.load_state_dict({"state": restored, "param_groups": groups})
        except (ValueError, KeyError, RuntimeError) as err:
            self.opt.load_state_dict(snapshot)
            raise ValueError(f"the saved optimizer state is unusable: {err}") from None
        self.generator.set_state(generator)
        self.order = None if order is None else torch.from_numpy(
            order.astype(np.int64)).to(self.device)
        self.steps_done = steps_done

    def _optimizer_state(self, opt_state: Any) -> tuple[dict, list]:
        """The saved optimizer state in torch's form (keyed by parameter index), checked."""
        params = self.model.params
        names = list(params)
        try:
            entries, groups = opt_state["state"], opt_state["param_groups"]
            unknown = sorted(set(entries) - set(names))
            if unknown:
                raise ValueError(f"state for unknown parameters {unknown}")
            restored = {}
            for name, entry in entries.items():
                restored[names.index(name)] = {}
                for key, value in entry.items():
                    value = torch.from_numpy(np.array(value))
                    if key != "step" and tuple(value.shape) != tuple(params[name].shape):
                        raise ValueError(
                            f"{key} of {name} has shape {tuple(value.shape)}, expected "
                            f"{tuple(params[name].shape)}"
                        )
                    restored[names.index(name)][key] = value
            groups = [{k: tuple(v) if k == "betas" else v for k, v in g.items()} for g in groups]
        except (KeyError, TypeError, AttributeError) as err:
            raise ValueError(f"the saved optimizer state is unusable: {err}") from None
        return restored, groups

    def _generator_state(self, saved: Any) -> torch.Tensor:
        """The saved generator state, checked on a probe generator of this device."""
        generator = np.asarray(saved)
        if generator.dtype != np.uint8 or generator.ndim != 1:
            raise ValueError("the saved generator state is not a 1-D uint8 array")
        probe = torch.Generator(device=self.device)
        try:
            probe.set_state(torch.from_numpy(generator.copy()))
        except (RuntimeError, ValueError) as err:
            raise ValueError(
                f"the saved generator state does not fit a generator on {self.device} "
                f"(was the run started on another device?): {err}"
            ) from None
        return probe.get_state()
