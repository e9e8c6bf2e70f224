"""The course's figures: loss curves, image grids, the 2-D latent space (lesson 05).

Every function returns a matplotlib Figure drawn in the course style (white background,
dark text: readable in light and dark themes). ``vae_from_scratch.course.files.save_figures``
writes them as PNG files.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from statistics import NormalDist
from typing import TYPE_CHECKING, Any

import numpy as np

from vae_from_scratch.style import PALETTE, course_rc, show_digits

if TYPE_CHECKING:  # matplotlib is imported when a figure is drawn
    from matplotlib.figure import Figure


def _styled(draw):
    """Run a drawing function inside the course style, whatever the global rcParams."""

    @functools.wraps(draw)
    def wrapper(*args, **kwargs):
        import matplotlib.pyplot as plt

        with plt.rc_context(course_rc()):
            return draw(*args, **kwargs)

    return wrapper


def _figure(**kwargs):
    import matplotlib.pyplot as plt

    return plt.figure(**kwargs)


@_styled
def loss_curves(history: Any) -> Figure:
    """Train and test negative ELBO per epoch, and its two parts on the test set.

    history: a train.History or its ``as_dict()``.
    """
    h = history if isinstance(history, dict) else history.as_dict()
    fig = _figure(figsize=(10, 3.8))
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(h["epoch"], h["train_nelbo"], label="train", color=PALETTE[0])
    if h.get("test_nelbo"):
        ax1.plot(h["epoch"], h["test_nelbo"], label="test", color=PALETTE[1])
    ax1.set(title="Negative ELBO", xlabel="epoch", ylabel="nats per example")
    ax1.grid(True)
    ax1.legend()
    split = "test" if h.get("test_recon") else "train"
    ax2.plot(h["epoch"], h[f"{split}_recon"], label="reconstruction", color=PALETTE[2])
    ax2.plot(h["epoch"], h[f"{split}_kl"], label="KL", color=PALETTE[3])
    ax2.set(title=f"The two terms ({split} set)", xlabel="epoch", ylabel="nats per example")
    ax2.grid(True)
    ax2.legend()
    from matplotlib.ticker import MaxNLocator

    for ax in (ax1, ax2):  # ticks at whole epochs: there is no epoch 1.5
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig


def one_per_class(labels: np.ndarray, seed: int = 1) -> np.ndarray:
    """Indices of one example of each class, in class order, each drawn at random (seeded)
    among that class's examples: ``rng.choice`` of each class's indices in turn with
    ``np.random.default_rng(seed)``, as lesson 05 picks its test digits. labels (N,) ints;
    every class 0..max(labels) must appear."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    picks = []
    for k in range(int(labels.max()) + 1):
        members = np.flatnonzero(labels == k)
        if members.size == 0:
            raise ValueError(f"no example of class {k}: every class 0..{labels.max()} must "
                             "appear")
        picks.append(rng.choice(members))
    return np.array(picks)


@_styled
def reconstructions(x: np.ndarray, x_recon: np.ndarray, n: int = 10) -> Figure:
    """Originals (top row) above their reconstructions (bottom row). x, x_recon (N, 784)."""
    n = min(n, len(x))
    fig = _figure(figsize=(n * 0.9, 2.2))
    show_digits(
        fig,
        np.concatenate([x[:n], x_recon[:n]]),
        ncols=n,
        title="Test digits (top) and their reconstructions (bottom)",
    )
    return fig


@_styled
def samples(images: np.ndarray, ncols: int = 10, title: str = "Samples from the prior") -> Figure:
    """A grid of generated images (N, 784)."""
    nrows = -(-len(images) // ncols)
    fig = _figure(figsize=(ncols * 0.8, nrows * 0.8 + 0.5))
    show_digits(fig, images, ncols=ncols, title=title)
    return fig


@_styled
def latent_scatter(mu: np.ndarray, labels: np.ndarray,
                   title: str = "Test set in the latent space (posterior means)",
                   grid: np.ndarray | None = None) -> Figure:
    """mu (N, 2) coloured by digit label (N,). ``grid``: the latent values of a decoded grid
    (``gaussian_quantile_grid(n)``, as ``latent_manifold`` draws it); a dashed square marks
    its extent, so the two figures can be matched."""
    import matplotlib as mpl
    from matplotlib.patches import Rectangle

    fig = _figure(figsize=(6.2, 5.2))
    ax = fig.add_subplot()
    cmap = mpl.colormaps["tab10"]
    points = ax.scatter(
        mu[:, 0], mu[:, 1], c=labels, cmap=cmap, vmin=-0.5, vmax=9.5, s=8, alpha=0.8, linewidths=0
    )
    fig.colorbar(points, ax=ax, ticks=range(10), label="digit")
    if grid is not None:
        low, high = float(np.min(grid)), float(np.max(grid))
        ax.add_patch(Rectangle((low, low), high - low, high - low, fill=False, linestyle="--",
                               linewidth=1.2, edgecolor="#222222",
                               label=f"decoded grid, $z_i \\in$ [{low:.2f}, {high:.2f}]"))
        ax.legend(loc="upper right")
    ax.set(title=title, xlabel="$z_1$", ylabel="$z_2$")
    ax.grid(True)
    return fig


def gaussian_quantile_grid(n: int = 15, low: float = 0.05, high: float = 0.95) -> np.ndarray:
    """n values of the standard normal's inverse CDF at evenly spaced probabilities, so
    each cell of the decoded grid covers the same prior mass."""
    return np.array([NormalDist().inv_cdf(p) for p in np.linspace(low, high, n)])


@_styled
def latent_manifold(vae: Any, n: int = 15, labels: Sequence[int] | None = None) -> Figure:
    """Decode an n x n grid of latent points over Gaussian quantiles (2-D latent only).

    A conditional VAE decodes the grid once per label, one panel each: ``labels`` (default
    every class) says which. Every panel covers the same z, the square that
    ``latent_scatter(..., grid=gaussian_quantile_grid(n))`` marks."""
    if vae.latent_dim != 2:
        raise ValueError(f"the manifold grid needs a 2-D latent space, got {vae.latent_dim}")
    n_classes = vae.config.n_classes
    if labels is not None and not n_classes:
        raise ValueError("labels: this VAE is not conditional (n_classes=None)")
    q = gaussian_quantile_grid(n)
    z1, z2 = np.meshgrid(q, q[::-1])  # z2 grows upwards, as on a plot's y axis
    z = np.stack([z1.ravel(), z2.ravel()], axis=1).astype(vae.dtype)
    title = f"Decoded {n}x{n} grid over Gaussian quantiles of $z$"
    if not n_classes:
        fig = _figure(figsize=(7, 7.4))
        _manifold_panel(fig.add_subplot(), vae.decode_mean(z), q, title)
        return fig
    labels = list(range(n_classes)) if labels is None else [int(k) for k in labels]
    ncols = min(5, len(labels))
    nrows = -(-len(labels) // ncols)
    fig = _figure(figsize=(3.4 * ncols, 3.6 * nrows + 0.4))
    fig.suptitle(f"{title}, one panel per label", fontweight="bold")
    for i, k in enumerate(labels):
        images = vae.decode_mean(z, np.full(len(z), k))
        _manifold_panel(fig.add_subplot(nrows, ncols, i + 1), images, q, f"label {k}",
                        ticks=i == (nrows - 1) * ncols)  # z values on the bottom-left panel
    return fig


def _manifold_panel(ax: Any, images: np.ndarray, q: np.ndarray, title: str,
                    ticks: bool = True) -> None:
    """One decoded grid on ``ax``; ticks at the tiles' centres, labelled with the z each tile
    decodes, so the grid can be matched to the latent scatter."""
    n = len(q)
    show_digits(ax, images, ncols=n, gap=0, title=title)
    if not ticks:
        return
    rows, cols = ax.images[0].get_array().shape[:2]
    labels = [f"{round(v, 2) + 0.0:.2f}" for v in q]  # + 0.0: "0.00", not "-0.00"
    ax.set_xticks(cols / n * (np.arange(n) + 0.5) - 0.5, labels, rotation=90, fontsize=7)
    ax.set_yticks(rows / n * (np.arange(n) + 0.5) - 0.5, labels[::-1], fontsize=7)
    ax.set(xlabel="$z_1$", ylabel="$z_2$")
