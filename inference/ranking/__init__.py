"""Ranking (seed 2.4, 4.6; SPEC section 4): ordinality, tracer recovery curves, ranking
performance, reference pools, streamed ranking of score files, the top list.

The SPEC's functions keep their paths (``deepmine.inference.ranking.ordinality``, ...): they
live in :mod:`.kernels` and are resolved on first access (PEP 562), so that importing another
module of this package (the reference pool, the top list) before a scan's first score does not
load Numba.

>>> from deepmine.inference.ranking import ordinality
>>> ordinality([0.2, 0.9, 0.2]).tolist()
[0.5, 1.0, 0.5]
"""
from __future__ import annotations

import importlib


def __getattr__(name: str):
    kernels = importlib.import_module(f"{__name__}.kernels")
    if name == "__all__" or name in kernels.__all__:
        value = getattr(kernels, "__all__" if name == "__all__" else name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(importlib.import_module(f"{__name__}.kernels").__all__))
