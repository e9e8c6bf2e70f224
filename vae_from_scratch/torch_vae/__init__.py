"""The PyTorch mirror of the NumPy VAE (lesson 06), its training backend and devices.

The only part of the package that imports torch:

* :mod:`.mirror` -- :class:`TorchVAE`, the model of ``vae.py`` with torch tensors, whose
  gradients autograd computes; ``TorchVAE.from_numpy(vae)`` copies a NumPy model exactly;
* :mod:`.likelihoods`, :mod:`.priors`, :mod:`.bottleneck` -- one torch class for each NumPy
  one, looked up under the same names; :mod:`.distributions` -- their formulas in torch;
* :mod:`.backend` -- :class:`TorchBackend`, the fast backend of ``train.fit``;
* :mod:`.devices` -- which devices this machine has, and errors that name them.

    from vae_from_scratch.torch_vae import TorchVAE, TorchBackend
"""

from vae_from_scratch.torch_vae.backend import RECOMMENDED_GUARD_EVERY, TorchBackend, torch_adam
from vae_from_scratch.torch_vae.devices import (
    available_devices,
    default_device,
    resolve_device,
    torch_version,
)
from vae_from_scratch.torch_vae.mirror import TorchLossTerms, TorchVAE, negative_elbo

__all__ = [
    "RECOMMENDED_GUARD_EVERY",
    "TorchBackend",
    "TorchLossTerms",
    "TorchVAE",
    "available_devices",
    "default_device",
    "negative_elbo",
    "resolve_device",
    "torch_adam",
    "torch_version",
]
