"""Grokking times: the reduction of trajectories to phase-diagram maps.

The grokking time of a run is the first time its train (or test) accuracy reaches ``level``,
interpolated linearly in log-time between the two evaluation points around the crossing
(linearly in time when the earlier point is step 0). A run that never reaches the level within
its steps is *censored*: its time is NaN and a boolean flag says so. It is never reported as
the last step. ``delta_t = t_test - t_train`` is NaN when either is censored. A run whose loss
diverged is flagged ``diverged`` instead, and is not counted as censored (no grokking).
"""

from __future__ import annotations

import warnings

import numpy as np
import xarray as xr

ROLES = ("train", "test")
REFINED = ("computed", "refine_round")
"""The variables of a refined grid (:mod:`groksweep.refine`): which points were computed, and in
which round; phase maps carry them, and a point not computed is neither grokking nor censored."""

HELD = (*REFINED, "covered")
"""What phase maps carry of where runs exist: a refined grid's variables, and the ``covered``
of sweeps read together (:func:`groksweep.open_sweeps`). A point held by no run is missing:
neither grokking, nor censored, nor counted among the seeds."""


def _held(ds: xr.Dataset) -> xr.DataArray | bool:
    """True at the points some run holds (:data:`HELD`)."""
    held = True
    for name in ("computed", "covered"):
        if name in ds:
            held = held & ds[name]
    return held


def grokking_time(
    ds: xr.Dataset, level: float | None = None, *, on: str = "accuracy", loss_level: float = 1e-2
) -> xr.Dataset:
    """First times train and test reach a level, with ``delta_t`` and censoring flags.

    ``on="accuracy"``: the first time ``train_acc``/``test_acc`` reach ``level``; dims
    ``(*axes, "eps")``. ``on="loss"``: the first time ``train_loss``/``test_loss`` fall to
    ``loss_level`` times their value at step 0; dims ``(*axes,)``.

    Where the sweep solved its crossings (``crossings = "solve"``, :mod:`groksweep.crossings`)
    at this ``level``, the times are the solved ones; otherwise they are interpolated between
    log points. ``level`` defaults to the solved level, or 0.95. Each time's ``crossing``
    attribute, and the dataset's, say which method produced it: ``"solved"`` or
    ``"interpolated"``.
    """
    solved_level = ds["t_train_solved"].attrs["level"] if "t_train_solved" in ds else None
    if level is None:
        level = 0.95 if solved_level is None or on != "accuracy" else solved_level
    method = "interpolated"
    if on == "accuracy":
        if not 0 < level < 1:
            raise ValueError(f"level must be in (0, 1), got {level!r}")
        series = {role: ds[f"{role}_acc"] for role in ROLES}
        if solved_level is not None and float(level) == float(solved_level):
            method = "solved"
        elif solved_level is not None:
            warnings.warn(
                f"crossings were solved at level {solved_level:g}; level {level:g} is "
                "interpolated between log points",
                stacklevel=2,
            )
        attrs = {"on": on, "level": level}
    elif on == "loss":
        if not loss_level > 0:
            raise ValueError(f"loss_level must be > 0, got {loss_level!r}")
        # Crossing "loss <= loss_level * loss(0)" upward is crossing "-loss/loss(0) >= -loss_level".
        series = {r: -ds[f"{r}_loss"] / ds[f"{r}_loss"].isel(time=0) for r in ROLES}
        level, attrs = -loss_level, {"on": on, "loss_level": loss_level}
    else:
        raise ValueError(f"on must be 'accuracy' or 'loss', got {on!r}")

    out = xr.Dataset(attrs=attrs | {"spec": ds.attrs.get("spec", "")})
    diverged = (
        ds["diverged"] if "diverged" in ds else xr.zeros_like(ds["train_loss"].isel(time=0), bool)
    )
    held = _held(ds)
    out.attrs["crossing"] = method
    for role, values in series.items():
        if method == "solved":
            t = ds[f"t_{role}_solved"].copy()
            t.attrs = {"crossing": method, "rtol": ds[f"t_{role}_solved"].attrs["rtol"]}
        else:
            t = xr.apply_ufunc(
                first_crossing,
                values,
                ds["time"],
                kwargs={"level": level},
                input_core_dims=[["time"], ["time"]],
            )
            t.attrs = {"crossing": method}
        out[f"t_{role}"] = t
        out[f"{role}_censored"] = t.isnull() & ~diverged & held
    out["delta_t"] = out["t_test"] - out["t_train"]
    out["diverged"] = diverged
    return out.assign({name: ds[name] for name in HELD if name in ds})


def stage_times(ds: xr.Dataset, level: float = 1e-3) -> xr.Dataset:
    """The three stages of grokking in overparameterised ridge regression (Xu, Vardi & Safran):
    fast overfitting, a plateau of poor generalisation, and late generalisation.

    A stage ends when a loss has settled: ``t_fit`` is the time after which the train loss
    stays within ``level`` (absolute) of its final value, ``t_generalise`` the same for the
    test loss; ``plateau = t_generalise - t_fit``. The final value is the loss at the last log
    point, so runs must be long enough to converge: ``converged`` is False (and the times NaN)
    where either loss still moved by more than ``level / 10`` between the last two log points.
    Absolute, not relative, levels keep the dependence on the initial scale that the theory
    predicts (t proportional to ln(alpha^2) for an initial excess proportional to alpha^2).
    """
    if not level > 0:
        raise ValueError(f"level must be > 0, got {level!r}")
    out = xr.Dataset(attrs={"on": "settled loss", "level": level, "spec": ds.attrs.get("spec", "")})
    converged = True
    for role, name in (("train", "t_fit"), ("test", "t_generalise")):
        loss = ds[f"{role}_loss"]
        final = loss.isel(time=-1)
        converged = converged & (abs(final - loss.isel(time=-2)) <= level / 10)
        out[name] = xr.apply_ufunc(
            settling_time,
            abs(loss - final),
            ds["time"],
            kwargs={"level": level},
            input_core_dims=[["time"], ["time"]],
        )
    out = out.where(converged)
    out["converged"] = converged
    out["plateau"] = out["t_generalise"] - out["t_fit"]
    return out


def settling_time(distance: np.ndarray, times: np.ndarray, level: float) -> np.ndarray:
    """The time after which ``distance`` (last axis over ``times``) stays at or below ``level``,
    interpolated as in :func:`first_crossing` between the last point above and the next."""
    distance = np.asarray(distance, dtype=np.float64)
    above = distance > level
    n = distance.shape[-1]
    last_above = np.where(above.any(-1), n - 1 - np.argmax(above[..., ::-1], axis=-1), -1)
    # Points before the last excursion cannot be the settling time: hide them from the crossing.
    hidden = np.arange(n) < last_above[..., None]
    return first_crossing(np.where(hidden, -np.inf, -distance), times, -level)


def first_crossing(values: np.ndarray, times: np.ndarray, level: float) -> np.ndarray:
    """First time ``values`` (last axis over ``times``) reach ``level``; NaN if never."""
    values = np.asarray(values, dtype=np.float64)
    times = np.asarray(times, dtype=np.float64)
    reached = values >= level
    k = np.argmax(reached, axis=-1)
    hit = np.take_along_axis(reached, k[..., None], -1)[..., 0]
    before = np.maximum(k - 1, 0)
    v0 = np.take_along_axis(values, before[..., None], -1)[..., 0]
    v1 = np.take_along_axis(values, k[..., None], -1)[..., 0]
    t0, t1 = times[before], times[k]
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.clip((level - v0) / (v1 - v0), 0.0, 1.0)
        log_time = np.exp(np.log(t0) + frac * (np.log(t1) - np.log(t0)))
    crossing = np.where(t0 > 0, log_time, t0 + frac * (t1 - t0))
    crossing = np.where(k == 0, times[0], crossing)
    return np.where(hit, crossing, np.nan)


def reduce_seeds(phase: xr.Dataset, dim: str = "seed") -> xr.Dataset:
    """Median and quartiles over seeds of ``t_train``, ``t_test`` and ``delta_t``, and the
    fraction of censored runs.

    Censored times are right-censored (later than the last step), so they enter the order
    statistics as +infinity: a median is reported only when fewer than half the seeds are
    censored; otherwise it is NaN, like a censored run. Seeds that hold no run (sweeps read
    together with different seeds, ``covered``) are left out of every statistic, fractions
    included. On a refined grid every statistic is NaN at the points not computed, and
    ``computed`` and ``refine_round`` are kept.
    """
    if dim not in phase.dims:
        raise ValueError(f"no {dim!r} dimension to reduce over")
    out = xr.Dataset(attrs=phase.attrs)
    # A finite sentinel: quantile interpolation towards it stays finite and above any real time.
    sentinel = 1e300
    held = _held(phase)
    for name in ("t_train", "t_test", "delta_t"):
        filled = phase[name].fillna(sentinel).where(held)  # NaN: skipped by the quantiles
        for label, q in (("median", 0.5), ("q25", 0.25), ("q75", 0.75)):
            with warnings.catch_warnings():  # a point no seed holds is NaN, as it should be
                warnings.filterwarnings("ignore", "All-NaN slice", RuntimeWarning)
                value = filled.quantile(q, dim=dim).drop_vars("quantile")
            out[f"{name}_{label}"] = value.where(value < sentinel * 1e-3)
    fraction = lambda flag: flag.astype(float).where(held).mean(dim)  # noqa: E731
    for role in ROLES:
        out[f"{role}_censored_fraction"] = fraction(phase[f"{role}_censored"])
    if "diverged" in phase:  # phase files written before divergence was tracked lack it
        out["diverged_fraction"] = fraction(phase["diverged"])
    if "computed" in phase:
        out = out.where(phase["computed"])
    return out.assign({name: phase[name] for name in HELD if name in phase and name != "covered"})
