"""Start-up of ``deepmine scan`` (issue 22): time to the first score, and what is loaded by then.

Measured in fresh processes, as a user runs the command: from just before the process starts to
the first ``InferenceSession.run``. The goal is 0.7 s on two idle cores (docs/benchmarks.md has
the figures); the bounds asserted here are generous because test machines are shared, and the
tight one is on CPU seconds (measured here: 0.76–0.84 s CPU while wall time was 1.7–4.1 s). What must
hold on any machine: for uint8 cutouts nothing heavy that scoring does not need is imported
before the first score — no Numba (0.3–0.5 s with the SciPy parts it pulls in), astropy tables,
matplotlib, pandas or pyarrow.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

#: generous bounds on the median time to the first score (goal: 0.7 s on two idle cores): CPU
#: seconds of the process, which a shared machine's load barely changes, and wall seconds
BOUND_CPU_S = 2.0
BOUND_WALL_S = 10.0
RUNS = 3
HEAVY = ("numba", "scipy", "astropy.table", "astropy.io.fits", "matplotlib", "pandas", "pyarrow", "torch", "PIL")

PROBE = textwrap.dedent(
    """
    import json, os, sys, time
    import onnxruntime as ort

    _run = ort.InferenceSession.run

    def first_run(self, *args, **kwargs):
        ort.InferenceSession.run = _run
        heavy = [m for m in HEAVY if m in sys.modules]
        print(json.dumps({"t": time.time(), "cpu": time.process_time(), "heavy": heavy}), file=sys.stderr)
        sys.stderr.flush()
        os._exit(0)  # the start-up is measured; the rest of the scan is not

    ort.InferenceSession.run = first_run
    from deepmine.inference.cli.app import main
    main(sys.argv[1:])
    """
)


def _time_to_first_score(stack, out):
    env = dict(os.environ, DEEPMINE_NO_PROGRESS="1")
    code = f"HEAVY = {HEAVY!r}\n" + PROBE
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-c", code, "scan", str(stack), "-o", str(out), "--overwrite"],
                          capture_output=True, text=True, env=env, timeout=300)
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("{")]
    assert lines, f"the scan never scored (rc {proc.returncode}): {proc.stderr[-2000:]}"
    rec = json.loads(lines[-1])
    return rec["t"] - t0, rec["cpu"], rec["heavy"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    path = tmp_path_factory.mktemp("startup") / "cutouts.npy"
    rng = np.random.default_rng(0)
    np.save(path, rng.integers(0, 256, size=(256, 3, 64, 64), dtype=np.uint8))
    return path


def test_scan_reaches_the_first_score_quickly_and_lightly(stack, tmp_path):
    pytest.importorskip("onnxruntime")
    from deepmine.inference.model import BUNDLED_MODEL_DIR

    if not any(BUNDLED_MODEL_DIR.glob("*.onnx")):
        pytest.skip("no bundled model in this install")
    runs = [_time_to_first_score(stack, tmp_path / f"cat{i}") for i in range(RUNS)]
    walls = [r[0] for r in runs]
    cpus = [r[1] for r in runs]
    heavy = sorted({m for r in runs for m in r[2]})
    print(f"\ntime to first score: median {statistics.median(walls):.2f} s wall, "
          f"{statistics.median(cpus):.2f} s CPU (runs {', '.join(f'{w:.2f}' for w in walls)})")
    assert heavy == [], f"imported before the first score: {heavy}"
    assert statistics.median(cpus) < BOUND_CPU_S
    assert statistics.median(walls) < BOUND_WALL_S
