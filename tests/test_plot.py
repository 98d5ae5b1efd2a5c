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


def test_phase_diagram_writes_png_and_hatches_censored_cells(grid2, tmp_path):
    _, phase = grid2
    fig = plot.phase_diagram(phase, "lam", "gamma", path=tmp_path / "pd.png")
    assert_png(tmp_path / "pd.png")
    mesh = mesh_of(fig)
    assert colors.to_hex(mesh.get_cmap().get_bad()) == "#ffffff"
    masked = np.ma.getmaskarray(mesh.get_array()).reshape(2, 4)  # (gamma, lam)
    assert masked[:, 3].all() and not masked[:, :3].any()  # lam = 1.5 never groks
    (never,) = [c for c in fig.axes[0].collections if c.get_gid() == "never-test"]
    assert never.get_hatch() == "////" and len(never.get_paths()) == 2  # lam = 1.5, both gamma
    legend = [t.get_text() for t in fig.legends[0].texts]
    assert legend == ["test acc. never ≥ 0.95"]
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
        ([0.0, 1e-3, 1e-2], "linear"),  # categorical: even cells on a linear scale
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


def test_diverged_argument_marks_cells_where_any_seed_diverged(grid2):
    _, phase = grid2
    diverged = xr.zeros_like(phase["delta_t"], dtype=bool)
    diverged.loc[{"lam": 0.3, "gamma": 1e-3, "seed": 1}] = True
    fig = plot.phase_diagram(phase, "lam", "gamma", diverged=diverged)
    (hatched,) = [c for c in fig.axes[0].collections if c.get_gid() == "never-diverged"]
    assert isinstance(hatched, PolyCollection) and hatched.get_hatch() == "...."
    assert len(hatched.get_paths()) == 1


def test_phase_diagram_takes_fixed_axes_and_eps():
    ds = synthetic({"lam": [0.3, 0.5], "gamma": [0.0, 1e-3], "alpha": [1.0, 2.0]})
    fig = plot.phase_diagram(gs.grokking_time(ds), "lam", "gamma", eps=1e-2, alpha=2.0)
    assert fig.axes[0].get_title().startswith("ε = 0.01, α = 2")
    assert "linear, 1000 steps" in fig.axes[0].get_title()  # the fixed parameters, second line


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
    for line in markers:  # inside the panel, not clipped by its frame
        assert line.get_clip_on() and 0 < line.get_ydata()[0] < 1
    labels = ax.get_legend_handles_labels()[1] + [t.get_text() for t in ax.get_legend().texts]
    assert "no grokking within 1000 steps" in labels
    with pytest.raises(ValueError, match="no axis 'gamma'"):
        plot.delta_t_curve(gs.grokking_time(ds), "gamma")


def test_learning_curves(grid2, tmp_path):
    ds, _ = grid2
    fig = plot.learning_curves(ds, gamma=1e-3, path=tmp_path / "lc.png")
    assert_png(tmp_path / "lc.png")
    loss_ax, acc_ax, bar = fig.axes  # four lam values: a colour bar, not a legend of them
    assert [t.get_text() for t in bar.get_yticklabels()] == ["0.3", "0.5", "0.7", "1.5"]
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
    loss_ax, acc_ax = fig.axes[:2]
    assert len(black_lines(loss_ax)) == len(black_lines(acc_ax)) == 2 * len(lam)
    assert len(loss_ax.lines) == 2 * 4 + 2 * len(lam)  # data lines unchanged
    assert {line.get_linestyle() for line in black_lines(loss_ax)} == {"--", "-"}
    np.testing.assert_allclose(black_lines(loss_ax)[0].get_ydata(), decay[0])
    assert "theory" in [t.get_text() for t in fig.legends[0].texts]
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


# --- paper figures: axes, floors, kinds of no grokking, theory, formats --------------------------
LINEAR_SPEC = """task = "linear"
steps = 1000
log_points = 30
eps = [1e-3, 1e-2]

[params]
d_in = 200
lr = 0.01

[axes]
{axes}
seed = [0, 1, 2]
"""


def with_spec(ds, **axes):
    """``ds`` carrying a real linear spec of its grid, so the theory applies."""
    text = "\n".join(f"{name} = {list(values)}" for name, values in axes.items())
    ds = ds.copy()
    ds.attrs["spec"] = LINEAR_SPEC.format(axes=text)
    return ds


@pytest.mark.parametrize(
    ("values", "kind"),
    [
        ([0.0, 0.03, 0.1, 0.3], "categorical"),  # holds 0, uneven
        ([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.1, 1.3, 1.5], "linear"),
        ([1e-4, 1e-3, 1e-2, 1e-1], "log"),
        ([1, 2, 4, 8, 16], "log"),
        ([0.1, 0.2, 5.0, 6.0], "categorical"),
        ([1e-4, 1e-2], "log"),
        (["relu", "tanh"], "categorical"),
        ([3.0], "linear"),
    ],
)
def test_axis_kind_is_chosen_from_the_values(values, kind):
    assert plot.axis_kind(values) == kind


def test_an_axis_holding_zero_gets_even_cells_and_a_tick_on_every_value():
    gamma = [0.0, 0.03, 0.1, 0.3]
    ds = synthetic({"lam": [0.3, 0.5, 0.7], "gamma": gamma})
    fig = plot.phase_diagram(gs.grokking_time(ds), "lam", "gamma")
    ax = fig.axes[0]
    assert list(ax.get_yticks()) == [0, 1, 2, 3]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["0", "0.03", "0.1", "0.3"]
    y_edges = mesh_of(fig).get_coordinates()[:, 0, 1]
    np.testing.assert_allclose(y_edges, [-0.5, 0.5, 1.5, 2.5, 3.5])  # even cells
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0.3", "0.5", "0.7"]


def test_phase_diagram_tells_train_never_test_never_and_diverged_apart():
    ds = synthetic({"lam": [0.3, 0.5, 0.7, 1.5], "gamma": [0.0, 1e-3]}, never={"lam": 1.5})
    phase = gs.grokking_time(ds)
    train_never = {"lam": 0.7}
    for name in ("t_train", "t_test", "delta_t"):
        phase[name].loc[train_never] = np.nan
    phase["train_censored"].loc[train_never] = True
    phase["test_censored"].loc[train_never] = True
    blew_up = {"lam": 0.3, "gamma": 0.0}
    for name in ("t_train", "t_test", "delta_t"):
        phase[name].loc[blew_up] = np.nan
    phase["diverged"].loc[blew_up] = True
    fig = plot.phase_diagram(phase, "lam", "gamma")
    ax = fig.axes[0]
    kinds = {c.get_gid(): c for c in ax.collections if (c.get_gid() or "").startswith("never")}
    assert {k: c.get_hatch() for k, c in kinds.items()} == {
        "never-train": "xxx",
        "never-test": "////",
        "never-diverged": "....",
    }
    assert {k: len(c.get_paths()) for k, c in kinds.items()} == {
        "never-train": 2,  # lam = 0.7, both gamma
        "never-test": 2,  # lam = 1.5
        "never-diverged": 1,
    }
    legend = [t.get_text() for t in fig.legends[0].texts]
    assert legend == ["train acc. never ≥ 0.95", "test acc. never ≥ 0.95", "diverged"]


def test_exact_zeros_and_tiny_losses_are_drawn_at_the_floor_with_a_marker():
    ds = synthetic({"lam": [0.3, 0.5]})
    late = ds["time"] >= 100
    ds["test_loss"] = ds["test_loss"].where(~late, 0.0)  # float32 underflow: exact zeros
    fig = plot.learning_curves(ds, theory=False)
    loss_ax = fig.axes[0]
    floor = 1e-6  # the smallest positive loss, a power of ten
    markers = [line for line in loss_ax.lines if line.get_marker() == "v"]
    assert len(markers) == 2  # one per lam, where its test loss first falls under the floor
    for line in markers:
        assert list(line.get_ydata()) == [floor]
        assert line.get_xdata()[0] == ds["time"].values[late.values][0]
    data = [line for line in loss_ax.lines if line.get_marker() != "v"]
    lowest = min(np.nanmin(line.get_ydata()) for line in data)
    assert lowest == floor  # nothing drawn below the floor, no drop to the axis bottom
    assert loss_ax.get_ylim()[0] < floor
    assert any("exactly 0" in t.get_text() for t in fig.legends[0].texts)


def test_linear_theory_is_drawn_by_default_on_delta_t_and_learning_curves():
    lam = [0.3, 0.5, 0.7]
    ds = with_spec(synthetic({"lam": lam}), lam=lam)
    phase = gs.grokking_time(ds)
    ax = plot.delta_t_curve(phase, "lam").axes[0]
    (line,) = [line for line in ax.lines if line.get_label() == "theory"]
    assert colors.to_hex(line.get_color()) == "#000000" and len(line.get_xdata()) == 200
    assert np.all(np.isfinite(line.get_ydata())) and np.all(line.get_ydata() > 0)
    # the theory's Δt at lam = 0.5, eps = 1e-3 (d_in = 200: N_tr = 400)
    from groksweep import theory

    t_train, t_test = theory.grokking_time(0.5, eps=1e-3)
    at = np.argmin(abs(line.get_xdata() - 0.5))
    assert line.get_ydata()[at] == pytest.approx(t_test - t_train, rel=0.05)
    assert not [
        ln
        for ln in plot.delta_t_curve(phase, "lam", theory=False).axes[0].lines
        if ln.get_label() == "theory"
    ]
    fig = plot.learning_curves(ds)
    assert len(black_lines(fig.axes[0])) == 2 * len(lam)  # train and test per lam


def test_linear_theory_contours_on_phase_maps():
    lam, gamma = [0.3, 0.5, 0.7], [0.0, 0.01, 0.1]
    ds = with_spec(synthetic({"lam": lam, "gamma": gamma}), lam=lam, gamma=gamma)
    phase = gs.grokking_time(ds)
    wide = colors.LogNorm(1.0, 1e5)  # contour levels are those the colour bar shows
    fig = plot.phase_diagram(phase, "lam", "gamma", norm=wide)
    ax = fig.axes[0]
    assert "theory Δt (contours)" in [t.get_text() for t in fig.legends[0].texts]
    assert any(type(c).__name__ in ("QuadContourSet", "ContourSet") for c in ax.collections)
    fig = plot.phase_diagram(phase, "lam", "gamma", norm=wide, theory=False)
    assert not any("Contour" in type(c).__name__ for c in fig.axes[0].collections)


def test_figures_for_writes_each_requested_format(tmp_path):
    ds = synthetic({"lam": [0.3, 0.5]})
    phase = gs.grokking_time(ds)
    paths = plot.figures_for(ds, phase, tmp_path, formats="pdf,svg", theory=False)
    assert [p.name for p in paths] == [
        "learning_curves.pdf",
        "learning_curves.svg",
        "delta_t.pdf",
        "delta_t.svg",
    ]
    assert (tmp_path / "delta_t.pdf").read_bytes()[:5] == b"%PDF-"
    assert b"<svg" in (tmp_path / "delta_t.svg").read_bytes()[:1000]
    with pytest.raises(ValueError, match="figure format gif is not one of png, pdf, svg"):
        plot.figures_for(ds, phase, tmp_path, formats="png,gif")
    assert plt.get_fignums() == []


def test_plot_command_takes_formats_and_no_theory(tmp_path, capsys):
    from groksweep import spec as spec_module
    from groksweep.cli import main

    lam = [0.3, 0.5, 0.7]
    sweep = spec_module.Sweep.from_dict(
        {
            "task": "linear",
            "steps": 1000,
            "log_points": 30,
            "eps": [1e-3, 1e-2],
            "params": {"d_in": 200, "lr": 0.01},
            "axes": {"lam": lam, "seed": [0, 1, 2]},
        }
    )
    ds = synthetic({"lam": lam})
    ds = ds.assign(diverged=xr.zeros_like(ds["train_loss"].isel(time=0), bool))
    ds = ds.assign(diverged_at=xr.full_like(ds["diverged"], -1, dtype=int))
    ds.attrs["spec"] = sweep.to_toml()
    results.save(ds, tmp_path / "results.nc")
    results.save(gs.grokking_time(ds), tmp_path / "phase.nc")
    assert main(["plot", str(tmp_path), "--format", "png,svg", "--no-theory"]) == 0
    for name in ("learning_curves", "delta_t"):
        assert (tmp_path / f"{name}.png").is_file() and (tmp_path / f"{name}.svg").is_file()
    assert b"theory" not in (tmp_path / "delta_t.svg").read_bytes()
    assert main(["plot", str(tmp_path), "--format", "svg"]) == 0  # theory drawn by default
    assert b"theory" in (tmp_path / "delta_t.svg").read_bytes()
    capsys.readouterr()
    assert main(["plot", str(tmp_path), "--format", "png,gif"]) == 2
    err = capsys.readouterr().err
    assert "figure format gif is not one of png, pdf, svg" in err and err.count("\n") == 1
