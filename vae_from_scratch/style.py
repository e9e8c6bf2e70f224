"""The course's figure style, readable in light and dark JupyterLab themes alike.

Every figure is drawn on a solid white background with dark text, so it looks the same
whatever the theme behind it (a transparent figure with dark text vanishes in a dark
theme). Lines and bars use the Okabe-Ito palette, which stays distinguishable for the
common kinds of colour blindness; images use ``viridis`` (also colour-blind safe) and
digits are drawn dark on light, like ink on paper.

    from vae_from_scratch.style import use_course_style, show_digits
    use_course_style()
    fig, ax = plt.subplots()
    show_digits(ax, ds.x_train[:20], ncols=10, title="The first 20 training digits")
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["PALETTE", "TEXT", "use_course_style", "course_rc", "show_digits"]

#: Okabe-Ito colours (without its yellow, which is too faint on white), in cycle order.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000"]

#: Text and axis colour: near-black on the white figure.
TEXT = "#222222"


def course_rc() -> dict:
    """The rcParams the course uses (a plain dict, handy for ``plt.rc_context``)."""
    from cycler import cycler

    return {
        "figure.facecolor": "white",
        "figure.edgecolor": "white",
        "axes.facecolor": "white",
        "savefig.facecolor": "white",
        "savefig.edgecolor": "white",
        "savefig.transparent": False,
        "figure.figsize": (6.4, 4.0),
        "figure.dpi": 100,
        "savefig.dpi": 150,
        "figure.constrained_layout.use": True,
        "font.size": 10,
        "axes.titlesize": 12,
        "axes.titleweight": "bold",
        "axes.labelsize": 10,
        "text.color": TEXT,
        "axes.labelcolor": TEXT,
        "axes.titlecolor": TEXT,
        "axes.edgecolor": "#555555",
        "xtick.color": TEXT,
        "ytick.color": TEXT,
        "axes.prop_cycle": cycler(color=PALETTE),
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.grid": False,  # off so images get no grid; ax.grid(True) where it helps
        "grid.color": "#d9d9d9",
        "grid.linewidth": 0.6,
        "axes.axisbelow": True,
        "lines.linewidth": 1.8,
        "legend.frameon": False,
        "image.cmap": "viridis",
        "image.interpolation": "nearest",
    }


def use_course_style() -> None:
    """Apply the course style to every figure made from now on in this process."""
    import matplotlib as mpl

    mpl.rcParams.update(course_rc())


def _as_images(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images, dtype=np.float64)
    if images.ndim == 2:
        side = math.isqrt(images.shape[1])
        if side * side != images.shape[1]:
            raise ValueError(f"cannot make square images of {images.shape[1]} pixels")
        images = images.reshape(len(images), side, side)
    if images.ndim != 3:
        raise ValueError(f"expected (n, pixels) or (n, h, w) images, got shape {images.shape}")
    return images


def show_digits(
    ax_or_fig: Any,
    images: np.ndarray,
    ncols: int = 10,
    labels: Sequence | None = None,
    title: str | None = None,
    gap: int = 2,
    vmin: float = 0.0,
    vmax: float = 1.0,
) -> Any:

    """Draw images as one grid, dark ink on light paper, and return the axes used.

    Args:
        ax_or_fig: a matplotlib Axes, or a Figure (an axes filling it is added).
        images: (n, 784) flattened or (n, h, w) images with values in [vmin, vmax].
        ncols: images per row.
        labels: optional text per image, written in its top-left corner.
        title: optional axes title.
        gap: pixels of light grey between images.
    """
    images = _as_images(images)
    n, h, w = images.shape
    ax = ax_or_fig.add_subplot() if hasattr(ax_or_fig, "add_subplot") else ax_or_fig
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    # Light grey between the images so that their edges show; blank where no image is.
    step_h, step_w = h + gap, w + gap
    canvas = np.full((nrows * step_h - gap, ncols * step_w - gap), vmin + 0.15 * (vmax - vmin))
    for i in range(nrows * ncols):
        r, c = divmod(i, ncols)
        tile = images[i] if i < n else np.full((h, w), vmin)
        canvas[r * step_h : r * step_h + h, c * step_w : c * step_w + w] = tile
    ax.imshow(canvas, cmap="gray_r", vmin=vmin, vmax=vmax, interpolation="nearest")
    if labels is not None:
        for i, label in enumerate(labels[:n]):
            r, c = divmod(i, ncols)
            ax.text(c * step_w + 1, r * step_h + 1, str(label), color="#0072B2",
                    fontsize=8, va="top", ha="left", fontweight="bold")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title is not None:
        ax.set_title(title)
    return ax
