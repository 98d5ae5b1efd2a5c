"""The sweep specification: TOML and Python agree, bad input fails with one line, the grid and
evaluation schedule are what the spec says."""

import numpy as np
import pytest

from groksweep import SpecError, Sweep
from groksweep.spec import log_schedule

TOML = """
task = "linear"
steps = 20000
log_points = 200
eps = [1e-3]

[params]
d_in = 200
d_out = 1
lr = 0.01

[axes]
lam = [0.3, 0.5, 0.7]
seed = [0, 1, 2, 3]
"""


def test_toml_and_python_give_the_same_sweep(tmp_path):
    path = tmp_path / "sweep.toml"
    path.write_text(TOML)
    python = Sweep(
        "linear",
        params={"d_in": 200, "d_out": 1, "lr": 0.01},
        axes={"lam": [0.3, 0.5, 0.7], "seed": [0, 1, 2, 3]},
        steps=20000,
        log_points=200,
        eps=[1e-3],
    )
    assert Sweep.from_toml(path) == python
    path.write_text(python.to_toml())
    assert Sweep.from_toml(path) == python


def test_grid_is_the_cartesian_product_in_written_order():
    sweep = Sweep(
        "linear", params={"d_in": 100}, axes={"lam": [0.5, 2.0], "gamma": [0.0, 0.1, 0.2]}
    )
    assert sweep.shape == (2, 3, 1) and list(sweep.axes) == ["lam", "gamma", "seed"]
    runs = sweep.runs()
    assert [(r["n_train"], r["gamma"]) for r in runs[:4]] == [
        (200, 0.0),
        (200, 0.1),
        (200, 0.2),
        (50, 0.0),
    ]


def test_lam_sets_n_train_by_rounding():
    runs = Sweep("linear", params={"d_in": 200}, axes={"lam": [0.3, 0.7, 1.5]}).runs()
    assert [r["n_train"] for r in runs] == [round(200 / 0.3), round(200 / 0.7), round(200 / 1.5)]
    assert Sweep("linear", params={"n_train": 37}).runs()[0]["n_train"] == 37


@pytest.mark.parametrize(
    "spec, message",
    [
        (dict(task="linaer"), "unknown task 'linaer'; did you mean 'linear'?"),
        (dict(task="linear", params={"gama": 0.1}), "did you mean 'gamma'?"),
        (dict(task="linear", axes={"dout": [1, 2]}), "did you mean 'd_out'?"),
        (dict(task="linear", params={"lam": 0.5, "n_train": 10}), "either lam or n_train"),
        (
            dict(task="linear", params={"lam": 0.5}, axes={"n_train": [10, 20]}),
            "either lam or n_train",
        ),
        (dict(task="linear", params={"d_in": 10, "lam": 100.0}), "n_train = round(d_in/lam) = 0"),
        (dict(task="linear", axes={"gamma": []}), "axis gamma is empty"),
        (dict(task="linear", axes={"gamma": [0.1, 0.1]}), "duplicate"),
        (dict(task="linear", params={"lr": 0.0}), "lr must be > 0"),
        (dict(task="linear", params={"gamma": -1.0}), "gamma must be >= 0"),
        (dict(task="linear", params={"d_out": 2.5}), "d_out must be an integer"),
        (dict(task="linear", params={"d_in": "big"}), "d_in must be a number"),
        (
            dict(task="linear", params={"optimizer": "sgd"}),
            "optimizer must be one of gd, adam, adamw",
        ),
        (dict(task="linear", steps=0), "steps must be >= 1"),
        (dict(task="linear", eps=[0.0]), "eps must be > 0"),
        (
            dict(task="linear", params={"lam": 0.5}, axes={"lam": [0.5]}),
            "both a fixed parameter and an axis",
        ),
        (dict(task="linear", stepz=10), "unknown sweep field 'stepz'; did you mean 'steps'?"),
    ],
)
def test_bad_specs_fail_with_one_clear_line(spec, message):
    with pytest.raises(SpecError) as err:
        Sweep.from_dict(spec)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert isinstance(err.value, ValueError)


def test_malformed_toml_reports_line_and_column(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('task = "linear"\nsteps = = 3\n')
    with pytest.raises(SpecError, match=r"line 2, column"):
        Sweep.from_toml(path)


@pytest.mark.parametrize(
    "steps, points", [(1, 1), (5, 200), (1000, 20), (10**6, 300), (20000, 200)]
)
def test_log_schedule(steps, points):
    times = log_schedule(steps, points)
    assert times[0] == 0 and times[-1] == steps
    assert len(times) == 1 + min(steps, points)
    assert np.all(np.diff(times) > 0)
    if steps > 100 * points:  # away from the small integers the points are geometric
        tail = np.diff(np.log(times[len(times) // 2 :]))
        assert tail.max() < 1.05 * tail.min()
