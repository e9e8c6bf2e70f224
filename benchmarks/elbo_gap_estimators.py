"""Lesson 03's two estimators of the gap log p(x) - L_K, over many repeats of the full run.

Lesson 03 estimates L_K from 500 x 1024 importance samples of each q and the gap to log p(x)
two ways: plainly (log p(x) minus the mean bound) and with the control variate r - 1 - log r,
r = p_hat_K / p(x). The lesson repeats a smaller version 200 times; this script repeats the
lesson's full-size run (``--repeats`` times, fresh samples each) and prints, for every K, the
mean and the standard deviation over the repeats of both estimators, for both q. The
standard deviation is the standard error of one full run.

    python benchmarks/elbo_gap_estimators.py --repeats 200
"""

import argparse
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from vae_from_scratch import linear_gaussian as lg  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--blocks", type=int, default=500, help="blocks of 1024 samples per run")
    args = parser.parse_args()
    D, L, sigma2 = 5, 2, 0.5  # lesson 03's running example
    W, b = lg.random_model(D, L, seed=0)
    W[:, 1] = 0.8 * W[:, 0] + 0.5 * W[:, 1]
    _, x = lg.sample(1, W, b, sigma2, np.random.default_rng(0))
    log_px = lg.log_marginal(x, W, b, sigma2)[0]
    mu_mf, log_var_mf = lg.best_diagonal_q(x, W, b, sigma2)
    qs = {"best diagonal q": (mu_mf, log_var_mf),
          "wide diagonal q": (mu_mf + np.array([[0.4, 0.4]]), log_var_mf + 1.5)}
    Ks = 2 ** np.arange(11)
    est = {(name, kind): [] for name in qs for kind in ("plain", "control variate")}
    for repeat in range(args.repeats):
        rng = np.random.default_rng([4, repeat])
        for name, (mu_q, log_var_q) in qs.items():
            eps = rng.standard_normal((1, args.blocks * Ks[-1], L))
            log_w = lg.log_importance_weights(x, W, b, sigma2, mu_q, log_var_q, eps)[0]
            log_r = [lg.iwae_bound(log_w.reshape(-1, K)) - log_px for K in Ks]
            est[name, "plain"].append([-v.mean() for v in log_r])
            est[name, "control variate"].append([np.mean(np.expm1(v) - v) for v in log_r])
    print(f"log p(x) = {log_px:.4f}; {args.repeats} repeats of {args.blocks} x 1024 samples")
    print("K: " + " ".join(f"{K:>9d}" for K in Ks))
    for (name, kind), values in est.items():
        a = np.array(values)
        print(f"{name}, {kind}")
        print("  mean " + " ".join(f"{v:9.4f}" for v in a.mean(axis=0)))
        print("  sd   " + " ".join(f"{v:9.4f}" for v in a.std(axis=0)))


if __name__ == "__main__":
    main()
