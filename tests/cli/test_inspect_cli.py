"""`deepmine inspect CATALOG` / `deepmine inspect serve` / `deepmine inspect export` from the command line."""
from __future__ import annotations

import json
import re
import signal
import socket
import urllib.request

import numpy as np
from astropy.table import Table


def _post(url, body):
    """POST as the page does: the token embedded in the served page, the catalogue identity and,
    for a grade, the object's id."""
    base = url.rsplit("api/", 1)[0]
    with urllib.request.urlopen(base, timeout=10) as r:
        token = re.search(rb'name="deepmine-token" content="([^"]+)"', r.read()).group(1).decode()
    with urllib.request.urlopen(f"{base}api/page?start=0&count=100", timeout=10) as r:
        page = json.loads(r.read())
    body = {"catalog": page["state"]["catalog_id"], **body}
    if "rank" in body:
        body["id"] = page["candidates"][body["rank"]]["id"]
    req = urllib.request.Request(url, json.dumps(body).encode(),
                                 {"Content-Type": "application/json", "X-Deepmine-Token": token})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def _state(url, grader):
    with urllib.request.urlopen(f"{url}api/state?grader={grader}", timeout=10) as r:
        return json.loads(r.read())


def test_help_lists_serve_and_export(cli):
    rc, out, _ = cli("inspect", "--help")
    assert rc == 0 and "serve" in out and "export" in out
    rc, out, _ = cli("inspect", "export", "--help")
    assert rc == 0 and "--negatives" in out and "--lenses" in out
    rc, _, err = cli("inspect", "exprot", "grades.ecsv")
    assert rc == 2 and "no command 'exprot' (did you mean 'export'?)" in err


def test_killed_server_loses_nothing_and_restart_resumes(tmp_path, make_scan, serve_inspect):
    cat = make_scan(tmp_path, n=60)
    proc, url = serve_inspect(["inspect", cat, "--port", "0", "--no-browser", "--top", "10", "--grader", "ann"], tmp_path)
    try:
        assert _state(url, "ann")["total"] == 10
        for rank, g in enumerate("ANXB"):
            _post(url + "api/grade", {"rank": rank, "grade": g, "grader": "ann"})
    finally:
        proc.send_signal(signal.SIGKILL)   # no chance to clean up
        proc.wait(10)
    saved = Table.read(tmp_path / "scan.grades.ecsv", format="ascii.ecsv")
    assert list(saved["grade"]) == list("ANXB") and set(saved["grader"]) == {"ann"}
    # the shortcut and the explicit sub-command serve the same session; grading resumes at rank 4
    proc, url = serve_inspect(["inspect", "serve", "scan.fits", "--port", "0", "--no-browser", "--top", "10"], tmp_path)
    try:
        state = _state(url, "ann")
        assert state["graded"] == 4 and state["first_ungraded"] == 4 and state["graders"] == ["ann"]
        assert _post(url + "api/undo", {"grader": "ann"})["rank"] == 3
    finally:
        proc.send_signal(signal.SIGINT)    # Ctrl-C: a normal stop
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0 and "stopped; 5 grading actions" in err.replace("\n", " ")


def test_serve_errors_are_one_line(cli, tmp_path, make_scan):
    cat = make_scan(tmp_path, n=20)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        rc, _, err = cli("inspect", cat, "--port", port, "--no-browser")
    assert rc == 2 and err.strip() == (f"deepmine inspect: error: --port {port}: port already in use on 127.0.0.1; "
                                       "choose another (--port 0 picks a free one)")
    np.save(tmp_path / "short.npy", np.zeros((3, 3, 8, 8), np.uint8))
    for args, needle in (([tmp_path / "nope.fits"], "catalogue not found"),
                         ([cat, "--cutouts", tmp_path / "short.npy"], "which holds 3 cutouts"),
                         ([cat, "--top", "-3"], "--top"),
                         ([cat, "--cutouts", tmp_path / "missing.npy"], "missing.npy: cutout stack not found")):
        rc, _, err = cli("inspect", *args, "--no-browser", "--port", "0")
        assert rc == 2 and needle in err and len(err.strip().splitlines()) == 1, err


def test_export_command_closes_the_loop(cli, tmp_path, make_scan):
    from deepmine.inference.inspect.app import InspectSession

    cat = make_scan(tmp_path, n=30)
    s = InspectSession(cat, top=6, grader="ann")
    for rank, g in enumerate("ANXCNB"):
        s.grade(rank, g, "ann")
    s.grade(0, "N", "bob")
    rc, out, err = cli("inspect", "export", s.grades_path, "--negatives", tmp_path / "fp.npy",
                       "--lenses", tmp_path / "found.npy")
    assert rc == 0, err
    assert "wrote 3 false positives" in out and "wrote 1 lenses" in out   # rank 0: A vs N → undecided
    assert np.load(tmp_path / "fp.npy").shape == (3, 3, 32, 32)
    rc, out, err = cli("inspect", "export", s.grades_path, "--lenses", tmp_path / "ann.npy", "--grader", "ann",
                       "--include-c")
    assert rc == 0 and "wrote 3 lenses" in out
    rc, _, err = cli("inspect", "export", s.grades_path)
    assert rc == 2 and "--negatives and/or --lenses" in err
    rc, _, err = cli("inspect", "export", tmp_path / "nope.ecsv", "--negatives", tmp_path / "x.npy")
    assert rc == 2 and "grades file not found" in err


def test_scan_inspect_export_loop(cli, tmp_path, make_classifier, make_cutouts):
    """The mining loop on a real scan catalogue: scan → grade the top candidates → export."""
    from deepmine.inference.inspect.app import InspectSession

    stack = make_cutouts(120)
    np.save(tmp_path / "stack.npy", stack)
    make_classifier(tmp_path / "m.onnx", shape=(3, 32, 32))
    rc, _, err = cli("scan", tmp_path / "stack.npy", "--model", tmp_path / "m.onnx", "--out", tmp_path / "scan.fits")
    assert rc == 0, err
    s = InspectSession(tmp_path / "scan.fits", top=0.05, grader="ann")     # the top 5 %: 6 candidates
    assert len(s) == 6 and s.bands == ["i", "r", "g"]
    for rank, g in enumerate("NXABNC"):
        s.grade(rank, g, "ann")
    s.close()
    rc, out, err = cli("inspect", "export", tmp_path / "scan.grades.ecsv", "--negatives", tmp_path / "fp.npy",
                       "--lenses", tmp_path / "found.npy")
    assert rc == 0, err
    rows = Table.read(tmp_path / "fp.rows.ecsv")
    np.testing.assert_array_equal(np.load(tmp_path / "fp.npy"), stack[np.asarray(rows["index"])])
    assert len(rows) == 3 and np.load(tmp_path / "found.npy").shape == (2, 3, 32, 32)
    assert "1 graded candidates left out" in err.replace("\n", " ")


def test_export_refuses_existing_outputs_without_overwrite(tmp_path, cli, make_scan):
    from deepmine.inference.inspect.app import InspectSession

    cat = make_scan(tmp_path, n=40)
    s = InspectSession(cat, top=10, grader="ann")
    s.grade(0, "N", "ann")
    s.close()
    (tmp_path / "fp.npy").write_bytes(b"precious")
    rc, _, err = cli("inspect", "export", s.grades_path, "--negatives", tmp_path / "fp.npy")
    assert rc == 2 and err.count("\n") == 1 and "--overwrite" in err and "Traceback" not in err
    assert (tmp_path / "fp.npy").read_bytes() == b"precious"
    rc, _, err = cli("inspect", "export", s.grades_path, "--negatives", tmp_path / "stack0.npy", "--overwrite")
    assert rc == 2 and "would write over" in err            # a cutout stack the grades point at
    rc, _, err = cli("inspect", "export", s.grades_path, "--negatives", tmp_path / "fp.npy", "--overwrite")
    assert rc == 0, err
    assert np.load(tmp_path / "fp.npy").shape[0] == 1
