"""Survey-scale merge (issue 22): part files → ranked Parquet dataset in a memory budget.

A simulated scan (synthetic part files, no images: the ``write_parts`` fixture of tests/conftest.py, parts of
65,536 rows, 30 % rounded logits, 5 % saturated, 2 % null rows, id/name kept columns) is merged
by :func:`deepmine.inference.catalog.merge.stream_merge` into a partitioned Parquet dataset, in a
child process so that its peak RSS is its own. Recorded in ``extra_info``: wall time, peak RSS,
bytes read and written, rank passes, the in-memory merge it replaces (10^6, 10^7), and the
ratio to the **plain read + write of the same bytes** — every part read whole and its columns written to a Parquet dataset with the same
writer and row groups, no ranking — measured in the same run (and to a raw file copy).

Goal: 10^8 rows in < 2 GB peak RSS and ≤ 1.5× the plain read + write.

    python -m pytest benchmarks/bench_merge.py --benchmark-only -q            # 10^6, 10^7
    DEEPMINE_BENCH_1E8=1 python -m pytest benchmarks/bench_merge.py -m scale  # + 10^8, once

The 10^8 case (about 11 GB of parts, 5 GB of dataset, 0.8 GB of spill) checks free disk
first and runs once; it is marked ``scale`` and skipped unless ``DEEPMINE_BENCH_1E8=1``.
"""
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PART_ROWS = 65_536
BUDGET = 2_000_000_000

_CHILD = textwrap.dedent("""
    import json, resource, sys, time
    from pathlib import Path
    mode, folder, out, budget = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), float(sys.argv[4])
    parts = sorted(folder.glob("part-*.npz"))
    import numpy as np
    from astropy.table import Table
    from deepmine.inference.catalog.dataset import ParquetDatasetWriter, arrow_schema, write_blocks
    if mode == "merge":
        from deepmine.inference.catalog.merge import stream_merge
    t0 = time.perf_counter()  # imports (Numba, pyarrow, astropy: ~1.5 s) left out of both timings
    info = {}
    if mode == "merge":
        with stream_merge(parts, budget=budget, work_dir=out.parent) as m:
            info.update(rows=m.n_rows, ranges=len(m.ranges), dense=sum(r.dense for r in m.ranges),
                        block_rows=m.block_rows)
            t1 = time.perf_counter()
            info["rank_s"] = t1 - t0
            write_blocks(m.blocks(0, source_codes=True), m.template(), {"dataset": out}, sources=m.sources,
                         row_group_rows=m.block_rows)
    elif mode == "plain":
        w = None
        rows = 0
        for p in parts:
            with np.load(p) as z:
                d = {k: z[k] for k in z.files if k not in ("sources", "skipped")}
            if w is None:
                w = ParquetDatasetWriter(out, arrow_schema(Table({k: v[:0] for k, v in d.items()})),
                                         row_group_rows=568_181)  # the merge's block_rows at a 2 GB budget
                kinds = {k: v.dtype for k, v in d.items()}
            for k, dt in kinds.items():  # parts without the kept columns: as the merge fills them
                if k not in d:
                    d[k] = np.zeros(len(d["id"]), dtype=dt)
            rows += len(d["id"])
            w.write(d)
        w.close()
        info["rows"] = rows
    elif mode == "memory":  # the in-memory merge (before issue 22): one Table, then Parquet
        from deepmine.inference.catalog.io import write_catalog
        from deepmine.inference.scan.shards import merge_parts
        table = merge_parts(parts)
        info["rows"] = len(table)
        write_catalog(table, out.with_suffix(".parquet"), ["parquet"])
    else:  # raw copy of the bytes
        out.mkdir()
        for p in parts:
            with open(p, "rb") as src, open(out / p.name, "wb") as dst:
                while chunk := src.read(1 << 24):
                    dst.write(chunk)
    info["wall_s"] = time.perf_counter() - t0
    info["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps(info))
""")


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _child(mode: str, folder: Path, out: Path) -> dict:
    if out.exists():
        shutil.rmtree(out)
    out.with_suffix(".parquet").unlink(missing_ok=True)
    env = dict(os.environ, DEEPMINE_NO_PROGRESS="1")
    run = subprocess.run([sys.executable, "-c", _CHILD, mode, str(folder), str(out), str(BUDGET)],
                         capture_output=True, text=True, env=env, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    info = json.loads(run.stdout.strip().splitlines()[-1])
    single = out.with_suffix(".parquet")
    info["bytes_written"] = _size(out) if out.is_dir() else single.stat().st_size
    single.unlink(missing_ok=True)
    return info


def _bench(benchmark, tmp: Path, n: int, write_parts) -> dict:
    folder = tmp / f"parts-{n}"
    if not folder.is_dir():
        write_parts(folder, n, PART_ROWS, seed=n % 1000)
    read_bytes = _size(folder)
    if n < 10**8:  # Numba cache warm (the 10^8 run comes after the others: runs once)
        _child("merge", folder, tmp / "warm")
        shutil.rmtree(tmp / "warm")
    copy = _child("copy", folder, tmp / "copy")
    shutil.rmtree(tmp / "copy")
    plain = _child("plain", folder, tmp / "plain")
    shutil.rmtree(tmp / "plain")
    result = {}

    def merge():
        result.update(_child("merge", folder, tmp / "merged"))

    benchmark.pedantic(merge, rounds=1, iterations=1)
    result_rows = result["rows"]
    shutil.rmtree(tmp / "merged")
    if n <= 10**7:  # the in-memory merge it replaces, for the record (10^8 needs ~40 GB)
        old = _child("memory", folder, tmp / "memory")
        benchmark.extra_info.update(in_memory_s=old["wall_s"], in_memory_peak_rss_bytes=old["peak_rss_bytes"])
    benchmark.extra_info.update(
        n=n, rows=result_rows, part_rows=PART_ROWS, budget_bytes=BUDGET,
        wall_s=result["wall_s"], rank_s=result["rank_s"], peak_rss_bytes=result["peak_rss_bytes"],
        bytes_read=read_bytes, bytes_written=result["bytes_written"], rank_passes=result["ranges"],
        dense_passes=result["dense"], block_rows=result["block_rows"],
        plain_read_write_s=plain["wall_s"], plain_peak_rss_bytes=plain["peak_rss_bytes"],
        plain_bytes_written=plain["bytes_written"], ratio_vs_plain=result["wall_s"] / plain["wall_s"],
        raw_copy_s=copy["wall_s"], ratio_vs_raw_copy=result["wall_s"] / copy["wall_s"],
        s_per_million_rows=result["wall_s"] / n * 1e6,
    )
    print(json.dumps(benchmark.extra_info))
    assert result_rows <= n
    return benchmark.extra_info


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    base = os.environ.get("DEEPMINE_BENCH_DIR")
    d = Path(base) if base else tmp_path_factory.mktemp("merge")
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.mark.parametrize("n", [10**6, 10**7])
def test_merge_scale(benchmark, workdir, n, write_parts):
    info = _bench(benchmark, workdir, n, write_parts)
    assert info["peak_rss_bytes"] < BUDGET
    shutil.rmtree(workdir / f"parts-{n}", ignore_errors=True)


@pytest.mark.scale
@pytest.mark.skipif(os.environ.get("DEEPMINE_BENCH_1E8") != "1", reason="10^8 rows: set DEEPMINE_BENCH_1E8=1")
def test_merge_1e8(benchmark, workdir, write_parts):
    n = 10**8
    need = int(n * (112 + 60 + 60 + 8) * 1.1)  # parts, dataset, plain dataset, spill (bytes a row, 10^7 run)
    free = shutil.disk_usage(workdir).free
    if free < need and not (workdir / f"parts-{n}").is_dir():
        pytest.skip(f"10^8 rows need ~{need / 1e9:.0f} GB free in {workdir}; {free / 1e9:.0f} GB free")
    info = _bench(benchmark, workdir, n, write_parts)
    assert info["peak_rss_bytes"] < BUDGET
    assert info["ratio_vs_plain"] <= 1.5
