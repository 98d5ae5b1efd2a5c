"""Untrusted results and phase files: whatever a file holds, ``results.load`` and ``groksweep
plot`` either read a groksweep file or refuse it with one line (SpecError, exit code 2), fast and
without loading more than a bound; a results and a phase file from different sweeps are refused
together."""

import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import netCDF4
import numpy as np
import pytest
import tomli_w
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

import groksweep as gs
from groksweep import results
from groksweep.cli import main
from groksweep.params import SpecError, human_bytes

HDF5 = b"\x89HDF\r\n\x1a\n"
KINDS = [None, "results", "phase"]


def tiny(lam: list[float]) -> gs.Sweep:
    return gs.Sweep(
        "linear", params={"d_in": 8, "n_test": 50}, axes={"lam": lam}, steps=50, log_points=5
    )


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory) -> Path:
    """``a/`` and ``b/``: results.nc and phase.nc of two tiny sweeps that differ in one lam."""
    root = tmp_path_factory.mktemp("sweeps")
    for name, lam in (("a", [0.5, 1.0]), ("b", [0.5, 2.0])):
        ds = gs.run(tiny(lam), progress=False)
        (root / name).mkdir()
        results.save(ds, root / name / "results.nc")
        results.save(gs.grokking_time(ds), root / name / "phase.nc")
    return root


def refused(path: Path, kind: str | None = None, **kwargs) -> str:
    """The one-line message with which ``load`` refuses ``path``."""
    with pytest.raises(SpecError) as info:
        results.load(path, kind=kind, **kwargs)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}: "), message
    return message


def rewritten(src: Path, dst: Path, change) -> Path:
    """``src`` with ``change`` applied to its dataset, saved as ``dst``."""
    with xr.open_dataset(src) as ds:
        ds = change(ds.load())
    results.save(ds, dst)
    return dst


def huge_file(path: Path, coordinate: bool) -> Path:
    """A netCDF-4 file of a few KB declaring a float64 variable of 10^11 elements (800 GB) that
    is never written, so reads as fill values: ``train_loss`` (a, time) or, with
    ``coordinate``, an index coordinate ``time``, which xarray reads eagerly on open."""
    with netCDF4.Dataset(path, "w") as nc:
        nc.spec = 'task = "linear"'
        if coordinate:
            nc.createDimension("time", 10**11)
            nc.createVariable("time", "f8", ("time",))
        else:
            nc.createDimension("a", 10**6)
            nc.createDimension("time", 10**5)
            nc.createVariable("train_loss", "f8", ("a", "time"))
    assert path.stat().st_size < 64 * 2**10
    return path


# --- size bound ---------------------------------------------------------------------------------
@pytest.mark.parametrize("coordinate", [False, True], ids=["data_variable", "index_coordinate"])
@pytest.mark.parametrize("kind", KINDS)
def test_huge_declared_variable_is_refused_fast_without_allocating(tmp_path, coordinate, kind):
    path = huge_file(tmp_path / "results.nc", coordinate)
    tracemalloc.start()
    start = time.perf_counter()
    try:
        message = refused(path, kind)
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert elapsed < 2, f"took {elapsed:.1f} s"
    assert peak < 16 * 2**20, f"allocated {human_bytes(peak)}"
    assert "745 GiB" in message and human_bytes(results.MAX_LOAD_BYTES) in message


def test_size_bound_is_set_by_max_bytes(sweeps):
    message = refused(sweeps / "a" / "results.nc", "results", max_bytes=100)
    assert "over the 100 B limit" in message
    assert 0 < results.MAX_LOAD_BYTES <= 8 * 2**30


# --- not a netCDF-4 file ------------------------------------------------------------------------
GARBAGE = {
    "random_bytes": np.random.default_rng(0).bytes(5000),
    "empty": b"",
    "text": b'train_loss = 1\nspec = "task"\n',
    "hdf5_signature_then_garbage": HDF5 + np.random.default_rng(1).bytes(3000),
    "classic_netcdf_header_then_garbage": b"CDF\x02" + np.random.default_rng(2).bytes(3000),
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("content", GARBAGE.values(), ids=GARBAGE.keys())
def test_garbage_is_refused_in_one_line(tmp_path, content, kind):
    path = tmp_path / "results.nc"
    path.write_bytes(content)
    assert "not a groksweep results file" in refused(path, kind)


def test_truncated_results_file_is_refused(sweeps, tmp_path):
    path = tmp_path / "results.nc"
    path.write_bytes((sweeps / "a" / "results.nc").read_bytes()[:3000])
    refused(path, "results")


def test_directory_is_refused_and_a_missing_file_stays_a_file_system_error(tmp_path):
    assert "not a regular file" in refused(tmp_path)
    with pytest.raises(FileNotFoundError):
        results.load(tmp_path / "absent.nc")


def test_classic_netcdf_is_refused_before_libnetcdf_parses_it(tmp_path):
    """A 128-byte classic file with one byte changed (a dimension count of ~2.7e9, negative as
    a signed int) segfaults libnetcdf 4.10's classic header parser; groksweep writes only
    netCDF-4, so a classic file never reaches it. Run in a subprocess: a crash must not take
    down the test session."""
    path = tmp_path / "results.nc"
    xr.Dataset({"x": ("a", [1.0, 2.0])}).to_netcdf(path, format="NETCDF3_CLASSIC")
    crafted = bytearray(path.read_bytes())
    crafted[12] = 0xA1  # high byte of the dimension count
    path.write_bytes(bytes(crafted))
    script = (
        "import sys; from groksweep import results; from groksweep.params import SpecError\n"
        "try: results.load(sys.argv[1])\n"
        "except SpecError as err: print(err)"
    )
    run = subprocess.run(
        [sys.executable, "-c", script, str(path)], capture_output=True, text=True, check=False
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == f"{path}: not a groksweep results file (not netCDF-4)"


@settings(max_examples=300, deadline=None)
@given(
    content=st.one_of(
        st.binary(max_size=4096),
        st.binary(max_size=4096).map(lambda b: HDF5 + b),
        st.binary(max_size=4096).map(lambda b: b"CDF\x01" + b),
    ),
    kind=st.sampled_from(KINDS),
)
def test_arbitrary_bytes_are_read_or_refused_never_another_error(content, kind):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "results.nc"
        path.write_bytes(content)
        try:
            results.load(path, kind=kind)
        except SpecError as err:
            assert "\n" not in str(err)


# --- schema -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kind, name", [("results", "train_loss"), ("results", "diverged"), ("phase", "t_test")]
)
def test_netcdf_without_a_required_variable_is_refused_naming_it(sweeps, tmp_path, kind, name):
    path = rewritten(sweeps / "a" / f"{kind}.nc", tmp_path / "x.nc", lambda ds: ds.drop_vars(name))
    assert f"missing variable {name}" in refused(path, kind)
    results.load(path)  # kind None: any netCDF-4 within the bound


def test_results_without_time_dimension_is_refused(sweeps, tmp_path):
    path = rewritten(
        sweeps / "a" / "results.nc", tmp_path / "x.nc", lambda ds: ds.isel(time=0, drop=True)
    )
    assert "no time dimension" in refused(path, "results")


BILLIONS_OF_RUNS = tomli_w.dumps(
    {
        "task": "linear",
        "params": {"d_in": 8},
        "axes": {name: [1e-3 * (i + 1) for i in range(1000)] for name in ("lr", "gamma", "alpha")}
        | {"seed": list(range(1000))},
    }
)


@pytest.mark.parametrize(
    "spec, reason",
    [
        (None, "no spec attribute"),
        (np.arange(3), "spec is not text"),
        ("task = [[[ not toml", "spec attribute is not a valid sweep"),
        ('task = "no_such_task"', "spec attribute is not a valid sweep"),
        # A valid sweep of 10^12 runs: refused by its size before the sweep resolves its runs.
        (BILLIONS_OF_RUNS, "axes do not describe the 2 runs stored"),
        # A valid sweep over the same number of runs, with other lam values.
        (tiny([0.5, 3.0]).to_toml(), "spec values of lam are not the file's"),
        (tiny([0.5, 1.0, 2.0]).to_toml(), "axes do not describe the 2 runs stored"),
    ],
    ids=["missing", "numeric", "not_toml", "bad_task", "billions_of_runs", "other_lam", "3_runs"],
)
@pytest.mark.parametrize("kind", ["results", "phase"])
def test_bad_spec_attribute_is_refused(sweeps, tmp_path, kind, spec, reason):
    def with_spec(ds):
        ds.attrs.pop("spec")
        return ds if spec is None else ds.assign_attrs(spec=spec)

    path = rewritten(sweeps / "a" / f"{kind}.nc", tmp_path / "x.nc", with_spec)
    start = time.perf_counter()
    assert reason in refused(path, kind)
    assert time.perf_counter() - start < 2


# --- pairs --------------------------------------------------------------------------------------
def test_valid_pair_loads_identically_to_xarray_and_passes(sweeps):
    loaded = {}
    for kind in ("results", "phase"):
        path = sweeps / "a" / f"{kind}.nc"
        with xr.open_dataset(path) as expected:
            expected = expected.load()
        loaded[kind] = results.load(path, kind=kind)
        xr.testing.assert_identical(loaded[kind], expected)
        xr.testing.assert_identical(results.load(path), expected)
    results.check_pair(loaded["results"], loaded["phase"])


def test_results_and_phase_of_different_sweeps_are_refused(sweeps):
    ds = results.load(sweeps / "a" / "results.nc", kind="results")
    other = results.load(sweeps / "b" / "phase.nc", kind="phase")
    with pytest.raises(
        SpecError, match=r"come from different sweeps \(their spec attributes differ\)"
    ):
        results.check_pair(ds, other)


@pytest.mark.parametrize(
    "change, reason",
    [
        (lambda ph: ph.assign_coords(lam=[0.5, 0.9]), "lam values differ"),
        (lambda ph: ph.isel(lam=[0]), "lam values differ"),
        (lambda ph: ph.assign_coords(eps=[0.5]), "eps values differ"),
        (lambda ph: ph.rename(lam="gamma"), "axes differ"),
    ],
    ids=["lam_values", "lam_subset", "eps", "axis_names"],
)
def test_same_spec_but_other_axes_is_refused(sweeps, change, reason):
    ds = results.load(sweeps / "a" / "results.nc", kind="results")
    phase = change(results.load(sweeps / "a" / "phase.nc", kind="phase"))
    with pytest.raises(SpecError, match=rf"different sweeps \(their {reason}\)"):
        results.check_pair(ds, phase)


# --- the command line ---------------------------------------------------------------------------
def plot_refuses(out: Path, capsys) -> str:
    """``groksweep plot out`` exits 2 with one line on stderr; returns it."""
    capsys.readouterr()
    assert main(["plot", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("groksweep: error: "), err
    return err


def copy_pair(src: Path, dst: Path, results_from: Path | None = None) -> Path:
    dst.mkdir()
    (dst / "results.nc").write_bytes(((results_from or src) / "results.nc").read_bytes())
    (dst / "phase.nc").write_bytes((src / "phase.nc").read_bytes())
    return dst


@pytest.mark.parametrize("content", GARBAGE.values(), ids=GARBAGE.keys())
def test_plot_of_garbage_results_exits_2_in_one_line(sweeps, tmp_path, capsys, content):
    out = copy_pair(sweeps / "a", tmp_path / "out")
    (out / "results.nc").write_bytes(content)
    assert "results.nc: not a groksweep results file" in plot_refuses(out, capsys)


def test_plot_of_huge_declared_file_exits_2_fast(sweeps, tmp_path, capsys):
    out = copy_pair(sweeps / "a", tmp_path / "out")
    huge_file(out / "results.nc", coordinate=False)
    start = time.perf_counter()
    assert "745 GiB" in plot_refuses(out, capsys)
    assert time.perf_counter() - start < 5


def test_plot_of_results_without_train_loss_exits_2_naming_it(sweeps, tmp_path, capsys):
    out = copy_pair(sweeps / "a", tmp_path / "out")
    rewritten(sweeps / "a" / "results.nc", out / "results.nc", lambda d: d.drop_vars("train_loss"))
    assert "missing variable train_loss" in plot_refuses(out, capsys)


def test_plot_of_a_pair_from_different_sweeps_exits_2(sweeps, tmp_path, capsys):
    out = copy_pair(sweeps / "b", tmp_path / "out", results_from=sweeps / "a")
    assert "come from different sweeps" in plot_refuses(out, capsys)
