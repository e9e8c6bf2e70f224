"""The documented defaults that the README's measured figures rest on.

The README's training table comes from ``vae-course train`` with its defaults (Adam at
1e-3, batch 128, 50 epochs, seed 0, the test -ELBO with ``train.EVAL_SEED`` and IWAE with
k=100); lesson 05 and 06 quote the same settings. A change to any of these changes the
figures, so it must be deliberate: change the README and these tests together.
"""

from __future__ import annotations

import numpy as np
import pytest

from vae_from_scratch import VAE, train
from vae_from_scratch.config import VAEConfig
from vae_from_scratch.course.cli import build_parser
from vae_from_scratch.evaluate import iwae_nll, negative_elbo
from vae_from_scratch.optim import SGD, Adam

pytestmark = [pytest.mark.lesson05, pytest.mark.lesson06]


def _params():
    return {"w": np.array([1.0, -2.0]), "b": np.array([0.5])}


def test_adam_defaults_are_kingma_and_ba_s():
    opt = Adam(_params())
    assert opt.lr == 1e-3
    assert tuple(opt.betas) == (0.9, 0.999)
    assert opt.eps == 1e-8


@pytest.mark.torch
def test_adam_defaults_equal_torch_optim_adams():
    torch = pytest.importorskip("torch")
    ours = Adam(_params())
    theirs = torch.optim.Adam([torch.zeros(2, requires_grad=True)]).defaults
    assert ours.lr == theirs["lr"]
    assert tuple(ours.betas) == tuple(theirs["betas"])
    assert ours.eps == theirs["eps"]


def test_sgd_defaults():
    # Plain gradient descent at 1e-2 (torch.optim.SGD's default learning rate is 1e-3).
    opt = SGD(_params())
    assert opt.lr == 1e-2
    assert opt.momentum == 0.0


def test_eval_seed_is_pinned():
    assert train.EVAL_SEED == 12345


def _small_model_and_data(n):
    vae = VAE(6, (5,), 2, seed=0, dtype=np.float64)
    x = (np.random.default_rng(1).random((n, 6)) < 0.5).astype(np.float64)
    return vae, x


def _recorded_batches(monkeypatch, vae):
    rows = []
    real = vae.elbo_terms

    def recording(xb, eps, y=None, *, kl=None):
        rows.append(len(xb))
        return real(xb, eps, y, kl=kl)

    monkeypatch.setattr(vae, "elbo_terms", recording)
    return rows


def test_negative_elbo_defaults_seed_0_and_batches_of_1000(monkeypatch):
    vae, x = _small_model_and_data(2500)
    rows = _recorded_batches(monkeypatch, vae)
    value = negative_elbo(vae, x)
    assert rows == [1000, 1000, 500]
    assert value == negative_elbo(vae, x, seed=0, batch_size=1000)
    assert value != negative_elbo(vae, x, seed=1, batch_size=1000)


def test_iwae_defaults_k_100_seed_0_and_10000_rows_per_batch(monkeypatch):
    vae, x = _small_model_and_data(230)
    rows = _recorded_batches(monkeypatch, vae)
    value = iwae_nll(vae, x)
    assert rows == [10_000, 10_000, 3_000]  # k=100 samples of 100, 100 and 30 examples
    assert value == iwae_nll(vae, x, k=100, seed=0)
    assert value != iwae_nll(vae, x, k=100, seed=1)
    assert value != iwae_nll(vae, x, k=99, seed=0)
    rows.clear()
    iwae_nll(vae, x, k=7)  # 10,000 // 7 = 1428 examples per batch: one batch here
    assert rows == [230 * 7]


def test_iwae_batches_of_a_conv_model_hold_1000_rows(monkeypatch):
    # The conv VAE holds ~35 times the MLP's memory per row (its im2col columns), so its
    # IWAE batches are 10 times smaller (evaluate.IWAE_ROWS); the estimate does not change.
    vae = VAE(64, latent_dim=2, architecture="conv", image_shape=(1, 8, 8), channels=(2, 3),
              seed=0, dtype=np.float64)
    x = np.random.default_rng(1).random((25, 64))
    whole = iwae_nll(vae, x, batch_size=len(x))
    rows = _recorded_batches(monkeypatch, vae)
    assert iwae_nll(vae, x) == pytest.approx(whole, rel=1e-13)
    assert rows == [1_000, 1_000, 500]  # k=100 samples of 10, 10 and 5 examples


def test_the_training_command_defaults_are_the_readmes_run():
    args = build_parser().parse_args(["train"])
    assert args.latent_dim == 20 and args.architecture == "mlp"
    assert args.hidden_dims is None and VAEConfig(hidden_dims=None).hidden_dims == (400,)
    assert args.activation == "relu" and args.likelihood == "bernoulli"
    assert args.lr == 1e-3 and args.batch_size == 128 and args.epochs == 50
    assert args.seed == 0 and args.iwae_k == 100
    assert args.beta == 1.0 and args.kl_warmup == 0 and not args.binarize
    assert args.dtype == "float32" and args.data == "embedded" and args.backend == "numpy"
