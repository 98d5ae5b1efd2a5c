"""Writing into an output directory safely: against crashes, full disks, a second process and
links planted in the directory.

- :func:`write_atomic` writes a file whole or not at all: a temporary file of a unique name in
  the same directory (created with ``O_EXCL | O_NOFOLLOW``), flushed to disk, then renamed over
  the destination. A rename replaces a link planted at the destination; it never writes
  through it. On any failure the temporary file is removed and :class:`OutputError` says, in
  one line, what could not be written and why.
- :func:`append_line` appends to a log without following a link.
- :class:`DirectoryLock` makes one process the owner of a directory for as long as it runs.

Every write of the command line goes through here, which is also where tests inject a full
disk (``os.fsync``).
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Self

LOCK = ".lock"


class OutputError(OSError):
    """A file could not be written; the message is one line naming the file and the reason."""

    def __init__(self, code: int | None, message: str):
        super().__init__(code, message)
        self.message = message

    def __str__(self) -> str:
        return self.message


def write_atomic(path: str | Path, content: bytes | Callable[[Path], None]) -> None:
    """Write ``content`` (bytes, or a function that writes a file at the path it is given) to
    ``path`` atomically. Raises :class:`OutputError`, leaving nothing behind, on failure."""
    path = Path(path)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise _cannot_write(path, err) from None
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, _FILE_MODE)  # mkstemp makes files private; results are ordinary files
        if callable(content):
            os.close(fd)
            fd = -1
            content(tmp)
            fd = os.open(tmp, os.O_RDONLY | os.O_NOFOLLOW)
        else:
            _write_all(fd, content)
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
    except BaseException as err:
        if fd >= 0:
            os.close(fd)
        written = tmp.stat().st_size if tmp.exists() else 0
        tmp.unlink(missing_ok=True)
        if isinstance(err, Exception):
            raise _cannot_write(path, err, written) from None
        raise


def _file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_FILE_MODE = _file_mode()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def append_line(path: str | Path, line: str) -> None:
    """Append ``line`` to ``path``, refusing to write through a link planted there."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            _write_all(fd, line.encode())
        finally:
            os.close(fd)
    except OSError as err:
        raise _cannot_write(path, err) from None


def _cannot_write(path: Path, err: BaseException, written: int = 0) -> OutputError:
    """The one-line error for a failed write of ``path``, keeping the errno where there is one."""
    code = err.errno if isinstance(err, OSError) else None
    return OutputError(code, f"cannot write {path}: {_reason(err, path, written)}")


def _reason(err: BaseException, path: Path, written: int = 0) -> str:
    """Why a write failed, in a few words. Libraries that write by name (netCDF, matplotlib)
    report a full disk in their own terms (netCDF: "HDF error", even "Permission denied"): a
    disk with less room left than the ``written`` bytes that went through before the failure
    (and under 1 MiB at least) is taken as full."""
    if isinstance(err, OSError) and err.errno == errno.ELOOP:
        return "it is a symbolic link, and groksweep never writes through links"
    detail = err.strerror if isinstance(err, OSError) and err.strerror else None
    if not (isinstance(err, OSError) and err.errno == errno.ENOSPC) and _nearly_full(
        path.parent, written
    ):
        return f"{os.strerror(errno.ENOSPC)} ({detail or f'{type(err).__name__}: {err}'})"
    return detail or f"{type(err).__name__}: {err}"


def _nearly_full(directory: Path, written: int) -> bool:
    try:
        return shutil.disk_usage(directory).free < max(2**20, written)
    except OSError:
        return False


class DirectoryLock:
    """An exclusive lock on ``directory`` (``flock`` of ``directory/.lock``), held until
    :meth:`release` or process exit: a second process is refused at once, with the holder's
    pid. The lock dies with its process, so a killed run never leaves a stale lock."""

    def __init__(self, directory: str | Path):
        self.path = Path(directory) / LOCK
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as err:
            raise OutputError(err.errno, f"cannot lock {directory}: {_reason(err, self.path)}")
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(self._fd)
            raise DirectoryInUse(f"{directory} is in use by pid {holder}") from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = -1

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class DirectoryInUse(RuntimeError):
    """Another process holds the output directory."""


def remove_tree(path: Path) -> None:
    """Remove a directory tree, or a link planted in its place (without following it)."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)
