"""Trajectories as a labelled ``xarray.Dataset``, and its file format (netCDF).

Layout: every recorded metric (the task's metrics and the measures the sweep names, see
:mod:`groksweep.measures`) is a data variable with dims ``(*axes, "time", *extra)`` before the
final transpose to ``(*axes, "eps", "time")`` order (``extra`` is ``("eps",)`` for regression
accuracies). ``diverged`` (bool) and ``diverged_at`` (the first evaluation step at which a
run's loss or weights were not finite, -1 if never) have dims ``axes``; a diverged run's
metrics are NaN from that step on. Coordinates: each axis with its values in the spec's order,
``eps`` (where a metric has that dim), and ``time`` in integer steps. Attributes: the spec as
TOML text, the groksweep and JAX versions, and the device.

Reading is safe on untrusted files: :func:`load` inspects a file's metadata (never its data)
and refuses, with a one-line :class:`~groksweep.params.SpecError`, anything that is not
netCDF-4, that declares more data than :data:`MAX_LOAD_BYTES` (a tiny file can declare terabytes
of never-written fill values), that lacks the variables of its ``kind``, or whose ``spec``
attribute is not a valid sweep of the grid it stores. :func:`check_pair` refuses a results and
a phase file from different sweeps.
"""

from __future__ import annotations

import math
import os
import stat
import tomllib
from pathlib import Path
from typing import Any, Literal

import jax
import netCDF4
import numpy as np
import xarray as xr

from groksweep import groksweep_version
from groksweep.files import write_atomic
from groksweep.params import SpecError, human_bytes
from groksweep.spec import Sweep

Kind = Literal["results", "phase"]
# netCDF-4 is HDF5, which save writes. The classic format ("CDF\x01", "CDF\x02") is refused
# before any library parses it: libnetcdf's classic header parser segfaults on some crafted files.
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
REQUIRED = {
    "results": ("train_loss", "train_acc", "test_acc", "diverged", "diverged_at"),
    "phase": ("t_train", "t_test", "delta_t", "train_censored", "test_censored", "diverged"),
}
# What the netCDF/HDF5 libraries, xarray's decoding, and TOML parsing and sweep validation (of
# text never meant for them: RecursionError, OverflowError, ...) raise on a hostile file.
READ_ERRORS = (
    OSError,
    ValueError,
    RuntimeError,
    TypeError,
    LookupError,
    ArithmeticError,
    AttributeError,
)
# Loaded bytes per element. CF decoding may widen any number to float64 (an integer with a
# _FillValue or scale_factor), so none counts for less. A variable-length string costs a pointer
# and a small Python object; its characters are stored in the file, bounded by the file's size.
MIN_NUMBER_BYTES = 8
VLEN_STRING_BYTES = 64


def _max_load_bytes() -> int:
    """8 GiB, or half the free host memory when that is less."""
    cap = 8 * 2**30
    try:
        free = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # no such sysconf name on this platform
        return cap
    return min(cap, free // 2)


MAX_LOAD_BYTES = _max_load_bytes()


def to_dataset(
    sweep: Sweep, outputs: dict[str, np.ndarray], times: np.ndarray, diverged_at: np.ndarray
) -> xr.Dataset:
    """Label ``outputs`` (metric -> (runs, time, *extra), grid order) as a Dataset, with the
    per-run ``diverged`` flag and ``diverged_at`` step (-1 where the run did not diverge)."""
    axes = list(sweep.axes)
    sizes = {"eps": len(sweep.eps)}
    data_vars = {}
    for name, extra in sweep.metrics.items():
        value = outputs[name].reshape(*sweep.shape, len(times), *(sizes[d] for d in extra))
        data_vars[name] = (axes + ["time", *extra], value)
    diverged_at = diverged_at.reshape(sweep.shape)
    data_vars["diverged"] = (axes, diverged_at >= 0)
    data_vars["diverged_at"] = (
        axes,
        diverged_at,
        {"description": "first evaluation step with non-finite loss or weights; -1: never"},
    )
    # Tasks without thresholded accuracies (classification) carry no eps coordinate.
    thresholds = ["eps"] if any("eps" in extra for extra in sweep.metrics.values()) else []
    coords = {name: list(values) for name, values in sweep.axes.items()}
    coords |= {"eps": list(sweep.eps)} if thresholds else {}
    ds = xr.Dataset(data_vars, coords=coords | {"time": times})
    ds = ds.transpose(*axes, *thresholds, "time")
    ds.attrs = {
        "spec": sweep.to_toml(),
        "groksweep_version": groksweep_version(),
        "jax_version": jax.__version__,
        "device": str(jax.devices()[0].device_kind),
        "platform": jax.default_backend(),
    }
    return ds


def sweep_of(ds: xr.Dataset) -> Sweep:
    """The sweep that produced ``ds``, from its ``spec`` attribute."""
    import tomllib

    return Sweep.from_dict(tomllib.loads(ds.attrs["spec"]))


def save(ds: xr.Dataset, path: str | Path) -> None:
    """Write ``ds`` as netCDF-4, atomically (:func:`groksweep.files.write_atomic`): whole or
    not at all, never through a link; a failure is a one-line
    :class:`groksweep.files.OutputError`."""
    write_atomic(path, lambda tmp: ds.to_netcdf(tmp, format="NETCDF4"))


def load(path: str | Path, kind: Kind | None = None, *, max_bytes: int | None = None) -> xr.Dataset:
    """Read a results or phase file written by :func:`save`, fully into memory, after checking
    it without reading its data.

    Any file that is not a readable netCDF-4 file, or declares more than ``max_bytes`` (default
    :data:`MAX_LOAD_BYTES`) of variables, is refused with a one-line :class:`SpecError`.
    ``kind="results"`` or ``"phase"`` also requires that kind's variables (:data:`REQUIRED`) and
    a ``spec`` attribute that is a valid sweep of the grid the file stores; ``kind=None`` checks
    nothing more. File-system errors (a missing file) stay ``OSError``.
    """
    if kind is not None and kind not in REQUIRED:
        raise ValueError(f"kind must be None, 'results' or 'phase'; got {kind!r}")
    path = Path(path)
    if not stat.S_ISREG(path.stat().st_mode):  # a FIFO or a device would block or never end
        raise _refused(path, "not a regular file")
    with open(path, "rb") as file:
        if file.read(len(HDF5_SIGNATURE)) != HDF5_SIGNATURE:
            raise _refused(path, "not netCDF-4")
    header = _header(path)
    _check_size(path, header, MAX_LOAD_BYTES if max_bytes is None else max_bytes)
    sweep = _check_schema(path, header, kind) if kind is not None else None
    try:
        # Only now may xarray read: it loads index coordinates eagerly, even on open.
        with xr.open_dataset(path, engine="netcdf4") as ds:
            ds = ds.load()
    except READ_ERRORS as err:
        raise _refused(path, err) from None
    if sweep is not None:
        _check_grid(path, ds, sweep)
    return ds


def check_pair(results: xr.Dataset, phase: xr.Dataset) -> None:
    """Refuse (:class:`SpecError`) a results and a phase dataset from different sweeps: their
    ``spec`` attributes or their axis coordinates (every dim but ``time``; ``eps`` when both
    have it) differ."""
    why = _difference(results, phase)
    if why:
        raise SpecError(f"results.nc and phase.nc come from different sweeps ({why})")


def _difference(results: xr.Dataset, phase: xr.Dataset) -> str | None:
    """What tells the two datasets apart as sweeps, or None."""
    if results.attrs.get("spec") != phase.attrs.get("spec"):
        return "their spec attributes differ"
    axes = [d for d in results.dims if d not in ("time", "eps")]
    if axes != [d for d in phase.dims if d not in ("time", "eps")]:
        return "their axes differ"
    # A phase file of loss crossings has no eps: only thresholds both have must agree.
    shared = axes + (["eps"] if "eps" in results.dims and "eps" in phase.dims else [])
    for dim in shared:
        if not np.array_equal(results[dim].values, phase[dim].values):
            return f"their {dim} values differ"
    return None


def _refused(path: Path, reason: Any) -> SpecError:
    """The one-line error for a file that ``load`` will not read; ``reason`` made one short line."""
    if isinstance(reason, OSError) and reason.strerror:
        reason = reason.strerror  # without the path, which the line starts with
    text = " ".join(str(reason).split()) or type(reason).__name__
    return SpecError(f"{path}: not a groksweep results file ({text[:200]})")


def _header(path: Path) -> dict[str, Any]:
    """Dims, variables (name -> dims, shape, loaded bytes per element) and the spec attribute,
    from metadata only: netCDF4 reads no variable's data until it is indexed."""
    try:
        with netCDF4.Dataset(path) as nc:
            variables = {n: (v.dimensions, v.shape, _itemsize(v)) for n, v in nc.variables.items()}
            spec = nc.getncattr("spec") if "spec" in nc.ncattrs() else None
            return {"dims": set(nc.dimensions), "variables": variables, "spec": spec}
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        raise
    except READ_ERRORS as err:
        raise _refused(path, err) from None


def _itemsize(var: netCDF4.Variable) -> int:
    if var.dtype is str:
        return VLEN_STRING_BYTES
    dtype = np.dtype(var.dtype)
    if dtype.kind not in "biufcSU":  # compound, opaque, vlen arrays: never written by save
        raise ValueError(f"variable {var.name} has unsupported type {var.datatype}")
    return dtype.itemsize if dtype.kind in "SU" else max(dtype.itemsize, MIN_NUMBER_BYTES)


def _check_size(path: Path, header: dict[str, Any], max_bytes: int) -> None:
    """Refuse a file whose variables, loaded, would take more than ``max_bytes``. Unwritten
    data reads as fill values, so a file of a few KB may declare any size."""
    total = sum(math.prod(shape) * size for _, shape, size in header["variables"].values())
    if total > max_bytes:
        size, limit = human_bytes(total), human_bytes(max_bytes)
        raise _refused(path, f"its variables would take {size} loaded, over the {limit} limit")


def _check_schema(path: Path, header: dict[str, Any], kind: Kind) -> Sweep:
    """The variables, ``time`` dim (results) and ``spec`` attribute a ``kind`` file must have;
    returns the spec's sweep, which must have as many runs as the file holds."""
    missing = [name for name in REQUIRED[kind] if name not in header["variables"]]
    if missing:
        raise _refused(path, f"missing variable {', '.join(missing)}")
    if kind == "results" and "time" not in header["dims"]:
        raise _refused(path, "no time dimension")
    if not isinstance(header["spec"], str):
        raise _refused(path, "no spec attribute" if header["spec"] is None else "spec is not text")
    return _parse_spec(path, header["spec"], runs=math.prod(header["variables"]["diverged"][1]))


def _parse_spec(path: Path, text: str, runs: int) -> Sweep:
    """The sweep of a spec attribute. Its grid size is checked first: constructing a sweep
    resolves every run, and a crafted spec could declare billions."""
    try:
        spec = tomllib.loads(text)
        axes = spec.get("axes", {})
        if math.prod(len(values) for values in axes.values()) != runs:
            raise ValueError(f"its axes do not describe the {runs} runs stored")
        return Sweep.from_dict(spec)
    except READ_ERRORS as err:  # SpecError is a ValueError
        raise _refused(path, f"spec attribute is not a valid sweep: {err}") from None


def _check_grid(path: Path, ds: xr.Dataset, sweep: Sweep) -> None:
    """The spec's axes must be the grid of ``diverged``: names in order, and values."""
    if list(ds["diverged"].dims) != list(sweep.axes):
        raise _refused(path, "spec axes are not the dims of diverged")
    for name, values in sweep.axes.items():
        if not np.array_equal(ds[name].values, np.asarray(values)):
            raise _refused(path, f"spec values of {name} are not the file's")

