"""Benchmarks: run with ``python -m pytest benchmarks/ --benchmark-only``.

Each benchmark times deepmine's hot path and its peer in the same run and records the speed
ratio (peer time / our time) in ``extra_info``, with the machine in the JSON's machine_info.
"""
import os
import time

import pytest

os.environ.setdefault("DEEPMINE_NO_PROGRESS", "1")


def best_time(fn, *args, repeat: int = 3, **kwargs) -> float:
    """Minimum wall time of ``fn(*args)`` over ``repeat`` calls (the peer's figure)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(*args, **kwargs)
        best = min(best, time.perf_counter() - t0)
    return best


@pytest.fixture
def peer_time():
    """The :func:`best_time` helper as a fixture (benchmarks are not a package)."""
    return best_time
