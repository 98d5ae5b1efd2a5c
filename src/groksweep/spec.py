"""The sweep specification: a task, fixed parameters, axes, the step budget and thresholds.

A sweep is the Cartesian product of its axes, in the order written, over fixed parameters.
It is validated when constructed, so a bad spec fails with one clear line before anything is
compiled. The same fields are used in Python and in TOML::

    task = "linear"
    steps = 20000
    log_points = 200
    eps = [1e-3]
    measures = ["param_change"]     # optional progress measures (groksweep.measures)

    [params]
    d_in = 200
    lr = 0.01

    [axes]
    lam = [0.3, 0.5, 0.7]
    seed = [0, 1, 2, 3]
"""

from __future__ import annotations

import itertools
import math
import re
import tomllib
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import tomli_w

from groksweep.errors import SpecWarning
from groksweep.measures import MEASURE_PARAMS, check_measures, recorded
from groksweep.optim import GRADIENT_PARAMS, OPTIMIZER_PARAMS
from groksweep.params import (
    DTYPE,
    MAX_STEPS,
    METHOD,
    PRECISION,
    SEED,
    Param,
    SpecError,
    unknown_name_error,
)
from groksweep.tasks import Task, get_task, register_task

FIELDS = (
    "task", "steps", "log_points", "eps", "measures", "params", "axes", "refine", "save_models",
    "crossings",
)

MAX_SPEC_BYTES = 2**20
"""A spec file larger than this is refused before it is parsed."""
MAX_RUNS = 2**18
"""The most runs one sweep may hold: the run table alone takes about 1.5 KiB a run."""
MAX_LOG_POINTS = 10**5
"""The most evaluations a run may record."""
STEPS = Param(int, 0, "static", "", ge=1, le=MAX_STEPS["spectral"])
LOG_POINTS = Param(int, 0, "static", "", ge=1, le=MAX_LOG_POINTS)


@dataclass(frozen=True)
class Sweep:
    """A grid of runs of one task. Validated on construction; raises :class:`SpecError`."""

    task: str | Task
    """A task, or its name: registered, ``"module:attribute"``, or a plugin's entry point
    (:mod:`groksweep.tasks.registry`). A task object is registered under its name, which the
    field then holds."""
    params: Mapping[str, Any] = field(default_factory=dict)
    axes: Mapping[str, Sequence[Any]] = field(default_factory=dict)
    steps: int = 10_000
    log_points: int = 100
    eps: Sequence[float] | None = None
    """Accuracy thresholds (default ``(1e-3,)``); empty for a task that records none."""
    measures: Sequence[str] = ()
    refine: Mapping[str, Any] | None = None
    """Adaptive refinement of a two-axis map (:mod:`groksweep.refine`): a table of ``rounds``,
    ``on`` ("boundary" or "delta_t"), ``factor`` and ``level``; None: the plain grid."""
    save_models: str | Sequence[int] | bool = ()
    """The log points whose models are kept (:mod:`groksweep.saved_models`): ``"log"``, every
    one; a list of steps, the log point nearest each (the earlier of two as near); false or
    empty, none. Normalised to ``"log"`` or a tuple of steps."""

    crossings: str | Mapping[str, Any] = "interpolate"
    """How grokking times are found: ``"interpolate"``, between log points
    (:func:`groksweep.grokking_time`); ``"solve"``, exactly on the spectral path
    (:mod:`groksweep.crossings`), or a table ``{method = "solve", level, rtol}`` (defaults 0.95
    and 1e-3). Normalised to ``"interpolate"`` or the full table."""

    def __post_init__(self) -> None:
        task = get_task(self.task)
        if isinstance(self.task, Task):
            # Registered, so that the spec text this sweep writes names a task that reads back.
            register_task(task, replace=True)
            object.__setattr__(self, "task", task.name)
        object.__setattr__(self, "_task", task)
        declared = declared_params(task)
        given = {field: _table(field, getattr(self, field)) for field in ("params", "axes")}
        params = {
            name: _check(declared, "parameter", name, v) for name, v in given["params"].items()
        }
        axes = {name: _check_axis(declared, name, values) for name, values in given["axes"].items()}
        for name in params.keys() & axes.keys():
            raise SpecError(f"{name} is both a fixed parameter and an axis")
        if "seed" not in params and "seed" not in axes:
            axes["seed"] = [SEED.default]
        object.__setattr__(self, "params", params)
        object.__setattr__(self, "axes", axes)
        object.__setattr__(self, "steps", STEPS.validate("steps", self.steps))
        object.__setattr__(self, "log_points", LOG_POINTS.validate("log_points", self.log_points))
        object.__setattr__(self, "measures", check_measures(task, self.measures))
        object.__setattr__(self, "refine", _check_refine(self.refine, axes, declared))
        object.__setattr__(self, "eps", _check_eps(task, self.measures, self.eps))
        object.__setattr__(self, "save_models", _check_save_models(self.save_models, self.steps))
        if self.n_runs > MAX_RUNS:
            raise SpecError(
                f"the grid holds {self.n_runs:,} runs, over the {MAX_RUNS:,} one sweep may hold; "
                "split it into several sweeps"
            )
        object.__setattr__(self, "crossings", _check_crossings(self.crossings))
        runs = self.runs()  # resolve every run now: cross-parameter errors surface before compiling
        if self.crossings != "interpolate":
            stepped = next((run for run in runs if run["method"] != "spectral"), None)
            if stepped is not None:
                raise SpecError(
                    'crossings = "solve" needs the spectral method (a task with an exact jump, '
                    f"optimizer gd, no gradient filter); {task.name} here takes method "
                    f"{stepped['method']}"
                )

    # --- construction -------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> Sweep:
        if not isinstance(spec, Mapping):
            raise SpecError(f"a sweep spec is a table of fields, got {type(spec).__name__}")
        for key in spec:
            if key not in FIELDS:
                raise unknown_name_error("sweep field", key, list(FIELDS))
        if "task" not in spec:
            raise SpecError("the sweep has no task")
        return cls(**spec)

    @classmethod
    def from_toml(cls, path: str | Path, overrides: Sequence[str] = ()) -> Sweep:
        """The sweep of a TOML file; at most :data:`MAX_SPEC_BYTES` of it are read.
        ``overrides`` are ``KEY=VALUE`` texts applied before validation (:func:`override`)."""
        path = Path(path)
        try:
            with open(path, "rb") as file:
                raw = file.read(MAX_SPEC_BYTES + 1)
        except OSError as err:
            raise SpecError(f"cannot read {path}: {err.strerror or err}") from None
        if len(raw) > MAX_SPEC_BYTES:
            raise SpecError(
                f"{path} is larger than {MAX_SPEC_BYTES // 2**10} KiB: not a sweep spec"
            )
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise SpecError(f"{path}: not UTF-8 text (byte {err.start})") from None
        try:
            spec = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise SpecError(f"{path}: malformed TOML: {err}") from None
        except RecursionError:
            raise SpecError(f"{path}: malformed TOML: nested too deeply") from None
        return cls.from_dict(override(spec, overrides))

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "steps": self.steps,
            "log_points": self.log_points,
            **({"eps": list(self.eps)} if self.eps else {}),
            "measures": list(self.measures),
            **({"refine": dict(self.refine)} if self.refine else {}),
            **({"save_models": _toml_list(self.save_models)} if self.save_models else {}),
            **({"crossings": dict(self.crossings)} if self.crossings != "interpolate" else {}),
            "params": dict(self.params),
            "axes": {name: list(values) for name, values in self.axes.items()},
        }

    def to_toml(self) -> str:
        return tomli_w.dumps(self.to_dict())

    # --- the grid -----------------------------------------------------------------------------
    @property
    def task_def(self) -> Task:
        """The task object the sweep runs."""
        return self._task

    @property
    def metrics(self) -> dict[str, tuple[str, ...]]:
        """Recorded data variables (the task's metrics and the named measures) -> extra dims."""
        return recorded(self.task_def, self.measures)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(values) for values in self.axes.values())

    @property
    def n_runs(self) -> int:
        return int(np.prod(self.shape))

    def runs(self) -> list[dict[str, Any]]:
        """Canonical parameter values of every run, in the grid's C order."""
        task = self.task_def
        declared = declared_params(task)
        base = {name: p.default for name, p in declared.items()} | dict(self.params)
        given = set(self.params) | set(self.axes)
        names = list(self.axes)
        return [
            _resolve_method(task, task.resolve(base | dict(zip(names, point)), given), self.steps)
            for point in itertools.product(*self.axes.values())
        ]

    def times(self) -> np.ndarray:
        """Evaluation steps: 0, then log-spaced distinct integers ending at ``steps``."""
        return log_schedule(self.steps, self.log_points)

    def saved_points(self) -> np.ndarray:
        """Indices into :meth:`times` of the log points whose models are kept (``save_models``),
        increasing: every one for ``"log"``, else the nearest to each step listed."""
        times = self.times()
        if self.save_models == "log":
            return np.arange(len(times))
        nearest = [int(np.argmin(np.abs(times - step))) for step in self.save_models]
        return np.unique(np.asarray(nearest, np.int64))


def override(spec: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """``spec`` with each ``KEY=VALUE`` of ``overrides`` applied, in order (the command line's
    ``--set``). KEY is a field (``steps``, ``eps``) or ``params.NAME`` / ``axes.NAME``; VALUE is
    a TOML value (``0.02``, ``[0, 1, 2]``, ``"adamw"``), or a bare word taken as a string, as the
    shell leaves ``optimizer="adamw"``. A name set in ``params`` leaves ``axes``, and the other
    way round. The result is validated by :class:`Sweep` like a file."""
    spec = {k: dict(v) if isinstance(v, Mapping) else v for k, v in spec.items()}
    for text in overrides:
        key, sep, raw = text.partition("=")
        key = key.strip()
        if not sep or not key:
            raise SpecError(f"--set {text!r}: expected KEY=VALUE, e.g. params.lr=0.02")
        top, *rest = key.split(".")
        if top not in FIELDS:
            raise SpecError(f"--set {key}: {unknown_name_error('sweep field', top, list(FIELDS))}")
        tables = ("params", "axes")
        if (top in tables) != (len(rest) == 1):
            form = f"{top}.NAME" if top in tables else top
            raise SpecError(f"--set {key}: expected {form}=VALUE")
        value = _toml_value(key, raw.strip())
        if top in tables:
            other = spec.get(tables[top == "params"])
            if isinstance(other, dict):
                other.pop(rest[0], None)
            table = spec.setdefault(top, {})
            if not isinstance(table, dict):
                raise SpecError(f"--set {key}: {top} must be a table")
            table[rest[0]] = value
        else:
            spec[top] = value
    return spec


def _toml_value(key: str, raw: str) -> Any:
    try:
        return tomllib.loads(f"value = {raw}")["value"]
    except tomllib.TOMLDecodeError:
        if re.fullmatch(r"[A-Za-z_][\w.:-]*", raw):
            return raw
        raise SpecError(
            f"--set {key}={raw}: not a TOML value (a number, a \"string\", a [list], true)"
        ) from None


ENGINE_PARAMS: dict[str, Param] = {
    "seed": SEED,
    "dtype": DTYPE,
    "method": METHOD,
    "precision": PRECISION,
    **OPTIMIZER_PARAMS,
    **GRADIENT_PARAMS,
    **MEASURE_PARAMS,
}
"""The parameters of every sweep, whatever its task; a task declares only its own."""


def declared_params(task: Task) -> dict[str, Param]:
    """Every parameter a sweep of ``task`` may set: the engine's (with the task's optimizer
    defaults) and the task's."""
    return {
        name: replace(param, default=task.optimizer_defaults.get(name, param.default))
        for name, param in ENGINE_PARAMS.items()
    } | task.params


def log_schedule(steps: int, log_points: int) -> np.ndarray:
    """Step 0 followed by ``min(log_points, steps)`` distinct log-spaced integers up to ``steps``.

    Rounding a geometric sequence repeats small integers; each point is pushed to at least one
    past its predecessor and held back far enough to leave room for the points after it. The
    last point is ``steps`` exactly, whatever the rounding of the float sequence.
    """
    n = min(log_points, steps)
    points = np.empty(n, dtype=np.int64)
    previous = 0
    for i, ideal in enumerate(np.geomspace(1, steps, n)):
        previous = min(max(previous + 1, round(ideal)), steps - (n - 1 - i))
        points[i] = previous
    points[-1] = steps
    return np.concatenate([[0], points])


def _resolve_method(task: Task, run: dict[str, Any], steps: int) -> dict[str, Any]:
    """Replace method "auto" by the fastest exact method for the run; refuse impossible ones,
    and step counts beyond what the method can represent."""
    # The closed-form jump is plain gradient descent: gradient filters change the steps.
    plain_gd = run["optimizer"] == "gd" and run["grokfast"] == "none" and run["orthograd"] == "off"
    exact = "spectral" in task.methods and plain_gd
    if run["method"] == "auto":
        run = run | {"method": "spectral" if exact else "step"}
    elif run["method"] == "spectral" and not exact:
        raise SpecError(
            "method spectral is gradient descent in closed form: it needs a task that has it, "
            "optimizer gd and no grokfast or orthograd (here: "
            f"{task.name}, {run['optimizer']}, grokfast {run['grokfast']}, "
            f"orthograd {run['orthograd']})"
        )
    if steps > MAX_STEPS[run["method"]]:
        raise SpecError(
            f"steps = {steps:,} is beyond the {MAX_STEPS[run['method']]:,} steps method "
            f"{run['method']} can take"
            + ("; the spectral method reaches up to 2^53" if exact else "")
        )
    return run


def _table(field: str, value: Any) -> Mapping[str, Any]:
    """``params`` or ``axes``: a mapping from names (strings); None is an empty one."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SpecError(f"{field} must be a table of name = value, got {value!r:.60}")
    for name in value:
        if not isinstance(name, str):
            raise SpecError(f"{field} names must be strings, got {name!r:.60}")
    return value


def _check(declared: dict[str, Param], kind: str, name: str, value: Any) -> Any:
    if name not in declared:
        raise unknown_name_error(kind, name, sorted(declared))
    return declared[name].validate(name, value)


def _check_axis(declared: dict[str, Param], name: str, values: Any) -> list[Any]:
    values = _as_list(values, f"axis {name}")
    if len(values) == 0:
        raise SpecError(f"axis {name} is empty")
    if len(values) > MAX_RUNS:
        raise SpecError(f"axis {name} has {len(values):,} values, over {MAX_RUNS:,}")
    checked = [_check(declared, "axis", name, v) for v in values]
    if len(set(checked)) != len(checked):
        raise SpecError(f"axis {name} has duplicate values")
    return checked


def _as_list(values: Any, what: str) -> list[Any]:
    """A list from a sequence or a one-dimensional numpy array; a SpecError otherwise."""
    if isinstance(values, np.ndarray) and values.ndim == 1:
        return values.tolist()
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise SpecError(f"{what} must be a list of values, got {values!r:.60}")
    return list(values)


def _check_eps(task: Task, measures: Sequence[str], eps: Any) -> tuple[float, ...]:
    """The thresholds, ``(1e-3,)`` if none are given; none, with a warning if some are given,
    for a task whose metrics have no ``eps`` dimension."""
    if not any("eps" in dims for dims in recorded(task, measures).values()):
        if eps is not None and not (isinstance(eps, Sequence) and len(eps) == 0):
            warnings.warn(
                f"task {task.name} records no accuracy thresholds: eps is ignored",
                SpecWarning,
                stacklevel=4,
            )
        return ()
    if eps is None:
        return (1e-3,)
    if isinstance(eps, (int, float, np.number)) and not isinstance(eps, bool):
        eps = [eps]
    eps = _as_list(eps, "eps")
    if len(eps) == 0:
        raise SpecError("eps must be a non-empty list of thresholds")
    if len(eps) > MAX_EPS:
        raise SpecError(f"eps has {len(eps)} thresholds, over {MAX_EPS}")
    threshold = Param(float, 0.0, "static", "", gt=0)
    checked = tuple(threshold.validate("eps", e) for e in eps)
    if len(set(checked)) != len(checked):
        raise SpecError("eps has duplicate values")
    return checked


MAX_EPS = 1000


def _check_save_models(value: Any, steps: int) -> str | tuple[int, ...]:
    """``"log"``, or the distinct steps listed, increasing (none: empty); a one-line SpecError
    for anything else or a step outside [0, steps]."""
    if value is None or value is False:
        return ()
    if isinstance(value, str) and value == "log":
        return value
    if isinstance(value, (str, bool)):
        raise SpecError(f'save_models must be "log", a list of steps or false, got {value!r:.60}')
    listed = _as_list(value, "save_models")
    if len(listed) > MAX_LOG_POINTS:
        raise SpecError(f"save_models lists {len(listed):,} steps, over {MAX_LOG_POINTS:,}")
    checked = {Param(int, 0, "static", "").validate("save_models", s) for s in listed}
    outside = [s for s in sorted(checked) if not 0 <= s <= steps]
    if outside:
        raise SpecError(f"save_models: step {outside[0]:,} is outside [0, {steps:,}] (steps)")
    return tuple(sorted(checked))


def _toml_list(value: str | tuple) -> str | list:
    return value if isinstance(value, str) else list(value)

CROSSINGS = ("interpolate", "solve")
CROSSING_DEFAULTS = {"level": 0.95, "rtol": 1e-3}


def _check_crossings(value: Any) -> str | dict[str, Any]:
    """``"interpolate"``, or the table of a solved crossing with its defaults filled in."""
    if isinstance(value, Mapping):
        table = dict(value)
    elif isinstance(value, str):
        table = {"method": value}
    else:
        raise SpecError(f'crossings must be "interpolate", "solve" or a table, got {value!r:.60}')
    for key in table:
        if key not in ("method", *CROSSING_DEFAULTS):
            raise unknown_name_error("crossings option", key, ["method", *CROSSING_DEFAULTS])
    method = Param(str, "", "static", "", choices=CROSSINGS).validate(
        "crossings.method", table.get("method", "solve")
    )
    if method == "interpolate":
        if len(table) > 1:
            raise SpecError('crossings: level and rtol are options of method "solve"')
        return method
    table = CROSSING_DEFAULTS | table
    return {
        "method": method,
        "level": Param(float, 0.0, "static", "", gt=0, lt=1).validate(
            "crossings.level", table["level"]
        ),
        "rtol": Param(float, 0.0, "static", "", gt=0, le=0.1).validate(
            "crossings.rtol", table["rtol"]
        ),
    }


MAX_REFINE_ROUNDS = 8
"""The most refinement rounds: each halves the cells, so 8 rounds split a cell 256 ways."""
REFINE_ON = ("boundary", "delta_t")
REFINE_DEFAULTS = {"on": "boundary", "factor": 2.0, "level": 0.95}
REFINE_KEYS = ("rounds", *REFINE_DEFAULTS)


def _check_refine(
    refine: Any, axes: dict[str, list[Any]], declared: dict[str, Param]
) -> dict[str, Any] | None:
    """The refinement table with its defaults filled in, or None; a one-line SpecError unless
    the sweep has exactly two non-seed axes of two or more increasing real values."""
    if refine is None:
        return None
    if not isinstance(refine, Mapping):
        raise SpecError(f"refine must be a table (rounds, on, factor, level), got {refine!r:.60}")
    for key in refine:
        if key not in REFINE_KEYS:
            raise unknown_name_error("refine option", key, list(REFINE_KEYS))
    if "rounds" not in refine:
        raise SpecError("refine needs rounds, the number of refinement rounds")
    table = REFINE_DEFAULTS | dict(refine)
    checked = {
        "rounds": Param(int, 0, "static", "", ge=1, le=MAX_REFINE_ROUNDS).validate(
            "refine.rounds", table["rounds"]
        ),
        "on": Param(str, "", "static", "", choices=REFINE_ON).validate("refine.on", table["on"]),
        "factor": Param(float, 0.0, "static", "", gt=1).validate("refine.factor", table["factor"]),
        "level": Param(float, 0.0, "static", "", gt=0, lt=1).validate(
            "refine.level", table["level"]
        ),
    }
    grid = [name for name in axes if name != "seed"]
    if len(grid) != 2:
        raise SpecError(
            f"refine needs exactly two axes besides seed, the map it refines; got {len(grid)}"
            + (f" ({', '.join(grid)})" if grid else "")
        )
    for name in grid:
        values = axes[name]
        if declared[name].type is not float:
            kind = declared[name].type.__name__
            raise SpecError(f"refine needs real-valued axes; {name} is {kind}")
        if len(values) < 2 or any(b <= a for a, b in zip(values, values[1:])):
            raise SpecError(f"refine needs axis {name} to hold two or more increasing values")
    fine_runs = math.prod(
        (len(values) - 1) * 2 ** checked["rounds"] + 1 if name in grid else len(values)
        for name, values in axes.items()
    )
    if fine_runs > MAX_RUNS:
        raise SpecError(
            f"refine's finest grid holds {fine_runs:,} runs, over the {MAX_RUNS:,} one sweep may "
            "hold; use fewer rounds or fewer coarse values"
        )
    return checked
