"""Finished chunks on disk, so that an interrupted sweep resumes where it stopped.

Each chunk's results are one ``.npz`` file in ``DIR/chunks/``, named by its *key*: a hash of
everything that makes the chunk's results what they are (the spec, the bucket's shape, the
chunk's runs, groksweep's version and code, and the task's identity,
:func:`~groksweep.tasks.base.task_identity`). The key is also stored inside the file, under its
SHA-256 checksum, so a file is read back only as the chunk it was written for: a renamed,
duplicated or foreign file, one written by other code, a truncated or corrupted one, or one
whose arrays have other names or shapes than the chunk expects is recomputed, never merged.

A chunk in progress is saved between the segments of its training as a *partial* file,
``KEY.bBLOCK.DONE.partial.npz``: the carried state after ``DONE`` blocks of ``BLOCK`` log
points, under the same checksum, with that whole name as its stored key, so a partial file is
resumed only by the chunk, the block and the progress it was written for. The newest partial
file that passes every check is resumed; a chunk's partial files go once the chunk is saved.

Files are written atomically (:func:`groksweep.files.write_atomic`): whole or absent.
"""

from __future__ import annotations

import functools
import hashlib
import io
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from groksweep import groksweep_version
from groksweep.files import write_atomic

CHECKSUM = "__sha256__"
KEY = "__key__"
PARTIAL = ".partial.npz"


class ChunkStore:
    """Chunk files of one sweep in ``directory``. ``task_identity`` names the task's code
    (:func:`~groksweep.tasks.base.task_identity`); chunks of other code have other keys."""

    def __init__(self, directory: str | Path, spec_text: str, task_identity: str = ""):
        self.directory = Path(directory)
        self.spec_text = spec_text
        self.task_identity = task_identity

    def key(self, shape: tuple, run_index: np.ndarray, valid: np.ndarray) -> str:
        return chunk_key(self.spec_text, self.task_identity, shape, run_index, valid)

    def load(
        self,
        key: str,
        expect: Mapping[str, tuple[int, ...]] | None = None,
        log: Callable[[str], None] | None = None,
    ) -> dict[str, np.ndarray] | None:
        """The chunk's arrays, or None when the file is absent or is not this chunk's: damaged,
        written for another key, or (with ``expect``, name -> shape) holding other arrays.
        ``log`` hears why a file that exists was not used."""
        path = self.directory / f"{key}.npz"
        if not path.exists():
            return None
        problem = _problem(path, key, expect)
        if isinstance(problem, str):
            (log or (lambda line: None))(f"chunk file {path.name} not used ({problem}): recomputed")
            return None
        return problem

    def save(self, key: str, arrays: dict[str, np.ndarray]) -> None:
        """Write the chunk with its key and checksum, atomically; its partial files go."""
        self._write(key, arrays)
        self.drop_partials(key)

    def _write(self, key: str, arrays: dict[str, np.ndarray]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        arrays = {**arrays, KEY: np.array(key)}
        buffer = io.BytesIO()
        np.savez(buffer, **arrays, **{CHECKSUM: np.array(_checksum(arrays))})
        write_atomic(self.directory / f"{key}.npz", buffer.getvalue())

    def save_partial(self, key: str, block: int, done: int, arrays: dict[str, np.ndarray]) -> None:
        """Write the state of chunk ``key`` after ``done`` blocks of ``block`` log points, then
        remove its older partial files."""
        name = f"{key}.b{block}.{done}{PARTIAL}"
        self._write(name.removesuffix(".npz"), arrays)
        self.drop_partials(key, keep=name)

    def load_partial(
        self,
        key: str,
        block: int,
        expect: Mapping[str, tuple[int, ...]],
        log: Callable[[str], None] | None = None,
    ) -> tuple[int, dict[str, np.ndarray]] | None:
        """The newest whole partial state of chunk ``key`` in blocks of ``block``: how many
        blocks it has done and its arrays, or None. ``log`` hears of files not used."""
        found = []
        for path in self.directory.glob(f"{key}.b{block}.*{PARTIAL}"):
            done = path.name.removesuffix(PARTIAL).rsplit(".", 1)[-1]
            if done.isdecimal():
                found.append((int(done), path))
        for done, path in sorted(found, reverse=True):
            arrays = self.load(path.name.removesuffix(".npz"), expect, log)
            if arrays is not None:
                return done, arrays
        return None

    def drop_partials(self, key: str, keep: str = "") -> None:
        """Remove chunk ``key``'s partial files, but ``keep``."""
        for path in self.directory.glob(f"{key}.*{PARTIAL}"):
            if path.name != keep:
                path.unlink(missing_ok=True)

    def prune(self, keep: set[str]) -> int:
        """Remove the chunk files whose key is not in ``keep`` (those of other code, which no
        rerun of this code will read), every partial file (all chunks are done) and the
        temporary files of writes a kill cut short; return how many chunk files."""
        stale = [path for path in self.files() if path.stem not in keep]
        done = [f"*{PARTIAL}", ".*.tmp"]
        left = [p for pattern in done for p in self.directory.glob(pattern)]
        for path in stale + left:
            path.unlink(missing_ok=True)
        return len(stale)

    def files(self) -> list[Path]:
        """The finished chunks' files."""
        if not self.directory.is_dir():
            return []
        return sorted(p for p in self.directory.glob("*.npz") if not p.name.endswith(PARTIAL))

    def count(self) -> int:
        return len(self.files())


def chunk_key(
    spec_text: str, task_identity: str, shape: tuple, run_index: np.ndarray, valid: np.ndarray
) -> str:
    """A chunk's key: a hash of the spec, the task's identity, groksweep's code, the bucket's
    shape and the chunk's runs (also the name of its models file, :mod:`groksweep.saved_models`)."""
    digest = hashlib.sha256(spec_text.encode())
    digest.update(f"\0{task_identity}\0{code_identity()}\0{shape!r}".encode())
    digest.update(np.ascontiguousarray(run_index).tobytes())
    digest.update(np.ascontiguousarray(valid).tobytes())
    return digest.hexdigest()[:24]


def _problem(
    path: Path, key: str, expect: Mapping[str, tuple[int, ...]] | None
) -> dict[str, np.ndarray] | str:
    """The file's arrays if it is whole and is chunk ``key`` with the expected arrays; otherwise
    what is wrong with it."""
    try:
        # allow_pickle=False: a planted file cannot run code when read
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except Exception as err:  # a damaged file raises whatever its damage makes np.load raise
        return f"unreadable: {type(err).__name__}"
    expected = arrays.pop(CHECKSUM, None)
    if expected is None or str(expected) != _checksum(arrays):
        return "checksum mismatch"
    if str(arrays.pop(KEY, "")) != key:
        return "written for another chunk or by other code"
    if expect is not None:
        shapes = {name: value.shape for name, value in arrays.items()}
        if shapes != dict(expect):
            return "arrays of other names or shapes"
    return arrays


def _checksum(arrays: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for name in sorted(arrays):
        digest.update(name.encode())
        digest.update(str(arrays[name].dtype).encode())
        digest.update(repr(arrays[name].shape).encode())
        digest.update(np.ascontiguousarray(arrays[name]).tobytes())
    return digest.hexdigest()


@functools.cache
def code_identity() -> str:
    """groksweep's version and a hash of its source: saved chunks of another version, or of
    edited engine code, are never read back as this code's."""
    digest = hashlib.sha256(groksweep_version().encode())
    package = Path(__file__).resolve().parent
    for source in sorted(package.rglob("*.py")):
        digest.update(str(source.relative_to(package)).encode())
        digest.update(source.read_bytes())
    return digest.hexdigest()[:16]
