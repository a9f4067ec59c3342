"""Atomic file output: nothing already written is lost or half-written by a failure.

Write to a temporary file in the destination's folder, flush and fsync it, then
``os.replace`` it over the destination. A crash or an exception leaves the old file (if any)
untouched and removes the temporary one.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import file_error


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: permissions of files written here (mkstemp creates 0600; outputs should be like ``open``'s)
_MODE = 0o666 & ~_umask()


def check_writable(path: str | os.PathLike) -> Path:
    """Return ``path`` as a Path after checking its folder exists and is writable."""
    p = Path(path)
    folder = p.parent if str(p.parent) else Path(".")
    if not folder.is_dir():
        raise file_error(p, f"cannot write: folder {str(folder)!r} does not exist")
    if not os.access(folder, os.W_OK):
        raise file_error(p, f"cannot write: folder {str(folder)!r} is not writable")
    if p.is_dir():
        raise file_error(p, "cannot write: it is a directory")
    return p


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically.

    ``suffix`` defaults to the destination's own suffix (several writers, e.g. astropy and
    numpy, choose the format from it).
    """
    dest = check_writable(path)
    sfx = dest.suffix if suffix is None else suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=f".tmp{sfx}", dir=dest.parent or ".")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp_path, _MODE)
        os.replace(tmp_path, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs) -> Iterator:
    """``open`` replacement whose file appears at ``path`` only when the block succeeds."""
    with atomic_path(path) as tmp:
        with open(tmp, mode, **kwargs) as fh:
            yield fh
            fh.flush()
