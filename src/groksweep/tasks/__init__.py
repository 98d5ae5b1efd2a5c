"""The tasks groksweep can sweep: the built-in models, and any registered from outside.

A spec names a task by a registered name, by ``"module:attribute"``, or by an installed
plugin's entry point (:mod:`groksweep.tasks.registry`); Python code may also hand a
:class:`Task` object to :class:`groksweep.Sweep` directly.
"""

from __future__ import annotations

from groksweep.errors import SpecError
from groksweep.tasks.base import Task
from groksweep.tasks.committee import Committee
from groksweep.tasks.digits import Digits
from groksweep.tasks.linear import Linear
from groksweep.tasks.mlp import MLPTeacherStudent
from groksweep.tasks.modular_mlp import ModularMLP
from groksweep.tasks.registry import check_declaration, resolve
from groksweep.tasks.transformer import Transformer

BUILT_IN: dict[str, Task] = {
    task.name: task
    for task in (Linear(), MLPTeacherStudent(), ModularMLP(), Committee(), Transformer(), Digits())
}
TASKS: dict[str, Task] = dict(BUILT_IN)
"""Every task registered in this process, by name."""


def register_task(task: Task, *, replace: bool = False) -> Task:
    """Make ``task`` known to specs by its ``name`` in this process, after checking its
    declaration (:func:`~groksweep.tasks.registry.check_declaration`). A name registered to another
    task is refused unless ``replace``; a built-in name always is."""
    check_declaration(task)
    held = TASKS.get(task.name)
    if held is not None and held is not task:
        if task.name in BUILT_IN:
            raise SpecError(f"{task.name!r} is a built-in task; give yours another name")
        if not replace:
            raise SpecError(
                f"a task named {task.name!r} is registered already; pass replace=True to replace it"
            )
    TASKS[task.name] = task
    return task


def get_task(reference: str | Task) -> Task:
    """The task a spec's ``task`` names (see the module docstring); a SpecError suggesting the
    closest name otherwise."""
    return resolve(reference, TASKS)


__all__ = ["BUILT_IN", "TASKS", "Task", "check_declaration", "get_task", "register_task"]
