"""Figures: files written, censored cells white, axis scales, default figure set, clear errors.

Datasets are synthetic (no training): accuracies are logistic curves in log-time whose onset
is set per run, so grokking times, and which runs never grok, are known in advance.
"""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
import xarray as xr
from matplotlib import colors
from matplotlib.collections import PolyCollection, QuadMesh

import groksweep as gs
from groksweep import plot, results

matplotlib.use("Agg")
import matplotlib.pyplot as plt

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
STEPS = 1000


def synthetic(axes: dict[str, list], never: dict[str, object] | None = None, seed_spread=0.1):
    """Results with dims (*axes, seed[, eps], time); runs matching ``never`` never generalise.

    Train accuracy reaches 0.95 at about 10^(1 + 0.3 i) steps (i: the run's index along the
    first axis) and test accuracy half a decade later."""
    axes = axes | {"seed": [0, 1, 2]}
    shape = tuple(len(v) for v in axes.values())
    times = np.concatenate([[0], np.unique(np.geomspace(1, STEPS, 30).astype(int))])
    first = np.arange(shape[0]).reshape(-1, *([1] * (len(shape) - 1)))
    rng = np.random.default_rng(0)
    onset = 1.0 + 0.3 * first + seed_spread * rng.random(shape)
    test_onset = np.broadcast_to(onset + 0.5, shape).copy()
    coords = {name: values for name, values in axes.items()}
    if never:
        mask = xr.DataArray(np.zeros(shape, bool), coords=coords, dims=list(axes))
        mask.loc[never] = True
        test_onset[mask.values] = 99.0
    log_t = np.log10(np.maximum(times, 1))
    curve = lambda o: 0.5 + 0.5 * np.tanh(6 * (log_t - o[..., None] + 0.25))
    acc = lambda o: np.stack([curve(o), curve(o + 0.1)], axis=-2)
    dims = [*axes, "time"]
    ds = xr.Dataset(
        {
            "train_loss": (dims, 1 - curve(onset) + 1e-6),
            "test_loss": (dims, 1 - curve(test_onset) + 1e-6),
            "weight_norm": (dims, np.ones((*shape, len(times)))),
            "train_acc": ([*axes, "eps", "time"], acc(onset)),
            "test_acc": ([*axes, "eps", "time"], acc(test_onset)),
        },
        coords=coords | {"eps": [1e-3, 1e-2], "time": times},
        attrs={"spec": f"task = 'linear'\nsteps = {STEPS}\n"},
    )
    return ds


def assert_png(path):
    assert path.exists()
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 10_000


@pytest.fixture(scope="module")
def grid2():
    ds = synthetic({"lam": [0.3, 0.5, 0.7, 1.5], "gamma": [0.0, 1e-3]}, never={"lam": 1.5})
    return ds, gs.grokking_time(ds)


def mesh_of(fig) -> QuadMesh:
    (mesh,) = [c for c in fig.axes[0].collections if isinstance(c, QuadMesh)]
    return mesh


def test_phase_diagram_writes_png_and_draws_censored_cells_white(grid2, tmp_path):
    _, phase = grid2
    fig = plot.phase_diagram(phase, "lam", "gamma", path=tmp_path / "pd.png")
    assert_png(tmp_path / "pd.png")
    mesh = mesh_of(fig)
    assert colors.to_hex(mesh.get_cmap().get_bad()) == "#ffffff"
    masked = np.ma.getmaskarray(mesh.get_array()).reshape(2, 4)  # (gamma, lam)
    assert masked[:, 3].all() and not masked[:, :3].any()  # lam = 1.5 never groks
    assert "white: no grokking within 1000 steps" in fig.axes[1].get_ylabel()
    assert "median of 3 seeds" in fig.axes[0].get_title()


def test_phase_diagram_cells_are_centred_with_geometric_edges_on_log_axes():
    ds = synthetic({"lam": [0.1, 1.0, 10.0], "gamma": [0.0, 1e-3]})
    fig = plot.phase_diagram(gs.grokking_time(ds), "lam", "gamma")
    x_edges = mesh_of(fig).get_coordinates()[0, :, 0]
    np.testing.assert_allclose(x_edges, [10**-1.5, 10**-0.5, 10**0.5, 10**1.5])


@pytest.mark.parametrize(
    ("values", "scale"),
    [
        ([0.1, 0.3, 1.0, 3.0], "log"),
        ([0.3, 0.5, 0.7, 1.5], "linear"),
        ([0.0, 1e-3, 1e-2], "symlog"),
        ([0.0, 1e-3], "linear"),
    ],
)
def test_axis_scale_is_log_only_for_positive_values_spanning_a_decade(values, scale):
    ds = synthetic({"lam": values, "gamma": [0.0, 1e-3]})
    fig = plot.phase_diagram(gs.grokking_time(ds), "lam", "gamma")
    assert fig.axes[0].get_xscale() == scale


def test_colour_scale_is_logarithmic_only_when_times_span_decades():
    wide = synthetic({"lam": [0.3, 0.5, 0.7, 1.0, 1.5, 2.0], "gamma": [0.0, 1e-3]})
    narrow = synthetic({"lam": [0.3, 0.5], "gamma": [0.0, 1e-3]})
    wide_norm = mesh_of(
        plot.phase_diagram(gs.grokking_time(wide), "lam", "gamma", var="t_test")
    ).norm
    narrow_norm = mesh_of(plot.phase_diagram(gs.grokking_time(narrow), "lam", "gamma")).norm
    assert isinstance(wide_norm, colors.LogNorm)
    assert not isinstance(narrow_norm, colors.LogNorm)


def test_diverged_cells_are_grey_and_hatched(grid2):
    _, phase = grid2
    diverged = xr.zeros_like(phase["delta_t"], dtype=bool)
    diverged.loc[{"lam": 0.3, "gamma": 1e-3, "seed": 1}] = True
    fig = plot.phase_diagram(phase, "lam", "gamma", diverged=diverged)
    (hatched,) = [c for c in fig.axes[0].collections if isinstance(c, PolyCollection)]
    assert hatched.get_hatch() == "///"
    assert len(hatched.get_paths()) == 1


def test_phase_diagram_takes_fixed_axes_and_eps():
    ds = synthetic({"lam": [0.3, 0.5], "gamma": [0.0, 1e-3], "alpha": [1.0, 2.0]})
    fig = plot.phase_diagram(gs.grokking_time(ds), "lam", "gamma", eps=1e-2, alpha=2.0)
    assert fig.axes[0].get_title().startswith("ε = 0.01, α = 2")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"x": "lamb", "y": "gamma"}, "no axis 'lamb'; the axes are lam, gamma, alpha, seed, eps"),
        ({"x": "lam", "y": "lam"}, "x and y must be different axes"),
        ({"x": "lam", "y": "gamma"}, "axis alpha is neither plotted nor fixed"),
        (
            {"x": "lam", "y": "gamma", "alpha": 3.0},
            "alpha=3.0 is not on the grid; its values are 1, 2",
        ),
        ({"x": "lam", "y": "gamma", "alpha": 1.0, "eps": 0.5}, "eps=0.5 is not on the grid"),
        ({"x": "lam", "y": "gamma", "alpha": 1.0, "var": "dt"}, "var must be one of"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, message):
    ds = synthetic({"lam": [0.3, 0.5], "gamma": [0.0, 1e-3], "alpha": [1.0, 2.0]})
    with pytest.raises(ValueError, match=message):
        plot.phase_diagram(gs.grokking_time(ds), **kwargs)


def test_delta_t_curve_marks_censored_points(tmp_path):
    ds = synthetic({"lam": [0.3, 0.5, 0.7, 1.5]}, never={"lam": 1.5})
    fig = plot.delta_t_curve(gs.grokking_time(ds), "lam", path=tmp_path / "dt.png")
    assert_png(tmp_path / "dt.png")
    ax = fig.axes[0]
    markers = [line for line in ax.lines if line.get_marker() == "^"]
    assert [list(line.get_xdata()) for line in markers] == [[1.5], [1.5]]  # one per eps
    labels = ax.get_legend_handles_labels()[1] + [t.get_text() for t in ax.get_legend().texts]
    assert "no grokking within 1000 steps" in labels
    with pytest.raises(ValueError, match="no axis 'gamma'"):
        plot.delta_t_curve(gs.grokking_time(ds), "gamma")


def test_learning_curves(grid2, tmp_path):
    ds, _ = grid2
    fig = plot.learning_curves(ds, gamma=1e-3, path=tmp_path / "lc.png")
    assert_png(tmp_path / "lc.png")
    loss_ax, acc_ax = fig.axes
    assert (loss_ax.get_xscale(), loss_ax.get_yscale()) == ("log", "log")
    assert (acc_ax.get_xscale(), acc_ax.get_yscale()) == ("log", "linear")
    assert len(loss_ax.lines) == len(acc_ax.lines) == 2 * 4  # train and test, one colour per lam
    assert min(line.get_xdata().min() for line in loss_ax.lines) > 0  # step 0 dropped
    assert {line.get_linestyle() for line in loss_ax.lines} == {"--", "-"}
    assert "γ (weight decay) = 0.001" in fig._suptitle.get_text()


def test_figures_for_writes_the_default_set(grid2, tmp_path):
    ds, phase = grid2
    results.save(phase, tmp_path / "phase.nc")
    paths = plot.figures_for(ds, results.load(tmp_path / "phase.nc"), tmp_path / "two")
    assert [p.name for p in paths] == ["learning_curves.png", "phase_diagram.png"]
    one = synthetic({"lam": [0.3, 0.5, 0.7]})
    paths = plot.figures_for(one, gs.grokking_time(one), tmp_path / "one")
    assert [p.name for p in paths] == ["learning_curves.png", "delta_t.png"]
    for path in paths:
        assert_png(path)
    assert plt.get_fignums() == []  # no figure left open


# --- theory overlays -----------------------------------------------------------------------------
def black_lines(ax):
    return [line for line in ax.lines if colors.to_hex(line.get_color()) == "#000000"]


def test_learning_curves_overlay_theory_in_black(grid2):
    ds, _ = grid2
    times = np.geomspace(1, STEPS, 50)
    lam = ds["lam"].values
    decay = np.exp(-times[None, :] / (100 * (1 + lam[:, None])))
    theory = xr.Dataset(
        {name: (("lam", "time"), decay) for name in ("train_loss", "test_loss")}
        | {
            name: (("lam", "eps", "time"), np.stack([1 - decay, 1 - decay], axis=1))
            for name in ("train_acc", "test_acc")
        },
        coords={"lam": lam, "eps": [1e-3, 1e-2], "time": times},
    )
    fig = plot.learning_curves(ds, gamma=1e-3, theory=theory)
    loss_ax, acc_ax = fig.axes
    assert len(black_lines(loss_ax)) == len(black_lines(acc_ax)) == 2 * len(lam)
    assert len(loss_ax.lines) == 2 * 4 + 2 * len(lam)  # data lines unchanged
    assert {line.get_linestyle() for line in black_lines(loss_ax)} == {"--", "-"}
    np.testing.assert_allclose(black_lines(loss_ax)[0].get_ydata(), decay[0])
    assert "theory (black)" in [t.get_text() for t in loss_ax.get_legend().texts]
    # only the losses: accuracies are optional
    fig = plot.learning_curves(ds, gamma=1e-3, theory=theory[["test_loss"]])
    assert len(black_lines(fig.axes[0])) == len(lam) and not black_lines(fig.axes[1])
    with pytest.raises(ValueError, match="theory has axis alpha"):
        plot.learning_curves(ds, gamma=1e-3, theory=theory.expand_dims(alpha=[1.0, 2.0]))


def test_delta_t_curve_overlays_theory_per_eps_and_labelled_variants():
    ds = synthetic({"lam": [0.3, 0.5, 0.7, 1.5]}, never={"lam": 1.5})
    phase = gs.grokking_time(ds)
    dense = np.linspace(0.2, 1.0, 30)
    exact = xr.DataArray(
        np.outer([1.0, 2.0], 10 + 100 * dense),
        dims=("eps", "lam"),
        coords={"eps": [1e-3, 1e-2], "lam": dense},
    )
    fig = plot.delta_t_curve(phase, "lam", theory=exact)
    lines = black_lines(fig.axes[0])
    assert len(lines) == 2  # one per threshold drawn
    np.testing.assert_allclose(lines[1].get_ydata(), 2 * (10 + 100 * dense))
    fig = plot.delta_t_curve(
        phase, "lam", eps=1e-2, theory={"exact": exact, "eq. 11": exact.isel(eps=0, drop=True)}
    )
    lines = black_lines(fig.axes[0])
    assert [line.get_linestyle() for line in lines] == ["-", "--"]
    labels = [t.get_text() for t in fig.axes[0].get_legend().texts]
    assert "exact" in labels and "eq. 11" in labels
    with pytest.raises(ValueError, match="no axis 'lam'"):
        plot.delta_t_curve(phase, "lam", theory=exact.rename(lam="gamma"))


def test_phase_diagrams_share_a_colour_scale(grid2):
    _, phase = grid2
    slow = phase.copy()
    slow["delta_t"] = phase["delta_t"] * 100
    norm = plot.shared_norm(phase["delta_t"], slow["delta_t"])
    assert isinstance(norm, colors.LogNorm)
    assert norm.vmax == pytest.approx(float(slow["delta_t"].max()))
    for data in (phase, slow):
        assert mesh_of(plot.phase_diagram(data, "lam", "gamma", norm=norm)).norm is norm


def test_delta_t_curve_without_censored_points_draws_no_empty_marker_line():
    ds = synthetic({"lam": [0.3, 0.5, 0.7]})
    fig = plot.delta_t_curve(gs.grokking_time(ds), "lam")
    assert not [line for line in fig.axes[0].lines if line.get_marker() == "^"]
