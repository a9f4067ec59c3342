"""Shared pieces of the command line: consoles, progress bars, option helpers.

Command modules import heavy dependencies (astropy, onnxruntime, lenscrafter, torch) inside
their command functions, so that ``deepmine --help`` stays fast and torch-free.
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from ..errors import InputError, file_error
from ..fitspath import split_extension


def _console(stderr: bool) -> Console:
    """A console that wraps at the terminal's width on a terminal, and not at all when the output
    goes to a file or a pipe (a suggested command or a path stays on one line); ``COLUMNS`` set
    in the environment is obeyed either way."""
    stream = sys.stderr if stderr else sys.stdout
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    wide = not tty and not os.environ.get("COLUMNS")
    return Console(stderr=stderr, highlight=False, width=100_000 if wide else None, soft_wrap=wide)


#: Human-facing messages go to stderr; data (tables, JSON) to stdout.
err_console = _console(True)
out_console = _console(False)


def progress(transient: bool = False) -> Progress:
    """A rich progress bar for long work (hidden automatically when not on a terminal)."""
    return Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}", justify="right"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=transient,
        disable=bool(os.environ.get("DEEPMINE_NO_PROGRESS")),
    )


def _progress_interval() -> float:
    """Seconds between plain progress lines off a terminal (``DEEPMINE_PROGRESS_EVERY``)."""
    try:
        return max(float(os.environ.get("DEEPMINE_PROGRESS_EVERY", "60")), 0.0)
    except ValueError:
        return 60.0


def _rate(per_second: float) -> str:
    """Units per second with the digits that matter: ``1,234/s``, ``12.3/s``, ``0.55/s``."""
    if per_second >= 100:
        return f"{per_second:,.0f}/s"
    return f"{per_second:.1f}/s" if per_second >= 1 else f"{per_second:.2f}/s"


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


@contextlib.contextmanager
def progress_bar(transient: bool = False) -> Iterator:
    """``with progress_bar() as p: library_function(..., progress=p)`` — the command line's
    implementation of :class:`deepmine.inference.progress.Progress`: every stage the library
    opens becomes one bar, with the rate (units/s) or the stage's note beside it.

    Not on a terminal (a log file, a batch job), where rich draws nothing until the end, a plain
    line per stage is written every ``DEEPMINE_PROGRESS_EVERY`` seconds (default 60; 0 = never):
    ``<stage>: done/total (percent), rate or note, elapsed``.
    """
    every = _progress_interval()
    with progress(transient) as prog:
        lines = every > 0 and not prog.disable and not err_console.is_terminal

        def open_stage(description: str, total: int | None):
            tid = prog.add_task(description, total=total, rate="")
            t0 = time.perf_counter()
            done = [0]
            last = [t0]

            def advance(k: int = 1, note: str = "") -> None:
                done[0] += k
                now = time.perf_counter()
                rate = note or _rate(done[0] / max(now - t0, 1e-9))
                prog.update(tid, advance=k, rate=rate)
                if lines and now - last[0] >= every:
                    last[0] = now
                    of = f"/{total} ({100 * done[0] / total:.0f} %)" if total else ""
                    err_console.print(f"{description}: {done[0]}{of}, {rate}, {_clock(now - t0)} elapsed",
                                      soft_wrap=True, highlight=False, markup=False)

            return advance

        yield open_stage


@contextlib.contextmanager
def task(description: str, total: int | None) -> Iterator:
    """``with task("crafting", n) as advance: advance(k)`` — a one-bar progress context."""
    with progress_bar() as open_stage:
        yield open_stage(description, total)


def existing_file(path: Path, what: str = "file") -> Path:
    """Raise a one-line error unless ``path`` is an existing, non-empty, readable file (a FITS
    extension in the name, ``cube.fits[1]``, names its file); returns ``path`` as given."""
    p = split_extension(path)[0]
    if not p.exists():
        raise file_error(p, f"{what} not found")
    if p.is_dir():
        raise file_error(p, f"expected a {what}, got a directory")
    if not os.access(p, os.R_OK):
        raise file_error(p, f"{what} is not readable (permissions)")
    if p.stat().st_size == 0:
        raise file_error(p, f"{what} is empty")
    return Path(path)


def parse_fraction_or_count(text: str, option: str = "--top") -> float | int:
    """``"0.005"`` → fraction 0.005; ``"100"`` → count 100. Errors name the option."""
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"{option}: expected a fraction in (0, 1) or a count, got {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise InputError(f"{option}: expected a fraction in (0, 1) or a count, got {text!r}")
    if value <= 0:
        raise InputError(f"{option}: must be positive, got {text!r}")
    if value < 1:
        return value
    if value != int(value):
        raise InputError(f"{option}: a count must be a whole number, got {text!r}")
    return int(value)
