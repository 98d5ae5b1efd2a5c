"""Trajectories as a labelled ``xarray.Dataset``, and its file format (netCDF).

Layout: every recorded metric (the task's metrics and the measures the sweep names, see
:mod:`groksweep.measures`) is a data variable with dims ``(*axes, "time", *extra)`` before the
final transpose to ``(*axes, "eps", "time")`` order (``extra`` is ``("eps",)`` for regression
accuracies). ``diverged`` (bool) and ``diverged_at`` (the first evaluation step at which a
run's loss or weights were not finite, -1 if never) have dims ``axes``; a diverged run's
metrics are NaN from that step on. Coordinates: each axis with its values in the spec's order,
``eps`` (where a metric has that dim), and ``time`` in integer steps. Attributes: the spec as
TOML text, the groksweep and JAX versions, and the device.
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import xarray as xr

from groksweep.spec import Sweep


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
    """Write ``ds`` as netCDF-4, atomically: to a temporary file, then renamed into place."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    ds.to_netcdf(tmp)
    tmp.replace(path)


def load(path: str | Path) -> xr.Dataset:
    """Read a results or phase file written by :func:`save`, fully into memory."""
    with xr.open_dataset(path) as ds:
        return ds.load()


def groksweep_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("groksweep")
    except PackageNotFoundError:
        return "unknown"
