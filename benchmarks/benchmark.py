"""Time the NumPy VAE and the PyTorch backends; print a summary and optionally write JSON.

    python benchmarks/benchmark.py                          # both architectures, full run
    python benchmarks/benchmark.py --quick                  # a smoke test, under a minute
    python benchmarks/benchmark.py --device cuda --out results.json
    python benchmarks/benchmark.py --architecture conv      # one architecture
    python benchmarks/benchmark.py --compile                # add torch.compile timings

Two models, the course's (``--architecture mlp|conv|both``, default both), each with a
Bernoulli decoder, latent size 20, Adam with lr 1e-3, batch 128, float32:

    mlp   784 -> 400 -> 20, ReLU (``VAE(784, (400,), 20)``)
    conv  conv 4x4/2 1 -> 32 -> 64 (28 -> 14 -> 7), dense heads; dense 20 -> 64x7x7, transposed
          convs 64 -> 32 -> 1 (``VAE(784, latent_dim=20, architecture="conv", channels=(32, 64))``)

Three measurements (seconds per epoch):

(a) NumPy vs PyTorch on the CPU, the embedded training set (4,000 digits): the hand-written
    model (``NumpyBackend``) against a plain PyTorch training loop of the same model
    (``benchmarks/plain_torch_reference.py``: nn.Linear / nn.Conv2d / nn.ConvTranspose2d,
    summed BCE, autograd, torch.optim.Adam). Each side runs in a process of its own (this
    script starts itself with ``--worker``), so one library's idle thread pool never
    competes with the other's, and the NumPy process never imports torch; the processes
    take turns (NumPy, torch, NumPy, torch, ... ``--rounds`` times each), so a change in
    the machine's load affects both alike. Each process runs one warm-up epoch, then
    ``--repeats`` timed epochs: the figure is the best (and the median) over all of a
    side's epochs, in wall-clock and in CPU seconds of the process. The NumPy process also
    records the memory of one epoch: the peak of what NumPy allocates during it
    (``tracemalloc``, the conv layers' pooled arrays included), the parameters
    and Adam's state, and the process's peak resident size (VmHWM); the time of
    the parts of one training step, in CPU time (the whole ``NumpyBackend.step``,
    ``VAE.loss_and_grads``, Adam's update, the Bernoulli likelihood's forward and backward,
    and the checks on the hot path: the gradients' keys, shapes and finiteness, and the
    model's input checks); and, when NumPy is the slower, the cProfile of one epoch of steps.
    A third process per round (Linux) runs the NumPy side with glibc keeping the memory it
    frees (:data:`GLIBC_KEEP_MEMORY`), to show what the kernel's fresh pages cost. With
    ``--baseline DIR`` (another checkout, e.g. the commit before a change) a fourth runs
    that checkout's NumPy side, so that before and after take turns in one run; the ratios
    of each round's best epochs (NumPy / PyTorch, baseline / PyTorch, NumPy / baseline)
    are printed too.
(b) On ``--device``, a 60,000-example training set (the embedded digits repeated 15 times):
    ``TorchBackend``'s fast path (data on the device, on-device shuffling and noise, a host
    sync every ``RECOMMENDED_GUARD_EVERY`` steps) against the pattern of the common PyTorch
    examples (a DataLoader over a TensorDataset with shuffle=True, ``.to(device)`` for every
    batch and ``loss.item()`` after every step), for each architecture. The fast path is
    also timed with a sync after every step (guard_every=1), to show what the syncs cost.
    Here the variants take turns epoch by epoch in this process, after one warm-up epoch
    each, and the figure is the best of ``--repeats``.
(c) With ``--compile``: the fast path with ``TorchBackend(compile=True)``, its first epoch
    (which includes compiling) and its steady epochs.

Threads: ``--threads N`` (default 1, the course's default,
``vae_from_scratch.course.threads``) for NumPy's BLAS and for torch, on both sides alike;
``--threads 0`` leaves the libraries' defaults (one thread per core). On a machine shared
with other jobs read the CPU seconds.

See benchmarks/README.md for results.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ARCHITECTURES = ("mlp", "conv")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--device",
        default=None,
        help="torch device for (b) and (c): cpu, cuda, cuda:1, mps "
        "(default: CUDA, else MPS, else the CPU)",
    )
    parser.add_argument(
        "--architecture",
        choices=(*ARCHITECTURES, "both"),
        default="both",
        help="the model(s) to time (default: both)",
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
        help="timed epochs per process in (a), per variant in (b) and (c) (default 3; "
        "1 with --quick)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="(a): processes per side, taking turns (default 2; 1 with --quick)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads for NumPy's BLAS and for torch (default 1, the course's; "
        "0: the libraries' defaults)",
    )
    parser.add_argument("--skip-numpy", action="store_true", help="leave out (a)")
    parser.add_argument("--skip-fast-path", action="store_true", help="leave out (b)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--baseline",
        type=Path,
        default=None,
        help="(a): another checkout of this repository (e.g. the commit before a change, "
        "from git worktree add): its NumPy side, timing only, takes turns with this one's",
    )
    parser.add_argument("--worker", choices=("numpy", "torch"), default=None,
                        help=argparse.SUPPRESS)  # internal: time one side of (a), print JSON
    parser.add_argument("--timing-only", action="store_true",
                        help=argparse.SUPPRESS)  # internal: a NumPy worker that only times
    args = parser.parse_args(argv)
    if args.threads < 0:
        parser.error("--threads must be 0 (the libraries' defaults) or more")
    for name in ("repeats", "rounds"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.worker and args.architecture not in ARCHITECTURES:
        parser.error("--worker needs --architecture mlp or conv")
    if args.baseline is not None and not (args.baseline / "benchmarks" / "benchmark.py").is_file():
        parser.error(f"--baseline {args.baseline}: expected a checkout of this repository "
                     "(with benchmarks/benchmark.py)")
    return args


ARGS = parse_args() if __name__ == "__main__" else None
if ARGS is not None and ARGS.threads:  # must be set before NumPy or torch load their pools
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(ARGS.threads)

import json  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from vae_from_scratch.course.threads import limit_threads  # noqa: E402
from vae_from_scratch.data import load_mnist  # noqa: E402

MODELS = {
    "mlp": dict(input_dim=784, hidden_dims=(400,), latent_dim=20),
    "conv": dict(input_dim=784, latent_dim=20, architecture="conv", channels=(32, 64)),
}
BATCH_SIZE = 128
LR = 1e-3


def training_data(quick, big=False):
    """The embedded training set, float32 (4,000, 784); with ``big``, the 60,000-example
    set of (b) instead (the digits repeated 15 times). ``quick``: 512 and 2,048 rows."""
    x = load_mnist().x_train.astype(np.float32)
    if big:
        return np.concatenate([x] * 15)[: 2048 if quick else None]
    return x[:512] if quick else x


def load_average():
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def max_rss_bytes():
    """The process's peak resident set size so far: VmHWM on Linux (ru_maxrss there can
    carry the parent's peak across the exec that started this process), else ru_maxrss
    (KiB on Linux, bytes on macOS)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024


# --- timing helpers -----------------------------------------------------------------------


def synchronize(device):
    """Wait until the device has finished all queued work (timings must include it)."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def summarize(wall, cpu, system=None, faults=None):
    """Lists of wall and CPU seconds -> {best, median, all, cpu_best, cpu_median, cpu_all}
    (and sys_median, sys_all for system CPU seconds, faults_median for page faults)."""
    out = {
        "best": min(wall),
        "median": float(np.median(wall)),
        "all": list(wall),
        "cpu_best": min(cpu),
        "cpu_median": float(np.median(cpu)),
        "cpu_all": list(cpu),
    }
    if system is not None:
        out["sys_median"], out["sys_all"] = float(np.median(system)), list(system)
    if faults is not None:
        out["page_faults_median"] = float(np.median(faults))
    return out


def timed_epochs(run_epochs, repeats, device="cpu"):
    """Time several ways of running an epoch against each other, in this process.

    ``run_epochs``: dict name -> function that runs one epoch. Each runs one warm-up epoch,
    then the ``repeats`` timed rounds take turns (a, b, c, a, b, c, ...), so a change in
    the machine's load affects them alike. Returns dict name -> :func:`summarize`'s dict
    (wall seconds; CPU seconds of this process, all its threads).
    """
    sync = (lambda: None) if device == "cpu" else (lambda: synchronize(device))
    for run_epoch in run_epochs.values():
        run_epoch()
    wall = {name: [] for name in run_epochs}
    cpu = {name: [] for name in run_epochs}
    for _ in range(repeats):
        for name, run_epoch in run_epochs.items():
            sync()
            start, start_cpu = time.perf_counter(), time.process_time()
            run_epoch()
            sync()
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    return {name: summarize(wall[name], cpu[name]) for name in run_epochs}


def row(label, t):
    return f"    {label:44} {t['best']:8.3f} {t['cpu_best']:8.3f} {t['median']:8.3f}"


HEADER = f"    {'':44} {'wall s':>8} {'CPU s':>8} {'median':>8}"
HEADER_A = HEADER + f" {'sys s':>8} {'faults':>8}"


def row_a(label, t):
    """A row of (a): best wall, best CPU, median wall, median system seconds, median page
    faults per epoch."""
    return row(label, t) + f" {t['sys_median']:8.3f} {t['page_faults_median']:8.0f}"


def mib(n_bytes):
    return n_bytes / 2**20


# --- (a), one side per process --------------------------------------------------------------


def numpy_worker(args):
    """The NumPy side of (a): time epochs, then measure memory, the step's parts, a profile.
    Runs in a process that never imports torch."""
    from vae_from_scratch import conv
    from vae_from_scratch.train import NumpyBackend, fit
    from vae_from_scratch.vae import VAE

    limit_threads(args.threads)
    x_train = training_data(args.quick)
    vae = VAE(**MODELS[args.architecture], seed=args.seed)
    backend = NumpyBackend(vae, x_train, lr=LR, batch_size=BATCH_SIZE, seed=args.seed)
    rss_before = max_rss_bytes()
    result = epochs_timed(lambda: fit(backend, epochs=1, progress=False), args.repeats)
    result["torch_imported"] = "torch" in sys.modules  # must be False: no torch pools here
    result["blas"] = blas_description()
    if args.timing_only:
        return result
    result["memory"] = numpy_epoch_memory(backend, conv, fit)
    result["memory"]["max_rss_before_training_bytes"] = rss_before
    result["step_parts_us"] = numpy_step_parts(backend, x_train)
    result["profile"] = numpy_profile(backend)
    result["steps_per_epoch"] = backend.steps_per_epoch()
    return result


def blas_description():
    """NumPy's BLAS as threadpoolctl sees it: library, version, kernels, threads. OpenBLAS
    picks its kernels (``architecture``) from the CPU it detects; ``OPENBLAS_CORETYPE``
    overrides that choice."""
    import threadpoolctl

    return "; ".join(
        f"{i['internal_api']} {i['version']} ({i.get('architecture', '?')} kernels, "
        f"{i['num_threads']} thread(s))"
        for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"
    )


def _page_faults():
    try:
        import resource
    except ImportError:  # not on Windows
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def epochs_timed(run_epoch, repeats):
    """One warm-up epoch, then ``repeats`` timed ones -> {"wall": [...], "cpu": [...],
    "sys": [...], "page_faults": [...]}: wall-clock, CPU (user + system) and system CPU
    seconds of each, and its minor page faults. System time is the kernel's work for the
    process, here mostly mapping and zeroing the fresh pages that the faults ask for."""
    run_epoch()
    wall, cpu, system, faults = [], [], [], []
    for _ in range(repeats):
        start, start_cpu, start_sys = time.perf_counter(), time.process_time(), os.times()[1]
        start_faults = _page_faults()
        run_epoch()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
        system.append(os.times()[1] - start_sys)
        faults.append(_page_faults() - start_faults)
    return {"wall": wall, "cpu": cpu, "sys": system, "page_faults": faults}


def numpy_epoch_memory(backend, conv, fit):
    """Memory of one NumPy training epoch, in bytes: the peak of NumPy's allocations during
    it (tracemalloc; the conv layers' pool of arrays is emptied first, so that they count),
    the parameters and Adam's three arrays per parameter (allocated before), and the
    process's peak resident set size (the interpreter, NumPy, the data, all of it)."""
    import gc
    import tracemalloc

    params = sum(p.nbytes for p in backend.vae.params.values())
    conv._BUFFERS.arrays.clear()
    gc.collect()
    tracemalloc.start()
    fit(backend, epochs=1, progress=False)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "epoch_peak_traced_bytes": peak,
        "params_bytes": params,
        "adam_state_bytes": 3 * params,  # m, v and a scratch buffer per parameter
        "max_rss_bytes": max_rss_bytes(),
    }


def _median_us(fn, calls=15):
    """Median CPU time of ``fn()`` in microseconds (CPU time: other processes on a busy
    machine do not inflate it; with one thread it is the wall time of a quiet machine)."""
    fn()
    times = []
    for _ in range(calls):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return 1e6 * float(np.median(times))


def numpy_step_parts(backend, x_train):
    """CPU microseconds (median of 15 calls) of one full batch's training step and its
    parts."""
    from vae_from_scratch import distributions as dist
    from vae_from_scratch.optim import check_gradients

    vae, opt = backend.vae, backend.opt
    x = x_train[:BATCH_SIZE]
    eps = np.random.default_rng(0).standard_normal((len(x), vae.latent_dim), dtype=vae.dtype)
    _, grads = vae.loss_and_grads(x, eps)
    logits = vae.decode(vae.encode(x)[0])  # the trained decoder's logits for this batch
    d_ll = np.full(len(x), -1.0 / len(x), dtype=vae.dtype)
    backend.start_epoch()

    def input_checks():
        vae.check_x(x)
        vae.check_latent(eps, len(x), "eps")
        vae.check_y(None, len(x))

    return {
        "NumpyBackend.step": _median_us(lambda: backend.step(0)),
        "VAE.loss_and_grads": _median_us(lambda: vae.loss_and_grads(x, eps)),
        "Adam.step (checks included)": _median_us(lambda: opt.step(grads)),
        "optim.check_gradients": _median_us(lambda: check_gradients(vae.params, grads)),
        "Bernoulli likelihood, forward + backward": _median_us(
            lambda: (dist.bernoulli_log_likelihood(x, logits),
                     dist.bernoulli_log_likelihood_backward(d_ll, x, logits))),
        "VAE input checks (x, eps, y)": _median_us(input_checks),
    }


def numpy_profile(backend, top=12):
    """cProfile of one epoch of ``NumpyBackend.step``: the functions taking the most time
    by themselves (own time, share of the total)."""
    import cProfile
    import pstats

    n_steps = backend.start_epoch()
    profiler = cProfile.Profile()
    profiler.enable()
    for i in range(n_steps):
        backend.step(i)
    profiler.disable()
    stats = pstats.Stats(profiler)
    total = sum(r[2] for r in stats.stats.values())
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
    return [
        {
            "function": f"{Path(f).name}:{line}({name})",
            "calls": int(r[1]),
            "seconds": float(r[2]),
            "share": float(r[2] / total),
        }
        for (f, line, name), r in rows
    ]


def torch_worker(args):
    """The PyTorch side of (a): the plain loop of ``plain_torch_reference.py``'s model."""
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from plain_torch_reference import make_model, negative_elbo_sum

    limit_threads(args.threads)
    x_train = training_data(args.quick)
    torch.manual_seed(args.seed)
    model = make_model(args.architecture, MODELS[args.architecture]["latent_dim"])
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    x_all = torch.from_numpy(x_train)

    def epoch():
        order = torch.randperm(len(x_all))
        total = 0.0
        for start in range(0, len(x_all), BATCH_SIZE):
            x = x_all[order[start : start + BATCH_SIZE]]
            logits, mu, log_var = model(x)
            loss = negative_elbo_sum(logits, x, mu, log_var) / len(x)  # the course's mean
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item()
        return total

    result = epochs_timed(epoch, args.repeats)
    result["memory"] = {"max_rss_bytes": max_rss_bytes()}
    result["torch_threads"] = torch.get_num_threads()
    return result


#: The NumPy process once more with glibc told to keep the memory it frees (Linux only): a
#: freed block then serves the next step's arrays instead of going back to the kernel,
#: which otherwise hands out and zeroes fresh pages every step (system CPU time). The same
#: code and the same numbers; not the default anywhere, shown to say where time goes.
GLIBC_KEEP_MEMORY = {"MALLOC_MMAP_THRESHOLD_": str(2**30), "MALLOC_TRIM_THRESHOLD_": str(2**30)}


def run_worker(side, architecture, args, repeats, env=None, timing_only=False, script=None):
    """Run one side of (a) in a process of its own (``script``: another checkout's
    benchmark.py, for --baseline) and return what it reports."""
    script = os.path.abspath(__file__) if script is None else str(script)
    cmd = [sys.executable, script, "--worker", side,
           "--architecture", architecture, "--threads", str(args.threads),
           "--repeats", str(repeats), "--seed", str(args.seed)]
    if args.quick:
        cmd.append("--quick")
    if timing_only:
        cmd.append("--timing-only")
    env = None if env is None else {**os.environ, **env}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.exit(f"the {side} process ({architecture}) failed:\n{proc.stderr.strip()}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_numpy_vs_torch(architecture, args, repeats, rounds):
    """(a) for one architecture: ``rounds`` processes per side, taking turns (NumPy,
    torch, on Linux NumPy with :data:`GLIBC_KEEP_MEMORY`, and the --baseline checkout's
    NumPy)."""
    sides = ["numpy", "torch"] + (["numpy_glibc"] if sys.platform.startswith("linux") else [])
    sides += ["numpy_baseline"] if args.baseline is not None else []
    runs = {side: [] for side in sides}
    loads = [load_average()]
    for _ in range(rounds):
        for side in sides:
            if side == "numpy_glibc":
                run = run_worker("numpy", architecture, args, repeats, env=GLIBC_KEEP_MEMORY,
                                 timing_only=True)
            elif side == "numpy_baseline":
                run = run_worker("numpy", architecture, args, repeats, timing_only=True,
                                 script=args.baseline / "benchmarks" / "benchmark.py")
            else:
                run = run_worker(side, architecture, args, repeats)
            runs[side].append(run)
            loads.append(load_average())
    times = {
        side: summarize(*([t for r in runs[side] for t in r[k]]
                          for k in ("wall", "cpu", "sys", "page_faults")))
        for side in sides
    }
    numpy_s, torch_s = times["numpy"], times["torch"]
    last_numpy = runs["numpy"][-1]
    memory = dict(last_numpy["memory"])
    memory["epoch_peak_traced_bytes"] = max(r["memory"]["epoch_peak_traced_bytes"]
                                            for r in runs["numpy"])
    memory["max_rss_bytes"] = max(r["memory"]["max_rss_bytes"] for r in runs["numpy"])
    memory["torch_max_rss_bytes"] = max(r["memory"]["max_rss_bytes"] for r in runs["torch"])
    result = {
        "architecture": architecture,
        "model": MODELS[architecture],
        "numpy_epoch_s": numpy_s,
        "torch_cpu_epoch_s": torch_s,
        "numpy_over_torch": numpy_s["best"] / torch_s["best"],
        "numpy_over_torch_cpu_time": numpy_s["cpu_best"] / torch_s["cpu_best"],
        "numpy_glibc_keep_memory_epoch_s": times.get("numpy_glibc"),
        "numpy_baseline_epoch_s": times.get("numpy_baseline"),
        "baseline": None if args.baseline is None else str(args.baseline),
        "ratios_by_round": {
            f"{a}/{b}": [min(ra["wall"]) / min(rb["wall"])
                         for ra, rb in zip(runs[a], runs[b], strict=True)]
            for a, b in (("numpy", "torch"), ("numpy_baseline", "torch"),
                         ("numpy", "numpy_baseline")) if a in runs and b in runs
        },
        "numpy_torch_imported": any(r["torch_imported"] for r in runs["numpy"]),
        "numpy_blas": runs["numpy"][-1]["blas"],
        "numpy_memory": memory,
        "numpy_step_parts_us": last_numpy["step_parts_us"],
        "numpy_profile": last_numpy["profile"],
        "torch_threads": runs["torch"][-1]["torch_threads"],
        "load_averages": loads,
        "processes_per_side": rounds,
        "epochs_per_process": repeats,
    }
    return result


def print_numpy_vs_torch(result, n_examples):
    arch = result["architecture"]
    numpy_s, torch_s = result["numpy_epoch_s"], result["torch_cpu_epoch_s"]
    n = len(numpy_s["all"])
    print(f"(a) {arch}, {n_examples:,} examples, CPU, seconds per epoch (best and median of "
          f"{n} epochs per side, {result['processes_per_side']} process(es) each, "
          f"{result['torch_threads']} thread(s)):")
    print(HEADER_A)
    print(row_a("NumPy (by hand)", numpy_s))
    print(row_a("PyTorch (plain loop)", torch_s))
    glibc = result["numpy_glibc_keep_memory_epoch_s"]
    if glibc is not None:
        print(row_a("NumPy, glibc keeping freed memory (*)", glibc))
    if result["numpy_baseline_epoch_s"] is not None:
        print(row_a("NumPy, the --baseline checkout", result["numpy_baseline_epoch_s"]))
    for pair, ratios in result["ratios_by_round"].items():
        print(f"    {pair}, best wall of each round: "
              f"{', '.join(f'{r:.2f}' for r in ratios)} (median {np.median(ratios):.2f})")
    ratio, cpu_ratio = result["numpy_over_torch"], result["numpy_over_torch_cpu_time"]
    verdict = "NumPy is slower" if ratio > 1 else "NumPy is no slower"
    print(f"    NumPy time / PyTorch time = {ratio:.2f} wall, {cpu_ratio:.2f} CPU  ({verdict})")
    print(f"    NumPy's BLAS: {result['numpy_blas']}")
    if glibc is not None:
        print(f"    (*) MALLOC_MMAP_THRESHOLD_ and MALLOC_TRIM_THRESHOLD_ at 1 GiB: no fresh pages "
              f"each step; ratio {glibc['best'] / torch_s['best']:.2f} wall, "
              f"{glibc['cpu_best'] / torch_s['cpu_best']:.2f} CPU. Not a default. sys s, faults: "
              "medians of the system time and the minor page faults per epoch")
    mem = result["numpy_memory"]
    print(f"    NumPy memory: epoch peak {mib(mem['epoch_peak_traced_bytes']):.1f} MiB allocated "
          f"(tracemalloc), parameters {mib(mem['params_bytes']):.1f} MiB + Adam "
          f"{mib(mem['adam_state_bytes']):.1f} MiB, process max RSS "
          f"{mib(mem['max_rss_bytes']):.0f} MiB ({mib(mem['max_rss_before_training_bytes']):.0f} "
          f"MiB before training; torch process: "
          f"{mib(mem['torch_max_rss_bytes']):.0f} MiB)")
    parts = result["numpy_step_parts_us"]
    step = parts["NumpyBackend.step"]
    print("    one training step of 128 (median CPU microseconds, share of the step):")
    for name, us in parts.items():
        print(f"      {us:9.0f}  {us / step:6.1%}  {name}")
    if ratio > 1 or cpu_ratio > 1:
        print("    where NumPy spends its time (cProfile of one epoch, own time per function):")
        for entry in result["numpy_profile"]:
            print(f"      {entry['share']:6.1%}  {entry['function']}")
    loads = ", ".join(f"{x:.2f}" for x in result["load_averages"] if x is not None)
    print(f"    load average before and after each process: {loads}")


# --- (b) the fast path vs the DataLoader pattern ------------------------------------------


def fast_path_epoch_fn(architecture, x_train, device, seed, guard_every, compile=False):
    from vae_from_scratch.torch_vae import TorchBackend
    from vae_from_scratch.train import fit
    from vae_from_scratch.vae import VAE

    backend = TorchBackend(
        VAE(**MODELS[architecture], seed=seed),
        x_train,
        lr=LR,
        batch_size=BATCH_SIZE,
        seed=seed,
        device=device,
        compile=compile,
    )
    return lambda: fit(backend, epochs=1, progress=False, guard_every=guard_every)


def dataloader_epoch_fn(architecture, x_train, device, seed):
    """The common example: CPU tensors in a DataLoader, a copy to the device per batch and
    a host sync (``.item()``) per step. The same model and optimizer as the fast path."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from vae_from_scratch.torch_vae import TorchVAE

    torch.manual_seed(seed)
    model = TorchVAE(**MODELS[architecture], seed=seed, device=device)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    loader = DataLoader(
        TensorDataset(torch.from_numpy(x_train)), batch_size=BATCH_SIZE, shuffle=True
    )

    def epoch():
        total = 0.0
        for (x,) in loader:
            x = x.to(device)
            eps = torch.randn(x.shape[0], model.latent_dim, device=device)
            loss, _, _ = model.batch_loss(x, eps, 1.0)  # no input checks, as the fast path
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item()
        return total

    return epoch


def data_only_epoch_fns(x_train, device, seed):
    """The data pipelines alone, no model: batches gathered on the device from an
    on-device permutation, and a DataLoader's batches copied to the device."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

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


def bench_fast_path(architecture, x_train, device, repeats, seed, data_only=True):
    from vae_from_scratch.torch_vae import RECOMMENDED_GUARD_EVERY

    epochs = {
        "fast": fast_path_epoch_fn(architecture, x_train, device, seed, RECOMMENDED_GUARD_EVERY),
        "every": fast_path_epoch_fn(architecture, x_train, device, seed, 1),
        "loader": dataloader_epoch_fn(architecture, x_train, device, seed),
    }
    if data_only:  # the pipelines do not depend on the model: timed once
        epochs["gather_only"], epochs["loader_only"] = data_only_epoch_fns(x_train, device,
                                                                           seed)
    load_start = load_average()
    times = timed_epochs(epochs, repeats, device)
    fast, every, loader = times["fast"], times["every"], times["loader"]
    result = {
        "architecture": architecture,
        "examples": len(x_train),
        "device": str(device),
        "guard_every": RECOMMENDED_GUARD_EVERY,
        "fast_path_epoch_s": fast,
        "fast_path_guard_every_1_epoch_s": every,
        "dataloader_epoch_s": loader,
        "speedup": loader["best"] / fast["best"],
        "speedup_cpu_time": loader["cpu_best"] / fast["cpu_best"],
        "load_averages": [load_start, load_average()],
    }
    if data_only:
        result["data_only_on_device_gather_epoch_s"] = times["gather_only"]
        result["data_only_dataloader_epoch_s"] = times["loader_only"]
    print(f"(b) {architecture}, {len(x_train):,} examples on {device}, seconds per epoch "
          f"(best of {repeats}):")
    print(HEADER)
    print(row(f"TorchBackend fast path, guard_every={RECOMMENDED_GUARD_EVERY}", fast))
    print(row("TorchBackend fast path, guard_every=1", every))
    print(row("DataLoader + .to(device) + .item()", loader))
    if data_only:
        print(row("data only: on-device gather", times["gather_only"]))
        print(row("data only: DataLoader + .to(device)", times["loader_only"]))
    print(
        f"    speedup of the fast path: {result['speedup']:.2f}x wall, "
        f"{result['speedup_cpu_time']:.2f}x CPU"
    )
    return result


# --- (c) torch.compile --------------------------------------------------------------------


def bench_compile(architecture, x_train, device, repeats, seed):
    from vae_from_scratch.torch_vae import RECOMMENDED_GUARD_EVERY

    guard = RECOMMENDED_GUARD_EVERY
    compiled = fast_path_epoch_fn(architecture, x_train, device, seed, guard, compile=True)
    synchronize(device)
    start = time.perf_counter()
    compiled()  # compiles (twice: the full batch and the smaller last one)
    synchronize(device)
    first = time.perf_counter() - start
    plain = fast_path_epoch_fn(architecture, x_train, device, seed, guard)
    times = timed_epochs({"compiled": compiled, "plain": plain}, repeats, device)
    result = {
        "architecture": architecture,
        "first_epoch_s": first,
        "compiled_epoch_s": times["compiled"],
        "plain_epoch_s": times["plain"],
        "speedup": times["plain"]["best"] / times["compiled"]["best"],
        "speedup_cpu_time": times["plain"]["cpu_best"] / times["compiled"]["cpu_best"],
    }
    print(f"(c) {architecture}, torch.compile on {device}: first epoch {first:.1f} s "
          "(compiling), then")
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
    import torch

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
        "threads": ARGS.threads if ARGS is not None else None,
        "torch_threads": torch.get_num_threads(),
        "cuda_version": torch.version.cuda,
        "load_average_at_start": load_average(),
    }
    return meta


def main(args):
    if args.worker is not None:
        worker = numpy_worker if args.worker == "numpy" else torch_worker
        print(json.dumps(worker(args)))
        return None
    import torch

    from vae_from_scratch.torch_vae import default_device

    limit_threads(args.threads)
    device = default_device() if args.device is None else torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: this torch build sees no CUDA GPU")
    repeats = args.repeats or (1 if args.quick else 3)
    rounds = args.rounds or (1 if args.quick else 2)
    architectures = ARCHITECTURES if args.architecture == "both" else (args.architecture,)
    x_small = training_data(args.quick)
    results = {
        "meta": describe(device),
        "quick": args.quick,
        "repeats": repeats,
        "rounds": rounds,
        "models": {a: MODELS[a] for a in architectures},
        "training": "Bernoulli decoder, Adam 1e-3, batch 128, float32",
    }
    meta = results["meta"]
    print(
        f"torch {meta['torch_version']}, numpy {meta['numpy_version']}, "
        f"{meta['cpu_count']} CPUs, {args.threads or 'default'} thread(s), device {device} "
        f"({meta['device_name']}), load average {meta['load_average_at_start']}"
    )
    if not args.skip_numpy:
        results["numpy_vs_torch_cpu"] = {}
        for arch in architectures:
            result = bench_numpy_vs_torch(arch, args, repeats, rounds)
            result["examples"] = len(x_small)
            print_numpy_vs_torch(result, len(x_small))
            results["numpy_vs_torch_cpu"][arch] = result
    x_big = training_data(args.quick, big=True) if not args.skip_fast_path or args.compile else None
    if not args.skip_fast_path:
        results["fast_path_vs_dataloader"] = {
            arch: bench_fast_path(arch, x_big, device, repeats, args.seed, data_only=i == 0)
            for i, arch in enumerate(architectures)
        }
    if args.compile:
        results["compile"] = {
            arch: bench_compile(arch, x_big, device, repeats, args.seed)
            for arch in architectures
        }
    meta["load_average_at_end"] = load_average()
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.out}")
    return results


if __name__ == "__main__":
    main(ARGS)
