"""Random draws that depend only on a seed and on the sizes they fill: *prefix-stable*.

A run with 200 training samples sees the first 200 samples of a run with 400, and a padded run
(drawn at its bucket's larger size) sees its own draws unchanged. Every helper here takes
``counts``, the sizes that may grow (samples, outputs), and ``shape``, the fixed trailing shape
of one item; entry ``[i, j, ...]`` of the result is the same for every ``counts`` containing it.

Partitionable threefry derives each entry from its flat index alone, which makes the first count
prefix-stable; every further count is a ``fold_in`` of its index
(:func:`~groksweep.tasks.base.indexed_normal` is the normal case, kept bitwise as it was).

Keys: a task splits a seed's key into named streams with :func:`stream`, one per kind of draw,
so that two draws never share a key by accident and tasks that draw the same inputs (the linear
and MLP teacher-student tasks) name the same stream.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from jax import Array, random

from groksweep.tasks.base import Stream, indexed, stream

__all__ = ["Stream", "bits", "integers", "normal", "order", "signs", "stream", "subset", "uniform"]


def normal(key: Array, counts: tuple[int, ...], shape: tuple[int, ...] = (), dtype: Any = float):
    """Standard normals, ``counts + shape``; drawn in float32 whatever the dtype, so float32
    and float64 runs share them."""
    return indexed(key, counts, shape, lambda k, s: random.normal(k, s, jnp.float32)).astype(dtype)


def uniform(key: Array, counts: tuple[int, ...], shape: tuple[int, ...] = (), dtype: Any = float):
    """Uniforms in [0, 1), ``counts + shape`` (drawn in float32, as :func:`normal`)."""
    return indexed(key, counts, shape, lambda k, s: random.uniform(k, s, jnp.float32)).astype(dtype)


def bits(key: Array, counts: tuple[int, ...], shape: tuple[int, ...] = (), dtype: Any = jnp.int32):
    """Fair 0/1 bits, ``counts + shape``."""
    return indexed(key, counts, shape, _bernoulli).astype(dtype)


def signs(key: Array, counts: tuple[int, ...], shape: tuple[int, ...] = (), dtype: Any = float):
    """Fair +-1 signs, ``counts + shape``: the inputs of parity tasks."""
    return (1 - 2 * bits(key, counts, shape, jnp.int32)).astype(dtype)


def integers(
    key: Array, counts: tuple[int, ...], shape: tuple[int, ...], high: int, dtype: Any = jnp.int32
):
    """Uniform integers in [0, high), ``counts + shape``; ``high`` at most 2**24 (drawn by
    scaling a float32 uniform, which keeps them prefix-stable)."""
    if not 1 <= high <= 2**24:
        raise ValueError(f"high must lie in [1, 2**24], got {high}")
    u = uniform(key, counts, shape, jnp.float32)
    return jnp.minimum(jnp.floor(u * high), high - 1).astype(dtype)


def order(key: Array, n: int) -> Array:
    """A random order of ``range(n)``: item indices sorted by a uniform score each. Growing
    ``n`` inserts the new items without reordering the old ones among themselves."""
    return jnp.argsort(uniform(key, (n,), (), jnp.float32))


def subset(key: Array, n: int, m: int) -> Array:
    """A random subset of ``m`` of ``range(n)``, as a 0/1 mask of length n: the items with the
    ``m`` smallest scores. Growing ``m`` adds items and never removes one (``m`` may be traced;
    ties have probability zero)."""
    score = uniform(key, (n,), (), jnp.float32)
    rank = jnp.argsort(jnp.argsort(score))
    return (rank < m).astype(jnp.int32)


def _bernoulli(key: Array, shape: tuple[int, ...]) -> Array:
    return random.bernoulli(key, 0.5, shape)
