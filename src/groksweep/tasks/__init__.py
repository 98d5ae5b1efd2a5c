"""The task registry: every model groksweep can sweep, by the name a spec uses."""

from __future__ import annotations

from groksweep.params import unknown_name_error
from groksweep.tasks.base import Task
from groksweep.tasks.committee import Committee
from groksweep.tasks.linear import Linear
from groksweep.tasks.mlp import MLPTeacherStudent
from groksweep.tasks.modular_mlp import ModularMLP
from groksweep.tasks.transformer import Transformer

TASKS: dict[str, Task] = {
    task.name: task
    for task in (Linear(), MLPTeacherStudent(), ModularMLP(), Committee(), Transformer())
}


def get_task(name: str) -> Task:
    """The registered task called ``name``; a SpecError suggesting the closest name otherwise."""
    if name not in TASKS:
        raise unknown_name_error("task", name, sorted(TASKS))
    return TASKS[name]


__all__ = ["TASKS", "Task", "get_task"]
