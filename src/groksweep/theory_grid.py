"""The exact theory of the linear task (:mod:`groksweep.theory`) on a sweep's own grid, and how
far the trained runs are from it.

The theory's parameters of every run come from the sweep's run table (:meth:`Sweep.runs`: the
canonical values the trainer used, defaults filled in and ``n_train`` resolved), never from
defaults written again here. λ is the *effective* ``d_in / n_train`` of each run, so a sweep
over ``lam = 0.3`` at d_in = 200 is compared with the theory at 200/667, the ratio it trained.

Results follow the layout of :mod:`groksweep.results` and :mod:`groksweep.phase`: one dim per
axis of the sweep that the theory depends on (seed never), in the sweep's order, then ``eps``,
then ``time``; coordinates are the sweep's own, so trained and theory values line up by label::

    curves, times = theory_grid.theory_on_grid(ds)           # losses/accuracies, grokking times
    theory_grid.grokking_agreement(phase, times)             # trained seed medians against them
    theory_grid.loss_agreement(ds)                           # seed-mean losses against them
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from groksweep import results, theory
from groksweep.phase import first_crossing, reduce_seeds
from groksweep.spec import Sweep

THEORY_PARAMS = ("lam", "lr", "gamma", "d_out", "alpha", "noise")
"""The parameters of :func:`groksweep.theory.losses` that a run of the linear task sets."""
TIMES = ("t_train", "t_test", "delta_t")
ROLES = ("train", "test")
LEVEL = 0.95  # accuracy level of the grokking times, as in groksweep.grokking_time
EPS = 1e-3  # threshold of theory_curves' accuracies when none is given


# --- the parameters of a sweep's runs ----------------------------------------------------------
def run_parameters(source: Sweep | xr.Dataset, names: tuple[str, ...]) -> dict[str, xr.DataArray]:
    """Parameters ``names`` of every run of a sweep (or of the sweep that wrote a results or
    phase Dataset), from :meth:`Sweep.runs`: each a DataArray over the axes along which it
    varies, with the sweep's coordinates, or 0-d where it is the same for every run."""
    sweep = source if isinstance(source, Sweep) else results.sweep_of(source)
    runs = sweep.runs()
    coords = {name: list(values) for name, values in sweep.axes.items()}
    out = {}
    for name in names:
        values = np.array([run[name] for run in runs]).reshape(sweep.shape)
        out[name] = _drop_constant_dims(xr.DataArray(values, dims=list(sweep.axes), coords=coords))
    return out


def grid_parameters(source: Sweep | xr.Dataset) -> dict[str, xr.DataArray]:
    """The theory's parameters (:data:`THEORY_PARAMS`) of every run, as :func:`run_parameters`
    gives them; ``lam`` is the run's effective d_in / n_train. Raises a ValueError for a sweep
    the theory does not describe (another task, optimizer or input spectrum) or whose theory
    would depend on the seed."""
    sweep = source if isinstance(source, Sweep) else results.sweep_of(source)
    _check_covered(sweep)
    params = run_parameters(sweep, ("d_in", "n_train", *THEORY_PARAMS[1:]))
    lam = params.pop("d_in") / params.pop("n_train")
    params = {"lam": _drop_constant_dims(lam)} | params
    for name, values in params.items():
        if "seed" in values.dims:
            raise ValueError(f"{name} depends on the seed; the theory is a seed average")
    return params


def _check_covered(sweep: Sweep) -> None:
    """The theory is the linear task with full-batch gradient descent and isotropic inputs."""
    if sweep.task != "linear":
        raise ValueError(f"the theory covers the linear task, not {sweep.task}")
    for run in sweep.runs():
        if run["optimizer"] != "gd" or run["input_spectrum"] != "identity":
            raise ValueError(
                "the theory covers gradient descent (optimizer gd) on identity inputs; the sweep "
                f"has optimizer {run['optimizer']}, input_spectrum {run['input_spectrum']}"
            )


def _drop_constant_dims(values: xr.DataArray) -> xr.DataArray:
    """``values`` without the dims along which it does not change."""
    for dim in list(values.dims):
        first = values.isel({dim: 0}, drop=True)
        if bool((values == first).all()):
            values = first
    return values


# --- the theory over labelled parameters -------------------------------------------------------
def theory_losses(times: Any, **values: Any) -> xr.Dataset:
    """Expected ``train_loss`` and ``test_loss`` (:func:`groksweep.theory.losses`) at ``times``
    (steps) for parameters ``values`` (those of :data:`THEORY_PARAMS`; lam is required, the
    others default as in the theory, which are the trainer's defaults). A 1-D sequence becomes a
    dim named after its parameter (``time`` for ``times``), a DataArray keeps its dims, a
    scalar is fixed. Dims: the parameters' in the order given, then ``time``."""
    arrays = _labelled(values, THEORY_PARAMS)

    def losses(t, *args):
        return theory.losses(t, **dict(zip(arrays, args)))

    train, test = xr.apply_ufunc(
        losses, _labelled_one("time", times), *arrays.values(), output_core_dims=[[], []]
    )
    out = xr.Dataset({"train_loss": train, "test_loss": test})
    return out.transpose(..., "time", missing_dims="ignore")


def theory_curves(times: Any, **values: Any) -> xr.Dataset:
    """:func:`theory_losses` and the accuracies ``train_acc``, ``test_acc`` at each threshold
    ``eps`` (another name in ``values``, default 1e-3; eq. 12, :func:`groksweep.theory.accuracy`).
    Accuracies have dims (..., ``eps``, ``time``)."""
    eps = _labelled_one("eps", values.pop("eps", EPS))
    out = theory_losses(times, **values)
    d_out = [_labelled_one("d_out", values["d_out"])] if "d_out" in values else []
    with np.errstate(over="ignore"):  # eps / loss where the loss underflows to 0: accuracy 1
        for role in ROLES:
            loss = out[f"{role}_loss"]
            out[f"{role}_acc"] = xr.apply_ufunc(theory.accuracy, loss, eps, *d_out)
    return out.transpose(..., "eps", "time", missing_dims="ignore")


def theory_times(*, level: float = LEVEL, **values: Any) -> xr.Dataset:
    """Exact grokking times :func:`groksweep.theory.grokking_time` for parameters ``values``
    (:data:`THEORY_PARAMS` and ``eps``), labelled as in :func:`theory_losses`: ``t_train``,
    ``t_test`` (the first step at which accuracy reaches ``level``; NaN: never) and
    ``delta_t``."""
    arrays = _labelled(values, (*THEORY_PARAMS, "eps"))

    def times(*args):
        return theory.grokking_time(**dict(zip(arrays, args)), level=level)

    t_train, t_test = xr.apply_ufunc(times, *arrays.values(), output_core_dims=[[], []])
    return xr.Dataset({"t_train": t_train, "t_test": t_test, "delta_t": t_test - t_train})


def theory_on_grid(
    ds: xr.Dataset, level: float = LEVEL, n_times: int = 400
) -> tuple[xr.Dataset, xr.Dataset]:
    """(curves, times): the theory of every run of the sweep that wrote ``ds``, at its ``eps``.

    ``curves`` (:func:`theory_curves`) on ``n_times`` log-spaced times from step 1 to the
    sweep's last step, and step 0; ``times`` (:func:`theory_times`) at accuracy ``level``.
    Dims: the sweep's axes that the theory depends on, in the sweep's order, then ``eps`` and
    ``time``."""
    params = grid_parameters(ds) | {"eps": ds["eps"]}
    steps = int(ds["time"].values[-1])
    times = np.unique(np.concatenate([[0.0], np.geomspace(1.0, steps, n_times)]))
    curves = theory_curves(times, **params)
    phase = theory_times(level=level, **params)
    axes = [name for name in results.sweep_of(ds).axes if name in phase.dims]
    return curves.transpose(*axes, ...), phase.transpose(*axes, "eps")


def _labelled(values: dict[str, Any], allowed: tuple[str, ...]) -> dict[str, xr.DataArray]:
    """``values`` as DataArrays (:func:`_labelled_one`), refusing names the theory lacks."""
    for name in values:
        if name not in allowed:
            raise ValueError(f"the theory has no parameter {name!r}; it takes {', '.join(allowed)}")
    if "lam" not in values:
        raise ValueError("the theory needs lam (d_in / n_train)")
    return {name: _labelled_one(name, value) for name, value in values.items()}


def _labelled_one(name: str, values: Any) -> xr.DataArray:
    """A DataArray as it is; a 1-D sequence as a dim ``name`` (its own coordinate); a scalar."""
    if isinstance(values, xr.DataArray):
        return values
    values = np.asarray(values, dtype=float)
    if values.ndim == 0:
        return xr.DataArray(values)
    return xr.DataArray(values, dims=name, coords={name: values})


# --- trained against theory --------------------------------------------------------------------
def grokking_agreement(phase: xr.Dataset, theory_phase: xr.Dataset) -> xr.Dataset:
    """Trained grokking times (seed medians of :func:`groksweep.reduce_seeds`) beside the
    theory's on the same grid (e.g. from :func:`theory_on_grid`).

    Variables: ``t_train``, ``t_test``, ``delta_t`` (trained medians; NaN where half the seeds
    or more never grok), the same with ``_theory``, ``delta_t_ratio`` = trained / theory Δt
    (NaN unless both are finite and the theory's is not 0) and ``test_censored_fraction``.
    A theory on other coordinates than the trained grid is refused (ValueError)."""
    summary = reduce_seeds(phase)
    summary, expected = xr.align(summary, theory_phase[list(TIMES)], join="exact")
    out = xr.Dataset()
    for name in TIMES:
        out[name] = summary[f"{name}_median"]
        out[f"{name}_theory"] = expected[name]
    out["delta_t_ratio"] = _ratio(out["delta_t"], out["delta_t_theory"])
    out["test_censored_fraction"] = summary["test_censored_fraction"]
    return out


def _ratio(a: xr.DataArray, b: xr.DataArray) -> xr.DataArray:
    """a / b where both are finite and b is not 0, NaN elsewhere."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return (a / b).where(np.isfinite(a) & np.isfinite(b) & (b != 0))


def loss_agreement(ds: xr.Dataset, min_modes: float = 100.0, floor: float = 1e-6) -> xr.Dataset:
    """How far the seed-mean trained losses of ``ds`` are from the theory at its evaluation
    times: max |trained / theory - 1| over two windows, for each point of the grid.

    The theory is the d_in -> infinity expectation, exact for one seed only where the loss is
    self-averaging: ``{role}_deviation`` is the maximum over the times where at least
    ``min_modes`` effective modes carry the loss (:func:`effective_modes`; NaN where there are
    none), ``{role}_self_averaging_until`` the last such step (0 where none);
    ``{role}_deviation_all`` the maximum over every time after step 0 where the theory loss is
    above ``floor`` times its initial value. Dims: the sweep's axes but seed."""
    params = grid_parameters(ds)
    d_in = run_parameters(ds, ("d_in",))["d_in"]
    expected = theory_losses(ds["time"], **params)
    out = xr.Dataset()
    for role in ROLES:
        trained = ds[f"{role}_loss"]
        trained = trained.mean("seed") if "seed" in trained.dims else trained
        theory_loss = expected[f"{role}_loss"]
        deviation = abs(trained / theory_loss - 1)
        above = (theory_loss > floor * theory_loss.isel(time=0)) & (ds["time"] > 0)
        modes = _modes_on_grid(ds["time"], params, d_in, role)
        window = above & (modes >= min_modes)
        out[f"{role}_deviation"] = deviation.where(window).max("time")
        out[f"{role}_self_averaging_until"] = ds["time"].where(window).max("time").fillna(0)
        out[f"{role}_deviation_all"] = deviation.where(above).max("time")
    return out


def _modes_on_grid(times: xr.DataArray, params: dict, d_in: xr.DataArray, role: str):
    """:func:`effective_modes` at ``times`` for every point of the grid of ``params``."""
    names = ("lam", "lr", "gamma", "d_out", "alpha")

    def modes(t, d_in, *args):
        return effective_modes(t, role=role, d_in=d_in, **dict(zip(names, args)))

    return xr.apply_ufunc(modes, times, d_in, *(params[name] for name in names))


# --- finite d_in -------------------------------------------------------------------------------
def effective_modes(t, lam, *, role: str, d_in, lr=0.01, gamma=0.0, d_out=1, alpha=1.0):
    """How many independent Gaussian modes carry the expected loss at step ``t``.

    n = d_in d_out E[w]^2 / E[w^2], w(nu) the loss weight of one eigenmode nu of Sigma:
    q (alpha^2 e^{-(nu+g) s} + ((e^{-(nu+g)s/2} nu + g)/(nu + g))^2), q = nu for the train
    loss, 1 for the test loss, s and g as in :func:`groksweep.theory.losses` (label noise
    ignored). A seed's loss is a chi-square-like sum whose relative standard deviation is about
    sqrt(2 / n): the theory's expectation describes one seed only where n is large
    (self-averaging); at late times n falls to a few modes at the MP edge and single seeds
    scatter by O(1). Broadcasts over all its arguments."""
    if role not in ROLES:
        raise ValueError(f"role must be train or test, got {role!r}")
    d_out = np.asarray(d_out, dtype=float)
    s = 4.0 * np.asarray(lr, dtype=float) * np.asarray(t, dtype=float) / d_out
    g = np.asarray(gamma, dtype=float) * d_out / 2.0

    def weight(nu, s, g, alpha2, power):
        decay = np.exp(-(nu + g) * s / 2.0)
        rate = nu + g
        teacher = np.where(rate > 0, (decay * nu + g) / np.where(rate > 0, rate, 1.0), 1.0)
        q = nu if role == "train" else 1.0
        return (q * (alpha2 * decay**2 + teacher**2)) ** power

    alpha2 = np.square(alpha)
    with np.errstate(invalid="ignore", divide="ignore"):
        first = theory.mp_expectation(weight, lam, s, g, alpha2, 1.0)
        second = theory.mp_expectation(weight, lam, s, g, alpha2, 2.0)
        return d_in * d_out * first**2 / second


def finite_size_times(
    d_in: int,
    *,
    lam: float,
    level: float = LEVEL,
    t_max: float = 1e7,
    lr: float = 0.01,
    gamma: float = 0.0,
    d_out: int = 1,
    eps: float = EPS,
    alpha: float = 1.0,
) -> tuple[float, float]:
    """(t_train, t_test) with eq. 12's accuracy corrected for a finite d_in (not in the paper).

    Eq. 12 takes ||z||^2 / L ~ chi^2 with d_out degrees of freedom: z = D^T x has covariance
    D^T D, isotropic only when each column of D spreads over infinitely many eigenmodes of
    Sigma. With m(t) = effective_modes / d_out eigenmodes per column, D^T D is a Wishart-like
    matrix and ||z||^2 a weighted chi-square; matching its first two moments gives a scaled
    chi-square with k = (d_out + 2/m) / (1 + (d_out + 1)/m) degrees of freedom
    (k = 1 at d_out = 1, k -> d_out as m -> infinity). Solved on 1500 log-spaced times from
    step 1 to ``t_max`` (NaN: not reached by then), for one point of parameters."""
    from scipy import special

    times = np.geomspace(1.0, t_max, 1500)
    params = {"lr": lr, "gamma": gamma, "d_out": d_out, "alpha": alpha}
    out = []
    for role, loss in zip(ROLES, theory.losses(times, lam, **params)):
        modes = effective_modes(times, lam, role=role, d_in=d_in, **params) / d_out
        # Once the loss underflows to 0 (long after any crossing) its moments do too: 0/0 modes.
        with np.errstate(divide="ignore", invalid="ignore"):
            k = (d_out + 2.0 / modes) / (1.0 + (d_out + 1.0) / modes)
            accuracy = special.gammainc(k / 2.0, k * eps / (2.0 * loss))
        out.append(float(first_crossing(accuracy, times, level)))
    return out[0], out[1]


# --- picking grid points -----------------------------------------------------------------------
def select(obj: xr.Dataset | xr.DataArray, **values: Any):
    """``obj`` at the grid points whose coordinates are ``values``: numbers match to a relative
    1e-9 (a float axis read back from a file or computed, as 1e-3 against 0.001), a list picks
    several points in its order. A ValueError names a value that is not on the grid."""
    picks = {}
    for name, value in values.items():
        many = isinstance(value, (list, tuple, np.ndarray))
        positions = [_position(obj, name, v) for v in (value if many else [value])]
        picks[name] = positions if many else positions[0]
    return obj.isel(picks)


def _position(obj, name: str, value: Any) -> int:
    grid = obj[name].values
    if np.issubdtype(grid.dtype, np.number) and isinstance(value, (int, float, np.number)):
        matches = np.flatnonzero(np.isclose(grid, value, rtol=1e-9, atol=0))
    else:
        matches = np.flatnonzero(grid == value)
    if matches.size == 0:
        raise ValueError(f"{name}={value!r} is not on the grid; its values are {list(grid)}")
    return int(matches[0])
