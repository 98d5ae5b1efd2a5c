"""The worked example examples/sparse_parity: a plugin outside the package.

Its quick spec runs through ``groksweep run`` with the task found by its entry point (declared
in the example's own pyproject.toml, installed here without a network as a ``.dist-info``
folder on the path) and by ``module:attribute``; its data are checked against numpy.
(A fresh venv with both installed non-editable is the manual check of docs/TASKS.md.)
"""

import importlib
import importlib.metadata
import sys
import tomllib
from pathlib import Path

import jax
import numpy as np
import pytest
import xarray as xr

from groksweep.cli import main
from groksweep.tasks.registry import ENTRY_POINT_GROUP, check_declaration

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "sparse_parity"
SRC = EXAMPLE / "src"
QUICK = EXAMPLE / "sparse_parity_quick.toml"
TASK_FILE = SRC / "sparse_parity" / "__init__.py"


@pytest.fixture
def example_on_path(monkeypatch):
    """The example's src folder on sys.path, its module imported afresh and forgotten after."""
    monkeypatch.syspath_prepend(str(SRC))
    sys.modules.pop("sparse_parity", None)
    yield
    sys.modules.pop("sparse_parity", None)
    importlib.invalidate_caches()


@pytest.fixture
def installed(tmp_path, monkeypatch, example_on_path):
    """The example 'installed' as pip would: a .dist-info folder on sys.path holding the name,
    version and entry points of the example's pyproject.toml (the package itself comes from
    the src folder on the path)."""
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    entries = project["entry-points"][ENTRY_POINT_GROUP]
    site = tmp_path / "site"
    info = site / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n"
    )
    lines = [f"[{ENTRY_POINT_GROUP}]"] + [f"{name} = {value}" for name, value in entries.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    # importlib.metadata re-scans sys.path on every call; syspath_prepend also invalidates
    # the finders' caches, so the new folder is seen at once and forgotten after the test.
    monkeypatch.syspath_prepend(str(site))
    return entries


def _run(spec: Path, out: Path) -> xr.Dataset:
    assert main(["run", str(spec), "--out", str(out), "--quiet"]) == 0
    assert (out / "phase.nc").is_file() and (out / "phase_diagram.png").is_file()
    with xr.open_dataset(out / "results.nc") as ds:
        assert {"train_acc", "test_acc", "train_loss", "test_loss"} <= set(ds.data_vars)
        return ds.load()


def test_quick_spec_runs_through_the_entry_point_and_groks(installed, tmp_path):
    assert installed == {"sparse_parity": "sparse_parity:SparseParity"}
    # the first of that name on the path, which the registry loads: ours (an egg-info left in
    # the example's src by a pip install from the source tree may declare it too)
    found = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    first = next(e for e in found if e.name == "sparse_parity")
    assert first.value == "sparse_parity:SparseParity" and first.dist.version == "0.1.0"
    assert tomllib.loads(QUICK.read_text())["task"] == "sparse_parity"  # the entry point's name
    out = tmp_path / "out"
    ds = _run(QUICK, out)
    assert list(ds.test_acc.dims) == ["n_train", "gamma", "seed", "time"]  # sign accuracy: no eps
    # every run fits its training set, and every one generalises within the budget ...
    assert (ds.train_acc.isel(time=-1) == 1).all()
    assert (ds.test_acc.isel(time=-1) > 0.95).all()
    with xr.open_dataset(out / "phase.nc") as phase:
        assert not phase.train_censored.any() and not phase.test_censored.any()
        ratio = (phase.t_test / phase.t_train).load()
    # ... but with 500 samples the test accuracy reaches 0.95 long after the train accuracy
    # (grokking: about 6x at gamma 1, 13x at gamma 0.3), with 1000 almost at once (1.5x)
    assert (ratio.sel(n_train=500) > 4).all(), ratio.values
    assert (ratio.sel(n_train=1000) < 2).all(), ratio.values
    assert (ratio.sel(n_train=500, gamma=0.3) > ratio.sel(n_train=500, gamma=1.0)).all()


def test_the_same_spec_with_module_attribute(example_on_path, tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text(QUICK.read_text().replace('"sparse_parity"', '"sparse_parity:SparseParity"'))
    ds = _run(spec, tmp_path / "out")
    assert (ds.train_acc.isel(time=-1) == 1).all()
    assert float(ds.test_acc.sel(n_train=500).isel(time=0).max()) < 0.6  # chance at the start
    assert (ds.test_acc.isel(time=-1) > 0.95).all()


def _installed_for_real() -> bool:
    return any(
        e.name == "sparse_parity" for e in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    )


def test_unknown_without_the_plugin(tmp_path, capsys):
    if _installed_for_real():
        pytest.skip("the example is installed in this environment")
    spec = tmp_path / "spec.toml"
    spec.write_text(QUICK.read_text())
    assert main(["run", str(spec), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    assert "unknown task 'sparse_parity'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_data_are_prefix_stable_parities_of_the_first_k_bits(example_on_path):
    from sparse_parity import SparseParity

    task = check_declaration(SparseParity())
    key = jax.random.key(7)
    shape = {"n_bits": 12, "k": 3, "width": 8, "n_test": 300}
    small = {
        k: np.asarray(v) for k, v in task.data(key, shape | {"n_train": 50}, "float32").items()
    }
    large = {
        k: np.asarray(v) for k, v in task.data(key, shape | {"n_train": 400}, "float32").items()
    }
    assert small["x_train"].shape == (50, 12) and large["x_train"].shape == (400, 12)
    np.testing.assert_array_equal(small["x_train"], large["x_train"][:50])
    np.testing.assert_array_equal(small["y_train"], large["y_train"][:50])
    for role in ("x_test", "y_test"):  # the test set does not depend on n_train
        np.testing.assert_array_equal(small[role], large[role])
    for role in ("train", "test"):
        x, y = large[f"x_{role}"], large[f"y_{role}"]
        assert set(np.unique(x)) == {-1.0, 1.0}
        assert abs(x.mean()) < 0.05  # fair signs
        np.testing.assert_array_equal(y, np.prod(x[:, :3], axis=1))  # parity of bits 0, 1, 2
        ones = (x[:, :3] < 0).sum(axis=1)  # the same, counted: -1 for an odd number of -1s
        np.testing.assert_array_equal(y, np.where(ones % 2 == 1, -1.0, 1.0))
    assert not np.array_equal(large["x_train"][:300], large["x_test"])  # independent draws
    # other k: the parity of the first k bits, same inputs
    k5 = task.data(key, shape | {"n_train": 400, "k": 5}, "float32")
    np.testing.assert_array_equal(np.asarray(k5["x_train"]), large["x_train"])
    np.testing.assert_array_equal(np.asarray(k5["y_train"]), np.prod(large["x_train"][:, :5], 1))
    # the whole seed's draws (model included) are prefix-stable too: what the engine relies on
    a = task.sample(key, shape | {"n_train": 50}, "float32")
    b = task.sample(key, shape | {"n_train": 400}, "float32")
    for leaf_a, leaf_b in zip(
        jax.tree.leaves(a["model"]), jax.tree.leaves(b["model"]), strict=True
    ):
        np.testing.assert_array_equal(leaf_a, leaf_b)


def test_the_task_is_at_most_40_lines_on_the_high_level_api():
    assert len(TASK_FILE.read_text().splitlines()) <= 40
    text = TASK_FILE.read_text()
    assert "ModelTask" in text and "def sample" not in text and "def evaluate" not in text


@pytest.mark.slow
def test_the_plugin_keeps_the_task_contract(example_on_path):
    from sparse_parity import SparseParity

    from groksweep.testing import check_task

    small = {"n_bits": 6, "k": 3, "width": 8, "n_train": 24, "n_test": 32, "lr": 0.05}
    report = check_task(SparseParity(), small)
    assert {"declaration", "metrics", "draws", "padding", "vmap"} <= set(report.ran)
