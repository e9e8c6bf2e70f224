"""What the NumPy/PyTorch tests share: the torch preamble and one parity check.

    from tests.parity import assert_parity, one_thread, torch  # noqa: F401

Importing it at the top of a test module skips the module where PyTorch is not installed
(with the reason and the install command), and ``one_thread`` (autouse) runs its tests with
one torch thread. :func:`assert_parity` compares the hand-written NumPy loss and gradients
with torch autograd on the same parameters and noise, written here from torch's own calls
so that it does not lean on the package's comparison (``vae-course compare``).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed "
                                            "(pip install -e '.[torch]')")

from vae_from_scratch.gradcheck import rel_error  # noqa: E402
from vae_from_scratch.torch_vae import TorchVAE  # noqa: E402

#: Relative errors the two backends agree to, by dtype: float64 round-off, and float32's.
TOL = {np.float64: 1e-10, np.float32: 1e-4}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These models are tiny: one thread is fastest, and on a busy machine torch's
    multi-threaded kernels can spend far longer waiting for each other than computing."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def torch_terms_and_grads(tvae, x, eps, y=None, beta=None):
    """({loss, recon, kl} as floats, {name: gradient array}) from torch autograd."""
    tvae.zero_grad(set_to_none=True)
    y_t = None if y is None else torch.from_numpy(np.asarray(y))
    terms = tvae.loss(torch.from_numpy(x), torch.from_numpy(eps), y_t, beta=beta)
    terms.loss.backward()
    floats = {field: float(getattr(terms, field).detach()) for field in ("loss", "recon", "kl")}
    grads = {name: p.grad.detach().cpu().numpy() for name, p in tvae.params.items()}
    return floats, grads


def assert_parity(vae, x, eps, y=None, *, beta=None, tol=None, tvae=None):
    """The NumPy model's loss terms and every gradient equal torch autograd's on a copy of
    it (or on ``tvae``) to ``tol`` (default: :data:`TOL` of its dtype); returns the copy."""
    tol = TOL[vae.dtype] if tol is None else tol
    tvae = TorchVAE.from_numpy(vae, device="cpu") if tvae is None else tvae
    terms_np, grads_np = vae.loss_and_grads(x, eps, y, beta=beta)
    terms_t, grads_t = torch_terms_and_grads(tvae, x, eps, y, beta)
    for field, b in terms_t.items():
        a = getattr(terms_np, field)
        assert rel_error(a, b) < tol, f"{field}: numpy {a!r} vs torch {b!r}"
    assert set(grads_t) == set(grads_np)
    errors = {name: rel_error(grads_np[name], grads_t[name]) for name in grads_np}
    worst = max(errors, key=errors.get)
    assert errors[worst] < tol, f"gradient of {worst}: relative error {errors[worst]:.3g}"
    return tvae
