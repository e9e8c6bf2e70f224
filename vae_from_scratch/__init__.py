"""vae_from_scratch: a Variational Autoencoder built by hand in NumPy.

Every forward pass, backward pass and reparameterized gradient is written out in
this package and checked against finite differences (see ``gradcheck``). The model stands
at the top of the package; the PyTorch mirror is the subpackage
``vae_from_scratch.torch_vae`` (the only part that imports torch), and the course's tooling
(the ``vae-course`` command, run folders, checkpoints, lesson building) is
``vae_from_scratch.course``.
"""

from vae_from_scratch.vae import VAE, LossTerms

__all__ = ["VAE", "LossTerms"]
__version__ = "0.1.0"
