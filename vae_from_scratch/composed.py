"""What lesson 12's models share: a ``vae.VAE`` for the networks, likelihood and input checks,
plus parameters of their own (a flow posterior, a second latent layer).

A composed model keeps the VAE as ``self.base`` and one parameter dict for both (the base
reads the live parameters), so that the training loop (``train.NumpyBackend``, ``fit``) and
``evaluate`` take it as they take a VAE. This composition is the first phase of lesson 12:
the second moves flows and latent depth into ``VAE`` itself as configuration.
"""

from __future__ import annotations

import numpy as np

from vae_from_scratch.vae import check_params


class ComposedVAE:
    """Base class: ``base`` (a ``vae.VAE``), ``params`` (the VAE's and the extra ones),
    ``config`` and ``dtype`` (the VAE's), the VAE's input checks."""

    def _compose(self, base, extra_shapes, init_extra, seed, stream, params):
        """Set up the parameters. extra_shapes: name -> shape of the parameters the VAE does
        not have; init_extra(rng, dict): draws them (float64) from default_rng([seed,
        stream]); params: a dict to use instead (checked: names, shapes, finite values)."""
        if params is None:
            extra = {}
            init_extra(np.random.default_rng([seed, stream]), extra)
        else:
            base.params = check_params({k: params[k] for k in base.params if k in params},
                                       base.config)
            unexpected = sorted(set(params) - set(base.params) - set(extra_shapes))
            missing = sorted(set(extra_shapes) - set(params))
            if unexpected or missing:
                raise ValueError(f"parameters do not match the configuration: missing "
                                 f"{missing}, unexpected {unexpected}")
            extra = {}
            for name, shape in extra_shapes.items():
                value = np.asarray(params[name])
                if value.shape != shape or not np.all(np.isfinite(value)):
                    raise ValueError(f"parameter {name!r} must be finite, of shape {shape}; "
                                     f"got shape {value.shape}")
                extra[name] = value
        self.base, self.config, self.dtype = base, base.config, base.dtype
        self.params = dict(base.params)
        self.params.update({k: np.array(v, dtype=self.dtype) for k, v in extra.items()})
        base.params = self.params  # one dict: the base reads the live parameters

    def param_shapes(self):
        return {k: v.shape for k, v in self.params.items()}

    # the checks the training loop calls, shared with the VAE

    def check_x(self, x, name="x"):
        return self.base.check_x(x, name)

    def check_y(self, y, n, name="y"):
        return self.base.check_y(y, n, name)

    _check_x, _check_y = check_x, check_y

    @property
    def bottleneck(self):
        """What the training loop asks of the bottleneck: the noise's shape (below)."""
        return self

    def noise_shape(self, n):
        return (n, self.latent_dim)
