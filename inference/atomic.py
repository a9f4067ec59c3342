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
from .fitspath import split_extension


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: permissions of files written here (mkstemp creates 0600; outputs should be like ``open``'s)
_MODE = 0o666 & ~_umask()


def check_writable(path: str | os.PathLike, *, folder_output: bool = False) -> Path:
    """Return ``path`` as a Path after checking its folder exists and is writable
    (``folder_output``: the output is itself a folder, e.g. a Parquet dataset)."""
    p = Path(path)
    folder = p.parent if str(p.parent) else Path(".")
    if not folder.is_dir():
        raise file_error(p, f"cannot write: folder {str(folder)!r} does not exist")
    if not os.access(folder, os.W_OK):
        raise file_error(p, f"cannot write: folder {str(folder)!r} is not writable")
    if p.is_dir() and not folder_output:
        raise file_error(p, "cannot write: it is a directory")
    if folder_output and p.exists() and not p.is_dir():
        raise file_error(p, "cannot write a folder here: a file of that name exists")
    return p


def check_outputs(outputs, inputs=(), overwrite: bool = False, folders=()) -> list[Path]:
    """The one check of what a command is about to write, before it reads or computes anything.

    Parameters
    ----------
    outputs : paths the command will write (its sidecars included: the ECSV/Parquet siblings
        of a catalogue, a ``_top.ecsv``, a mosaic, a pool...); None entries are skipped
    inputs : paths the command reads (None skipped); directories cover the files inside them;
        a FITS extension in a name (``image.fits[1]``) names its file
    overwrite : replace existing outputs (astropy's convention); never an input
    folders : those of ``outputs`` that are folders (Parquet datasets, HATS catalogues)

    Raises a one-line :class:`~deepmine.inference.errors.InputError` when an output is an
    input (both resolved), two outputs are one file, an output exists and ``overwrite`` is
    False, or its folder is missing or not writable. Returns the outputs as Paths.
    """
    ins = []
    for q in inputs:
        if q is not None:
            with contextlib.suppress(OSError, RuntimeError, ValueError):
                f = split_extension(q)[0]  # ``image.fits[1]`` is the file image.fits
                ins.append((f, f.resolve()))
    folder_set = {Path(f) for f in folders if f is not None}
    seen: dict[Path, Path] = {}
    checked = []
    for out in outputs:
        if out is None:
            continue
        p = Path(out)
        r = p.resolve()
        for given, rq in ins:
            if r == rq or rq in r.parents:
                what = "the input" if r == rq else "a file inside the input folder"
                raise file_error(p, f"would write over {what} {os.fspath(given)!r}; choose another output")
        if r in seen:
            raise file_error(p, f"is written twice by this command (also as {os.fspath(seen[r])!r}); "
                             "choose different outputs")
        seen[r] = p
        check_writable(p, folder_output=p in folder_set)
        if not overwrite and (p.exists() or p.is_symlink()):
            raise file_error(p, "already exists; pass --overwrite to replace it")
        checked.append(p)
    return checked


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
