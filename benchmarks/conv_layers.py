"""Time the hand-written conv layers against torch.nn.functional on the CPU; print a table.

    python benchmarks/conv_layers.py                 # default threads, batch 128
    python benchmarks/conv_layers.py --threads 1     # one BLAS / torch thread
    python benchmarks/conv_layers.py --repeats 50 --json conv_layers.json

The layers are those of the course's conv VAE, float32, batch 128 (``--batch``):

    enc1  Conv2d           1 -> 32, 4x4, stride 2, pad 1, 28 -> 14  (no dx: the data's)
    enc2  Conv2d          32 -> 64, 4x4, stride 2, pad 1, 14 ->  7
    dec1  ConvTranspose2d 64 -> 32, 4x4, stride 2, pad 1,  7 -> 14
    dec2  ConvTranspose2d 32 ->  1, 4x4, stride 2, pad 1, 14 -> 28

For each: the forward alone, and forward + backward (dx, dW, db; enc1 without dx, as in the
model, where torch's autograd also skips it because the data needs no gradient). Each layer
gets a C-ordered NCHW input and upstream gradient. The row ``stack`` runs the four in a chain
with ReLUs between them (enc1, enc2, dec1, dec2), forward and backward, so each layer gets its
input in whatever memory order the previous one produced, as in a model.

NumPy and torch each run in a process of their own (this script starts two), so that one's
thread pool never competes with the other's. ``--threads N`` sets OMP_NUM_THREADS,
OPENBLAS_NUM_THREADS and MKL_NUM_THREADS before NumPy or torch load, then
``threadpoolctl.threadpool_limits(N)`` on the NumPy side and ``torch.set_num_threads(N)`` on
torch's; without it both use their defaults (the thread counts are printed). Times are in
milliseconds: the median and the best of ``--repeats`` calls after ``--warmup`` calls, and
the median CPU time of the process (all its threads; on a busy machine the CPU time is the
steadier figure, and with ``--threads 1`` it is what the wall time would be on an idle
one). NumPy/torch is the ratio of the median wall times. The NumPy side also reports the
peak memory NumPy allocates in one forward + backward of the stack, its pooled arrays
included (tracemalloc, outside the timings).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

# name, kind, C_in, C_out, H (input), need_dx
LAYERS = [
    ("enc1", "conv", 1, 32, 28, False),
    ("enc2", "conv", 32, 64, 14, True),
    ("dec1", "convT", 64, 32, 7, True),
    ("dec2", "convT", 32, 1, 14, True),
]
KERNEL, STRIDE, PADDING = 4, 2, 1


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for NumPy's BLAS and for torch (default: theirs)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per figure")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls before timing")
    parser.add_argument("--json", default=None, help="also write the results as JSON here")
    parser.add_argument("--side", choices=("numpy", "torch"), default=None,
                        help=argparse.SUPPRESS)  # internal: run one side, print JSON
    args = parser.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be at least 1")
    if args.batch < 1 or args.repeats < 1 or args.warmup < 0:
        parser.error("--batch and --repeats must be at least 1, --warmup at least 0")
    return args


def _time(fn, repeats, warmup):
    for _ in range(warmup):
        fn()
    times, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    times.sort()
    cpu.sort()
    return {"median_ms": 1e3 * times[len(times) // 2], "best_ms": 1e3 * times[0],
            "cpu_median_ms": 1e3 * cpu[len(cpu) // 2]}


def _shapes(batch, c_in, c_out, h, kind):
    h_out = h // 2 if kind == "conv" else 2 * h
    w_shape = (c_out, c_in, KERNEL, KERNEL) if kind == "conv" else (c_in, c_out, KERNEL, KERNEL)
    return (batch, c_in, h, h), w_shape, (batch, c_out, h_out, h_out)


def run_numpy(args):
    import tracemalloc

    import numpy as np
    import threadpoolctl

    from vae_from_scratch import conv
    from vae_from_scratch.conv import Conv2d, ConvTranspose2d
    from vae_from_scratch.layers import ReLU

    limits = threadpoolctl.threadpool_limits(args.threads) if args.threads else None
    rng = np.random.default_rng(0)
    f32 = np.float32
    results, params = {}, []
    for name, kind, c_in, c_out, h, need_dx in LAYERS:
        x_shape, w_shape, out_shape = _shapes(args.batch, c_in, c_out, h, kind)
        x = rng.standard_normal(x_shape).astype(f32)
        W = (0.1 * rng.standard_normal(w_shape)).astype(f32)
        b = (0.1 * rng.standard_normal(c_out)).astype(f32)
        dout = rng.standard_normal(out_shape).astype(f32)
        layer = Conv2d if kind == "conv" else ConvTranspose2d
        params.append((layer, W, b, need_dx))

        def fwd(layer=layer, x=x, W=W, b=b):
            return layer.forward(x, W, b, STRIDE, PADDING)

        def fwd_bwd(layer=layer, x=x, W=W, b=b, dout=dout, need_dx=need_dx):
            _, cache = layer.forward(x, W, b, STRIDE, PADDING)
            return layer.backward(dout, cache, need_dx=need_dx)

        results[name] = {"forward": _time(fwd, args.repeats, args.warmup),
                         "forward+backward": _time(fwd_bwd, args.repeats, args.warmup)}

    x0 = rng.standard_normal((args.batch, 1, 28, 28)).astype(f32)
    dout0 = rng.standard_normal((args.batch, 1, 28, 28)).astype(f32)

    def stack():
        h, caches = x0, []
        for i, (layer, W, b, _) in enumerate(params):
            h, cache = layer.forward(h, W, b, STRIDE, PADDING)
            relu_cache = None
            if i < len(params) - 1:
                h, relu_cache = ReLU.forward(h)
            caches.append((cache, relu_cache))
        dh = dout0
        steps = zip(params[::-1], caches[::-1], strict=True)
        for (layer, _, _, need_dx), (cache, relu_cache) in steps:
            if relu_cache is not None:
                dh = ReLU.backward(dh, relu_cache)
            dh, _, _ = layer.backward(dh, cache, need_dx=need_dx)

    results["stack"] = {"forward+backward": _time(stack, args.repeats, args.warmup)}
    conv._BUFFERS.arrays.clear()  # so that the peak counts the pooled arrays too
    tracemalloc.start()
    stack()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    results["stack"]["peak_MiB"] = peak / 2**20
    info = threadpoolctl.threadpool_info()
    meta = {"numpy": np.__version__,
            "blas": [f"{i['internal_api']} {i['version']}, {i['num_threads']} threads"
                     for i in info]}
    if limits is not None:
        limits.restore_original_limits()
    return {"results": results, "meta": meta}


def run_torch(args):
    import torch
    import torch.nn.functional as F

    if args.threads:
        torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    results, params = {}, []
    for name, kind, c_in, c_out, h, need_dx in LAYERS:
        x_shape, w_shape, out_shape = _shapes(args.batch, c_in, c_out, h, kind)
        x = torch.randn(x_shape, generator=gen).requires_grad_(need_dx)
        W = (0.1 * torch.randn(w_shape, generator=gen)).requires_grad_()
        b = (0.1 * torch.randn(c_out, generator=gen)).requires_grad_()
        dout = torch.randn(out_shape, generator=gen)
        op = F.conv2d if kind == "conv" else F.conv_transpose2d
        params.append((op, W, b))

        def fwd(op=op, x=x, W=W, b=b):
            with torch.no_grad():
                return op(x, W, b, stride=STRIDE, padding=PADDING)

        def fwd_bwd(op=op, x=x, W=W, b=b, dout=dout):
            for t in (x, W, b):
                t.grad = None
            op(x, W, b, stride=STRIDE, padding=PADDING).backward(dout)

        results[name] = {"forward": _time(fwd, args.repeats, args.warmup),
                         "forward+backward": _time(fwd_bwd, args.repeats, args.warmup)}

    x0 = torch.randn((args.batch, 1, 28, 28), generator=gen)
    dout0 = torch.randn((args.batch, 1, 28, 28), generator=gen)

    def stack():
        for _, W, b in params:
            W.grad = b.grad = None
        h = x0
        for i, (op, W, b) in enumerate(params):
            h = op(h, W, b, stride=STRIDE, padding=PADDING)
            if i < len(params) - 1:
                h = torch.relu(h)
        h.backward(dout0)

    results["stack"] = {"forward+backward": _time(stack, args.repeats, args.warmup)}
    meta = {"torch": torch.__version__, "threads": torch.get_num_threads()}
    return {"results": results, "meta": meta}


def _side(args, side):
    cmd = [sys.executable, os.path.abspath(__file__), "--side", side, "--batch", str(args.batch),
           "--repeats", str(args.repeats), "--warmup", str(args.warmup)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"the {side} process failed:\n{proc.stderr.strip()}")
    return json.loads(proc.stdout)


def print_table(np_side, torch_side):
    rows = [("layer", "pass", "NumPy median", "best", "CPU", "torch median", "best", "CPU",
             "NumPy/torch")]
    for name in [layer[0] for layer in LAYERS] + ["stack"]:
        for pass_name in ("forward", "forward+backward"):
            a = np_side["results"][name].get(pass_name)
            t = torch_side["results"][name].get(pass_name)
            if a is None:
                continue
            rows.append((name, pass_name,
                         *(f"{side[k]:.2f}" for side in (a, t)
                           for k in ("median_ms", "best_ms", "cpu_median_ms")),
                         f"{a['median_ms'] / t['median_ms']:.2f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for k, row in enumerate(rows):
        print(" | ".join(c.ljust(w) if i < 2 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(row, widths, strict=True))))
        if k == 0:
            print("-+-".join("-" * w for w in widths))


def main(argv=None):
    args = parse_args(argv)
    if args.threads:  # before NumPy or torch load their thread pools
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(args.threads)
    if args.side is not None:
        run = run_numpy if args.side == "numpy" else run_torch
        print(json.dumps(run(args)))
        return
    np_side, torch_side = _side(args, "numpy"), _side(args, "torch")
    load = os.getloadavg()
    print(f"batch {args.batch}, float32, times in ms ({args.repeats} calls after "
          f"{args.warmup} warm-up); NumPy {np_side['meta']['numpy']} "
          f"({'; '.join(np_side['meta']['blas'])}), torch {torch_side['meta']['torch']} "
          f"({torch_side['meta']['threads']} threads); load average {load[0]:.2f}")
    print_table(np_side, torch_side)
    print(f"NumPy peak memory of one stack forward+backward: "
          f"{np_side['results']['stack']['peak_MiB']:.1f} MiB")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"numpy": np_side, "torch": torch_side, "load_average": load,
                       "args": vars(args)}, fh, indent=2)


if __name__ == "__main__":
    main()
