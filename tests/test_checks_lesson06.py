"""Lesson 06's checkers catch the mistakes learners make, accept right answers written
differently, and their references agree with the NumPy model."""

from __future__ import annotations

import numpy as np
import pytest

from tests.parity import one_thread, torch  # noqa: F401
from vae_from_scratch import VAE
from vae_from_scratch.checks import core
from vae_from_scratch.checks import lesson06 as check
from vae_from_scratch.checks.core import PASSED, WRONG
from vae_from_scratch.gradcheck import rel_error

F = torch.nn.functional

pytestmark = [pytest.mark.lesson06, pytest.mark.torch]


def test_the_lesson_registers_exercises_6_1_and_6_2():
    found = [(c.exercise, c.name) for c in core.checkers(6)]
    assert found == [("6.1", "torch_vae_loss"), ("6.2", "torch_train_step")]


# -- the references agree with the NumPy model ---------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_loss_reference_matches_the_numpy_loss_and_gradients(seed):
    vae = VAE(6, (5,), 2, seed=seed, dtype=np.float64)
    x, eps = check._X, check._EPS[seed]
    terms, grads = vae.loss_and_grads(x, eps)
    params = {k: torch.tensor(v, requires_grad=True) for k, v in vae.params.items()}
    loss = check._torch_vae_loss(params, torch.tensor(x), torch.tensor(eps))
    loss.backward()
    assert loss.item() == pytest.approx(terms.loss, rel=1e-12)
    for name, g in grads.items():
        assert rel_error(g, params[name].grad.numpy()) < 1e-12, name


def test_train_step_reference_matches_the_numpy_step_with_adam():
    from vae_from_scratch.optim import Adam
    from vae_from_scratch.torch_vae import TorchVAE

    vae = VAE(6, (5,), 2, seed=3, dtype=np.float64)
    model = TorchVAE.from_numpy(vae, device="cpu")
    opt_np, opt_t = Adam(vae.params, lr=0.05), torch.optim.Adam(model.parameters(), lr=0.05)
    for k in range(3):
        terms, grads = vae.loss_and_grads(check._X, check._EPS[k])
        opt_np.step(grads)
        loss = check._torch_train_step(
            model, opt_t, torch.tensor(check._X), torch.tensor(check._EPS[k])
        )
        assert isinstance(loss, float)
        assert loss == pytest.approx(terms.loss, rel=1e-12)
    for name, p in model.params.items():
        assert rel_error(vae.params[name], p.detach().numpy()) < 1e-10, name


# -- right answers, written another way --------------------------------------------------------


def loss_with_softplus_and_linear(params, x, eps):
    p = params
    h = F.relu(F.linear(x, p["enc.0.W"].T, p["enc.0.b"]))
    mu = F.linear(h, p["enc.mu.W"].T, p["enc.mu.b"])
    log_var = F.linear(h, p["enc.log_var.W"].T, p["enc.log_var.b"])
    z = mu + (0.5 * log_var).exp() * eps
    logits = F.linear(
        F.relu(F.linear(z, p["dec.0.W"].T, p["dec.0.b"])), p["dec.out.W"].T, p["dec.out.b"]
    )
    recon = (F.softplus(logits) - x * logits).sum(-1)
    kl = -0.5 * (1 + log_var - mu.pow(2) - log_var.exp()).sum(-1)
    return torch.mean(recon + kl)


def step_with_set_to_none_and_tensor_loss(model, optimizer, x, eps):
    optimizer.zero_grad(set_to_none=True)
    loss = model.loss(x, eps).loss
    loss.backward()
    optimizer.step()
    return loss  # a 0-dim tensor is accepted too


def step_zeroing_grads_by_hand(model, optimizer, x, eps):
    for p in model.parameters():
        p.grad = None
    terms = model(x, eps)
    terms.loss.backward()
    optimizer.step()
    return terms.loss.item()


@pytest.mark.parametrize(
    "checker, fn",
    [
        (check.torch_vae_loss, loss_with_softplus_and_linear),
        (check.torch_train_step, step_with_set_to_none_and_tensor_loss),
        (check.torch_train_step, step_zeroing_grads_by_hand),
    ],
)
def test_right_answers_written_differently_pass(checker, fn):
    result = checker.run(fn)
    assert result.status == PASSED, result.message


# -- the classic mistakes ------------------------------------------------------------------------


def loss_summed_over_the_batch(params, x, eps):
    return check._torch_vae_loss(params, x, eps) * x.shape[0]


def loss_per_example(params, x, eps):
    return check._torch_vae_loss(params, x, eps).expand(x.shape[0])


def loss_with_sigmoid_twice(params, x, eps):
    # probabilities handed to a function that expects logits
    p = params
    h = torch.relu(x @ p["enc.0.W"] + p["enc.0.b"])
    mu = h @ p["enc.mu.W"] + p["enc.mu.b"]
    log_var = h @ p["enc.log_var.W"] + p["enc.log_var.b"]
    z = mu + torch.exp(0.5 * log_var) * eps
    logits = torch.relu(z @ p["dec.0.W"] + p["dec.0.b"]) @ p["dec.out.W"] + p["dec.out.b"]
    recon = F.binary_cross_entropy_with_logits(torch.sigmoid(logits), x, reduction="none").sum(1)
    kl = 0.5 * torch.sum(mu**2 + torch.exp(log_var) - 1 - log_var, dim=1)
    return (recon + kl).mean()


def loss_through_numpy(params, x, eps):
    vae = VAE(
        6, (5,), 2, dtype=np.float64, params={k: v.detach().numpy() for k, v in params.items()}
    )
    return torch.tensor(vae.loss(x.numpy(), eps.numpy()).loss)


def loss_with_std_as_log_var(params, x, eps):
    p = params
    h = torch.relu(x @ p["enc.0.W"] + p["enc.0.b"])
    mu = h @ p["enc.mu.W"] + p["enc.mu.b"]
    log_var = h @ p["enc.log_var.W"] + p["enc.log_var.b"]
    z = mu + torch.exp(log_var) * eps
    logits = torch.relu(z @ p["dec.0.W"] + p["dec.0.b"]) @ p["dec.out.W"] + p["dec.out.b"]
    recon = F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(1)
    kl = 0.5 * torch.sum(mu**2 + torch.exp(log_var) - 1 - log_var, dim=1)
    return (recon + kl).mean()


def step_without_zero_grad(model, optimizer, x, eps):
    terms = model.loss(x, eps)
    terms.loss.backward()
    optimizer.step()
    return terms.loss.item()


def step_without_backward(model, optimizer, x, eps):
    optimizer.zero_grad()
    terms = model.loss(x, eps)
    optimizer.step()
    return terms.loss.item()


def step_zeroing_after_backward(model, optimizer, x, eps):
    terms = model.loss(x, eps)
    terms.loss.backward()
    optimizer.zero_grad()
    optimizer.step()
    return terms.loss.item()


@pytest.mark.parametrize(
    "checker, fn",
    [
        (check.torch_vae_loss, loss_summed_over_the_batch),
        (check.torch_vae_loss, loss_per_example),
        (check.torch_vae_loss, loss_with_sigmoid_twice),
        (check.torch_vae_loss, loss_through_numpy),
        (check.torch_vae_loss, loss_with_std_as_log_var),
        (check.torch_train_step, step_without_zero_grad),
        (check.torch_train_step, step_without_backward),
        (check.torch_train_step, step_zeroing_after_backward),
    ],
)
def test_classic_mistakes_are_wrong(checker, fn):
    result = checker.run(fn)
    assert result.status == WRONG, result.message


def test_a_loss_that_leaves_torch_names_the_problem():
    result = check.torch_vae_loss.run(loss_through_numpy)
    assert "no gradient reached" in result.message or "does not require grad" in result.message
