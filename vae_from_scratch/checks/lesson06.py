"""Checks for lesson 06, NumPy versus PyTorch (``solutions/06_numpy_vs_pytorch.ipynb``).

* Exercise 6.1: ``torch_vae_loss(params, x, eps)`` - the VAE's loss written with torch
  tensors (one ReLU hidden layer each side, Bernoulli decoder, analytic KL); checked on the
  loss and on the gradients autograd computes from it.
* Exercise 6.2: ``torch_train_step(model, optimizer, x, eps)`` - one training step of a
  ``TorchVAE`` with a torch optimizer; checked on three steps' losses and the parameters
  after them.
* Exercise 6.3 is a written answer.

torch is imported inside the functions, so that this module (and ``checks.checkers()``,
which imports every lesson's module) works without torch; only running these checks
needs it.
"""

from __future__ import annotations

import numpy as np

from vae_from_scratch.checks.core import Case, Checker
from vae_from_scratch.vae import VAE


def _torch_vae_loss(params, x, eps):
    """The batch-mean loss (a 0-dim tensor) of the VAE with one ReLU hidden layer on each
    side, a Bernoulli decoder and the analytic KL, written with torch operations.

    params: dict name -> tensor, the names and layout of ``VAE.params`` (W is (D_in, D_out));
    x (N, D) and eps (N, L) tensors.
    """
    import torch
    import torch.nn.functional as F

    p = params
    h = torch.relu(x @ p["enc.0.W"] + p["enc.0.b"])
    mu = h @ p["enc.mu.W"] + p["enc.mu.b"]
    log_var = h @ p["enc.log_var.W"] + p["enc.log_var.b"]
    z = mu + torch.exp(0.5 * log_var) * eps
    logits = torch.relu(z @ p["dec.0.W"] + p["dec.0.b"]) @ p["dec.out.W"] + p["dec.out.b"]
    recon = F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(dim=1)
    kl = 0.5 * torch.sum(mu * mu + torch.exp(log_var) - 1.0 - log_var, dim=1)
    return (recon + kl).mean()


def _torch_train_step(model, optimizer, x, eps):
    """One step: clear the old gradients, the loss at the noise eps, backward, optimizer
    step. Returns the batch's loss as a float."""
    optimizer.zero_grad()
    terms = model.loss(x, eps)
    terms.loss.backward()
    optimizer.step()
    return float(terms.loss.detach())


# A tiny float64 model's data: 4 examples of 6 "pixels", 2 latent dimensions.
_X = np.round(np.random.default_rng(60).uniform(0, 1, (4, 6)), 2)
_X[0, :3] = [0.0, 1.0, 0.0]
_EPS = np.round(np.random.default_rng(61).standard_normal((3, 4, 2)), 2)


def _as_float(value):
    if hasattr(value, "detach"):
        value = value.detach()
    return float(value)


def _run_loss(torch_vae_loss, seed):
    """Call the learner's loss on a tiny model's parameters as torch tensors that need
    gradients, run backward, and return the loss and every gradient (flattened)."""
    import torch

    vae = VAE(6, (5,), 2, seed=seed, dtype=np.float64)
    params = {k: torch.tensor(v, requires_grad=True) for k, v in vae.params.items()}
    loss = torch_vae_loss(params, torch.tensor(_X), torch.tensor(_EPS[seed]))
    if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
        shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise TypeError(f"expected a 0-dim tensor (the mean over the batch), got {shape}")
    loss.backward()
    missing = [k for k, p in params.items() if p.grad is None]
    if missing:
        raise ValueError(f"no gradient reached {', '.join(missing)}: is every parameter used "
                         "through torch operations (no .numpy(), no float())?")
    return {
        "loss": float(loss.detach()),
        "gradients (all, flattened)": np.concatenate(
            [params[k].grad.numpy().ravel() for k in vae.params]),
    }


def _run_steps(torch_train_step, seed, steps=3, lr=0.05):
    """Run the learner's step three times on a fresh tiny TorchVAE with torch's Adam;
    return the losses and the parameters after the steps (flattened)."""
    import torch

    from vae_from_scratch.torch_vae import TorchVAE

    model = TorchVAE(6, (5,), 2, seed=seed, dtype=torch.float64, device="cpu")
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    x = torch.tensor(_X)
    losses = [_as_float(torch_train_step(model, optimizer, x, torch.tensor(_EPS[k])))
              for k in range(steps)]
    return {
        "loss": np.array(losses),
        "parameters after the steps": np.concatenate(
            [p.detach().numpy().ravel() for p in model.params.values()]),
    }


torch_vae_loss = Checker(
    "6.1",
    reference=_torch_vae_loss,
    cases=[Case(seed=0), Case(seed=1)],
    call=lambda fn, seed: _run_loss(fn, seed),
    rtol=1e-9,
    atol=1e-12,
)

torch_train_step = Checker(
    "6.2",
    reference=_torch_train_step,
    cases=[Case(seed=0), Case(seed=2)],
    call=lambda fn, seed: _run_steps(fn, seed),
    rtol=1e-9,
    atol=1e-12,
)
