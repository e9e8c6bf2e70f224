"""``vae-course compare``: the NumPy VAE and its PyTorch mirror, side by side (lesson 06).

Three measurements, each printed as a small table:

1. one batch of digits, the same parameters and the same noise eps: the loss and every
   gradient of ``VAE.loss_and_grads`` (by hand) and of torch autograd, as relative
   differences ||numpy - torch|| / (||numpy|| + ||torch||), in float64 and float32;
2. ``steps`` Adam steps of both models from the same start, on the same batches with the
   same noise (float64): the two losses step by step, and how far apart the parameters
   end up;
3. the time of one training epoch on the embedded set (4,000 digits, batch 128) with the
   NumPy backend, the torch backend on the CPU, and on the GPU when there is one.

The torch side is the mirror of :mod:`vae_from_scratch.torch_vae`, imported when the
comparison runs (so this module imports without PyTorch).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from vae_from_scratch.data import load_mnist
from vae_from_scratch.gradcheck import rel_error
from vae_from_scratch.optim import Adam
from vae_from_scratch.train import NumpyBackend, fit
from vae_from_scratch.vae import VAE

MODEL = dict(input_dim=784, latent_dim=20)  # the course's model; options choose the rest
BATCH_SIZE = 128
LR = 1e-3
PRINT_EVERY = 25


def _parity(tv: Any, vae: VAE, x: np.ndarray, eps: np.ndarray, device: Any,
            y: np.ndarray | None = None) -> dict[str, Any]:
    """Relative differences of loss terms and gradients for one batch (``tv``: the
    torch_vae package)."""
    terms_np, grads_np = vae.loss_and_grads(x, eps, y)
    tvae = tv.TorchVAE.from_numpy(vae, device=device)
    terms = tvae.loss(x, eps, y)
    terms.loss.backward()
    out = {
        field: rel_error(getattr(terms_np, field), float(getattr(terms, field).detach()))
        for field in ("loss", "recon", "kl")
    }
    out["grads"] = {
        name: rel_error(grads_np[name], p.grad.detach().cpu().numpy())
        for name, p in tvae.params.items()
    }
    out["max_grad"] = max(out["grads"].values())
    return out


def _trajectory(tv: Any, model: dict, seed: int, steps: int, x_train: np.ndarray,
                y_train: np.ndarray | None, device: Any,
                print_fn: Callable[[str], Any]) -> dict[str, Any]:
    """Adam on both models in float64 over the same batches and noise."""
    vae = VAE(**model, seed=seed, dtype=np.float64)
    tvae = tv.TorchVAE.from_numpy(vae, device=device)
    opt_np = Adam(vae.params, lr=LR)
    opt_t = tv.torch_adam(list(tvae.parameters()), LR, fused=False)
    rng = np.random.default_rng(seed + 1)
    x_all = x_train.astype(np.float64)
    order, pos = rng.permutation(len(x_all)), 0
    record = {"step": [], "numpy": [], "torch": []}
    print_fn(f"{'step':>6} {'numpy loss':>14} {'torch loss':>14} {'rel. diff.':>11}")
    for step in range(1, steps + 1):
        if pos + BATCH_SIZE > len(order):
            order, pos = rng.permutation(len(x_all)), 0
        batch = order[pos : pos + BATCH_SIZE]
        x, y = x_all[batch], None if y_train is None else y_train[batch]
        pos += BATCH_SIZE
        eps = rng.standard_normal((len(x), vae.latent_dim))
        terms_np, grads = vae.loss_and_grads(x, eps, y)
        opt_np.step(grads)
        opt_t.zero_grad(set_to_none=True)
        terms_t = tvae.loss(x, eps, y)
        terms_t.loss.backward()
        opt_t.step()
        if step % PRINT_EVERY == 0 or step == steps or step == 1:
            loss_t = float(terms_t.loss.detach())
            record["step"].append(step)
            record["numpy"].append(terms_np.loss)
            record["torch"].append(loss_t)
            print_fn(
                f"{step:6d} {terms_np.loss:14.6f} {loss_t:14.6f} "
                f"{rel_error(terms_np.loss, loss_t):11.1e}"
            )
    record["param_rel"] = {
        name: rel_error(vae.params[name], p.detach().cpu().numpy())
        for name, p in tvae.params.items()
    }
    record["final_max_param_rel"] = max(record["param_rel"].values())
    return record


def _epoch_seconds(make_backend: Callable[[], Any]) -> float:
    """Seconds of the second of two epochs (the first warms caches and kernels up)."""
    history = fit(make_backend(), epochs=2, progress=False)
    return history.seconds[-1]


def run_compare(seed: int = 0, steps: int = 200, device: Any = None,
                print_fn: Callable[[str], Any] = print, conditional: bool = False,
                **options: Any) -> dict[str, Any]:
    """Compare the NumPy and PyTorch VAEs; print three tables and return the figures.

    ``device``: where the torch model runs (default: CUDA, else MPS, else the CPU). The
    float64 parts run on the CPU when the device is MPS, which has no float64.
    ``options``: VAE configuration beside the course's 784 -> ... -> 20 model (e.g.
    ``architecture="conv"``, ``channels=(32, 64)``, ``likelihood="continuous_bernoulli"``);
    ``conditional=True`` gives both models the digits' labels.
    Returns a dict with ``parity`` (per dtype: relative differences of loss, recon, kl
    and of each gradient, and their maximum), ``trajectory`` (steps, both losses, the
    final relative difference of each parameter and their maximum) and ``epoch_seconds``
    (numpy, torch_cpu, and torch_<device> for a GPU).
    """
    from vae_from_scratch import torch_vae as tv

    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    device = tv.resolve_device(device)  # one this machine lacks: ValueError naming those it has
    device64 = tv.resolve_device("cpu") if device.type == "mps" else device
    data = load_mnist()
    model = {**MODEL, **options, "n_classes": 10 if conditional else None}
    y_train = data.y_train if conditional else None
    rng = np.random.default_rng(seed)
    pick = rng.permutation(len(data.x_train))[:BATCH_SIZE]
    x, y = data.x_train[pick].astype(np.float64), None if y_train is None else y_train[pick]
    eps = rng.standard_normal((BATCH_SIZE, MODEL["latent_dim"]))
    reference = VAE(**model, seed=seed)  # its repr, parameter shapes and configuration
    print_fn(f"NumPy VAE vs PyTorch VAE: {reference!r}, seed {seed}")
    print_fn(f"torch {tv.torch_version()} on {device}\n")

    print_fn(
        f"1. One batch of {BATCH_SIZE} digits, the same parameters and the same noise eps.\n"
        "   Relative difference ||numpy - torch|| / (||numpy|| + ||torch||):"
    )
    parity = {}
    for dtype, dev in ((np.float64, device64), (np.float32, device)):
        vae = VAE(**model, seed=seed, dtype=dtype)
        parity[np.dtype(dtype).name] = _parity(tv, vae, x.astype(dtype), eps.astype(dtype), dev,
                                               y)
    p64, p32 = parity["float64"], parity["float32"]
    shapes = reference.param_shapes()
    print_fn(f"   {'':26} {'shape':>12} {'float64':>10} {'float32':>10}")
    for field in ("loss", "recon", "kl"):
        print_fn(f"   {field:26} {'':>12} {p64[field]:10.1e} {p32[field]:10.1e}")
    for name, shape in shapes.items():
        print_fn(
            f"   {'d loss / d ' + name:26} {str(shape):>12} "
            f"{p64['grads'][name]:10.1e} {p32['grads'][name]:10.1e}"
        )
    print_fn(
        f"   {'largest (gradients)':26} {'':>12} {p64['max_grad']:10.1e} {p32['max_grad']:10.1e}\n"
    )

    print_fn(
        f"2. {steps} Adam steps (lr {LR:g}, batch {BATCH_SIZE}, float64) from the same start, "
        "on the same batches with the same noise:"
    )
    trajectory = _trajectory(tv, model, seed, steps, data.x_train, y_train, device64, print_fn)
    print_fn(
        f"   parameters after {steps} steps: largest relative difference "
        f"{trajectory['final_max_param_rel']:.1e}\n"
    )

    print_fn(
        f"3. Time per epoch: {len(data.x_train):,} digits, batch {BATCH_SIZE}, Adam, float32 "
        "(the second of two epochs):"
    )
    x_train = data.x_train.astype(np.float32)

    def numpy_backend():
        return NumpyBackend(
            VAE(**model, seed=seed), x_train, y_train, lr=LR, batch_size=BATCH_SIZE, seed=seed
        )

    def torch_backend(dev):
        return lambda: tv.TorchBackend(
            VAE(**model, seed=seed), x_train, y_train, lr=LR, batch_size=BATCH_SIZE, seed=seed,
            device=dev,
        )

    seconds = {"numpy": _epoch_seconds(numpy_backend)}
    seconds["torch_cpu"] = _epoch_seconds(torch_backend("cpu"))
    if device.type != "cpu":
        seconds[f"torch_{device.type}"] = _epoch_seconds(torch_backend(device))
    for name, value in seconds.items():
        label = name.replace("_", " (") + ")" if "_" in name else name
        ratio = seconds["numpy"] / value
        print_fn(f"   {label:14} {value:7.3f} s   ({ratio:.2f}x NumPy's speed)")
    return {
        "seed": seed,
        "model": reference.config.to_dict(),
        "steps": steps,
        "device": str(device),
        "torch_version": tv.torch_version(),
        "parity": parity,
        "trajectory": trajectory,
        "epoch_seconds": seconds,
    }
