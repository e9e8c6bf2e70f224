"""Tests for vae_from_scratch.plots: every figure is titled, labelled and shows its data."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from vae_from_scratch import VAE, plots  # noqa: E402
from vae_from_scratch.course.files import save_figures  # noqa: E402
from vae_from_scratch.train import History  # noqa: E402

pytestmark = pytest.mark.lesson05

PHI_INV_95 = 1.6448536269514722  # the standard normal's 95th percentile


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _history(with_test=True):
    h = History()
    for e in range(1, 4):
        h.epoch.append(e)
        h.train_loss.append(200.0 - 10 * e)
        h.train_nelbo.append(200.0 - 10 * e)
        h.train_recon.append(180.0 - 12 * e)
        h.train_kl.append(20.0 + 2 * e)
        h.seconds.append(0.5)
        if with_test:
            h.test_nelbo.append(205.0 - 9 * e)
            h.test_recon.append(185.0 - 11 * e)
            h.test_kl.append(20.0 + 2 * e)
    return h


def _titles(fig):
    return [ax.get_title() for ax in fig.axes if ax.get_title()]


def _assert_course_style(fig):
    assert isinstance(fig, Figure)
    assert matplotlib.colors.to_hex(fig.get_facecolor()) == "#ffffff"
    assert _titles(fig), "every figure has a title"


def _image(fig):
    (ax,) = [ax for ax in fig.axes if ax.images]
    return np.asarray(ax.images[0].get_array())


def test_loss_curves_plot_the_history_with_titles_and_labels():
    h = _history()
    fig = plots.loss_curves(h)
    _assert_course_style(fig)
    ax1, ax2 = fig.axes
    for ax in (ax1, ax2):
        assert ax.get_title() and ax.get_xlabel() == "epoch" and ax.get_ylabel()
    assert "test" in ax2.get_title()
    lines = {line.get_label(): line for line in ax1.lines}
    np.testing.assert_array_equal(lines["train"].get_ydata(), h.train_nelbo)
    np.testing.assert_array_equal(lines["test"].get_ydata(), h.test_nelbo)
    parts = {line.get_label(): line for line in ax2.lines}
    np.testing.assert_array_equal(parts["reconstruction"].get_ydata(), h.test_recon)
    np.testing.assert_array_equal(parts["KL"].get_ydata(), h.test_kl)
    np.testing.assert_array_equal(parts["KL"].get_xdata(), h.epoch)


def test_loss_curves_without_a_test_set_show_the_training_terms():
    h = _history(with_test=False)
    fig = plots.loss_curves(h.as_dict())  # the dict form works too
    ax1, ax2 = fig.axes
    assert [line.get_label() for line in ax1.lines] == ["train"]
    assert "train" in ax2.get_title()
    parts = {line.get_label(): line for line in ax2.lines}
    np.testing.assert_array_equal(parts["reconstruction"].get_ydata(), h.train_recon)


def test_reconstructions_put_originals_above_reconstructions():
    rng = np.random.default_rng(0)
    x, x_recon = rng.random((5, 784)), rng.random((5, 784))
    fig = plots.reconstructions(x, x_recon, n=3)
    _assert_course_style(fig)
    img = _image(fig)
    assert img.shape == (2 * 28 + 2, 3 * 28 + 2 * 2)  # 2 rows x 3 columns, 2-pixel gaps
    np.testing.assert_allclose(img[:28, :28], x[0].reshape(28, 28))
    np.testing.assert_allclose(img[30:58, 60:88], x_recon[2].reshape(28, 28))


def test_reconstructions_never_ask_for_more_images_than_given():
    rng = np.random.default_rng(1)
    fig = plots.reconstructions(rng.random((2, 784)), rng.random((2, 784)), n=10)
    assert _image(fig).shape == (58, 2 * 28 + 2)


def test_samples_grid_has_the_requested_columns():
    images = np.random.default_rng(2).random((7, 784))
    fig = plots.samples(images, ncols=3, title="Seven samples")
    _assert_course_style(fig)
    assert _titles(fig) == ["Seven samples"]
    img = _image(fig)
    assert img.shape == (3 * 28 + 2 * 2, 3 * 28 + 2 * 2)  # ceil(7 / 3) = 3 rows
    np.testing.assert_allclose(img[60:88, :28], images[6].reshape(28, 28))
    assert plots.samples(images).axes[0].get_title() == "Samples from the prior"


def test_latent_scatter_is_labelled_and_coloured_by_digit():
    rng = np.random.default_rng(3)
    mu, labels = rng.standard_normal((50, 2)), rng.integers(0, 10, 50)
    fig = plots.latent_scatter(mu, labels)
    _assert_course_style(fig)
    ax = next(ax for ax in fig.axes if ax.collections)
    assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title()
    points = ax.collections[0]
    np.testing.assert_array_equal(points.get_offsets(), mu)
    np.testing.assert_array_equal(points.get_array(), labels)
    colorbar = next(a for a in fig.axes if a is not ax)
    assert colorbar.get_ylabel() == "digit"


def test_gaussian_quantile_grid_is_symmetric_and_increasing():
    q = plots.gaussian_quantile_grid()
    assert q.shape == (15,)
    assert np.all(np.diff(q) > 0)
    np.testing.assert_allclose(q, -q[::-1], atol=1e-12)
    assert q[7] == pytest.approx(0.0, abs=1e-12)
    assert q[0] == pytest.approx(-PHI_INV_95, rel=1e-9)
    assert q[-1] == pytest.approx(PHI_INV_95, rel=1e-9)
    # equal prior mass between neighbours: the cells widen towards the tails
    assert np.all(np.diff(np.diff(q[7:])) > 0)
    q4 = plots.gaussian_quantile_grid(4, low=0.25, high=0.75)
    np.testing.assert_allclose(q4[[0, -1]], [-0.6744897501960817, 0.6744897501960817],
                               rtol=1e-9)


def test_latent_manifold_decodes_the_grid_with_z2_growing_upwards():
    vae = VAE(16, (5,), 2, seed=0, dtype=np.float64)  # 4 x 4 "images"
    fig = plots.latent_manifold(vae, n=5)
    _assert_course_style(fig)
    img = _image(fig)
    assert img.shape == (20, 20)  # 5 x 5 tiles, no gaps
    q = plots.gaussian_quantile_grid(5)
    top_left = vae.decode_mean(np.array([[q[0], q[-1]]]))
    bottom_right = vae.decode_mean(np.array([[q[-1], q[0]]]))
    np.testing.assert_allclose(img[:4, :4], top_left.reshape(4, 4), rtol=1e-12)
    np.testing.assert_allclose(img[-4:, -4:], bottom_right.reshape(4, 4), rtol=1e-12)


@pytest.mark.parametrize("latent", [1, 3])
def test_latent_manifold_refuses_a_latent_that_is_not_two_dimensional(latent):
    with pytest.raises(ValueError, match="2-D latent"):
        plots.latent_manifold(VAE(16, (5,), latent), n=3)


def test_plots_leave_the_global_style_alone():
    before = dict(matplotlib.rcParams)
    plots.loss_curves(_history())
    assert dict(matplotlib.rcParams) == before


def test_save_figures_writes_pngs_and_closes_them(tmp_path):
    figures = {"curves": plots.loss_curves(_history()),
               "grid": plots.samples(np.random.default_rng(4).random((4, 784)))}
    numbers = [f.number for f in figures.values()]
    paths = save_figures(figures, tmp_path)
    assert paths == [tmp_path / "curves.png", tmp_path / "grid.png"]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert matplotlib.image.imread(path).ndim == 3
    assert not any(plt.fignum_exists(n) for n in numbers)


def test_save_figures_accepts_a_folder_given_as_a_string(tmp_path):
    save_figures({"grid": plots.samples(np.zeros((2, 784)))}, str(tmp_path))
    assert (tmp_path / "grid.png").is_file()


def test_one_per_class_picks_a_seeded_example_of_each_class_as_lesson_05_does():
    labels = np.repeat(np.arange(10), 7)  # sorted by class, as the test split is
    picks = plots.one_per_class(labels)
    assert picks.shape == (10,)
    np.testing.assert_array_equal(labels[picks], np.arange(10))
    rng = np.random.default_rng(1)  # lesson 05's recipe
    lesson = [rng.choice(np.flatnonzero(labels == k)) for k in range(10)]
    np.testing.assert_array_equal(picks, lesson)
    np.testing.assert_array_equal(plots.one_per_class(labels), picks)
    assert not np.array_equal(plots.one_per_class(labels, seed=2), picks)
    with pytest.raises(ValueError, match="no example of class 1"):
        plots.one_per_class(np.array([0, 2, 2]))


def test_latent_manifold_ticks_name_the_z_of_each_tile():
    vae = VAE(16, (5,), 2, seed=0, dtype=np.float64)  # 4 x 4 "images"
    fig = plots.latent_manifold(vae, n=5)
    ax = next(ax for ax in fig.axes if ax.images)
    assert ax.get_xlabel() == "$z_1$" and ax.get_ylabel() == "$z_2$"
    np.testing.assert_allclose(ax.get_xticks(), [1.5, 5.5, 9.5, 13.5, 17.5])  # tile centres
    np.testing.assert_allclose(ax.get_yticks(), [1.5, 5.5, 9.5, 13.5, 17.5])
    z = ["-1.64", "-0.60", "0.00", "0.60", "1.64"]  # gaussian_quantile_grid(5), rounded
    assert [t.get_text() for t in ax.get_xticklabels()] == z
    # z2 grows upwards: the top row (y = 1.5) decodes the largest z2
    assert [t.get_text() for t in ax.get_yticklabels()] == z[::-1]


def test_latent_scatter_marks_the_decoded_grids_extent():
    from matplotlib.patches import Rectangle

    rng = np.random.default_rng(5)
    q = plots.gaussian_quantile_grid(15)
    fig = plots.latent_scatter(rng.standard_normal((40, 2)), rng.integers(0, 10, 40), grid=q)
    ax = next(ax for ax in fig.axes if ax.collections)
    (square,) = [p for p in ax.patches if isinstance(p, Rectangle)]
    assert square.get_xy() == pytest.approx((q[0], q[0]))
    assert square.get_width() == pytest.approx(q[-1] - q[0])
    assert square.get_height() == pytest.approx(q[-1] - q[0])
    assert square.get_linestyle() == "--" and not square.get_fill()
    assert "decoded grid" in square.get_label()
    assert not [p for p in next(a for a in plots.latent_scatter(
        rng.standard_normal((5, 2)), np.arange(5)).axes if a.collections).patches
        if isinstance(p, Rectangle)]


def test_the_cli_shows_one_test_digit_of_each_class_and_the_grid_on_the_scatter(
        tmp_path, monkeypatch):
    from vae_from_scratch.course import cli

    shown = {}
    real_reconstructions, real_scatter = plots.reconstructions, plots.latent_scatter

    def reconstructions(x, x_recon, n=10):
        shown["x"] = x
        return real_reconstructions(x, x_recon, n)

    def latent_scatter(mu, labels, title="t", grid=None):
        shown["grid"] = grid
        return real_scatter(mu, labels, grid=grid)

    monkeypatch.setattr(plots, "reconstructions", reconstructions)
    monkeypatch.setattr(plots, "latent_scatter", latent_scatter)
    assert cli.main(["train", "--epochs", "0", "--latent-dim", "2", "--hidden-dims", "8",
                     "--iwae-k", "0", "--quiet", "--out", str(tmp_path / "run")]) == 0
    from vae_from_scratch.data import load_mnist

    ds = load_mnist()
    picks = plots.one_per_class(ds.y_test)
    np.testing.assert_array_equal(shown["x"], ds.x_test[picks])
    np.testing.assert_array_equal(shown["grid"], plots.gaussian_quantile_grid(15))
    assert (tmp_path / "run" / "latent_scatter.png").is_file()


def test_loss_curves_tick_whole_epochs_only():
    h = _history()
    for e in range(4, 6):  # five epochs: matplotlib alone would tick 1.5, 2.5, ...
        for name in ("train_loss", "train_nelbo", "train_recon", "train_kl", "test_nelbo",
                     "test_recon", "test_kl"):
            getattr(h, name).append(getattr(h, name)[-1] - 1)
        h.epoch.append(e)
    fig = plots.loss_curves(h)
    fig.canvas.draw()
    for ax in fig.axes:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert len(ticks) >= 3 and all(t == int(t) for t in ticks), ticks


def test_a_saved_grid_of_samples_has_no_blank_strip(tmp_path):
    images = np.random.default_rng(0).random((50, 784))  # 5 rows of 10: wider than tall
    (path,) = save_figures({"samples": plots.samples(images)}, tmp_path)
    png = matplotlib.image.imread(path)[..., :3]
    blank = np.all(png > 0.99, axis=(1, 2))  # rows of white pixels only
    bottom = len(blank) - np.flatnonzero(~blank)[-1] - 1
    assert bottom <= 0.05 * 150 + 1, f"{bottom} blank rows at the bottom"  # the pad alone


def test_a_conditional_models_manifold_has_one_panel_per_label():
    vae = VAE(16, (5,), 2, n_classes=3, seed=0, dtype=np.float64)
    fig = plots.latent_manifold(vae, n=4)
    panels = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in panels] == ["label 0", "label 1", "label 2"]
    q = plots.gaussian_quantile_grid(4)
    for k, ax in enumerate(panels):
        img = np.asarray(ax.images[0].get_array())
        assert img.shape == (16, 16)  # 4 x 4 tiles of 4 x 4 pixels, no gaps
        top_left = vae.decode_mean(np.array([[q[0], q[-1]]]), np.array([k]))
        np.testing.assert_allclose(img[:4, :4], top_left.reshape(4, 4), rtol=1e-12)
    assert len(panels[0].get_xticks()) == 4  # the z values, on the first panel of the last row
    (one,) = [ax for ax in plots.latent_manifold(vae, n=4, labels=[2]).axes if ax.images]
    assert one.get_title() == "label 2"
    with pytest.raises(ValueError, match="not conditional"):
        plots.latent_manifold(VAE(16, (5,), 2), n=4, labels=[1])


@pytest.mark.lesson09
def test_the_cli_draws_a_conditional_latent_2_models_manifold_per_label(tmp_path, monkeypatch):
    from vae_from_scratch.course import cli

    drawn = {}
    real = plots.latent_manifold

    def latent_manifold(vae, n=15, labels=None):
        drawn["fig"] = real(vae, n=n, labels=labels)
        return drawn["fig"]

    monkeypatch.setattr(plots, "latent_manifold", latent_manifold)
    out = tmp_path / "run"
    assert cli.main(["train", "--conditional", "--epochs", "0", "--latent-dim", "2",
                     "--hidden-dims", "8", "--iwae-k", "0", "--quiet", "--out", str(out)]) == 0
    assert (out / "latent_scatter.png").is_file() and (out / "latent_manifold.png").is_file()
    titles = [ax.get_title() for ax in drawn["fig"].axes if ax.images]
    assert titles == [f"label {k}" for k in range(10)]
