"""Record every number the package produces for a matrix of configurations, to show that a
change of the code's shape changed none of them.

    python scripts/fingerprint.py --out before.json                  # on the old code
    python scripts/fingerprint.py --out after.json --compare before.json

What it records, each number exactly (floats by ``repr``, arrays by the SHA-256 of their
dtype, shape and bytes):

* ``model``: for every architecture (mlp, conv), likelihood (Bernoulli, Gaussian with a fixed
  and a learned variance, continuous Bernoulli), prior and KL estimator (standard analytic,
  standard Monte Carlo, mixture), with and without labels, with and without free bits, in
  float64 and float32: the initial parameters, ``loss``, ``loss_and_grads`` (with the
  configured beta and with a warm-up beta), ``elbo_terms`` with both estimators, ``encode``,
  ``decode``, ``decode_mean``, ``reconstruct``, ``sample``, ``sample_prior``, the test
  negative ELBO and an IWAE estimate, ``diagnostics.generate`` and ``prior_log_density``; and
  the same batch through the PyTorch mirror (``TorchVAE.from_numpy``): its loss terms and
  autograd gradients, ``elbo_terms``, ``encode``, ``reconstruct``, ``sample``.
* ``fit``: two epochs of ``train.fit`` with ``NumpyBackend`` and ``TorchBackend`` (KL
  warm-up, dynamic binarization, SGD, free bits, a conditional model): the history less its
  timings, the final parameters and the backend's saved state.
* ``cli``: ``vae-course --threads 1 train --limit N --epochs E --out DIR ...`` in a fresh
  process for a matrix of flags: the exit status, ``metrics.json`` less its timings and
  versions, and every tensor of ``checkpoint.safetensors`` and ``state.safetensors``.

It uses only names that the course promises to keep (the public model API, ``fit`` with the
two backends, ``evaluate``, ``diagnostics`` and the ``vae-course train`` command), so the
same script runs before and after a refactoring. Bits are promised on one machine at one
thread count only: the script pins every numerical library to one thread.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

N_BATCH = 16
SEED = 3


def digest(a) -> str:
    """SHA-256 of an array's dtype, shape and bytes."""
    a = np.ascontiguousarray(np.asarray(a))
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())
    return h.hexdigest()


def exact(value):
    """A JSON value that keeps every bit: floats by repr, arrays by digest."""
    if isinstance(value, dict):
        return {str(k): exact(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [exact(v) for v in value]
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return digest(value)
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    return value


def terms(t):
    return {"loss": t.loss, "recon": t.recon, "kl": t.kl}


# --- the model, one batch -----------------------------------------------------------------


def model_configs():
    """(name, VAE keyword arguments) for the matrix."""
    archs = {
        "mlp": dict(hidden_dims=(32,), latent_dim=4),
        "mlp2tanh": dict(hidden_dims=(24, 12), latent_dim=3, activation="tanh"),
        "conv": dict(architecture="conv", channels=(4, 8), latent_dim=4),
    }
    likelihoods = {
        "bern": dict(likelihood="bernoulli"),
        "gauss": dict(likelihood="gaussian", obs_var=0.5),
        "gausslearned": dict(likelihood="gaussian", obs_var="learned"),
        "cb": dict(likelihood="continuous_bernoulli"),
    }
    priors = {
        "std-analytic": dict(prior="standard", kl="analytic"),
        "std-mc": dict(prior="standard", kl="monte_carlo"),
        "mix": dict(prior="mixture", n_components=3),
    }
    out = []
    for a, akw in archs.items():
        for lk, lkw in likelihoods.items():
            for p, pkw in priors.items():
                for cond in (None, 10):
                    fbs = (0.0, 0.3) if pkw["prior"] == "standard" else (0.0,)
                    for fb in fbs:
                        beta = 0.5 if (cond and fb == 0) else 1.0
                        name = f"{a}-{lk}-{p}-{'cond' if cond else 'uncond'}-fb{fb}-beta{beta}"
                        out.append((name, dict(input_dim=784, **akw, **lkw, **pkw,
                                               n_classes=cond, free_bits=fb, beta=beta)))
    return out


def record_model(kwargs, x_all, y_all, dtype, with_torch):
    from vae_from_scratch import VAE, diagnostics
    from vae_from_scratch.evaluate import iwae_nll, negative_elbo

    vae = VAE(**kwargs, seed=SEED, dtype=dtype)
    rng = np.random.default_rng(11)
    x = x_all[:N_BATCH].astype(dtype)
    y = y_all[:N_BATCH] if kwargs["n_classes"] else None
    latent = kwargs["latent_dim"]
    eps = rng.standard_normal((N_BATCH, latent)).astype(dtype)
    rec = {"init": {k: v for k, v in vae.params.items()}}
    rec["loss"] = terms(vae.loss(x, eps, y))
    t, g = vae.loss_and_grads(x, eps, y)
    rec["loss_and_grads"] = {"terms": terms(t), "grads": g}
    t, g = vae.loss_and_grads(x, eps, y, beta=0.25)
    rec["loss_and_grads_warmup"] = {"terms": terms(t), "grads": g}
    rec["elbo_terms"] = list(vae.elbo_terms(x, eps, y))
    rec["elbo_terms_mc"] = list(vae.elbo_terms(x, eps, y, kl="monte_carlo"))
    mu, log_var = vae.encode(x, y)
    rec["encode"] = [mu, log_var]
    z = rng.standard_normal((5, latent)).astype(dtype)
    y5 = None if y is None else y[:5]
    rec["decode"] = vae.decode(z, y5)
    rec["decode_mean"] = vae.decode_mean(z, y5)
    rec["reconstruct"] = vae.reconstruct(x, y)
    rec["sample"] = vae.sample(5, y=None if y is None else 7, seed=1)
    rec["sample_prior"] = vae.sample_prior(5, np.random.default_rng(2))
    rec["negative_elbo"] = list(negative_elbo(vae, x_all[:40].astype(dtype), seed=4,
                                              y=None if y is None else y_all[:40]))
    rec["iwae"] = iwae_nll(vae, x_all[:8].astype(dtype), k=3, seed=5,
                           y=None if y is None else y_all[:8])
    rec["prior_log_density"] = diagnostics.prior_log_density(vae, z)
    if not kwargs["n_classes"] and kwargs["likelihood"] != "continuous_bernoulli":
        rec["generate"] = diagnostics.generate(vae, 6, seed=8)
    if with_torch:
        rec["torch"] = record_torch(vae, x, eps, y, z, y5)
    return rec


def record_torch(vae, x, eps, y, z, y5):
    from vae_from_scratch.torch_vae import TorchVAE

    tvae = TorchVAE.from_numpy(vae, device="cpu")
    t = tvae.loss(x, eps, y)
    t.loss.backward()
    rec = {"terms": terms(t), "grads": {n: p.grad for n, p in tvae.params.items()}}
    rec["elbo_terms"] = list(tvae.elbo_terms(x, eps, y))
    rec["elbo_terms_mc"] = list(tvae.elbo_terms(x, eps, y, kl="monte_carlo"))
    rec["encode"] = list(tvae.encode(x, y))
    rec["decode_mean"] = tvae.decode_mean(z, y5)
    rec["reconstruct"] = tvae.reconstruct(x, y)
    rec["sample"] = tvae.sample(5, y=None if y is None else 7, seed=1)
    rec["warmup_loss"] = terms(tvae.loss(x, eps, y, beta=0.25))
    return rec


# --- training with fit ----------------------------------------------------------------------


FIT_RUNS = {
    "numpy-default": dict(model=dict(hidden_dims=(32,), latent_dim=4), train=dict()),
    "numpy-warmup-binarize": dict(model=dict(hidden_dims=(32,), latent_dim=4),
                                  train=dict(kl_warmup=7, binarize=True, lr=3e-3)),
    "numpy-sgd-freebits": dict(model=dict(hidden_dims=(32,), latent_dim=4, free_bits=0.2),
                               train=dict(optimizer="sgd", lr=1e-2, batch_size=50)),
    "numpy-mixture-gauss": dict(model=dict(hidden_dims=(32,), latent_dim=2, prior="mixture",
                                           n_components=4, likelihood="gaussian",
                                           obs_var="learned"), train=dict(seed=5)),
    "numpy-conv-cond-cb": dict(model=dict(architecture="conv", channels=(4, 8), latent_dim=4,
                                          n_classes=10, likelihood="continuous_bernoulli"),
                               train=dict(kl_warmup=3)),
    "torch-default": dict(model=dict(hidden_dims=(32,), latent_dim=4), train=dict(),
                          torch=True),
    "torch-warmup-binarize-cond": dict(model=dict(hidden_dims=(32,), latent_dim=4,
                                                  n_classes=10),
                                       train=dict(kl_warmup=7, binarize=True), torch=True),
    "torch-conv-mc-freebits-sgd": dict(model=dict(architecture="conv", channels=(4, 8),
                                                   latent_dim=4, free_bits=0.1,
                                                   kl="monte_carlo"),
                                        train=dict(optimizer="sgd", lr=1e-2), torch=True),
}


def record_fit(spec, ds):
    from vae_from_scratch import VAE
    from vae_from_scratch.train import NumpyBackend, fit

    vae = VAE(784, **spec["model"], seed=1)
    conditional = spec["model"].get("n_classes")
    y_train = ds.y_train[:256] if conditional else None
    y_test = ds.y_test[:64] if conditional else None
    if spec.get("torch"):
        from vae_from_scratch.torch_vae import TorchBackend

        backend = TorchBackend(vae, ds.x_train[:256], y_train, batch_size=64, device="cpu",
                               **{"seed": 2, **spec["train"]})
    else:
        backend = NumpyBackend(vae, ds.x_train[:256], y_train, **{"batch_size": 64, "seed": 2,
                                                                   **spec["train"]})
    history = fit(backend, ds.x_test[:64], epochs=2, y_test=y_test, progress=False)
    hist = {k: v for k, v in history.as_dict().items() if k != "seconds"}
    state = backend.state_dict()
    return {"history": hist, "params": backend.to_vae().params, "state": state}


# --- the command line -----------------------------------------------------------------------


CLI_RUNS = {
    "default": [],
    "conv": ["--architecture", "conv", "--channels", "4,8", "--latent-dim", "4"],
    "gauss-learned": ["--likelihood", "gaussian", "--obs-var", "learned", "--hidden-dims", "64"],
    "gauss-fixed-beta": ["--likelihood", "gaussian", "--obs-var", "0.2", "--beta", "0.5",
                         "--hidden-dims", "64"],
    "cb-freebits": ["--likelihood", "continuous_bernoulli", "--free-bits", "0.5",
                    "--hidden-dims", "64"],
    "mixture-2d": ["--prior", "mixture", "--n-components", "4", "--latent-dim", "2",
                   "--hidden-dims", "64"],
    "conditional": ["--conditional", "--hidden-dims", "64"],
    "mc-warmup-binarize": ["--kl", "monte_carlo", "--kl-warmup", "10", "--binarize",
                           "--hidden-dims", "64", "--seed", "4"],
    "tanh-float64": ["--activation", "tanh", "--dtype", "float64", "--hidden-dims", "48,24"],
    "torch": ["--backend", "torch", "--hidden-dims", "64"],
    "torch-conv-cond": ["--backend", "torch", "--architecture", "conv", "--channels", "4,8",
                        "--conditional", "--latent-dim", "3"],
    "torch-cb-mixture": ["--backend", "torch", "--likelihood", "continuous_bernoulli",
                         "--prior", "mixture", "--hidden-dims", "64", "--kl-warmup", "5"],
}
CLI_COMMON = ["--limit", "200", "--epochs", "2", "--iwae-k", "5", "--batch-size", "64",
              "--quiet"]
METRICS_SKIP = {"seconds_per_epoch", "seconds_total", "threads"}


def tensors(path):
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as f:
        return {name: f.get_tensor(name) for name in sorted(f.keys())}


def record_cli(flags, work):
    exe = shutil.which("vae-course") or str(Path(sys.executable).parent / "vae-course")
    out = work / "run"
    if out.exists():
        shutil.rmtree(out)
    proc = subprocess.run([exe, "--threads", "1", "train", *CLI_COMMON, *flags, "--out", str(out)],
                          capture_output=True, text=True, env={**os.environ, "MPLBACKEND": "Agg"},
                          timeout=600)
    rec = {"returncode": proc.returncode}
    if proc.returncode != 0:
        rec["stderr"] = proc.stderr[-2000:]
        return rec
    metrics = json.loads((out / "metrics.json").read_text())
    metrics = {k: v for k, v in metrics.items() if k not in METRICS_SKIP}
    metrics["history"] = {k: v for k, v in metrics["history"].items() if k != "seconds"}
    metrics["training"] = {k: v for k, v in metrics["training"].items() if k != "out"}
    rec["metrics"] = metrics
    rec["checkpoint"] = tensors(out / "checkpoint.safetensors")
    rec["state"] = tensors(out / "state.safetensors")
    rec["figures"] = sorted(p.name for p in out.glob("*.png"))
    return rec


# --- comparing two records -------------------------------------------------------------------


def leaves(tree, prefix=""):
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from leaves(v, f"{prefix}/{k}")
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            yield from leaves(v, f"{prefix}[{i}]")
    else:
        yield prefix, tree


def compare(before, after):
    a, b = dict(leaves(before)), dict(leaves(after))
    only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
    differ = sorted(k for k in set(a) & set(b) if a[k] != b[k])
    return len(set(a) & set(b)), only_a, only_b, differ


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="where to write the record")
    parser.add_argument("--compare", type=Path, default=None,
                        help="an earlier record: report every value that differs")
    parser.add_argument("--skip", nargs="*", default=(), choices=("model", "fit", "cli"))
    args = parser.parse_args(argv)

    try:
        import torch

        torch.set_num_threads(1)
        with_torch = True
    except ImportError:
        with_torch = False
    from vae_from_scratch.data import load_mnist

    ds = load_mnist()
    record = {"torch": with_torch}
    if "model" not in args.skip:
        record["model"] = {}
        for name, kwargs in model_configs():
            for dtype in (np.float64, np.float32):
                key = f"{name}-{np.dtype(dtype).name}"
                record["model"][key] = exact(record_model(kwargs, ds.x_train, ds.y_train, dtype,
                                                          with_torch))
        print(f"model: {len(record['model'])} configurations", flush=True)
    if "fit" not in args.skip:
        record["fit"] = {name: exact(record_fit(spec, ds)) for name, spec in FIT_RUNS.items()
                         if with_torch or not spec.get("torch")}
        print(f"fit: {len(record['fit'])} runs", flush=True)
    if "cli" not in args.skip:
        record["cli"] = {}
        with tempfile.TemporaryDirectory() as tmp:
            for name, flags in CLI_RUNS.items():
                if "torch" in flags and not with_torch:
                    continue
                record["cli"][name] = exact(record_cli(flags, Path(tmp)))
                print(f"cli {name}: exit {record['cli'][name]['returncode']}", flush=True)
    args.out.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    n = sum(1 for _ in leaves(record))
    print(f"wrote {args.out}: {n} values")
    if args.compare is None:
        return 0
    compared, only_before, only_after, differ = compare(json.loads(args.compare.read_text()),
                                                        record)
    print(f"compared {compared} values with {args.compare}: {len(differ)} differ, "
          f"{len(only_before)} only before, {len(only_after)} only after")
    for key in (differ + only_before + only_after)[:50]:
        print("  ", key)
    return 1 if differ or only_before or only_after else 0


if __name__ == "__main__":
    sys.exit(main())
