"""Failed writes, named: :class:`WriteError` says which file could not be written and whether the disk is full.

Writers fail in their own words when the file system fills up: ``open``/``write`` raise
``OSError(ENOSPC)``; ``torch.save``'s zip writer raises ``RuntimeError: [enforce fail at
inline_container.cc:...] unexpected pos ...`` or ``... file write failed``; safetensors' Rust
writer raises ``SafetensorError`` with ``StorageFull`` / ``os error 28``. :func:`write_failures`
turns each of them into a :class:`WriteError` (an ``OSError``, ``errno`` ENOSPC when the cause
is space) naming the file, and, when the cause is space, the bytes left free on its file system
(:func:`shutil.disk_usage`). Everything that :func:`crossgap.utils.atomic_path` writes gets it, so
a half-written file never sits under the final name and the job's last line says what happened.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from pathlib import Path
from typing import Iterator

#: errnos that mean "no space": the disk (ENOSPC) or the user's quota (EDQUOT)
SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
#: messages of writers that fail without an OSError, and those of them that mean space in any case
WRITER_MESSAGES = ("unexpected pos", "file write failed")  # torch.save (caffe2 PyTorchStreamWriter)
SPACE_MESSAGES = ("No space left on device", "Disk quota exceeded", "StorageFull", "os error 28")
#: below this many free bytes, a torch writer failure is put down to space
LOW_SPACE_BYTES = 64 * 2**20


class WriteError(OSError):
    """``path`` could not be written; ``space``: because its file system is full (``free_bytes`` left)."""

    def __init__(self, path: str | os.PathLike, cause: BaseException, *, space: bool,
                 free_bytes: int | None) -> None:
        self.path, self.space, self.free_bytes = Path(path), space, free_bytes
        first = (str(cause).strip().splitlines() or [""])[0]
        why = f"{type(cause).__name__}: {first}"
        if space:
            free = f"{free_bytes:,} bytes free" if free_bytes is not None else "free space unknown"
            message = (f"{path}: cannot write the file: the file system is full ({free} in {self.path.parent}; "
                       f"{why}); nothing was written under this name: free some space and rerun")
        else:
            message = f"{path}: cannot write the file ({why}); nothing was written under this name"
        super().__init__(message)
        self.message = message
        self.errno = errno.ENOSPC if space else getattr(cause, "errno", None)
        self.strerror, self.filename = message, str(path)

    def __str__(self) -> str:
        return self.message

    def __reduce__(self):  # noqa: ANN204 - picklable (e.g. across worker processes) with its fields
        return _rebuild, (str(self.path), self.message, self.errno, self.space, self.free_bytes)


def _rebuild(path: str, message: str, err: int | None, space: bool, free: int | None) -> WriteError:
    out = WriteError.__new__(WriteError)
    OSError.__init__(out, message)
    out.path, out.message, out.space, out.free_bytes = Path(path), message, space, free
    out.errno, out.strerror, out.filename = err, message, path
    return out


def free_bytes(folder: str | os.PathLike) -> int | None:
    """Free bytes on the file system of ``folder`` (its nearest existing parent); ``None`` if unknown."""
    folder = Path(folder)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _is_ours(filename: object, paths: tuple[Path, ...]) -> bool:
    """An OSError's ``filename`` is one of ``paths`` (or lies inside one of them: a temporary folder)."""
    if filename is None:
        return True
    name = Path(os.fsdecode(filename)) if isinstance(filename, (str, bytes, os.PathLike)) else None
    return name is not None and any(name == p or p in name.parents for p in paths)


def classify(exc: BaseException, paths: tuple[Path, ...], free: int | None) -> bool | None:
    """``None``: ``exc`` is not a failed write of ``paths``; else whether its cause is space.

    ``free``: free bytes when it failed (before the partial file is removed).
    """
    if isinstance(exc, WriteError):
        return None
    if isinstance(exc, OSError):
        if exc.errno in SPACE_ERRNOS:
            return True
        if exc.errno is not None and _is_ours(exc.filename, paths):  # EIO, EROFS, EACCES ... on our file
            return False
        return None
    text = str(exc)
    if any(m in text for m in SPACE_MESSAGES):
        return True
    if any(m in text for m in WRITER_MESSAGES):
        return free is not None and free < LOW_SPACE_BYTES
    return None


@contextlib.contextmanager
def write_failures(final: str | os.PathLike, *temporaries: str | os.PathLike,
                   cleanup=None) -> Iterator[None]:  # noqa: ANN001 - a callable or None
    """Re-raise a failed write inside the block as :class:`WriteError` naming ``final``.

    ``temporaries``: the paths actually written (temporary names); ``cleanup``: called on any
    exception before the error is raised (removes them), so the free bytes reported are those left.
    Exceptions that are not failed writes pass unchanged (after ``cleanup``).
    """
    final = Path(final)
    paths = (final, *(Path(t) for t in temporaries))
    try:
        yield
    except BaseException as exc:
        space = classify(exc, paths, free_bytes(final.parent)) if isinstance(exc, Exception) else None
        if cleanup is not None:
            cleanup()
        if space is None:
            raise
        raise WriteError(final, exc, space=space, free_bytes=free_bytes(final.parent) if space else None) from exc
