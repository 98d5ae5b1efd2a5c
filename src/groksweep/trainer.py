"""The compiled trainer: every run of a bucket, every step and every evaluation, in one program.

The program for a bucket is ``jit`` of::

    draws  = vmap(task.sample)(seed keys)                 # one set of draws per group
    state  = per_run(setup)(draws, hparams)               # vmap over groups, then over slots
    scan over evaluation segments:
        state   = per_run(n gradient steps)(draws, state)
        metrics = per_run(task.evaluate)(draws, state)

``per_run`` is the one place where single-run functions are batched: the outer ``vmap`` maps
over groups (seeds), the inner one over the runs of a group, which read the group's draws
unbatched, so their steps become matrix-matrix products over the group.

Hyperparameters and segment lengths are traced arrays, so new values of lr, gamma, alpha,
n_train, steps, ... reuse the compiled program; only a new shape (bucket, number of groups or
slots, number of log points or thresholds) compiles again.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from groksweep.optim import make_optimizer
from groksweep.plan import Bucket
from groksweep.tasks import Task, get_task

_traces = 0
_segment_hook: list[Callable[[int], None]] = []


def trace_count() -> int:
    """How many times a bucket program has been traced (compiled) in this process."""
    return _traces


def train(
    task: Task,
    bucket: Bucket,
    times: np.ndarray,
    eps: np.ndarray,
    on_segment: Callable[[int], None] | None = None,
) -> dict[str, np.ndarray]:
    """Train every run of ``bucket`` and return each metric as (groups, slots, time, ...).

    ``times`` are the evaluation steps, starting at 0. ``on_segment(steps)`` is called from the
    running program after each segment, with the number of steps that segment took.
    """
    shape = dict(bucket.shape)
    float64 = shape["dtype"] == "float64"
    with jax.enable_x64(float64):
        dtype = jnp.float64 if float64 else jnp.float32
        hparams = {
            name: jnp.asarray(values, dtype=jnp.int32 if task_param_is_int(task, name) else dtype)
            for name, values in bucket.hparams.items()
        }
        segments = jnp.asarray(np.diff(times), dtype=jnp.int32)
        program = _program(task.name, bucket.shape)
        _segment_hook.append(on_segment or (lambda steps: None))
        try:
            metrics = program(jnp.asarray(bucket.seeds), hparams, segments, jnp.asarray(eps, dtype))
            metrics = jax.device_get(metrics)
        finally:
            _segment_hook.pop()
    return {name: np.moveaxis(np.asarray(value), 0, 2) for name, value in metrics.items()}


def task_param_is_int(task: Task, name: str) -> bool:
    param = task.params.get(name)
    return param is not None and param.type is int


def _per_run(fn: Callable) -> Callable:
    """Batch ``fn(draws, run_state, *shared)`` over groups, then over the runs of a group.

    The group's draws enter the inner map unbatched: that is what turns the runs of a group
    into one matrix-matrix product. ``shared`` arguments are the same for every run."""

    def batched(draws, state, *shared):
        per_group = lambda d, s: jax.vmap(lambda one: fn(d, one, *shared))(s)  # noqa: E731
        return jax.vmap(per_group)(draws, state)

    return batched


@functools.lru_cache(maxsize=None)
def _program(task_name: str, shape_items: tuple[tuple[str, Any], ...]) -> Callable:
    task, shape = get_task(task_name), dict(shape_items)
    objective_grad = jax.grad(task.objective)

    def setup(draws, hp):
        model, run = task.setup(draws, hp, shape)
        opt_state = make_optimizer(shape["optimizer"], hp).init(model)
        return {"model": model, "opt": opt_state, "run": run, "hp": hp}

    def advance(draws, state, n_steps):
        optimizer = make_optimizer(shape["optimizer"], state["hp"])

        def step(_, carry):
            model, opt_state = carry
            grads = objective_grad(model, draws, state["run"], state["hp"])
            updates, opt_state = optimizer.update(grads, opt_state, model)
            return optax.apply_updates(model, updates), opt_state

        model, opt_state = lax.fori_loop(0, n_steps, step, (state["model"], state["opt"]))
        return state | {"model": model, "opt": opt_state}

    def evaluate(draws, state, eps):
        return task.evaluate(state["model"], draws, state["run"], state["hp"], eps)

    def program(seeds, hparams, segments, eps):
        global _traces
        _traces += 1
        dtype = eps.dtype
        draws = jax.vmap(lambda seed: task.sample(jax.random.key(seed), shape, dtype))(seeds)
        state = _per_run(setup)(draws, hparams)

        def segment(state, n_steps):
            state = _per_run(advance)(draws, state, n_steps)
            jax.debug.callback(_report_segment, n_steps)
            return state, _per_run(evaluate)(draws, state, eps)

        initial = _per_run(evaluate)(draws, state, eps)
        _, later = lax.scan(segment, state, segments)
        return jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), initial, later)

    return jax.jit(program)


def _report_segment(n_steps: Any) -> None:
    _segment_hook[-1](int(n_steps))
