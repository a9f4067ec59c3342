"""Synthetic scan part files (no images): the arrays :func:`deepmine.inference.shards.run_shard`
writes, with heavy ties, null (not ranked) rows, ±0.0 logits and gaps in the ids. Used by the
streamed-merge tests and benchmarks (``benchmarks/bench_merge.py``)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

FLAG_BLANK = 2
FLAG_EDGE = 4


def synthetic_part(first_id: int, n: int, seed: int, *, spec_index: int = 0, kept: bool = True,
                   source: str = "survey/cat.fits", ties: float = 0.3) -> dict:
    """Arrays of one part file of ``n`` objects starting at id ``first_id``."""
    rng = np.random.default_rng(seed)
    keep = rng.random(n) > 0.01  # a few invalid rows dropped, as run_shard drops them
    m = int(keep.sum())
    ids = np.arange(first_id, first_id + n, dtype=np.int64)[keep]
    logit = rng.normal(-3.0, 3.0, m).astype(np.float32)
    tie = rng.random(m)
    logit[tie < ties] = np.round(logit[tie < ties], 1)  # heavy ties
    logit[tie < 0.05] = np.float32(16.0)  # saturated top
    logit[(tie >= 0.05) & (tie < 0.06)] = np.float32(-0.0)
    logit[(tie >= 0.06) & (tie < 0.07)] = np.float32(0.0)
    flags = np.zeros(m, np.int32)
    blank = rng.random(m) < 0.02
    flags[blank] = FLAG_BLANK
    flags[rng.random(m) < 0.01] |= FLAG_EDGE
    logit[blank] = np.nan
    prob = (1 / (1 + np.exp(-logit.astype(np.float64)))).astype(np.float32)
    arrays = {
        "id": ids, "source_idx": (rng.random(m) < 0.5).astype(np.int32), "index": ids - first_id + 7,
        "ra": rng.uniform(0, 360, m), "dec": rng.uniform(-60, 60, m), "x": rng.uniform(0, 4000, m),
        "y": rng.uniform(0, 4000, m), "logit": logit, "probability": prob, "flags": flags,
        "spec_index": np.full(m, spec_index, np.int32),
        "sources": np.array([source, source.replace("cat", "cat2")], dtype=str),
        "skipped": np.array([[f"bad-{seed}.fits", f"bad-{seed}.fits: unreadable"]] if seed % 7 == 3 else [],
                            dtype=str).reshape(-1, 2),
    }
    if kept:
        arrays["keep:object_id"] = (ids * 10 + 3).astype(np.int64)
        arrays["keep:name"] = np.array([f"J{int(i):08d}" for i in ids], dtype=str)
    return arrays


def write_parts(folder, n_rows: int, part_rows: int, *, seed: int = 0, kept: bool = True,
                ties: float = 0.3) -> list[Path]:
    """Write ``part-NNNNNN.npz`` files of ``part_rows`` objects each into ``folder``; return their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, start in enumerate(range(0, n_rows, part_rows)):
        n = min(part_rows, n_rows - start)
        p = folder / f"part-{k:06d}.npz"
        with open(p, "wb") as fh:
            np.savez(fh, **synthetic_part(start, n, seed * 100_003 + k, spec_index=k % 3,
                                          kept=kept and k % 5 != 4, ties=ties))
        paths.append(p)
    return paths
