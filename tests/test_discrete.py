"""The quantized bottlenecks composed by the VAE (lesson 11): their configuration, the hand
backward of the whole model checked in float64 against central differences of the
surrogate (the loss with the code assignment frozen), the straight-through estimator's
parity with torch autograd, and the steps after the optimizer's (EMA, restarts)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vae_from_scratch import VAE
from vae_from_scratch import quantize as vq
from vae_from_scratch.config import VAEConfig
from vae_from_scratch.gradcheck import rel_error

pytestmark = pytest.mark.lesson11

SMALL = dict(architecture="conv", channels=(4, 8), dtype=np.float64)
CASES = {
    "vq": dict(bottleneck="vq", codebook_size=5, code_dim=3),
    "vq, beta and commitment": dict(bottleneck="vq", codebook_size=6, code_dim=2, beta=0.6,
                                    commitment=0.4),
    "vq, ema": dict(bottleneck="vq", codebook_size=5, code_dim=3, codebook_update="ema"),
    "fsq": dict(bottleneck="fsq", levels=(5, 4)),
    "fsq, three channels": dict(bottleneck="fsq", levels=(3, 4, 2)),
}


def _data(n=4, seed=0):
    return np.random.default_rng(seed).random((n, 784))


def _model(case, seed=0, **more):
    vae = VAE(784, seed=seed, **SMALL, **CASES[case], **more)
    if vae.config.bottleneck == "vq":  # a codebook on the encoder's outputs: several codes used
        h, _ = vae.encoder.forward(vae.params, _data(8, 1))
        rows = vq.to_rows(vae.bottleneck.z_e(vae.params, h)[0])
        pick = np.random.default_rng(seed).choice(len(rows), vae.config.codebook_size, False)
        vae.params["vq.codebook"][...] = rows[pick]
        if "vq.ema_sum" in vae.params:
            vae.params["vq.ema_sum"][...] = rows[pick]
    return vae


def _noise(vae, n):
    return np.zeros(vae.bottleneck.noise_shape(n))


def surrogate(vae, x, frozen):
    """The loss as a function of the parameters with the code assignment frozen, written
    from the definitions: the decoder reads z_e + sg[z_q - z_e] (VQ) or the bounded z_e plus
    sg[its rounding] (FSQ), the codebook loss ||sg[z_e] - e_k||^2 and the commitment loss
    ||z_e - sg[e_k]||^2 with the frozen codes k. Its gradient is what the straight-through
    estimator computes."""
    p, b, config = vae.params, vae.bottleneck, vae.config
    h, _ = vae.encoder.forward(p, x)
    z_e = b.z_e(p, h)[0]
    n = len(x)
    if config.bottleneck == "vq":
        codes, offset, z_e0, codebook0 = frozen
        z = z_e + offset
        e = vq.lookup(codes, p["vq.codebook"])
        commit = ((z_e - vq.lookup(codes, codebook0)) ** 2).reshape(n, -1).sum(1)
        charged = config.commitment * commit
        if config.codebook_update == "grad":
            charged = charged + ((z_e0 - e) ** 2).reshape(n, -1).sum(1)
    else:
        offset, levels = frozen
        z = levels / 2 * np.tanh(z_e) / ((levels - 1) / 2) + offset
        charged = np.zeros(n)
    out, _ = vae.decoder.forward(p, z.reshape(n, -1))
    recon = -vae.likelihood.log_prob(p, x, out)
    return float(np.mean(recon) + config.beta * np.mean(charged))


def freeze(vae, x):
    """What :func:`surrogate` holds fixed, at the current parameters."""
    p, b = vae.params, vae.bottleneck
    h, _ = vae.encoder.forward(p, x)
    z_e = b.z_e(p, h)[0]
    z_q, codes, _ = b.quantize(p, z_e)
    if vae.config.bottleneck == "vq":
        return codes, z_q - z_e, z_e.copy(), p["vq.codebook"].copy()
    levels = np.asarray(vae.config.levels, dtype=np.float64)[None, :, None, None]
    return z_q - levels / 2 * np.tanh(z_e) / ((levels - 1) / 2), levels


@pytest.mark.parametrize("case", CASES)
def test_hand_gradients_match_central_differences_of_the_surrogate(case):
    vae = _model(case)
    x = _data()
    eps = _noise(vae, len(x))
    terms, grads = vae.loss_and_grads(x, eps)
    frozen = freeze(vae, x)
    assert rel_error(surrogate(vae, x, frozen), terms.loss) < 1e-12  # the same value
    rng = np.random.default_rng(3)
    h = 1e-5
    for name, value in vae.params.items():
        flat = value.reshape(-1)
        for i in rng.choice(flat.size, min(flat.size, 4), replace=False):
            old = flat[i]
            flat[i] = old + h
            up = surrogate(vae, x, frozen)
            flat[i] = old - h
            down = surrogate(vae, x, frozen)
            flat[i] = old
            numeric = (up - down) / (2 * h)
            got = grads[name].reshape(-1)[i]
            assert abs(numeric - got) <= 1e-6 * max(1.0, abs(numeric)), (
                f"{case}: d loss / d {name}[{i}]: hand {got!r}, central differences "
                f"{numeric!r}")


@pytest.mark.parametrize("case", ["vq", "fsq"])
def test_the_true_derivative_is_zero_the_estimator_is_not(case):
    """A small change of the head's bias leaves every code, hence the decoder's input and
    the reconstruction, exactly as they were: the true derivative of the reconstruction is
    0, while the straight-through gradient of that bias is not."""
    vae = _model(case)
    x = _data()
    eps = _noise(vae, len(x))
    recon0, _ = vae.elbo_terms(x, eps)
    _, grads = vae.loss_and_grads(x, eps)
    vae.params["enc.code.b"] += 1e-7
    recon1, _ = vae.elbo_terms(x, eps)
    np.testing.assert_array_equal(recon0, recon1)  # bit for bit: no code moved
    assert np.max(np.abs(grads["enc.code.b"])) > 1e-3


def test_the_rate_is_log_k_per_position_and_reported_in_bits():
    vae = _model("vq")
    x = _data()
    _, kl = vae.elbo_terms(x, _noise(vae, len(x)))
    np.testing.assert_allclose(kl, 49 * math.log(5), rtol=1e-15)
    report = vae.code_report(x)
    assert report["rate_bits"] == pytest.approx(49 * math.log2(5))
    codes = vae.encode(x)[1]
    assert report["usage_perplexity"] == pytest.approx(vq.perplexity(codes, 5))
    assert report["codes_used"] == len(np.unique(codes))
    fsq = _model("fsq")
    assert fsq.code_report(x)["rate_bits"] == pytest.approx(49 * math.log2(20))


def test_the_ema_step_after_the_optimizer_is_quantize_ema_update():
    vae = _model("vq, ema")
    x = _data()
    count0, sum0 = vae.params["vq.ema_count"].copy(), vae.params["vq.ema_sum"].copy()
    vae.loss_and_grads(x, _noise(vae, len(x)))
    z_e, codes = vae.encode(x)
    expected = vq.ema_update(count0, sum0, z_e, codes)
    vae.bottleneck.after_step(vae.params, 1, np.random.default_rng(0))
    for name, want in zip(("vq.codebook", "vq.ema_count", "vq.ema_sum"), expected, strict=True):
        np.testing.assert_allclose(vae.params[name], want, rtol=1e-14, atol=0)


def test_restarts_move_the_dead_codes_onto_encoder_outputs_every_s_steps():
    vae = VAE(784, seed=0, **SMALL, bottleneck="vq", codebook_size=6, code_dim=3,
              restart_every=2)
    vae.params["vq.codebook"][1:] = 50.0  # far from every output: only code 0 is used
    x = _data()
    eps = _noise(vae, len(x))
    rng = np.random.default_rng(0)
    vae.loss_and_grads(x, eps)
    vae.bottleneck.after_step(vae.params, 1, rng)  # not yet a restart step: counts only
    assert vae.params["vq.usage"][0] == 4 * 49 and np.all(vae.params["vq.codebook"][1:] == 50)
    vae.loss_and_grads(x, eps)
    z_e = vae.bottleneck.last[0]
    code0 = vae.params["vq.codebook"][0].copy()
    vae.bottleneck.after_step(vae.params, 2, rng)
    rows = vq.to_rows(z_e)
    for k in range(1, 6):
        assert np.any(np.all(rows == vae.params["vq.codebook"][k], axis=1)), k
    np.testing.assert_array_equal(vae.params["vq.codebook"][0], code0)
    assert np.all(vae.params["vq.usage"] == 0)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("restart_below, restarted", [(0.0, [3]), (0.01, [2, 3]),
                                                       (0.3, [1, 2, 3])])
def test_a_code_below_the_share_counts_as_dead(backend, restart_below, restarted):
    """Usage since the last restart, 1000 positions: 80%, 19.5%, 0.5% and none. Share 0
    restarts the unused code only, 0.01 the sliver too, 0.3 everything but the largest."""
    vae = VAE(784, seed=0, **SMALL, bottleneck="vq", codebook_size=4, code_dim=3,
              restart_every=1, restart_below=restart_below)
    vae.params["vq.codebook"][1:] = 50.0  # far from every output: this step uses code 0 only
    vae.params["vq.usage"][...] = [800.0 - 4 * 49, 195.0, 5.0, 0.0]  # + this step's 196
    x = _data()
    if backend == "numpy":
        vae.loss_and_grads(x, _noise(vae, len(x)))
        vae.bottleneck.after_step(vae.params, 1, np.random.default_rng(0))
        codebook = vae.params["vq.codebook"]
    else:
        torch = pytest.importorskip("torch", reason="PyTorch is not installed")
        from vae_from_scratch.torch_vae import TorchVAE

        tvae = TorchVAE.from_numpy(vae, device="cpu")
        tvae.loss(torch.from_numpy(x), torch.zeros((4, 0), dtype=torch.float64))
        tvae.bottleneck.after_step(tvae.params, 1, torch.Generator().manual_seed(0))
        codebook = tvae.params["vq.codebook"].detach().numpy()
    assert list(np.flatnonzero(codebook[:, 0] != 50.0)[1:]) == restarted  # code 0 stays


def test_samples_decode_codes_drawn_uniformly():
    vae = _model("vq")
    z = vae.sample_prior(7, np.random.default_rng(0))
    assert z.shape == (7, 3 * 49)
    rows = vq.to_rows(z.reshape(7, 3, 7, 7))
    assert np.all(np.min(vq.squared_distances(rows, vae.params["vq.codebook"]), 1) < 1e-20)
    assert vae.sample(5, seed=0).shape == (5, 784)


@pytest.mark.parametrize("kwargs, message", [
    (dict(bottleneck="vq"), "needs architecture='conv'"),
    (dict(bottleneck="vq", architecture="conv", levels=(4, 4)),
     "levels belongs to bottleneck='fsq'"),
    (dict(bottleneck="fsq", architecture="conv", codebook_size=16),
     "codebook_size belongs to bottleneck='vq'; the fsq bottleneck takes none"),
    (dict(bottleneck="fsq", architecture="conv", levels=(4, 4), code_dim=3),
     "code_dim is the number of levels"),
    (dict(architecture="conv", codebook_size=16), "codebook_size belongs to bottleneck='vq'"),
    (dict(architecture="conv", levels=(4, 4)), "levels belongs to bottleneck='fsq'"),
    (dict(bottleneck="vq", architecture="conv", n_classes=10), "conditional"),
    (dict(bottleneck="vq", architecture="conv", prior="mixture"), "uniform over the codes"),
    (dict(bottleneck="vq", architecture="conv", free_bits=0.5), "free bits"),
    (dict(bottleneck="vq", architecture="conv", codebook_size=1), "integer >= 2"),
    (dict(bottleneck="fsq", architecture="conv", levels=(4, 1)), "integers >= 2"),
    (dict(bottleneck="vq", architecture="conv", codebook_update="kmeans"), "grad, ema"),
    (dict(bottleneck="ring"), "unknown bottleneck 'ring'"),
    (dict(bottleneck="vq", architecture="conv", latent_dim=2), "set code_dim"),
])
def test_configurations_that_do_not_apply_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        VAEConfig(**kwargs)


def test_defaults_are_resolved_and_round_trip():
    config = VAEConfig(architecture="conv", bottleneck="vq")
    assert (config.codebook_size, config.code_dim, config.commitment, config.codebook_update,
            config.restart_every, config.restart_below, config.latent_dim) == (
        16, 16, 0.25, "grad", 8, 0.01, 16 * 49)
    assert VAEConfig.from_dict(config.to_dict()) == config
    saved_before = {k: v for k, v in config.to_dict().items() if k != "restart_below"}
    assert VAEConfig.from_dict(saved_before).restart_below == 0.0  # the rule it was trained with
    fsq = VAEConfig(architecture="conv", bottleneck="fsq")
    assert (fsq.levels, fsq.code_dim, fsq.latent_dim) == ((4, 4), 2, 98)
    gaussian = VAEConfig()
    assert gaussian.bottleneck == "gaussian" and gaussian.codebook_size is None


def test_the_importance_weighted_bound_is_refused_with_a_reason():
    from vae_from_scratch.evaluate import iwae_nll, negative_elbo

    vae = _model("vq")
    with pytest.raises(ValueError, match="one-hot"):
        iwae_nll(vae, _data(), k=5)
    nelbo, recon, kl = negative_elbo(vae, _data())
    assert kl == pytest.approx(49 * math.log(5)) and nelbo == pytest.approx(recon + kl)


def test_eps_of_the_wrong_shape_is_refused():
    vae = _model("vq")
    with pytest.raises(ValueError, match=r"eps must have shape \(4, 0\)"):
        vae.loss(_data(), np.zeros((4, 3 * 49)))


# --- the torch mirror -------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_torch_mirror_agrees_to_round_off_straight_through_included(case):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    from vae_from_scratch.torch_vae import TorchVAE

    vae = _model(case)
    x = _data()
    eps = _noise(vae, len(x))
    terms, grads = vae.loss_and_grads(x, eps)
    tvae = TorchVAE.from_numpy(vae, device="cpu")
    t_terms = tvae.loss(torch.from_numpy(x), torch.from_numpy(eps))
    t_terms.loss.backward()
    for field in ("loss", "recon", "kl"):
        assert rel_error(getattr(terms, field), float(getattr(t_terms, field).detach())) < 1e-12
    for name, p in tvae.params.items():
        t_grad = np.zeros(p.shape) if p.grad is None else p.grad.numpy()
        assert rel_error(grads[name], t_grad) < 1e-10, name
    assert np.max(np.abs(grads["enc.code.W"])) > 0  # the straight-through path carries


def test_torch_ema_step_agrees_with_numpys():
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    from vae_from_scratch.torch_vae import TorchVAE

    vae = _model("vq, ema")
    tvae = TorchVAE.from_numpy(vae, device="cpu")
    x = _data()
    vae.loss_and_grads(x, _noise(vae, len(x)))
    tvae.loss(torch.from_numpy(x), torch.zeros((4, 0), dtype=torch.float64))
    vae.bottleneck.after_step(vae.params, 1, np.random.default_rng(0))
    tvae.bottleneck.after_step(tvae.params, 1, torch.Generator().manual_seed(0))
    for name in ("vq.codebook", "vq.ema_count", "vq.ema_sum"):
        np.testing.assert_allclose(tvae.params[name].detach().numpy(), vae.params[name],
                                   rtol=1e-12, atol=1e-15)
