"""vae_from_scratch: a Variational Autoencoder built by hand in NumPy.

Every forward pass, backward pass and reparameterized gradient is written out in
this package and checked against finite differences (see ``gradcheck``). The
PyTorch mirror lives in ``vae_from_scratch.torch_vae`` and is the only module that
imports torch.
"""

from vae_from_scratch.vae import VAE, LossTerms

__all__ = ["VAE", "LossTerms"]
__version__ = "0.1.0"
