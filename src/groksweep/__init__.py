"""groksweep: train whole grids of small models at once in JAX, and reduce their trajectories
to grokking-time phase diagrams.

Data flows one way: :class:`Sweep` (spec) -> :func:`run` (plan, compiled trainer, labelled
trajectories) -> :func:`grokking_time` (phase maps) -> :mod:`groksweep.plot` (figures).

The names below are imported on first use, so that ``import groksweep`` (and the command
line's first lines, which install its Ctrl-C handler) do not wait for JAX to load.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_HOME = {
    "ModelTask": "groksweep.tasks.model",
    "Param": "groksweep.params",
    "Task": "groksweep.tasks.base",
    "get_task": "groksweep.tasks",
    "register_task": "groksweep.tasks",
    "Sweep": "groksweep.spec",
    "SpecError": "groksweep.errors",
    "prepare": "groksweep.engine",
    "run": "groksweep.engine",
    "grokking_time": "groksweep.phase",
    "reduce_seeds": "groksweep.phase",
    "stage_times": "groksweep.phase",
    "open_sweeps": "groksweep.results",
    "load_models": "groksweep.saved_models",
}

__all__ = [
    "ModelTask",
    "Param",
    "SpecError",
    "Sweep",
    "Task",
    "get_task",
    "grokking_time",
    "load_models",
    "open_sweeps",
    "prepare",
    "reduce_seeds",
    "register_task",
    "run",
    "stage_times",
]

if TYPE_CHECKING:
    from groksweep.engine import prepare, run
    from groksweep.errors import SpecError
    from groksweep.params import Param
    from groksweep.phase import grokking_time, reduce_seeds, stage_times
    from groksweep.results import open_sweeps
    from groksweep.saved_models import load_models
    from groksweep.spec import Sweep
    from groksweep.tasks import get_task, register_task
    from groksweep.tasks.base import Task
    from groksweep.tasks.model import ModelTask


def groksweep_version() -> str:
    """The installed groksweep's version ("unknown" when it is not installed), without
    importing the heavy modules: the command line's ``--version`` reads it too."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("groksweep")
    except PackageNotFoundError:
        return "unknown"


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'groksweep' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOME[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOME))
