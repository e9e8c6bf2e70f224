"""The PyTorch mirror agrees with the hand-written NumPy VAE.

With the same parameters and the same noise eps, the torch loss and every autograd
gradient equal ``VAE.loss_and_grads`` to a relative error (``gradcheck.rel_error``) of
1e-10 in float64 and 1e-4 in float32, for every configuration the gradient checks cover;
200 Adam steps on the same batches end with the same parameters; checkpoints move between
the two exactly.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.parity import assert_parity, one_thread, torch  # noqa: F401
from vae_from_scratch.course.checkpoint import (  # noqa: E402
    load_torch_vae,
    load_vae,
    save_checkpoint,
)
from vae_from_scratch.evaluate import negative_elbo  # noqa: E402
from vae_from_scratch.gradcheck import rel_error  # noqa: E402
from vae_from_scratch.optim import Adam  # noqa: E402
from vae_from_scratch.torch_vae import (  # noqa: E402
    TorchLossTerms,
    TorchVAE,
    default_device,
    torch_adam,
)
from vae_from_scratch.torch_vae import negative_elbo as torch_negative_elbo  # noqa: E402
from vae_from_scratch.vae import VAE  # noqa: E402

pytestmark = [pytest.mark.lesson06, pytest.mark.torch]


# (id, VAE keyword arguments): every option the NumPy gradient checks cover.
CONFIGS = [
    ("h5-relu-bern-analytic-L2", dict(hidden_dims=(5,), latent_dim=2)),
    (
        "h75-tanh-bern-mc-L1",
        dict(hidden_dims=(7, 5), activation="tanh", kl="monte_carlo", latent_dim=1),
    ),
    (
        "h75-relu-gauss-fixed-L20-beta",
        dict(hidden_dims=(7, 5), likelihood="gaussian", obs_var=0.5, latent_dim=20, beta=0.5),
    ),
    (
        "h5-tanh-gauss-learned-mc-L2",
        dict(
            hidden_dims=(5,),
            activation="tanh",
            likelihood="gaussian",
            obs_var="learned",
            kl="monte_carlo",
            latent_dim=2,
            beta=2.5,
        ),
    ),
    (
        "h75-relu-bern-mixture-L2",
        dict(hidden_dims=(7, 5), prior="mixture", n_components=3, latent_dim=2),
    ),
    (
        "h5-tanh-gauss-learned-mixture-L20",
        dict(
            hidden_dims=(5,),
            activation="tanh",
            likelihood="gaussian",
            obs_var="learned",
            prior="mixture",
            n_components=4,
            latent_dim=20,
            beta=0.7,
        ),
    ),
    ("h75-tanh-bern-analytic-L20", dict(hidden_dims=(7, 5), activation="tanh", latent_dim=20)),
    ("h5-relu-cb-analytic-L2", dict(hidden_dims=(5,), likelihood="continuous_bernoulli",
                                    latent_dim=2)),
    ("h75-tanh-cb-mixture-L3", dict(hidden_dims=(7, 5), activation="tanh",
                                    likelihood="continuous_bernoulli", prior="mixture",
                                    n_components=3, latent_dim=3, beta=0.6)),
    (
        "h5-relu-gauss-fixed-mc-L1",
        dict(hidden_dims=(5,), likelihood="gaussian", obs_var=2.0, kl="monte_carlo", latent_dim=1),
    ),
    ("h6432-relu-bern-analytic-L20", dict(input_dim=30, hidden_dims=(64, 32), latent_dim=20)),
    (
        "h6432-tanh-gauss-learned-mixture-L2",
        dict(
            input_dim=30,
            hidden_dims=(64, 32),
            activation="tanh",
            likelihood="gaussian",
            obs_var="learned",
            prior="mixture",
            n_components=5,
            latent_dim=2,
            beta=0.25,
        ),
    ),
]


def make_case(kwargs, dtype, n=9, seed=0):
    """A NumPy VAE with perturbed parameters (so no parameter sits at its initial zero),
    a batch x and noise eps, all in ``dtype``."""
    kwargs = {"input_dim": 12, **kwargs}
    vae = VAE(**kwargs, seed=seed, dtype=dtype)
    rng = np.random.default_rng(seed + 100)
    for value in vae.params.values():
        value += (0.1 * rng.standard_normal(value.shape)).astype(dtype)
    x = rng.random((n, vae.config.input_dim)).astype(dtype)
    if vae.config.likelihood == "bernoulli":
        x[: n // 2] = (x[: n // 2] > 0.5).astype(dtype)  # binary rows and grey rows
    eps = rng.standard_normal((n, vae.latent_dim)).astype(dtype)
    return vae, x, eps


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("kwargs", [c[1] for c in CONFIGS], ids=[c[0] for c in CONFIGS])
def test_loss_and_every_gradient_match_numpy(kwargs, dtype):
    vae, x, eps = make_case(kwargs, dtype)
    tvae = TorchVAE.from_numpy(vae, device="cpu")
    assert tvae.dtype == {np.float64: torch.float64, np.float32: torch.float32}[dtype]
    assert_parity(vae, x, eps, tvae=tvae)


def test_continuous_bernoulli_parity_near_zero_logits():
    vae = VAE(12, (5,), 2, likelihood="continuous_bernoulli", seed=3, dtype=np.float64)
    rng = np.random.default_rng(7)
    vae.params["dec.out.W"] = 1e-5 * rng.standard_normal((5, 12))
    vae.params["dec.out.b"] = 1e-5 * rng.standard_normal(12)
    x, eps = rng.random((9, 12)), rng.standard_normal((9, 2))
    assert np.abs(vae.decode(vae.encode(x)[0])).max() < 1e-4
    assert_parity(vae, x, eps, tol=1e-10)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def test_beta_override_matches_numpy(dtype):
    vae, x, eps = make_case(dict(hidden_dims=(7, 5), prior="mixture", n_components=3), dtype)
    assert_parity(vae, x, eps, beta=0.3)


@pytest.mark.parametrize(
    "kwargs",
    [CONFIGS[0][1], CONFIGS[3][1], CONFIGS[4][1]],
    ids=["standard", "learned-var", "mixture"],
)
def test_per_example_terms_and_encode_decode_match(kwargs):
    vae, x, eps = make_case(kwargs, np.float64)
    tvae = TorchVAE.from_numpy(vae, device="cpu")
    modes = [None, "monte_carlo"] + (["analytic"] if vae.config.prior == "standard" else [])
    for kl in modes:
        recon_np, kl_np = vae.elbo_terms(x, eps, kl=kl)
        recon_t, kl_t = tvae.elbo_terms(x, eps, kl=kl)
        assert rel_error(recon_np, recon_t.detach().numpy()) < 1e-12
        assert rel_error(kl_np, kl_t.detach().numpy()) < 1e-12
    mu_np, lv_np = vae.encode(x)
    mu_t, lv_t = tvae.encode(x)
    assert rel_error(mu_np, mu_t.detach().numpy()) < 1e-12
    assert rel_error(lv_np, lv_t.detach().numpy()) < 1e-12
    assert rel_error(vae.decode(eps), tvae.decode(eps).detach().numpy()) < 1e-12
    assert rel_error(vae.reconstruct(x), tvae.reconstruct(x).numpy()) < 1e-12


def test_negative_elbo_uses_the_same_noise_as_numpy():
    vae, x, _ = make_case(
        dict(hidden_dims=(7, 5), prior="mixture", n_components=3), np.float64, n=25
    )
    tvae = TorchVAE.from_numpy(vae, device="cpu")
    expected = negative_elbo(vae, x, seed=7, batch_size=10)
    got = torch_negative_elbo(tvae, x, seed=7, batch_size=10)
    assert rel_error(expected, got) < 1e-12


def test_loss_terms_are_torch_scalars_and_floats():
    vae, x, eps = make_case(CONFIGS[0][1], np.float32)
    terms = TorchVAE.from_numpy(vae, device="cpu").loss(x, eps)
    assert isinstance(terms, TorchLossTerms)
    assert all(t.ndim == 0 for t in (terms.loss, terms.recon, terms.kl))
    floats = terms.to_floats()
    assert floats.loss == pytest.approx(floats.recon + floats.kl, rel=1e-6)


@pytest.mark.parametrize("fused", [False, True], ids=["adam", "backend-adam"])
def test_two_hundred_adam_steps_match_numpy_adam(fused):
    """Same batches, same noise, float64: the hand-written Adam and torch.optim.Adam (as
    written by hand, and as TorchBackend builds it, fused where possible) end within 1e-8
    (relative) of each other."""
    vae = VAE(input_dim=20, hidden_dims=(7, 5), latent_dim=2, seed=3, dtype=np.float64)
    tvae = TorchVAE.from_numpy(vae, device="cpu")
    initial = vae.params["enc.0.W"].copy()
    opt_np = Adam(vae.params, lr=1e-2)
    if fused:
        opt_t = torch_adam(list(tvae.parameters()), 1e-2)
    else:
        opt_t = torch.optim.Adam(tvae.parameters(), lr=1e-2)
    rng = np.random.default_rng(0)
    data = (rng.random((64, 20)) < 0.3).astype(np.float64)
    for _ in range(200):
        idx = rng.choice(len(data), size=16, replace=False)
        x, eps = data[idx], rng.standard_normal((16, 2))
        _, grads = vae.loss_and_grads(x, eps)
        opt_np.step(grads)
        opt_t.zero_grad()
        tvae.loss(torch.from_numpy(x), torch.from_numpy(eps)).loss.backward()
        opt_t.step()
    assert rel_error(vae.params["enc.0.W"], initial) > 1e-2  # the parameters did move
    for name, p in tvae.params.items():
        err = rel_error(vae.params[name], p.detach().numpy())
        assert err < 1e-8, f"{name}: relative difference {err:.3g} after 200 steps"


# --- conversion and checkpoints ------------------------------------------------------------


ALL_PARAMS = dict(
    hidden_dims=(7, 5),
    likelihood="gaussian",
    obs_var="learned",
    prior="mixture",
    n_components=3,
    latent_dim=4,
)


def assert_same_model(a, b):
    assert a.config == b.config
    assert set(a.params) == set(b.params)
    for name, value in a.params.items():
        assert b.params[name].dtype == value.dtype
        assert np.array_equal(b.params[name], value), name


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def test_numpy_to_torch_to_numpy_is_exact(dtype):
    vae, _, _ = make_case(ALL_PARAMS, dtype)
    tvae = TorchVAE.from_numpy(vae, device="cpu")
    assert set(tvae.params) == set(vae.params)
    for name, p in tvae.params.items():
        assert tuple(p.shape) == vae.params[name].shape
        assert np.array_equal(p.detach().numpy(), vae.params[name])
    assert_same_model(vae, tvae.to_numpy())
    # the names map to the ParameterDict keys, dots replaced
    assert "weights.enc__0__W" in dict(tvae.named_parameters())  # '.' -> '__' inside


def test_copies_do_not_share_memory():
    vae, _, _ = make_case(CONFIGS[0][1], np.float32)
    before = vae.params["enc.0.W"].copy()
    tvae = TorchVAE.from_numpy(vae, device="cpu")
    with torch.no_grad():
        tvae.params["enc.0.W"].add_(1.0)
    assert np.array_equal(vae.params["enc.0.W"], before)
    back = tvae.to_numpy()
    with torch.no_grad():
        tvae.params["enc.0.W"].add_(1.0)
    assert not np.array_equal(back.params["enc.0.W"], tvae.params["enc.0.W"].detach().numpy())


def test_same_seed_same_initial_parameters_as_numpy():
    vae = VAE(input_dim=12, **ALL_PARAMS, seed=5, dtype=np.float64)
    tvae = TorchVAE(input_dim=12, **ALL_PARAMS, seed=5, dtype=torch.float64, device="cpu")
    assert_same_model(vae, tvae.to_numpy())


def test_dtype_conversion_updates_the_configuration():
    vae, _, _ = make_case(CONFIGS[0][1], np.float32)
    t64 = TorchVAE.from_numpy(vae, device="cpu", dtype=torch.float64)
    assert t64.dtype == torch.float64 and t64.config.dtype == "float64"
    assert t64.to_numpy().dtype == np.float64
    with pytest.raises(ValueError, match="float32 or float64"):
        TorchVAE.from_numpy(vae, device="cpu", dtype=torch.float16)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def test_checkpoints_cross_between_backends(tmp_path, dtype):
    vae, _, _ = make_case(ALL_PARAMS, dtype)
    # NumPy writes, torch reads
    save_checkpoint(tmp_path / "np.safetensors", vae, {"epoch": 3})
    tvae = load_torch_vae(tmp_path / "np.safetensors", device="cpu")
    assert_same_model(vae, tvae.to_numpy())
    # torch writes, NumPy reads
    with torch.no_grad():
        tvae.params["dec.log_var"].add_(0.125)
    save_checkpoint(tmp_path / "torch.safetensors", tvae, {"epoch": 4})
    back = load_vae(tmp_path / "torch.safetensors")
    assert_same_model(tvae.to_numpy(), back)
    assert back.params["dec.log_var"][0] == vae.params["dec.log_var"][0] + dtype(0.125)


# --- input checks ------------------------------------------------------------------------------


def test_inputs_are_checked_like_the_numpy_model():
    vae, x, eps = make_case(CONFIGS[0][1], np.float64)
    tvae = TorchVAE.from_numpy(vae, device="cpu")
    with pytest.raises(ValueError, match=r"shape \(N, 12\)"):
        tvae.loss(x[:, :5], eps)
    with pytest.raises(ValueError, match="empty"):
        tvae.loss(x[:0], eps[:0])
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        tvae.loss(bad, eps)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        tvae.loss(x * 2.0, eps)
    with pytest.raises(ValueError, match="eps must have shape"):
        tvae.loss(x, eps[:-1])
    with pytest.raises(ValueError, match="eps contains NaN"):
        tvae.loss(x, np.full_like(eps, np.inf))
    with pytest.raises(ValueError, match="unknown kl"):
        tvae.elbo_terms(x, eps, kl="exact")
    with pytest.raises(ValueError, match="z must have shape"):
        tvae.decode(np.zeros((3, 5)))
    mixture = TorchVAE.from_numpy(make_case(CONFIGS[4][1], np.float64)[0], device="cpu")
    with pytest.raises(ValueError, match="no analytic KL"):
        mixture.elbo_terms(x, eps, kl="analytic")
    with pytest.raises(ValueError, match="unknown activation"):
        TorchVAE(activation="gelu", device="cpu")
    with pytest.raises(ValueError, match="missing"):
        TorchVAE(
            input_dim=12, hidden_dims=(5,), params={"enc.0.W": np.zeros((12, 5))}, device="cpu"
        )


def test_default_device_and_sampling():
    device = default_device()
    if torch.cuda.is_available():
        assert device.type == "cuda"
    elif torch.backends.mps.is_available():
        assert device.type == "mps"
    else:
        assert device == torch.device("cpu")
    for kwargs in (CONFIGS[0][1], CONFIGS[4][1]):
        tvae = TorchVAE(input_dim=12, **kwargs, device="cpu")
        a, b = tvae.sample(6, seed=1), tvae.sample(6, seed=1)
        assert a.shape == (6, 12) and torch.equal(a, b)
        assert float(a.min()) >= 0 and float(a.max()) <= 1
        assert tvae.sample_prior(4, seed=torch.Generator().manual_seed(2)).shape == (4, 2)
    assert "12 -> 7 -> 5 -> 2" in repr(TorchVAE(input_dim=12, **CONFIGS[4][1], device="cpu"))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
@pytest.mark.parametrize("kwargs", [c[1] for c in CONFIGS], ids=[c[0] for c in CONFIGS])
def test_parity_on_cuda_in_float64(kwargs):
    vae, x, eps = make_case(kwargs, np.float64)
    tvae = TorchVAE.from_numpy(vae, device="cuda")
    assert tvae.device.type == "cuda"
    terms_np, grads_np = vae.loss_and_grads(x, eps)
    terms = tvae.loss(torch.from_numpy(x).cuda(), torch.from_numpy(eps).cuda())
    terms.loss.backward()
    assert rel_error(terms_np.loss, float(terms.loss)) < 1e-10
    for name, p in tvae.params.items():
        assert rel_error(grads_np[name], p.grad.cpu().numpy()) < 1e-10, name
    assert_same_model(vae, TorchVAE.from_numpy(vae, device="cuda").to_numpy())


@pytest.mark.slow  # times a training epoch of each backend on the embedded data
def test_run_compare_reports_agreement():
    from vae_from_scratch.course.compare import run_compare

    lines = []
    result = run_compare(seed=1, steps=30, device="cpu", print_fn=lines.append)
    text = "\n".join(lines)
    assert "d loss / d enc.0.W" in text and "Time per epoch" in text
    assert result["parity"]["float64"]["max_grad"] < 1e-10
    assert result["parity"]["float32"]["max_grad"] < 1e-4
    assert result["parity"]["float64"]["loss"] < 1e-10
    assert result["trajectory"]["step"] == [1, 25, 30]
    assert result["trajectory"]["final_max_param_rel"] < 1e-8
    assert set(result["epoch_seconds"]) == {"numpy", "torch_cpu"}
    assert all(s > 0 for s in result["epoch_seconds"].values())


@pytest.mark.slow  # times a training epoch of each backend on the embedded data
@pytest.mark.lesson08
@pytest.mark.lesson09
def test_compare_takes_the_conv_conditional_and_continuous_bernoulli_models(capsys):
    from vae_from_scratch.course.cli import main

    code = main(["compare", "--device", "cpu", "--steps", "3", "--architecture", "conv",
                 "--channels", "4,8", "--likelihood", "continuous_bernoulli", "--conditional"])
    assert code == 0
    out = capsys.readouterr().out
    assert "conv (1, 28, 28) channels (4, 8)" in out and "continuous_bernoulli" in out
    assert "n_classes=10" in out and "(4, 11, 4, 4)" in out  # the label's planes
    largest = next(line for line in out.splitlines() if "largest (gradients)" in line)
    assert float(largest.split()[-2]) < 1e-10
