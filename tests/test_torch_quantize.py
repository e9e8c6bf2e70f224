"""The PyTorch mirror of the quantizers agrees with the hand-written NumPy code.

Forward values, codes and every autograd gradient (the straight-through path through a conv
decoder included, and the codebook and commitment losses) equal ``quantize.py``'s to a
relative error of 1e-12 in float64; the EMA step and FSQ likewise.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed")

from vae_from_scratch import distributions as dist  # noqa: E402
from vae_from_scratch import quantize as vq  # noqa: E402
from vae_from_scratch.gradcheck import rel_error  # noqa: E402
from vae_from_scratch.networks import Layer, Network  # noqa: E402
from vae_from_scratch.torch_vae import quantize as tq  # noqa: E402

pytestmark = [pytest.mark.lesson11, pytest.mark.torch]

TOL = 1e-12
SHAPES = [(2, 3, 4, 4), (3, 2, 2, 3), (5, 4)]


def _t(a, grad=False):
    return torch.tensor(a, dtype=torch.float64, requires_grad=grad)


@pytest.mark.parametrize("shape", SHAPES)
def test_distances_codes_and_values(shape):
    rng = np.random.default_rng(0)
    z, codebook = rng.standard_normal(shape), rng.standard_normal((7, shape[1]))
    assert rel_error(tq.squared_distances(_t(z), _t(codebook)).numpy(),
                     vq.squared_distances(z, codebook)) < TOL
    z_q, cache = vq.VectorQuantizer.forward(z, codebook)
    t_z_q, t_codes = tq.vector_quantize(_t(z), _t(codebook))
    np.testing.assert_array_equal(t_codes.numpy(), cache.codes)
    assert rel_error(t_z_q.detach().numpy(), z_q) < TOL  # z_e + (e - z_e): round-off only
    np.testing.assert_allclose(tq.perplexity(t_codes, 7), vq.perplexity(cache.codes, 7),
                               rtol=1e-12)


@pytest.mark.parametrize("shape, k", [((2, 3, 4, 4), 5), ((3, 2, 2, 3), 4)])
def test_straight_through_and_both_losses_match_the_hand_backward(shape, k):
    """A conv decoder, the Bernoulli likelihood, the codebook loss and beta * the commitment
    loss: autograd through z_e + (z_q - z_e).detach() against the hand-written chain."""
    rng = np.random.default_rng(1)
    z_e, codebook = rng.standard_normal(shape), rng.standard_normal((k, shape[1]))
    n, d, h, w = shape
    x = rng.uniform(0, 1, (n, 4 * h * w))
    layers = [Layer("conv", "dec.0", (4, d, 3, 3), stride=1, padding=1), Layer("relu"),
              Layer("conv_transpose", "dec.out", (4, 1, 4, 4), stride=2, padding=1),
              Layer("reshape", shape=(-1,))]
    net = Network(layers, None, None)
    params = {}
    net.init_params(rng, params)
    beta = vq.COMMITMENT_BETA

    # NumPy, by hand
    z_q, cache = vq.VectorQuantizer.forward(z_e, codebook)
    logits, caches = net.forward(params, z_q)
    per_example = (-dist.bernoulli_log_likelihood(x, logits)
                   + vq.codebook_loss(z_e, codebook, cache.codes)
                   + beta * vq.commitment_loss(z_e, codebook, cache.codes))
    dn = np.full(n, 1.0 / n)
    dz_q = net.backward(dist.bernoulli_log_likelihood_backward(-dn, x, logits), caches, {})
    dz_e = (vq.VectorQuantizer.backward(dz_q, cache)
            + vq.commitment_loss_backward(beta * dn, z_e, codebook, cache.codes))
    dcodebook = vq.codebook_loss_backward(dn, z_e, codebook, cache.codes)

    # torch, by autograd
    F = torch.nn.functional
    t_z_e, t_codebook = _t(z_e, grad=True), _t(codebook, grad=True)
    t_z_q, t_codes = tq.vector_quantize(t_z_e, t_codebook)
    hidden = F.relu(F.conv2d(t_z_q, _t(params["dec.0.W"]), _t(params["dec.0.b"]), padding=1))
    t_logits = F.conv_transpose2d(hidden, _t(params["dec.out.W"]), _t(params["dec.out.b"]),
                                  stride=2, padding=1).reshape(n, -1)
    recon = F.binary_cross_entropy_with_logits(t_logits, _t(x), reduction="none").sum(1)
    t_per_example = (recon + tq.codebook_loss(t_z_e, t_codebook, t_codes)
                     + beta * tq.commitment_loss(t_z_e, t_codebook, t_codes))
    t_per_example.mean().backward()

    assert rel_error(t_per_example.detach().numpy(), per_example) < TOL
    assert rel_error(t_z_e.grad.numpy(), dz_e) < TOL
    assert rel_error(t_codebook.grad.numpy(), dcodebook) < TOL


def test_each_loss_sends_its_gradient_to_one_side_only():
    rng = np.random.default_rng(2)
    t_z, t_codebook = _t(rng.standard_normal((2, 3, 4, 4)), True), _t(
        rng.standard_normal((5, 3)), True)
    codes = tq.vector_quantize(t_z, t_codebook)[1]
    tq.codebook_loss(t_z, t_codebook, codes).sum().backward()
    assert t_z.grad is None and t_codebook.grad.abs().sum() > 0
    t_codebook.grad = None
    tq.commitment_loss(t_z, t_codebook, codes).sum().backward()
    assert t_codebook.grad is None and t_z.grad.abs().sum() > 0


def test_ema_update_matches():
    rng = np.random.default_rng(3)
    codebook, z = rng.standard_normal((6, 3)), rng.standard_normal((4, 3, 5, 5))
    size, total = vq.ema_init(codebook)
    size[2], total[2] = 0.0, 0.0
    codes = vq.VectorQuantizer.forward(z, codebook)[1].codes
    want = vq.ema_update(size, total, z, codes, decay=0.9, eps=1e-3)
    got = tq.ema_update(_t(size), _t(total), _t(z), torch.tensor(codes), decay=0.9, eps=1e-3)
    for g, w in zip(got, want, strict=True):
        assert rel_error(g.numpy(), w) < TOL


@pytest.mark.parametrize("shape, levels", [((2, 3, 4, 4), (4, 4, 4)), ((6, 2), (5, 2)),
                                           ((1, 4, 3, 3), (8, 5, 5, 5))])
def test_fsq_matches(shape, levels):
    rng = np.random.default_rng(4)
    z, g = rng.standard_normal(shape) * 1.5, rng.standard_normal(shape)
    z.reshape(-1)[:4] = [40.0, -40.0, 25.0, -25.0]  # tanh rounds to +-1: the clipped levels
    z_q, cache = vq.FSQ.forward(z, levels)
    t_z = _t(z, grad=True)
    t_z_q, t_codes = tq.fsq(t_z, levels)
    assert rel_error(t_z_q.detach().numpy(), z_q) < TOL
    np.testing.assert_array_equal(t_codes.numpy(), vq.fsq_codes(cache))
    (t_z_q * _t(g)).sum().backward()
    assert rel_error(t_z.grad.numpy(), vq.FSQ.backward(g, cache)) < TOL
