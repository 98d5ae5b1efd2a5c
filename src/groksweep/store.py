"""Finished chunks on disk, so that an interrupted sweep resumes where it stopped.

Each chunk's results are one ``.npz`` file in ``DIR/chunks/``, named by a hash of the spec, the
bucket's shape and the chunk's runs, so a file can only be read back by the same chunk of the
same sweep. A file is written to a temporary name, flushed to disk and renamed into place: it
is either whole or absent. It carries a SHA-256 of its arrays; a truncated or corrupted file
fails the check and is recomputed, never merged.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import numpy as np

CHECKSUM = "__sha256__"


class ChunkStore:
    """Chunk files of one sweep in ``directory``."""

    def __init__(self, directory: str | Path, spec_text: str):
        self.directory = Path(directory)
        self.spec_text = spec_text

    def key(self, shape: tuple, run_index: np.ndarray, valid: np.ndarray) -> str:
        digest = hashlib.sha256(self.spec_text.encode())
        digest.update(repr(shape).encode())
        digest.update(np.ascontiguousarray(run_index).tobytes())
        digest.update(np.ascontiguousarray(valid).tobytes())
        return digest.hexdigest()[:24]

    def load(self, key: str) -> dict[str, np.ndarray] | None:
        """The chunk's arrays, or None when absent, truncated or corrupted."""
        path = self.directory / f"{key}.npz"
        try:
            with np.load(path) as data:
                arrays = {name: data[name] for name in data.files}
        except FileNotFoundError:
            return None
        except Exception:  # a damaged file raises whatever its damage makes np.load raise
            return None
        expected = arrays.pop(CHECKSUM, None)
        if expected is None or str(expected) != _checksum(arrays):
            return None
        return arrays

    def save(self, key: str, arrays: dict[str, np.ndarray]) -> None:
        """Write atomically: temporary file, fsync, rename."""
        self.directory.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays, **{CHECKSUM: np.array(_checksum(arrays))})
        path = self.directory / f"{key}.npz"
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(buffer.getvalue())
                f.flush()
                os.fsync(f.fileno())
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)

    def count(self) -> int:
        return len(list(self.directory.glob("*.npz"))) if self.directory.is_dir() else 0


def _checksum(arrays: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for name in sorted(arrays):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(arrays[name]).tobytes())
    return digest.hexdigest()
