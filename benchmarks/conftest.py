"""Benchmarks: run with ``python -m pytest benchmarks/ --benchmark-only``.

Each benchmark times deepmine's hot path and its peer in the same run and records the speed
ratio (peer time / our time) in ``extra_info``, with the machine in the JSON's machine_info.
"""
import importlib.util
import os
import time
from pathlib import Path

import pytest

os.environ.setdefault("DEEPMINE_NO_PROGRESS", "1")

# The synthetic inputs of the tests (toy ONNX classifier, blob cutouts, scan part files) are the
# fixtures of tests/conftest.py; loaded by file path (neither folder is a package) and exposed
# here under the same names.
_spec = importlib.util.spec_from_file_location("_deepmine_tests_conftest",
                                               Path(__file__).resolve().parents[1] / "tests" / "conftest.py")
_tests = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_tests)
make_classifier, blobs, write_parts = _tests.make_classifier, _tests.blobs, _tests.write_parts


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
