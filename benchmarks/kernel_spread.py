"""How much ``vae-course train``'s figures move between BLAS kernels, SIMD paths and threads.

The README's training figures were measured on one machine. Another machine's NumPy may sum
float32 products in another order (another OpenBLAS kernel, NumPy's SIMD loops, another
thread count), and over thousands of training steps the last bits grow into visible digits.
This trains the same run under every configuration of ``scripts/portability.py`` that this
machine can run and prints the test negative ELBO and the IWAE estimate of each, then their
range: the spread to expect from another machine.

    python benchmarks/kernel_spread.py                              # vae-course train
    python benchmarks/kernel_spread.py --flags "--latent-dim 2"
    python benchmarks/kernel_spread.py --flags "--backend torch" --configs native-1 torch-default-1
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from portability import BY_NAME, CONFIGS, probe  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flags", default="", help="vae-course train flags, one string")
    parser.add_argument("--configs", nargs="+", choices=list(BY_NAME),
                        default=[c.name for c in CONFIGS])
    parser.add_argument("--out", type=Path, help="write the figures to this JSON file")
    args = parser.parse_args()
    print(f"vae-course train {args.flags}  (load average {os.getloadavg()[0]:.1f})", flush=True)
    rows = {}
    for name in args.configs:
        config = BY_NAME[name]
        info = probe(config)
        if "error" in info:
            print(f"{name:16s} cannot run here ({info['error']})", flush=True)
            continue
        env = config.environ()
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "run"
            subprocess.run([sys.executable, "-m", "vae_from_scratch.course.cli", "train", "--quiet",
                            "--out", str(out), *shlex.split(args.flags)], env=env, check=True,
                           capture_output=True, text=True)
            metrics = json.loads((out / "metrics.json").read_text())
        iwae = next((v for k, v in metrics.items() if k.startswith("test_nll_iwae")), None)
        rows[name] = {"test_nelbo": metrics["test_nelbo"], "iwae": iwae,
                      "blas": info["blas"], "threads": config.threads}
        print(f"{name:16s} {','.join(info['blas']):12s} threads {config.threads}: test -ELBO "
              f"{metrics['test_nelbo']:.2f}, IWAE {iwae:.2f}", flush=True)
    for key, label in (("test_nelbo", "test -ELBO"), ("iwae", "IWAE")):
        values = [r[key] for r in rows.values() if r[key] is not None]
        if values:
            print(f"{label}: {min(values):.2f} to {max(values):.2f} "
                  f"(spread {max(values) - min(values):.2f}) over {len(values)} configurations")
    if args.out:
        args.out.write_text(json.dumps({"flags": args.flags, "runs": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
