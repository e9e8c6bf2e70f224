"""Time the NumPy VAE and the PyTorch backends; print a summary and optionally write JSON.

    python benchmarks/benchmark.py                          # default device, full run
    python benchmarks/benchmark.py --quick                  # a smoke test, a few seconds
    python benchmarks/benchmark.py --device cuda --out results.json
    python benchmarks/benchmark.py --compile                # add torch.compile timings

The model throughout is the course's: 784 -> 400 -> 20, ReLU, Bernoulli decoder, Adam with
lr 1e-3, batch 128, float32. Three measurements (seconds per epoch; the best of
``--repeats`` epochs after one warm-up epoch):

(a) NumPy vs PyTorch on the CPU: the hand-written model (``NumpyBackend``) against a plain
    PyTorch training loop of the same model (nn.Linear layers, autograd, torch.optim.Adam)
    on the embedded training set (4,000 digits). When NumPy is the slower, the profile of
    ``VAE.loss_and_grads`` is printed and saved.
(b) On ``--device``, a 60,000-example training set (the embedded digits repeated 15 times):
    ``TorchBackend``'s fast path (data on the device, on-device shuffling and noise, a host
    sync every ``RECOMMENDED_GUARD_EVERY`` steps) against the pattern of the common PyTorch
    examples (a DataLoader over a TensorDataset with shuffle=True, ``.to(device)`` for every
    batch and ``loss.item()`` after every step). The fast path is also timed with a sync
    after every step (guard_every=1), to show what the syncs cost.
(c) With ``--compile``: the fast path with ``TorchBackend(compile=True)``, its first epoch
    (which includes compiling) and its steady epochs.

See benchmarks/README.md for results.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--device",
        default=None,
        help="torch device for (b) and (c): cpu, cuda, cuda:1, mps "
        "(default: CUDA, else MPS, else the CPU)",
    )
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument(
        "--quick", action="store_true", help="smoke test: small data sets, one timed epoch each"
    )
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (c)")
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timed epochs per measurement, best one reported (default 3; 1 with --quick)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for NumPy's BLAS and for torch (default: theirs)",
    )
    parser.add_argument("--skip-numpy", action="store_true", help="leave out (a)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


ARGS = parse_args() if __name__ == "__main__" else None
if ARGS is not None and ARGS.threads:  # must be set before NumPy loads its BLAS
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(ARGS.threads)

import cProfile  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import pstats  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from vae_from_scratch.data import load_mnist  # noqa: E402
from vae_from_scratch.torch_vae import (  # noqa: E402
    RECOMMENDED_GUARD_EVERY,
    TorchBackend,
    TorchVAE,
    default_device,
)
from vae_from_scratch.train import NumpyBackend, fit  # noqa: E402
from vae_from_scratch.vae import VAE  # noqa: E402

MODEL = dict(input_dim=784, hidden_dims=(400,), latent_dim=20)
BATCH_SIZE = 128
LR = 1e-3


# --- timing helpers -----------------------------------------------------------------------


def synchronize(device):
    """Wait until the device has finished all queued work (timings must include it)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def timed_epochs(run_epochs, repeats, device="cpu"):
    """Time several ways of running an epoch against each other.

    ``run_epochs``: dict name -> function that runs one epoch. Each runs one warm-up epoch,
    then the ``repeats`` timed rounds take turns (a, b, c, a, b, c, ...), so a change in
    the machine's load affects them alike. Returns dict name -> {best, median, all: wall
    seconds; cpu_best, cpu_all: CPU seconds of this process}. With ``--threads 1`` on a
    shared machine, read the CPU seconds: other processes do not inflate them.
    """
    for run_epoch in run_epochs.values():
        run_epoch()
    wall = {name: [] for name in run_epochs}
    cpu = {name: [] for name in run_epochs}
    for _ in range(repeats):
        for name, run_epoch in run_epochs.items():
            synchronize(device)
            start, start_cpu = time.perf_counter(), time.process_time()
            run_epoch()
            synchronize(device)
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    return {
        name: {
            "best": min(wall[name]),
            "median": float(np.median(wall[name])),
            "all": wall[name],
            "cpu_best": min(cpu[name]),
            "cpu_all": cpu[name],
        }
        for name in run_epochs
    }


def row(label, t):
    return f"    {label:42} {t['best']:8.3f} {t['cpu_best']:8.3f}"


HEADER = f"    {'':42} {'wall s':>8} {'CPU s':>8}"


# --- (a) NumPy vs a plain PyTorch loop on the CPU -----------------------------------------


class PlainVAE(nn.Module):
    """The course's model as a PyTorch user would write it (W stored as (out, in))."""

    def __init__(self, d=784, h=400, latent=20):
        super().__init__()
        self.enc = nn.Linear(d, h)
        self.mu = nn.Linear(h, latent)
        self.log_var = nn.Linear(h, latent)
        self.dec = nn.Linear(latent, h)
        self.out = nn.Linear(h, d)

    def forward(self, x):
        h = F.relu(self.enc(x))
        mu, log_var = self.mu(h), self.log_var(h)
        z = mu + torch.exp(0.5 * log_var) * torch.randn_like(mu)
        logits = self.out(F.relu(self.dec(z)))
        recon = F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / len(x)
        kl = 0.5 * torch.sum(mu * mu + torch.exp(log_var) - 1.0 - log_var) / len(x)
        return recon + kl


def plain_torch_epoch_fn(x_train, seed):
    torch.manual_seed(seed)
    model = PlainVAE()
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    x_all = torch.from_numpy(x_train)

    def epoch():
        order = torch.randperm(len(x_all))
        total = 0.0
        for start in range(0, len(x_all), BATCH_SIZE):
            loss = model(x_all[order[start : start + BATCH_SIZE]])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item()
        return total

    return epoch


def numpy_epoch_fn(x_train, seed):
    backend = NumpyBackend(
        VAE(**MODEL, seed=seed), x_train, lr=LR, batch_size=BATCH_SIZE, seed=seed
    )
    return lambda: fit(backend, epochs=1, progress=False)


def profile_numpy(x_train, seed, steps=20, top=10):
    """cProfile of ``steps`` calls of loss_and_grads + Adam: the functions taking the most
    time by themselves."""
    backend = NumpyBackend(
        VAE(**MODEL, seed=seed), x_train, lr=LR, batch_size=BATCH_SIZE, seed=seed
    )
    n_steps = min(steps, backend.start_epoch())
    profiler = cProfile.Profile()
    profiler.enable()
    for i in range(n_steps):
        backend.step(i)
    profiler.disable()
    stats = pstats.Stats(profiler)
    total = sum(row[2] for row in stats.stats.values())
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
    return [
        {
            "function": f"{Path(f).name}:{line}({name})",
            "calls": int(row[1]),
            "seconds": float(row[2]),
            "share": float(row[2] / total),
        }
        for (f, line, name), row in rows
    ]


def bench_numpy_vs_torch(x_train, repeats, seed):
    times = timed_epochs(
        {"numpy": numpy_epoch_fn(x_train, seed), "torch": plain_torch_epoch_fn(x_train, seed)},
        repeats,
    )
    numpy_s, torch_s = times["numpy"], times["torch"]
    result = {
        "examples": len(x_train),
        "numpy_epoch_s": numpy_s,
        "torch_cpu_epoch_s": torch_s,
        "numpy_over_torch": numpy_s["best"] / torch_s["best"],
        "numpy_over_torch_cpu_time": numpy_s["cpu_best"] / torch_s["cpu_best"],
    }
    print(f"(a) {len(x_train):,} examples, CPU, seconds per epoch (best of {repeats}):")
    print(HEADER)
    print(row("NumPy (by hand)", numpy_s))
    print(row("PyTorch (plain loop)", torch_s))
    ratio = result["numpy_over_torch"]
    verdict = "NumPy is slower" if ratio > 1 else "NumPy is no slower"
    print(
        f"    NumPy time / PyTorch time = {ratio:.2f} wall, "
        f"{result['numpy_over_torch_cpu_time']:.2f} CPU  ({verdict})"
    )
    if ratio > 1:
        result["numpy_profile"] = profile_numpy(x_train, seed)
        print("    where NumPy spends its time (cProfile, own time per function):")
        for entry in result["numpy_profile"]:
            print(f"      {entry['share']:6.1%}  {entry['function']}")
    return result


# --- (b) the fast path vs the DataLoader pattern ------------------------------------------


def fast_path_epoch_fn(x_train, device, seed, guard_every, compile=False):
    backend = TorchBackend(
        VAE(**MODEL, seed=seed),
        x_train,
        lr=LR,
        batch_size=BATCH_SIZE,
        seed=seed,
        device=device,
        compile=compile,
    )
    return lambda: fit(backend, epochs=1, progress=False, guard_every=guard_every)


def dataloader_epoch_fn(x_train, device, seed):
    """The common example: CPU tensors in a DataLoader, a copy to the device per batch and
    a host sync (``.item()``) per step. The same model and optimizer as the fast path."""
    torch.manual_seed(seed)
    model = TorchVAE(**MODEL, seed=seed, device=device)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    loader = DataLoader(
        TensorDataset(torch.from_numpy(x_train)), batch_size=BATCH_SIZE, shuffle=True
    )

    def epoch():
        total = 0.0
        for (x,) in loader:
            x = x.to(device)
            eps = torch.randn(x.shape[0], model.latent_dim, device=device)
            loss, _, _ = model._batch_loss(x, eps, 1.0)  # no input checks, as the fast path
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item()
        return total

    return epoch


def data_only_epoch_fns(x_train, device, seed):
    """The data pipelines alone, no model: batches gathered on the device from an
    on-device permutation, and a DataLoader's batches copied to the device."""
    device = torch.device(device)
    x_dev = torch.from_numpy(x_train).to(device)
    g = torch.Generator(device=device).manual_seed(seed)
    loader = DataLoader(
        TensorDataset(torch.from_numpy(x_train)), batch_size=BATCH_SIZE, shuffle=True
    )

    def gather():
        order = torch.randperm(len(x_dev), generator=g, device=device)
        total = torch.zeros((), device=device)
        for start in range(0, len(x_dev), BATCH_SIZE):
            total += x_dev.index_select(0, order[start : start + BATCH_SIZE])[0, 0]
        return float(total)

    def load():
        total = 0.0
        for (x,) in loader:
            total += float(x.to(device)[0, 0])
        return total

    return gather, load


def bench_fast_path(x_train, device, repeats, seed):
    gather, load = data_only_epoch_fns(x_train, device, seed)
    times = timed_epochs(
        {
            "fast": fast_path_epoch_fn(x_train, device, seed, RECOMMENDED_GUARD_EVERY),
            "every": fast_path_epoch_fn(x_train, device, seed, 1),
            "loader": dataloader_epoch_fn(x_train, device, seed),
            "gather_only": gather,
            "loader_only": load,
        },
        repeats,
        device,
    )
    fast, every, loader = times["fast"], times["every"], times["loader"]
    result = {
        "examples": len(x_train),
        "device": str(device),
        "guard_every": RECOMMENDED_GUARD_EVERY,
        "fast_path_epoch_s": fast,
        "fast_path_guard_every_1_epoch_s": every,
        "dataloader_epoch_s": loader,
        "data_only_on_device_gather_epoch_s": times["gather_only"],
        "data_only_dataloader_epoch_s": times["loader_only"],
        "speedup": loader["best"] / fast["best"],
        "speedup_cpu_time": loader["cpu_best"] / fast["cpu_best"],
    }
    print(f"(b) {len(x_train):,} examples on {device}, seconds per epoch (best of {repeats}):")
    print(HEADER)
    print(row(f"TorchBackend fast path, guard_every={RECOMMENDED_GUARD_EVERY}", fast))
    print(row("TorchBackend fast path, guard_every=1", every))
    print(row("DataLoader + .to(device) + .item()", loader))
    print(row("data only: on-device gather", times["gather_only"]))
    print(row("data only: DataLoader + .to(device)", times["loader_only"]))
    print(
        f"    speedup of the fast path: {result['speedup']:.2f}x wall, "
        f"{result['speedup_cpu_time']:.2f}x CPU"
    )
    return result


# --- (c) torch.compile --------------------------------------------------------------------


def bench_compile(x_train, device, repeats, seed):
    compiled = fast_path_epoch_fn(x_train, device, seed, RECOMMENDED_GUARD_EVERY, compile=True)
    synchronize(device)
    start = time.perf_counter()
    compiled()  # compiles (twice: the full batch and the smaller last one)
    synchronize(device)
    first = time.perf_counter() - start
    plain = fast_path_epoch_fn(x_train, device, seed, RECOMMENDED_GUARD_EVERY)
    times = timed_epochs({"compiled": compiled, "plain": plain}, repeats, device)
    result = {
        "first_epoch_s": first,
        "compiled_epoch_s": times["compiled"],
        "plain_epoch_s": times["plain"],
        "speedup": times["plain"]["best"] / times["compiled"]["best"],
        "speedup_cpu_time": times["plain"]["cpu_best"] / times["compiled"]["cpu_best"],
    }
    print(f"(c) torch.compile on {device}: first epoch {first:.1f} s (compiling), then")
    print(HEADER)
    print(row("fast path, compiled", times["compiled"]))
    print(row("fast path, not compiled", times["plain"]))
    print(
        f"    speedup from compiling: {result['speedup']:.2f}x wall, "
        f"{result['speedup_cpu_time']:.2f}x CPU"
    )
    return result


# --- the run ------------------------------------------------------------------------------


def describe(device):
    device = torch.device(device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine()
        try:
            with open("/proc/cpuinfo") as f:
                name = next(
                    line.split(":", 1)[1].strip() for line in f if line.startswith("model name")
                )
        except (OSError, StopIteration):
            pass
    meta = {
        "device": str(device),
        "device_name": name,
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda_version": torch.version.cuda,
    }
    if hasattr(os, "getloadavg"):
        meta["load_average_at_start"] = os.getloadavg()[0]
    return meta


def main(args):
    if args.threads:
        torch.set_num_threads(args.threads)
    device = default_device() if args.device is None else torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: this torch build sees no CUDA GPU")
    repeats = args.repeats or (1 if args.quick else 3)
    data = load_mnist()
    x_small = data.x_train.astype(np.float32)
    x_big = np.concatenate([x_small] * 15)  # 60,000 examples
    if args.quick:
        x_small, x_big = x_small[:512], x_big[:2048]
    results = {
        "meta": describe(device),
        "quick": args.quick,
        "repeats": repeats,
        "model": "784-400-20 relu bernoulli, Adam 1e-3, batch 128, float32",
    }
    meta = results["meta"]
    print(
        f"torch {meta['torch_version']}, numpy {meta['numpy_version']}, "
        f"{meta['cpu_count']} CPUs, device {device} ({meta['device_name']})"
    )
    if not args.skip_numpy:
        results["numpy_vs_torch_cpu"] = bench_numpy_vs_torch(x_small, repeats, args.seed)
    results["fast_path_vs_dataloader"] = bench_fast_path(x_big, device, repeats, args.seed)
    if args.compile:
        results["compile"] = bench_compile(x_big, device, repeats, args.seed)
    if hasattr(os, "getloadavg"):
        meta["load_average_at_end"] = os.getloadavg()[0]
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.out}")
    return results


if __name__ == "__main__":
    main(ARGS)
