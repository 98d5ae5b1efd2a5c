"""Models kept at chosen log points (a sweep's ``save_models``), on disk beside the results.

A sweep with ``save_models = "log"`` (every log point) or a list of steps (the log point nearest
each) keeps those points' models in the compiled program's carry, so they survive segments and
resumption like the metrics (:class:`groksweep.trainer.ChunkTraining`), and writes them when the
chunk is finished: one netCDF-4 file per chunk, ``DIR/models/KEY.nc`` for the command line.
A sweep's files grow one finished chunk at a time, each written atomically
(:func:`groksweep.files.write_atomic`).

A file holds the chunk's runs (its padding left out):

- dimensions ``run`` and ``step``; variables ``run`` (the run's index in the grid's C order),
  one per axis of the sweep with the run's value (its grid labels, as in ``results.nc``),
  ``step`` (the kept steps) and ``checksum`` (per run, SHA-256 of its key, index, steps and
  model arrays);
- a group ``model`` with one variable per leaf of the run's model pytree, named by its path
  (``W_E``, ``layers.0.weight``), of dims ``(run, step, *leaf dims)`` and the model's dtype;
- attributes: ``key`` (the chunk's key, as :class:`groksweep.store.ChunkStore` makes it from the
  spec, bucket, runs, groksweep's code and the task's identity), ``spec`` (the sweep as TOML),
  ``shape`` and ``hparams`` (the bucket's compile-time shape and traced parameters, JSON: what
  rebuilds the model's pytree, :func:`groksweep.trainer.model_shapes`).

:func:`load_models` reads one run's models back as the task's model: an equinox module for a
:class:`~groksweep.tasks.model.ModelTask`, the task's own pytree otherwise, with numpy leaves
of the stored dtype, bit for bit what the program held. A rerun reads a chunk back only with a
whole models file of its key (every run's checksum right); otherwise it trains the chunk again.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import netCDF4
import numpy as np

from groksweep import groksweep_version, trainer
from groksweep.errors import SpecError
from groksweep.files import write_atomic
from groksweep.plan import Bucket
from groksweep.spec import Sweep
from groksweep.store import chunk_key
from groksweep.tasks import Task
from groksweep.tasks.model import ModelTask

MODELS = "models"
"""The folder of the models files in a sweep's output directory."""
SUFFIX = ".nc"
NAME = re.compile(r"[0-9a-f]{24}\.nc")
"""A models file's name, its chunk's key: other files in the folder are never read or removed."""
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
READ_ERRORS = (OSError, KeyError, IndexError, ValueError, RuntimeError, AttributeError)
"""What netCDF4 raises on a damaged or foreign file."""


class ModelStore:
    """The models files of one sweep in ``directory``, one per finished chunk."""

    def __init__(self, directory: str | Path, sweep: Sweep, task_identity: str):
        self.directory = Path(directory)
        self.sweep = sweep
        self.task_identity = task_identity
        self.spec_text = sweep.to_toml()
        self.steps = sweep.times()[sweep.saved_points()]
        """the kept steps"""

    def key(self, chunk: Bucket) -> str:
        return chunk_key(
            self.spec_text, self.task_identity, chunk.shape, chunk.run_index, chunk.valid
        )

    def path(self, key: str) -> Path:
        return self.directory / f"{key}{SUFFIX}"

    def save(self, chunk: Bucket, kept: Any) -> None:
        """Write the models of the chunk's valid runs atomically; ``kept`` is the model pytree
        with leaves of (groups, families, slots, kept steps, ...)
        (:meth:`~groksweep.trainer.ChunkTraining.kept_models`)."""
        key, steps = self.key(chunk), self.steps
        runs = chunk.run_index[chunk.valid].astype(np.int64)
        leaves = {name: np.asarray(leaf)[chunk.valid] for name, leaf in _named_leaves(kept)}
        position = np.unravel_index(runs, self.sweep.shape)
        labels = {
            name: [values[i] for i in at]
            for (name, values), at in zip(self.sweep.axes.items(), position)
        }

        def write(tmp: Path) -> None:
            with netCDF4.Dataset(tmp, "w", format="NETCDF4") as nc:
                nc.createDimension("run", len(runs))
                nc.createDimension("step", len(steps))
                _variable(nc, "run", runs, ("run",))
                _variable(nc, "step", steps, ("step",))
                for name, values in labels.items():
                    _variable(nc, name, np.asarray(values), ("run",))
                sums = [_checksum(key, r, steps, leaves, i) for i, r in enumerate(runs)]
                _variable(nc, "checksum", np.asarray(sums, object), ("run",))
                group = nc.createGroup("model")
                for name, leaf in leaves.items():
                    dims = [f"{name}_{i}" for i in range(leaf.ndim - 2)]
                    for dim, size in zip(dims, leaf.shape[2:]):
                        group.createDimension(dim, size)
                    _variable(group, name, leaf, ("run", "step", *dims))
                nc.setncatts(
                    {
                        "key": key,
                        "spec": self.spec_text,
                        "shape": json.dumps(list(chunk.shape)),
                        "hparams": json.dumps(list(chunk.hparams)),
                        "groksweep_version": groksweep_version(),
                    }
                )

        self.directory.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path(key), write)

    def check(self, chunk: Bucket) -> str | None:
        """None if the chunk's models file is whole and holds its key, runs and steps; what
        is wrong with it otherwise."""
        key = self.key(chunk)
        path = self.path(key)
        if not path.exists():
            return "absent"
        try:
            with _open(path) as nc:
                if nc.getncattr("key") != key:
                    return "written for another chunk or by other code"
                runs = nc["run"][:]
                if not np.array_equal(runs, chunk.run_index[chunk.valid]) or not np.array_equal(
                    nc["step"][:], self.steps
                ):
                    return "other runs or steps"
                leaves = {name: v[:] for name, v in nc["model"].variables.items()}
                for i, run in enumerate(runs):
                    if nc["checksum"][i] != _checksum(key, run, nc["step"][:], leaves, i):
                        return "checksum mismatch"
        except SpecError as err:
            return str(err)
        except READ_ERRORS as err:
            return f"unreadable: {type(err).__name__}"
        return None

    def prune(self, keep: set[str]) -> int:
        """Remove the models files whose key is not in ``keep``, and temporary files; return
        how many models files."""
        stale = [p for p in _files(self.directory) if p.stem not in keep]
        left = [p for p in self.directory.glob(".*.nc.*.tmp") if NAME.fullmatch(p.name[1:28])]
        for path in stale + left:
            path.unlink(missing_ok=True)
        return len(stale)


def load_models(
    directory: str | Path, run: int | Mapping[str, Any], step: int | None = None
) -> Any:
    """The model of one run at a kept step, as the task builds it: an equinox module for a
    :class:`~groksweep.tasks.model.ModelTask`, the task's own pytree otherwise, its leaves
    numpy arrays of the dtype trained, bit for bit. With ``step=None``, a dict of every kept
    step to its model.

    ``directory``: the output directory of ``groksweep run`` (its ``models/``), or the
    ``models_dir`` given to :func:`groksweep.run`. ``run``: the run's index in the grid's C
    order (as ``Sweep.runs()``), or its grid labels, ``{"frac": 0.5, "seed": 0}`` (axes with
    one value may be left out). A one-line :class:`SpecError` if there are no saved models,
    the run or step is not among them, or a file is not a whole models file.
    """
    folder = Path(directory)
    if (folder / MODELS).is_dir():
        folder = folder / MODELS
    files = _files(folder)
    if not files:
        raise SpecError(f"{directory} holds no saved models (a sweep with save_models writes them)")
    sweep, index = None, None
    for path in files:
        try:
            with _open(path) as nc:
                if sweep is None:
                    sweep = Sweep.from_dict(tomllib.loads(nc.getncattr("spec")))
                    index = _run_index(sweep, run)
                if nc.getncattr("spec") != sweep.to_toml():
                    raise SpecError(f"{path}: saved models of another sweep than {files[0].name}")
                where = np.flatnonzero(nc["run"][:] == index)
                if where.size:
                    return _read_run(path, nc, sweep, index, int(where[0]), step)
        except SpecError:
            raise
        except (*READ_ERRORS, tomllib.TOMLDecodeError) as err:
            why = type(err).__name__
            raise SpecError(f"{path}: not a whole groksweep models file ({why})") from None
    raise SpecError(f"run {index} has no saved models in {folder} (its chunk is not finished)")


def _read_run(path: Path, nc: Any, sweep: Sweep, index: int, row: int, step: int | None) -> Any:
    steps = nc["step"][:]
    if step is not None and step not in steps:
        kept = ", ".join(str(s) for s in steps)
        raise SpecError(f"step {step} is not a kept step of run {index}; kept: {kept}")
    shape = tuple((name, value) for name, value in json.loads(nc.getncattr("shape")))
    hparams = tuple(json.loads(nc.getncattr("hparams")))
    task = sweep.task_def
    skeleton = trainer.model_shapes(task, shape, hparams)
    named = _named_leaves(skeleton)
    group = nc["model"]
    leaves = {}
    for name, like in named:
        if name not in group.variables or group[name].shape[2:] != like.shape:
            raise SpecError(f"{path}: not a models file of this task ({name} differs)")
        if group[name].dtype != like.dtype:
            raise SpecError(f"{path}: not a models file of this task ({name} is not {like.dtype})")
        leaves[name] = group[name][row : row + 1]
    if nc["checksum"][row] != _checksum(nc.getncattr("key"), index, steps, leaves, 0):
        raise SpecError(f"{path}: the models of run {index} fail their checksum")
    treedef = jax.tree.structure(skeleton)
    models = {
        int(s): _as_task_model(
            task, dict(shape), jax.tree.unflatten(treedef, [leaves[n][0, i] for n, _ in named])
        )
        for i, s in enumerate(steps)
    }
    return models if step is None else models[step]


def _as_task_model(task: Task, shape: dict, model: Any) -> Any:
    """The engine's model as the task's: a ModelTask trains its module's arrays only, and the
    rest (sizes, activations) comes back from its untrained skeleton."""
    if not isinstance(task, ModelTask):
        return model
    return task.bind(shape).as_module(model)


def _run_index(sweep: Sweep, run: int | Mapping[str, Any]) -> int:
    """The grid index of ``run``: an index, or grid labels naming one run."""
    if isinstance(run, Mapping):
        unknown = set(run) - set(sweep.axes)
        if unknown:
            raise SpecError(f"run names {sorted(unknown)}: not axes ({', '.join(sweep.axes)})")
        position = []
        for name, values in sweep.axes.items():
            if name not in run:
                if len(values) > 1:
                    raise SpecError(f"run {dict(run)} names no {name}; the sweep has several")
                position.append(0)
            elif run[name] not in values:
                raise SpecError(f"{name} = {run[name]!r} is not on the grid: {values}")
            else:
                position.append(values.index(run[name]))
        return int(np.ravel_multi_index(position, sweep.shape))
    if isinstance(run, bool) or not isinstance(run, (int, np.integer)):
        raise SpecError(f"run must be a run index or a dict of grid labels, got {run!r:.60}")
    if not 0 <= run < sweep.n_runs:
        raise SpecError(f"run {run} is not one of the sweep's {sweep.n_runs} runs")
    return int(run)


def _files(folder: Path) -> list[Path]:
    """The models files in ``folder``, by name."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob(f"*{SUFFIX}") if NAME.fullmatch(p.name))


def _named_leaves(tree: Any) -> list[tuple[str, Any]]:
    """A pytree's leaves by path name (``W_E``, ``layers.0.weight``), in leaf order."""
    named = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        parts = [getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))) for k in path]
        named.append((".".join(str(p) for p in parts).replace("/", "_") or "model", leaf))
    if len({name for name, _ in named}) != len(named):
        raise ValueError(f"leaf names of the model repeat: {[n for n, _ in named]}")
    return named


def _variable(nc: Any, name: str, values: np.ndarray, dims: tuple[str, ...]) -> None:
    """A variable without a fill value: every element is written, and read back as stored."""
    if values.dtype.kind in "OU":
        var = nc.createVariable(name, str, dims)
        var[:] = values.astype(object)
        return
    var = nc.createVariable(name, values.dtype, dims, fill_value=False)
    var[:] = values


def _open(path: Path) -> Any:
    """The netCDF-4 file at ``path``, values as stored (no masks, no scaling); a one-line
    SpecError for a file that is not HDF5."""
    with open(path, "rb") as file:
        if file.read(len(HDF5_SIGNATURE)) != HDF5_SIGNATURE:
            raise SpecError(f"{path}: not a groksweep models file (not netCDF-4)")
    nc = netCDF4.Dataset(path)
    nc.set_auto_maskandscale(False)
    return nc


def _checksum(key: str, run: int, steps: np.ndarray, leaves: dict, row: int) -> str:
    """SHA-256 of a run's models: its chunk's key, its index, its steps and, leaf by leaf, the
    name, dtype, shape and bytes of row ``row``."""
    digest = hashlib.sha256(f"{key}\0{int(run)}\0".encode())
    digest.update(np.ascontiguousarray(steps, np.int64).tobytes())
    for name in sorted(leaves):
        leaf = np.ascontiguousarray(leaves[name][row])
        digest.update(f"{name}\0{leaf.dtype}\0{leaf.shape}".encode())
        digest.update(leaf.tobytes())
    return digest.hexdigest()
