"""Progress of long work: one callback protocol, no bars in library code.

Library functions that run for long (scanning, crafting, selection functions, training) report
progress through a callback they are given and never build a progress bar themselves; the bar
(rich, on stderr) is built only by the command line (:func:`deepmine.inference.cli.common.progress_bar`).
Two shapes of the same protocol:

``Advance``
    ``advance(k, note="")`` — ``k`` more units of the current job are finished (cutouts, cells,
    training steps); ``note`` is an optional short status shown beside the bar ("test RP 0.97").
    Leaf functions (a shard, a chunk of cells) take an ``Advance``; it must be cheap and, for
    work sent to other processes, is called in the parent as results come back.
``Progress``
    ``progress(description, total) -> Advance`` — opens one stage of ``total`` units (``None``:
    unknown) and returns that stage's ``Advance``. Functions that run several stages (training
    phases, GAN cycles) or that decide the total themselves (a scan) take a ``Progress``.

:func:`no_progress` is the ``Progress`` that shows nothing; :func:`stage` turns an optional
``Progress`` into an ``Advance`` in one line.

>>> seen = []
>>> def progress(description, total):
...     return lambda k=1, note="": seen.append((description, k))
>>> advance = stage(progress, "scanning", 10)
>>> advance(4); advance(6)
>>> seen
[('scanning', 4), ('scanning', 6)]
>>> stage(None, "scanning", 10)(3)   # no progress wanted: a no-op
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Optional, Protocol

__all__ = ["Advance", "Progress", "no_progress", "stage"]


class Advance(Protocol):
    def __call__(self, k: int = 1, note: str = "") -> None: ...


class Progress(Protocol):
    def __call__(self, description: str, total: Optional[int]) -> Advance: ...


def _ignore(k: int = 1, note: str = "") -> None:
    return None


def no_progress(description: str, total: Optional[int]) -> Advance:
    """The ``Progress`` that reports nothing."""
    return _ignore


def stage(progress: Optional[Callable], description: str, total: Optional[int]) -> Advance:
    """Open one stage of ``progress`` (or a no-op ``Advance`` when ``progress`` is None)."""
    return _ignore if progress is None else progress(description, total)
