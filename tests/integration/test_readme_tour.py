"""The README tour runs as written: its commands are read from README.md ("## A tour") and run in
order, each a real ``deepmine`` process in one folder, so every file a step uses must be made by
an earlier step (issue 19).

The test shrinks the sizes (:data:`SMALL`: every replacement must apply, so a changed tour fails
here until the list is updated). The interactive step (``deepmine inspect CATALOG``) is served
with ``--port 0 --no-browser``, graded over HTTP as a person would (the best candidate a lens,
the others false positives) and stopped with Ctrl-C.

Run as a script to time the tour at its README sizes (the figures the README states)::

    python tests/integration/test_readme_tour.py WORKDIR          # full sizes, prints a Markdown table
    python tests/integration/test_readme_tour.py WORKDIR --small  # the test's sizes
"""
from __future__ import annotations

import os
import re
import resource
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: (text in a tour command, what the test runs instead); each must match exactly one command.
SMALL = [
    ("craft --n 2000 --out lenses.npy", "craft --n 48 --out lenses.npy"),
    ("craft --n 6000 --negatives --out negatives.npy", "craft --n 96 --negatives --out negatives.npy"),
    ("-o run/ --plot --set epochs=2", "-o run/ --plot --set epochs=1"),
    ("craft --n 3000 --negatives --out survey.npy", "craft --n 400 --negatives --out survey.npy"),
    ("craft --n 100 --out known_lenses.npy", "craft --n 12 --out known_lenses.npy"),
    ("selection --model eznet.onnx --out selection.fits --plot corner.png",
     "selection --model eznet.onnx --out selection.fits --plot corner.png --grid tour_grid.toml --per-cell 2 "
     "--pool-size 200"),
    ("inspect candidates.fits --top 200", "inspect candidates.fits --top 6"),
    ("-o run2/ --init run/model.pt --extra-negatives fp.npy --extra-positives found.npy --set epochs=2",
     "-o run2/ --init run/model.pt --extra-negatives fp.npy --extra-positives found.npy --set epochs=1"),
]
#: A small selection grid for the test (two of the Figure 3.3 parameters, 2×2 cells).
TOUR_GRID = """
per_cell = 2
[axes.m_arc]
range = [18.0, 24.0]
bins = 2
[axes.theta_e]
range = [0.8, 2.4]
bins = 2
"""


def tour_commands(readme: str | None = None) -> list[tuple[int, str]]:
    """``(step number, command line)`` of every command in the README's tour block."""
    text = (ROOT / "README.md").read_text(encoding="utf-8") if readme is None else readme
    block = re.search(r"^## A tour\n.*?^```bash\n(.*?)^```", text, re.S | re.M)
    assert block, "README.md has no '## A tour' section with a bash block"
    step, out = 0, []
    for line in block.group(1).splitlines():
        line = line.strip()
        m = re.match(r"#\s*(\d+)\.", line)
        if m:
            step = int(m.group(1))
        if line and not line.startswith("#"):
            assert line.startswith("deepmine "), f"tour line is not a deepmine command: {line!r}"
            out.append((step, line))
    return out


def shrink(commands: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """The tour with :data:`SMALL` applied (each replacement to exactly one command)."""
    out = list(commands)
    for old, new in SMALL:
        hits = [k for k, (_, c) in enumerate(out) if old in c]
        assert len(hits) == 1, f"the README tour changed: {old!r} matches {len(hits)} commands; update SMALL"
        step, c = out[hits[0]]
        out[hits[0]] = (step, c.replace(old, new))
    return out


def _env() -> dict:
    return dict(os.environ, DEEPMINE_NO_PROGRESS="1", COLUMNS="200", MPLBACKEND="Agg")


def _is_serve(argv: list[str]) -> bool:
    return argv[1] == "inspect" and argv[2] not in ("export", "--help", "-h")


def _grade_and_stop(serve, argv: list[str], cwd: Path) -> None:
    """Serve the grading page with ``serve`` (the ``serve_inspect`` fixture), grade every candidate
    over HTTP as the page does (best: a lens, others: false positives), then Ctrl-C."""
    import json
    import urllib.request

    proc, url = serve([*argv[1:], "--port", "0", "--no-browser", "--grader", "tour"], cwd)
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            token = re.search(rb'name="deepmine-token" content="([^"]+)"', r.read()).group(1).decode()
        with urllib.request.urlopen(f"{url}api/page?start=0&count=500", timeout=30) as r:
            page = json.loads(r.read())
        for rank, cand in enumerate(page["candidates"]):
            body = {"catalog": page["state"]["catalog_id"], "rank": rank, "id": cand["id"],
                    "grade": "A" if rank == 0 else "N", "grader": "tour"}
            req = urllib.request.Request(url + "api/grade", json.dumps(body).encode(),
                                         {"Content-Type": "application/json", "X-Deepmine-Token": token})
            urllib.request.urlopen(req, timeout=30).close()
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]


def _child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_tour(folder: Path, serve, small: bool = True, log=None,
             first_step: int = 1) -> list[tuple[int, str, float, float]]:
    """Run the tour in ``folder``; ``(step, command, wall seconds, CPU seconds)`` per command
    (CPU: user + system time of the command's process, the measure a loaded machine leaves
    intact). ``serve`` starts the inspect server (the ``serve_inspect`` fixture). ``first_step``
    > 1 continues a tour whose earlier steps ran in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    commands = tour_commands()
    if small:
        commands = shrink(commands)
        (folder / "tour_grid.toml").write_text(TOUR_GRID)
    times = []
    for step, line in commands:
        if step < first_step:
            continue
        argv = shlex.split(line)
        t0, c0 = time.perf_counter(), _child_cpu()
        if _is_serve(argv):
            _grade_and_stop(serve, argv, folder)
        else:
            r = subprocess.run([sys.executable, "-m", "deepmine.inference.cli", *argv[1:]], cwd=folder,
                               capture_output=True, text=True, env=_env())
            assert r.returncode == 0, f"tour step {step}: {line}\n{r.stderr[-3000:]}"
        times.append((step, line, time.perf_counter() - t0, _child_cpu() - c0))
        if log:
            log(f"{times[-1][2]:8.1f} s wall {times[-1][3]:8.1f} s CPU  step {step}: {line}")
    return times


def test_tour_is_parsed_and_every_shrink_applies():
    commands = tour_commands()
    assert [s for s, _ in commands] == sorted(s for s, _ in commands) and commands[0][0] == 1
    small = shrink(commands)
    assert len(small) == len(commands)


@pytest.mark.slow
@pytest.mark.torch
def test_readme_tour_runs_in_order(tmp_path, serve_inspect):
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    times = run_tour(tmp_path, serve_inspect)
    for name in ("lenses.npy", "run/model.pt", "eznet.onnx", "candidates.fits", "top.png", "known.fits",
                 "trc.png", "pool.fits", "selection.fits", "corner.png", "candidates.grades.ecsv", "fp.npy",
                 "found.npy", "run2/model.pt"):
        assert (tmp_path / name).is_file(), name
    assert len(times) == len(tour_commands())


def _conftest_serve_inspect():
    """The script run has no fixtures: the helper behind ``serve_inspect``, loaded from
    tests/conftest.py by its path."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_deepmine_tests_conftest", ROOT / "tests" / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module._serve_inspect


if __name__ == "__main__":  # pragma: no cover - the timing run behind the README's figures
    import argparse
    import platform

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--small", action="store_true")
    ap.add_argument("--from-step", type=int, default=1, help="continue a tour run in FOLDER at this step")
    a = ap.parse_args()
    t_all = time.perf_counter()
    result = run_tour(a.folder, _conftest_serve_inspect(), small=a.small, log=lambda s: print(s, flush=True),
                      first_step=a.from_step)
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.machine()) if Path("/proc/cpuinfo").exists() else ""
    print(f"\n{cpu}, {os.cpu_count()} cores, "
          f"total {time.perf_counter() - t_all:.0f} s wall, {sum(r[3] for r in result):.0f} s CPU\n\n"
          "| step | command | wall | CPU |\n|---|---|---|---|")
    for step, line, wall, cpu_s in result:
        print(f"| {step} | `{line}` | {wall:.0f} s | {cpu_s:.0f} s |")
