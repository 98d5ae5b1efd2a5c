"""Progress measures: optional metrics a sweep names in ``measures = [...]``.

Every task records its own :attr:`~groksweep.tasks.base.Task.metrics`. Measures add to them,
only where a sweep asks, because some cost more than training (the NTK alignment takes a
Jacobian at every log point). Each lands as a data variable of the results, dims
``(*axes, time)``.

Generic measures, for every task:

=================  ==========================================================================
name               value at each log point
=================  ==========================================================================
weight_norm        sqrt(sum of squares of every trainable parameter), |theta|
param_change       |theta - theta_0| / |theta_0|, the relative distance from initialisation
ntk_alignment      the (uncentred) kernel-target alignment y^T K y / (|K|_F |y|^2) of the
                   empirical tangent kernel K = J J^T of the task's predictor on its first
                   ``ntk_points`` test inputs (J: Jacobian of the flattened outputs with respect
                   to all parameters, by autodiff; y: the flattened targets). Its value at time
                   0 is the alignment at initialisation, K_0.
=================  ==========================================================================

The NTK alignment holds an (n k) x P Jacobian per run (n = ``ntk_points``, k outputs, P
parameters): keep ``ntk_points`` small for wide models and many classes.

Task-specific measures (MED, Fourier concentration, the IPR of Fourier features, softmax
collapse, ...) are declared by each task in
``Task.measures`` and documented in its docstring.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import Array

from groksweep.params import Param, SpecError, unknown_name_error
from groksweep.tasks.base import PyTree, Task

GENERIC: dict[str, tuple[str, ...]] = {
    "weight_norm": (),
    "param_change": (),
    "ntk_alignment": (),
}

MEASURE_PARAMS: dict[str, Param] = {
    "ntk_points": Param(int, 32, "static", "test inputs of the ntk_alignment measure", ge=1),
}


def available(task: Task) -> dict[str, tuple[str, ...]]:
    """Every measure a sweep of ``task`` may name, with its dims."""
    return GENERIC | dict(task.measures)


def check_measures(task: Task, measures: Any) -> tuple[str, ...]:
    """``measures`` as a tuple of valid, distinct names; a one-line SpecError otherwise."""
    if isinstance(measures, (str, bytes)) or not isinstance(measures, Sequence):
        raise SpecError(f"measures must be a list of names, got {measures!r}")
    names = available(task)
    for name in measures:
        if not isinstance(name, str):
            raise SpecError(f"measures must be a list of names, got {name!r:.60} in it")
        if name not in names:
            raise unknown_name_error(f"measure of {task.name}", str(name), sorted(names))
    if len(set(measures)) != len(measures):
        raise SpecError("measures has duplicate names")
    return tuple(measures)


def recorded(task: Task, measures: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """The data variables a sweep records: the task's metrics, then the named measures."""
    names = available(task)
    return dict(task.metrics) | {m: names[m] for m in measures if m not in task.metrics}


def needs_initial_model(measures: Sequence[str]) -> bool:
    """Whether the trainer must keep theta_0 beside theta."""
    return "param_change" in measures


def compute(
    name: str,
    task: Task,
    model: PyTree,
    initial: PyTree | None,
    data: dict[str, Array],
    hp: Mapping[str, Array],
) -> Array:
    """Measure ``name`` of one run at one log point (``initial``: theta_0, where kept)."""
    if name == "weight_norm":
        return norm(model)
    if name == "param_change":
        return norm(jax.tree.map(jnp.subtract, model, initial)) / norm(initial)
    if name == "ntk_alignment":
        return ntk_alignment(task, model, data, hp, task.shape["ntk_points"])
    return task.measure(name, model, data, hp)


def norm(tree: PyTree) -> Array:
    """The L2 norm of all leaves of ``tree`` together."""
    return jnp.sqrt(sum(jnp.sum(leaf**2) for leaf in jax.tree.leaves(tree)))


def ntk_alignment(
    task: Task, model: PyTree, data: dict[str, Array], hp: Mapping[str, Array], n: int
) -> Array:
    """y^T K y / (|K|_F |y|^2) for the empirical tangent kernel K on ``n`` probe inputs."""

    def outputs(m):
        out, targets = task.probe(m, data, hp, n)
        return out.ravel(), targets.ravel()

    jacobian, targets = jax.jacrev(outputs, has_aux=True)(model)
    rows = jnp.concatenate(
        [leaf.reshape(targets.size, -1) for leaf in jax.tree.leaves(jacobian)], axis=1
    )
    kernel = rows @ rows.T
    return targets @ kernel @ targets / (jnp.linalg.norm(kernel) * jnp.sum(targets**2))
