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
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

import jax
import netCDF4
import numpy as np
import xarray as xr

from groksweep import groksweep_version
from groksweep.files import write_atomic
from groksweep.params import SpecError, human_bytes
from groksweep.phase import REFINED
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
    per-run ``diverged`` flag and ``diverged_at`` step (-1 where the run did not diverge).
    A sweep that solves its crossings also has ``t_train_solved`` and ``t_test_solved`` (runs,
    *extra of the accuracy), whose attributes give the level and tolerance solved to."""
    axes = list(sweep.axes)
    sizes = {"eps": len(sweep.eps)}
    data_vars = {}
    for name, extra in sweep.metrics.items():
        value = outputs[name].reshape(*sweep.shape, len(times), *(sizes[d] for d in extra))
        data_vars[name] = (axes + ["time", *extra], value)
    if sweep.crossings != "interpolate":
        for role in ("train", "test"):
            extra = sweep.metrics[f"{role}_acc"]
            value = outputs[f"t_{role}_solved"].reshape(*sweep.shape, *(sizes[d] for d in extra))
            description = f"first step {role} accuracy reaches the level, solved exactly"
            attrs = {"description": description} | {
                k: v for k, v in sweep.crossings.items() if k != "method"
            }
            data_vars[f"t_{role}_solved"] = (axes + list(extra), value, attrs)
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



# --- several sweeps read together --------------------------------------------------------------
RESULTS_FILE = "results.nc"
PHASE_FILE = "phase.nc"
SAME_FIELDS = ("task", "steps", "log_points", "eps", "measures")
"""Fields of a spec that sweeps read together must share (and every parameter not an axis)."""
OVERLAP_RTOL = 1e-3
"""Relative tolerance within which a grid point held by two sweeps must agree: runs of the same
point agree to float rounding whatever their chunking (README), not bit for bit."""


class Sweeps(NamedTuple):
    """The datasets of several sweeps read together (:func:`open_sweeps`)."""

    results: xr.Dataset
    phase: xr.Dataset


def open_sweeps(dirs: Sequence[str | Path], *, rtol: float = OVERLAP_RTOL) -> Sweeps:
    """Read the output directories of sweeps that extend one another (more seeds, a new range
    of an axis, a parameter fixed in one and an axis in another) as one grid.

    Each ``DIR`` holds the ``results.nc`` and ``phase.nc`` of ``groksweep run`` (read by
    :func:`load`, checked by :func:`check_pair`). Their task, ``steps``, ``log_points``,
    ``eps``, ``measures`` and every parameter that is an axis in none of them (defaults
    included: dtype, lr, ...) must be the same; the phase files must be of the same level. The
    axes are the union of theirs, in the order they first appear; a parameter fixed in one sweep
    and an axis in another becomes a one-value axis of the first; numeric axis values are
    sorted. Variables are aligned on the union of the values (an outer join): points that no
    sweep holds are NaN (False for booleans, -1 for ``diverged_at``) and the boolean
    ``covered`` says which points some sweep holds; a refined sweep (:mod:`groksweep.refine`)
    holds only the points it computed, and the union's ``computed`` marks the cells of the
    refined axes that some sweep holds. Points held by no sweep are missing, not censored:
    :func:`groksweep.grokking_time` and :func:`groksweep.reduce_seeds` leave them out. A point
    that two sweeps both hold must have the same trajectories (to ``rtol``, relative); the first
    sweep's are kept.

    Returns ``(results, phase)``, whose ``spec`` attribute is the sweep of the union grid (so
    :mod:`groksweep.plot` and :mod:`groksweep.theory_grid` read them like one sweep's) and
    ``sources`` the directories. Any disagreement is a one-line :class:`SpecError`.
    """
    dirs = [Path(d) for d in ([dirs] if isinstance(dirs, (str, Path)) else dirs)]
    if not dirs:
        raise SpecError("open_sweeps needs at least one sweep directory")
    read = [_read_sweep(d) for d in dirs]
    sweeps = [sweep for _, _, sweep in read]
    first = sweeps[0]
    axes = list(dict.fromkeys(name for sweep in sweeps for name in sweep.axes))
    fixed = [_fixed_values(sweep) for sweep in sweeps]
    for where, sweep, values in zip(dirs[1:], sweeps[1:], fixed[1:]):
        for name in SAME_FIELDS:
            a, b = getattr(first, name), getattr(sweep, name)
            if not _same(a, b):
                raise _mismatch(dirs[0], where, name, a, b)
        for name in sorted((values.keys() | fixed[0].keys()) - set(axes)):
            a, b = fixed[0].get(name), values.get(name)
            if not _same(a, b):
                raise _mismatch(dirs[0], where, name, a, b)
    levels = {tuple(ph.attrs.get(k) for k in ("on", "level", "loss_level")) for _, ph, _ in read}
    if len(levels) > 1:
        raise SpecError(
            f"the phase files of {', '.join(map(str, dirs))} are of different levels; redo them "
            "with one level (groksweep.grokking_time)"
        )
    grids = []
    for where, (ds, ph, sweep), values in zip(dirs, read, fixed):
        ds, ph = (_with_axes(obj, sweep, values, axes, where) for obj in (ds, ph))
        grids.append((where, ds, ph))
    coords = {name: _union([g[1][name].values for g in grids]) for name in axes}
    out = [
        _merge([(g[0], g[kind]) for g in grids], coords, axes, rtol, compare=kind == 1)
        for kind in (1, 2)
    ]
    union = Sweep(
        task=first.task,
        params={k: v for k, v in first.params.items() if k not in axes},
        axes={name: [_plain(v) for v in coords[name]] for name in axes},
        steps=first.steps,
        log_points=first.log_points,
        eps=first.eps,
        measures=first.measures,
    )
    extra = {"spec": union.to_toml(), "sources": "\n".join(str(d) for d in dirs)}
    for obj, original in zip(out, read[0][:2]):
        obj.attrs = dict(original.attrs) | extra
    return Sweeps(*out)


def _read_sweep(where: Path) -> tuple[xr.Dataset, xr.Dataset, Sweep]:
    """The results, phase and sweep of one output directory."""
    missing = [n for n in (RESULTS_FILE, PHASE_FILE) if not (where / n).is_file()]
    if missing:
        raise SpecError(f"{where} has no {' or '.join(missing)}: not a finished groksweep run")
    ds = load(where / RESULTS_FILE, kind="results")
    ph = load(where / PHASE_FILE, kind="phase")
    check_pair(ds, ph)
    return ds, ph, sweep_of(ds)


def _fixed_values(sweep: Sweep) -> dict[str, Any]:
    """Every parameter of ``sweep`` that is not its axis: given, or else the task's default."""
    from groksweep.spec import declared_params

    declared = declared_params(sweep.task_def)
    values = {name: p.default for name, p in declared.items()} | dict(sweep.params)
    return {k: v for k, v in values.items() if k not in sweep.axes}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        return (
            isinstance(a, (list, tuple))
            and isinstance(b, (list, tuple))
            and len(a) == len(b)
            and all(_same(x, y) for x, y in zip(a, b))
        )
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b or a == b and type(a) is type(b)
    if isinstance(a, (int, float, np.number)) and isinstance(b, (int, float, np.number)):
        return bool(np.isclose(a, b, rtol=1e-12, atol=0)) or a == b
    return a == b


def _mismatch(a: Path, b: Path, name: str, va: Any, vb: Any) -> SpecError:
    return SpecError(
        f"{b} has {name} = {_show(vb)} where {a} has {_show(va)}: sweeps read together must "
        "share everything but their axes"
    )


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return f"{value:g}" if isinstance(value, float) else repr(value)


def _with_axes(obj: xr.Dataset, sweep: Sweep, fixed: dict, axes: list[str], where: Path):
    """``obj`` with a one-value dim for each of ``axes`` that its sweep fixes, dims in order."""
    for name in axes:
        if name in sweep.axes:
            continue
        value = fixed.get(name)
        if value is None:
            raise SpecError(
                f"{where} has no value of {name}, an axis of another sweep: set it in its spec"
            )
        obj = obj.expand_dims({name: [value]})
    return obj.transpose(*axes, ...)  # each variable's other dims keep their order


def _union(values: list[np.ndarray]) -> np.ndarray:
    """The values of one axis in all sweeps: sorted when numeric, else in order of appearance."""
    every = np.concatenate([np.asarray(v) for v in values])
    if np.issubdtype(every.dtype, np.number) and every.dtype != bool:
        return np.unique(every)
    return np.asarray(list(dict.fromkeys(every.tolist())), dtype=every.dtype)


def _merge(parts, coords: dict, axes: list[str], rtol: float, compare: bool) -> xr.Dataset:
    """The datasets ``parts`` ((dir, dataset)) on the union grid ``coords``; a point held twice
    must agree (``compare``: on float trajectories) and is taken from the first."""
    template = parts[0][1]
    shape = tuple(len(coords[a]) for a in axes)
    covered = xr.DataArray(np.zeros(shape, bool), coords=coords, dims=axes)
    owner = xr.DataArray(np.full(shape, -1), coords=coords, dims=axes)
    merged = {}
    for index, (where, obj) in enumerate(parts):
        here = xr.DataArray(
            np.ones([obj.sizes[a] for a in axes], bool), coords={a: obj[a] for a in axes}, dims=axes
        )
        if "computed" in obj:  # a refined grid holds only the points it computed
            here = (here & obj["computed"]).transpose(*axes)
        here = here.reindex(coords, fill_value=False)
        both = here & covered
        for name, var in obj.data_vars.items():
            if name in REFINED and len(parts) > 1:
                continue
            aligned = var.reindex(coords, fill_value=_fill(var))
            if name not in merged:
                merged[name] = aligned
                continue
            if compare and both.any() and np.issubdtype(var.dtype, np.floating):
                _check_overlap(parts, owner, both, merged[name], aligned, name, where, rtol)
            merged[name] = merged[name].where(~here | covered, aligned)
        owner = owner.where(~here | covered, index)
        covered = covered | here
    out = xr.Dataset({name: var.transpose(*template[name].dims) for name, var in merged.items()})
    out["covered"] = covered
    out["covered"].attrs["description"] = "True where a sweep read together holds the point"
    refined = [obj["computed"] for _, obj in parts if "computed" in obj]
    if refined and len(parts) > 1:
        # A cell of the refined axes is computed where some sweep holds one of its points.
        dims = refined[0].dims
        out["computed"] = covered.any([a for a in axes if a not in dims]).transpose(*dims)
        out["computed"].attrs = refined[0].attrs
    return out


def _fill(var: xr.DataArray) -> Any:
    if var.dtype == bool:
        return False
    if var.dtype.kind in "iu":
        return -1
    return np.nan


def _check_overlap(parts, owner, both, old, new, name, where, rtol) -> None:
    """Refuse a point whose ``name`` differs between the sweep that brought it and ``where``."""
    a, b = old.values, new.transpose(*old.dims).values
    mask = both.broadcast_like(old).transpose(*old.dims).values
    finite = np.isfinite(a) & mask
    scale = float(np.abs(a[finite]).max()) if finite.any() else 0.0
    with np.errstate(invalid="ignore"):
        close = np.isclose(a, b, rtol=rtol, atol=1e-6 * scale, equal_nan=True)
    bad = mask & ~close
    if bad.any():
        index = dict(zip(old.dims, (int(i[0]) for i in np.nonzero(bad))))
        point = {d: _plain(old[d].values[index[d]]) for d in owner.dims}
        first = parts[int(owner.isel({d: index[d] for d in owner.dims}))][0]
        raise SpecError(
            f"{first} and {where} both hold the point {point} with different {name}: they are not "
            "runs of the same sweep"
        )


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value a spec holds."""
    return value.item() if isinstance(value, np.generic) else value
