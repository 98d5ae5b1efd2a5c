"""The command line: files written, figures redrawn, bad input refused in one line."""

import subprocess
import sys

import numpy as np
import xarray as xr

from groksweep.cli import main

SPEC = """
task = "linear"
steps = 300
log_points = 15
eps = [1e-3, 1e-1]

[params]
d_in = 16
n_test = 300

[axes]
lam = [0.3, 0.7, 1.2]
gamma = [0.0, 0.01]
seed = [0]
"""


def test_run_writes_results_phase_and_figures_then_plot_redraws(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC)
    out = tmp_path / "out"
    assert main(["run", str(spec), "--out", str(out), "--quiet"]) == 0
    for name in ("results.nc", "phase.nc", "spec.toml", "learning_curves.png", "phase_diagram.png"):
        assert (out / name).is_file(), name
    with xr.open_dataset(out / "results.nc") as ds:
        assert list(ds.test_acc.dims) == ["lam", "gamma", "seed", "eps", "time"]
        assert np.isfinite(ds.train_loss).all()
    with xr.open_dataset(out / "phase.nc") as phase:
        assert phase.test_censored.dtype == bool and list(phase.t_test.dims) == [
            "lam",
            "gamma",
            "seed",
            "eps",
        ]
    (out / "phase_diagram.png").unlink()
    assert main(["plot", str(out)]) == 0
    assert (out / "phase_diagram.png").is_file()


def test_bad_spec_exits_2_with_one_line_and_no_traceback(tmp_path):
    spec = tmp_path / "bad.toml"
    spec.write_text(SPEC.replace("gamma =", "gama ="))
    result = subprocess.run(
        [sys.executable, "-m", "groksweep.cli", "run", str(spec), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "groksweep: error: unknown axis 'gama'; did you mean 'gamma'?"
    assert not (tmp_path / "out").exists()


def test_plot_of_missing_directory_is_refused(tmp_path, capsys):
    assert main(["plot", str(tmp_path)]) == 2
    assert "results.nc" in capsys.readouterr().err


def test_tasks_lists_every_task_and_one_task_s_parameters(capsys):
    assert main(["tasks"]) == 0
    listed = capsys.readouterr().out.split()
    for name in ("linear", "mlp_teacher_student", "committee", "modular_mlp", "transformer"):
        assert name in listed
    assert main(["tasks", "modular_mlp"]) == 0
    out = capsys.readouterr().out
    assert "frac" in out and "lr" in out and "metrics: train_loss" in out
    assert main(["tasks", "lnear"]) == 2
    assert "did you mean 'linear'?" in capsys.readouterr().err


def test_version_and_python_dash_m():
    done = subprocess.run(
        [sys.executable, "-m", "groksweep", "--version"], capture_output=True, text=True
    )
    assert done.returncode == 0 and done.stdout.startswith("groksweep ")
