"""Finding a task by the name a spec gives, and checking that a task keeps the contract.

A spec's ``task`` is resolved in this order:

1. a task registered in this process: the built-in ones, and any given to
   :func:`register_task`;
2. ``"module:attribute"``: a task (an instance, or a class taking no arguments) importable from
   a module on the Python path, e.g. a local file ``my_tasks.py`` as ``"my_tasks:Parity"``;
3. an installed plugin's entry point of the group ``groksweep.tasks``, declared in its
   ``pyproject.toml`` as ``[project.entry-points."groksweep.tasks"] parity = "pkg:Parity"``.

Every task that enters the engine is checked first (:func:`check_declaration`): a broken declaration
is one line of :class:`~groksweep.errors.SpecError`, before anything is compiled.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any

from groksweep.errors import SpecError
from groksweep.params import Param, unknown_name_error
from groksweep.tasks.base import Task
from groksweep.tasks.model import ACCURACIES, LOSSES, ModelTask

ENTRY_POINT_GROUP = "groksweep.tasks"
REQUIRED_METRICS = {"train_loss": (), "train_acc": None, "test_acc": None}
"""Metrics every task records: the trainer flags divergence on ``train_loss``; grokking times
(:mod:`groksweep.phase`) are first crossings of ``train_acc`` and ``test_acc`` (with or without
an ``eps`` dim, hence None: any dims)."""
EXTRA_DIMS = {"eps"}
"""Dims a metric may have besides the grid axes and time."""
ROLES = ("static", "padded", "traced", "seed", "alias")
METHODS = ("step", "spectral")


def resolve(reference: str | Task, registry: dict[str, Task]) -> Task:
    """The checked task that ``reference`` (a task, or a name as in the module docstring)
    names; a one-line SpecError when there is none."""
    if isinstance(reference, Task):
        return check_declaration(reference)
    if isinstance(reference, type) and issubclass(reference, Task):
        raise SpecError(f"task must be an instance, got the class {reference.__name__}")
    if not isinstance(reference, str) or not reference:
        raise SpecError(f"task must be a task or the name of one, got {reference!r:.60}")
    if reference in registry:
        return registry[reference]
    if ":" in reference:
        return check_declaration(_instance(_import(reference), reference))
    plugin = _entry_point(reference)
    if plugin is None:
        known = sorted(set(registry) | {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})
        raise unknown_name_error("task", reference, known)
    return check_declaration(_instance(plugin, reference))


def _import(reference: str) -> Any:
    module_name, _, attribute = reference.partition(":")
    try:
        value = importlib.import_module(module_name)
        for part in attribute.split("."):
            value = getattr(value, part)
    except Exception as err:  # a plugin's own import may raise anything: one line all the same
        raise SpecError(f"cannot load task {reference!r}: {type(err).__name__}: {err}") from None
    return value


def _entry_point(name: str) -> Any:
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        if entry.name == name:
            try:
                return entry.load()
            except Exception as err:  # as in _import
                raise SpecError(
                    f"cannot load task {name!r} from its entry point {entry.value!r}: "
                    f"{type(err).__name__}: {err}"
                ) from None
    return None


def _instance(value: Any, reference: str) -> Task:
    if isinstance(value, type) and issubclass(value, Task):
        try:
            return value()
        except Exception as err:
            raise SpecError(
                f"cannot create task {reference!r}: {type(err).__name__}: {err}"
            ) from None
    if not isinstance(value, Task):
        raise SpecError(f"{reference!r} is a {type(value).__name__}, not a groksweep Task")
    return value


def check_declaration(task: Task) -> Task:
    """``task`` if its declaration keeps the contract of :class:`~groksweep.tasks.base.Task`;
    otherwise a one-line SpecError naming the first thing wrong."""
    name = getattr(task, "name", None)
    if not isinstance(name, str) or not name.strip() or name != name.strip():
        raise SpecError(f"a task needs a name (a string), {type(task).__name__} has {name!r:.40}")
    where = f"task {name!r}"
    _check_params(task, where)
    _check_metrics(task, where)
    _check_names(task.shared_by, task.params, f"{where}: shared_by")
    if not isinstance(task.overrides, tuple) or not all(isinstance(n, str) for n in task.overrides):
        raise SpecError(f"{where}: overrides must be a tuple of data names")
    _check_names(task.max_padding, _with_role(task, "padded"), f"{where}: max_padding")
    from groksweep.optim import OPTIMIZER_PARAMS

    _check_names(task.optimizer_defaults, OPTIMIZER_PARAMS, f"{where}: optimizer_defaults")
    for method in task.methods:
        if method not in METHODS:
            raise SpecError(
                f"{where}: unknown method {method!r} (methods are {', '.join(METHODS)})"
            )
    if "spectral" in task.methods and type(task).jump is Task.jump:
        raise SpecError(f"{where} lists the spectral method but does not implement jump")
    for method in ("sample", "setup", "evaluate"):
        if getattr(type(task), method) is getattr(Task, method):
            raise SpecError(f"{where} does not implement {method}")
    if type(task).objective is Task.objective and type(task).gradient is Task.gradient:
        raise SpecError(f"{where} implements neither objective nor gradient")
    if isinstance(task, ModelTask):
        _check_model_task(task, where)
    return task


def _check_model_task(task: ModelTask, where: str) -> None:
    for method in ("init", "data"):
        if getattr(type(task), method) is getattr(ModelTask, method):
            raise SpecError(f"{where} does not implement {method}")
    if not callable(task.loss) and task.loss not in LOSSES:
        raise SpecError(f"{where}: loss must be one of {', '.join(LOSSES)} or a method")
    if task.accuracy not in ACCURACIES:
        raise SpecError(f"{where}: accuracy must be one of {', '.join(ACCURACIES)}")
    n_train = task.params.get("n_train")
    if n_train is not None and n_train.role not in ("padded", "static"):
        raise SpecError(f"{where}: n_train must be padded (or static), not {n_train.role}")


def _check_params(task: Task, where: str) -> None:
    from groksweep.spec import ENGINE_PARAMS

    if not isinstance(task.params, dict):
        raise SpecError(f"{where}: params must be a dict of name -> Param")
    for pname, param in task.params.items():
        if not isinstance(param, Param):
            raise SpecError(
                f"{where}: parameter {pname!r} is a {type(param).__name__}, not a Param"
            )
        if pname in ENGINE_PARAMS:
            raise SpecError(
                f"{where}: parameter {pname!r} is the engine's; set its default with "
                "optimizer_defaults, or give yours another name"
            )
        if param.role not in ROLES:
            raise SpecError(
                f"{where}: parameter {pname!r} has role {param.role!r}, not one of "
                f"{', '.join(ROLES)}"
            )
        if param.role == "padded" and param.type is not int:
            raise SpecError(f"{where}: padded parameter {pname!r} must be an int")
        if param.default is not None:
            try:
                param.validate(pname, param.default)
            except SpecError as err:
                raise SpecError(f"{where}: the default of {pname!r} is invalid: {err}") from None


def _check_metrics(task: Task, where: str) -> None:
    declared = dict(task.metrics) | dict(task.measures)
    for mname, dims in declared.items():
        if not isinstance(dims, tuple) or not set(dims) <= EXTRA_DIMS:
            raise SpecError(
                f"{where}: metric {mname!r} has dims {dims!r}; extra dims may only be "
                f"{', '.join(sorted(EXTRA_DIMS))}, as a tuple"
            )
    for mname, dims in REQUIRED_METRICS.items():
        if mname not in task.metrics:
            raise SpecError(
                f"{where} does not record {mname!r}; every task records "
                f"{', '.join(REQUIRED_METRICS)} (grokking times and divergence use them)"
            )
        if dims is not None and task.metrics[mname] != dims:
            raise SpecError(f"{where}: {mname!r} must be a scalar per log point")


def _with_role(task: Task, role: str) -> dict[str, Param]:
    return {n: p for n, p in task.params.items() if p.role == role}


def _check_names(names: Any, known: dict, what: str) -> None:
    for item in names:
        if item not in known:
            raise unknown_name_error(f"name in {what}", str(item), sorted(known))
