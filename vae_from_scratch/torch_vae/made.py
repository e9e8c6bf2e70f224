"""The masked network of ``made.py`` in PyTorch, with autograd in place of the hand backward.

It reads the masks and the parameter names of a NumPy :class:`~vae_from_scratch.made.MADE`,
so the two compute the same function from the same ``params`` (as tensors here); the tests
compare outputs and gradients to float64 round-off. Like the other ``torch_*`` modules, it is
the only kind of module that imports torch.
"""

from __future__ import annotations

import torch

from vae_from_scratch.made import MADE

_ACTIVATIONS = {"relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid}


class TorchMADE:
    """The forward of a NumPy :class:`MADE` on torch tensors.

    made: the NumPy MADE (its masks, degrees, activation and parameter names).
    ``forward(params, x, context=None)``: params a dict name -> tensor with the NumPy
    names; x (N, D_in), context (N, C) -> out (N, D_out).
    """

    def __init__(self, made: MADE) -> None:
        self.made = made
        self._masks = {}  # (dtype, device) -> list of mask tensors

    def masks(self, like: torch.Tensor) -> list[torch.Tensor]:
        """The masks as tensors of ``like``'s dtype and device (built once for each)."""
        key = (like.dtype, like.device)
        if key not in self._masks:
            self._masks[key] = [torch.as_tensor(m, dtype=like.dtype, device=like.device)
                                for m in self.made.masks]
        return self._masks[key]

    def forward(self, params: dict, x: torch.Tensor, context: int = None) -> torch.Tensor:
        made = self.made
        act = _ACTIVATIONS[made.activation]
        masks = self.masks(x)
        h = x
        for i, m in enumerate(masks):
            h = h @ (params[f"{made.name}.{i}.W"] * m) + params[f"{made.name}.{i}.b"]
            if i == 0 and made.context_dim:
                h = h + context @ params[f"{made.name}.context.W"]
            if i < len(masks) - 1:
                h = act(h)
        return h

    __call__ = forward
