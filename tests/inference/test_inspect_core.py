"""deepmine inspect: catalogue/cutout checks, the grading log, the HTTP API and export (no browser)."""
from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table

from deepmine.inference.catalog.io import write_catalog
from deepmine.inference.errors import InputError
from deepmine.inference.inspect.app import InspectSession, default_grades_path
from deepmine.inference.inspect.cutouts import read_catalog, select_top, top_count
from deepmine.inference.inspect.export import export_grades, rows_path
from deepmine.inference.inspect.grades import GradeLog, combine_grades, read_actions
from deepmine.inference.inspect.server import make_server, serve_in_thread, server_url
from deepmine.inference.metadata import ModelMetadata


@pytest.fixture
def scan(tmp_path, make_scan) -> Path:
    return make_scan(tmp_path)


# -- catalogue and cutouts -------------------------------------------------------------------
def test_top_selection_is_by_logit_and_counts_fractions(scan):
    t = read_catalog(scan)
    assert top_count(1000, 0.005) == 5 and top_count(10, 0.005) == 1 and top_count(10, 50) == 10
    top = select_top(t, 10)
    assert len(top) == 10
    assert np.all(np.diff(top["logit"]) <= 0)
    assert top["logit"][0] == t["logit"].max()


@pytest.mark.parametrize("fmt", ["fits", "ecsv"])
def test_session_reads_both_formats_and_finds_cutouts_beside_the_catalogue(tmp_path, fmt, monkeypatch, make_scan):
    cat = make_scan(tmp_path, fmt=fmt, sources=2)
    monkeypatch.chdir("/")
    s = InspectSession(cat, top=8, grader="ann")
    assert len(s) == 8 and s.bands == ["i", "r", "g"]
    assert s.grades_path == default_grades_path(cat) == tmp_path / "scan.grades.ecsv"
    png = s.image(0)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert s.image(0, band=2, stretch="asinh", soft=0.1)[:4] == b"\x89PNG"


def test_bad_catalogues_give_one_line_errors(tmp_path):
    (tmp_path / "garbage.fits").write_bytes(b"not a fits file at all" * 10)
    (tmp_path / "empty.fits").write_bytes(b"")
    t = Table({"id": [1, 2], "logit": [0.1, 0.2], "probability": [0.5, 0.5], "ordinality": [0.5, 1.0],
               "flags": [0, 0]})
    t.write(tmp_path / "nosource.ecsv")
    for name, needle in (("garbage.fits", "not a readable catalogue"), ("empty.fits", "empty"),
                         ("missing.fits", "not found"), ("nosource.ecsv", "source")):
        with pytest.raises(InputError, match=needle) as exc:
            InspectSession(tmp_path / name)
        assert "\n" not in str(exc.value) and name in str(exc.value)


def test_rows_that_do_not_match_the_cutouts_are_refused(tmp_path, make_scan, make_cutouts):
    cat = make_scan(tmp_path, n=20)
    np.save(tmp_path / "short.npy", make_cutouts(5))
    with pytest.raises(InputError, match=r"points at cutout \d+ of .*short.npy, which holds 5 cutouts"):
        InspectSession(cat, cutouts=[tmp_path / "short.npy"], top=3)
    np.save(tmp_path / "bands.npy", np.zeros((20, 5, 8, 8), np.uint8))
    with pytest.raises(InputError, match="expected 3 bands"):
        InspectSession(cat, cutouts=[tmp_path / "bands.npy"], top=3)
    (tmp_path / "bad.npy").write_bytes(b"\x93NUMPYgarbage")
    with pytest.raises(InputError, match="bad.npy: not a readable .npy"):
        InspectSession(cat, cutouts=[tmp_path / "bad.npy"], top=3)
    (tmp_path / "stack0.npy").unlink()
    with pytest.raises(InputError, match="cutout source 'stack0.npy' not found.*--cutouts"):
        InspectSession(cat, top=3)


# -- the grading log ---------------------------------------------------------------------------
def _row(i):
    return {"id": i, "source": "s.npy", "index": i, "logit": 1.0 * i}


def test_grade_log_replays_undo_across_restarts(tmp_path):
    path = tmp_path / "g.ecsv"
    log = GradeLog(path, catalog="cat.fits")
    log.grade(_row(1), "B", "ann")
    log.grade(_row(2), "N", "ann")
    log.grade(_row(1), "A", "ann")           # regrade
    log.grade(_row(1), "X", "bob")
    assert log.grade(_row(2), "N", "ann") is None  # same grade again: nothing recorded
    assert log.current() == {1: {"ann": "A", "bob": "X"}, 2: {"ann": "N"}}
    again = GradeLog(path)                   # a restart reads the same state from the file
    assert again.current() == log.current() and again.catalog == "cat.fits"
    assert again.undo("ann").id == 1         # withdraws the regrade: B is back
    assert again.grades_of(1) == {"ann": "B", "bob": "X"}
    assert again.undo("ann").id == 2
    third = GradeLog(path)
    assert third.current() == {1: {"ann": "B", "bob": "X"}}
    assert third.undo("ann").id == 1 and third.undo("ann") is None
    assert third.current() == {1: {"bob": "X"}}
    t = Table.read(path, format="ascii.ecsv")
    assert list(t["grade"]) == ["B", "N", "A", "X", "undo", "undo", "undo"]
    assert list(t["seq"]) == list(range(1, 8)) and set(t["grader"]) == {"ann", "bob"}
    assert not list(tmp_path.glob(".g.ecsv*"))   # no temporary file left behind


def test_grade_log_rejects_bad_input(tmp_path):
    log = GradeLog(tmp_path / "g.ecsv")
    with pytest.raises(InputError, match="grade 'Q'"):
        log.grade(_row(1), "Q", "ann")
    with pytest.raises(InputError, match="grader name"):
        log.grade(_row(1), "A", "  ")
    (tmp_path / "other.ecsv").write_text("# %ECSV 1.0\n# ---\n# datatype:\n# - {name: a, datatype: int64}\na\n1\n")
    with pytest.raises(InputError, match="not a deepmine grades file"):
        read_actions(tmp_path / "other.ecsv")


def test_a_failed_save_records_nothing(tmp_path):
    log = GradeLog(tmp_path / "g.ecsv")
    log.grade(_row(1), "A", "ann")
    (tmp_path / "g.ecsv").unlink()
    (tmp_path / "g.ecsv").mkdir()            # the destination became a directory: write fails
    with pytest.raises(InputError):
        log.grade(_row(2), "N", "ann")
    assert log.current() == {1: {"ann": "A"}} and len(log.actions) == 1


def test_combine_grades_majority_unanimous_and_c(tmp_path):
    log = GradeLog(tmp_path / "g.ecsv")
    for i, grades in enumerate([("A", "B", "N"), ("N", "X", "A"), ("C", "N", "N"), ("C", "A", "N"), ("N", "N", "N")]):
        for who, g in zip(("ann", "bob", "cy"), grades):
            log.grade(_row(i), g, who)
    v = {x.id: x.verdict for x in combine_grades([log])}
    assert v == {0: "lens", 1: "negative", 2: "negative", 3: "undecided", 4: "negative"}
    v = {x.id: x.verdict for x in combine_grades([log], include_c=True)}
    assert v[3] == "lens"
    v = {x.id: x.verdict for x in combine_grades([log], agreement="unanimous")}
    assert v == {0: "undecided", 1: "undecided", 2: "undecided", 3: "undecided", 4: "negative"}
    v = {x.id: x.verdict for x in combine_grades([log], graders=["cy"])}
    assert v == {0: "negative", 1: "lens", 2: "negative", 3: "negative", 4: "negative"}


# -- HTTP API --------------------------------------------------------------------------------
@pytest.fixture
def server(scan):
    session = InspectSession(scan, top=12, grader="ann")
    srv = make_server(session, "127.0.0.1", 0)
    serve_in_thread(srv)
    yield srv, server_url(srv), session
    srv.shutdown()
    srv.server_close()


def _get(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.headers.get("Content-Type"), r.read()


def test_close_does_not_wait_for_an_idle_keep_alive_connection(scan):
    """Ctrl-C with a browser tab open: the tab's keep-alive connection sits idle in a handler
    thread; closing the server must end it, not wait for the browser to hang up."""
    import http.client
    import threading

    session = InspectSession(scan, top=12, grader="ann")
    srv = make_server(session, "127.0.0.1", 0)
    serve_in_thread(srv)
    conn = http.client.HTTPConnection(*srv.server_address[:2], timeout=30)
    try:
        conn.request("GET", "/api/state?grader=ann")  # HTTP/1.1: the connection stays open
        resp = conn.getresponse()
        assert resp.status == 200 and json.loads(resp.read())["total"] == 12
        srv.shutdown()
        closer = threading.Thread(target=srv.server_close, daemon=True)
        closer.start()
        closer.join(10)
        assert not closer.is_alive(), "server_close waited for an idle keep-alive connection"
        conn.sock.settimeout(5)  # the server hung up on the tab (its own read timeout is 10 s)
        assert conn.sock.recv(1) == b"", "the keep-alive connection is still open after close"
    finally:
        conn.close()
        session.close()


def _post(url, body, headers=None, session=None):
    """POST as the page does: the session token and the catalogue identity included."""
    if session is not None:
        body = {"catalog": session.catalog_id, **body}
        headers = {"X-Deepmine-Token": session.token, **(headers or {})}
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json", **(headers or {})})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def _cutout(session, rank, query=""):
    return f"api/cutout/{session.catalog_id}/{rank}-{session._records[rank]['id']}.png{query}"


def test_http_api_grades_undoes_and_serves_images(server):
    srv, url, session = server
    ctype, page = _get(url)
    assert ctype.startswith("text/html") and b"inspect.js" in page
    assert session.token.encode() in page and b"__DEEPMINE_TOKEN__" not in page
    for name in ("inspect.js", "inspect.css"):
        assert _get(url + name)[1]
    state = json.loads(_get(url + "api/state?grader=ann")[1])
    assert state["total"] == 12 and state["graded"] == 0 and state["first_ungraded"] == 0
    assert state["catalog_id"] == session.catalog_id
    cands = json.loads(_get(url + "api/page?start=0&count=5")[1])["candidates"]
    assert [c["rank"] for c in cands] == [0, 1, 2, 3, 4]
    assert cands[0]["logit"] >= cands[1]["logit"]
    ctype, png = _get(url + _cutout(session, 3, "?band=1&stretch=asinh&soft=0.1"))
    assert ctype == "image/png" and png[:4] == b"\x89PNG"
    ids = [c["id"] for c in cands]
    r = _post(url + "api/grade", {"rank": 0, "id": ids[0], "grade": "A", "grader": "ann"}, session=session)
    assert r["grades"] == {"ann": "A"} and r["state"]["graded"] == 1 and r["state"]["first_ungraded"] == 1
    _post(url + "api/grade", {"rank": 1, "id": ids[1], "grade": "X", "grader": "bob"}, session=session)
    t = Table.read(session.grades_path, format="ascii.ecsv")
    assert list(t["grade"]) == ["A", "X"] and list(t["id"]) == [cands[0]["id"], cands[1]["id"]]
    assert t.meta["catalog_id"] == session.catalog_id
    r = _post(url + "api/undo", {"grader": "ann"}, session=session)
    assert r["rank"] == 0 and r["grades"] == {} and r["state"]["graded"] == 0
    assert _post(url + "api/undo", {"grader": "ann"}, session=session)["rank"] is None


def _grade(session, **over):
    return {"rank": 0, "id": session._records[0]["id"], "grade": "A", "grader": "ann", **over}


@pytest.mark.parametrize("change,code", [
    ({"grade": "Q"}, 400), ({"grade": "a"}, 400), ({"grade": " C "}, 400),
    ({"rank": 99}, 409), ({"rank": 20.7}, 400), ({"rank": True}, 400), ({"rank": "21"}, 400), ({"rank": -1}, 400),
    ({"id": 123456}, 409), ({"catalog": "0123456789abcdef"}, 409),
    ({"grader": ""}, 400), ({"grader": "  "}, 400), ({"grader": 12345}, 400), ({"grader": "x" * 65}, 400),
    ({"grade": None}, 400),
])
def test_http_api_refuses_bad_grades(server, change, code):
    _, url, session = server
    before = session.grades_path.read_bytes() if session.grades_path.exists() else None
    with pytest.raises(urllib.error.HTTPError) as exc:
        _post(url + "api/grade", {"catalog": session.catalog_id, **_grade(session, **change)},
              {"X-Deepmine-Token": session.token})
    assert exc.value.code == code and "error" in json.loads(exc.value.read())
    assert not session.log.actions
    assert (session.grades_path.read_bytes() if session.grades_path.exists() else None) == before


@pytest.mark.parametrize("headers,code", [
    ({}, 403),                                                   # no token
    ({"X-Deepmine-Token": "guess"}, 403),
    ({"Origin": "http://evil.example"}, 403),
    ({"Content-Type": "text/plain"}, 415),
])
def test_http_api_refuses_foreign_requests(server, headers, code):
    _, url, session = server
    hdr = {"X-Deepmine-Token": session.token, **headers} if headers and "X-Deepmine-Token" not in headers and code != 403 \
        else headers
    if headers.get("Origin"):
        hdr = {"X-Deepmine-Token": session.token, **headers}
    req = urllib.request.Request(url + "api/grade", json.dumps({"catalog": session.catalog_id, **_grade(session)}).encode(),
                                 {"Content-Type": "application/json", **hdr})
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(req, timeout=10)
    assert exc.value.code == code and exc.value.headers.get("Connection") == "close"
    assert not session.log.actions


def test_http_api_refuses_unknown_paths_and_stale_images(server):
    _, url, session = server
    with pytest.raises(urllib.error.HTTPError) as exc:
        _post(url + "api/nothing", {}, session=session)
    assert exc.value.code == 404
    for bad in ("api/cutout/0.png", _cutout(session, 0).replace(session.catalog_id, "0" * 16),
                _cutout(session, 1).replace("1-", "2-"), _cutout(session, 0, "?band=7"),
                _cutout(session, 0, "?stretch=cubic"), "api/cutout/x/99-1.png"):
        with pytest.raises(urllib.error.HTTPError):
            _get(url + bad)
    headers = urllib.request.urlopen(url, timeout=10).headers
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"] and "unsafe-inline" not in \
        headers["Content-Security-Policy"]
    assert headers["X-Frame-Options"] == "DENY" and headers["Referrer-Policy"] == "no-referrer"


def _raw(url, data: bytes, timeout=5.0) -> bytes:
    """Send raw bytes to the server; return everything it answers until it closes."""
    host, port = url.split("//")[1].rstrip("/").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(data)
        out = b""
        try:
            while chunk := sock.recv(65536):
                out += chunk
        except TimeoutError:
            pass
        return out


def test_a_refused_post_never_smuggles_a_pipelined_grade(server):
    """A cross-site no-cors POST (text/plain) whose body is a second request: the refusal closes
    the connection, so the body is never parsed (nor recorded) as a grade."""
    _, url, session = server
    port = url.rstrip("/").rsplit(":", 1)[1]
    inner = json.dumps({"catalog": session.catalog_id, **_grade(session)})
    smuggled = (f"POST /api/grade HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
                f"X-Deepmine-Token: {session.token}\r\nContent-Length: {len(inner)}\r\n\r\n{inner}")
    outer = (f"POST /api/grade HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: http://127.0.0.1:9999\r\n"
             f"Content-Type: text/plain\r\nContent-Length: {len(smuggled)}\r\n\r\n{smuggled}")
    answer = _raw(url, outer.encode())
    assert answer.count(b"HTTP/1.1 ") == 1 and b" 403 " in answer.split(b"\r\n")[0]
    assert not session.log.actions and not session.grades_path.exists()


@pytest.mark.parametrize("host", ["rebind.example", "127.0.0.1:1", "evil.localhost"])
def test_a_forged_host_is_refused(server, host):
    _, url, session = server
    port = url.rstrip("/").rsplit(":", 1)[1]
    body = json.dumps({"catalog": session.catalog_id, **_grade(session)})
    h = host if ":" in host else f"{host}:{port}"
    req = (f"POST /api/grade HTTP/1.1\r\nHost: {h}\r\nOrigin: http://{h}\r\nContent-Type: application/json\r\n"
           f"X-Deepmine-Token: {session.token}\r\nContent-Length: {len(body)}\r\n\r\n{body}")
    assert b" 403 " in _raw(url, req.encode()).split(b"\r\n")[0]
    assert b" 403 " in _raw(url, f"GET /api/state HTTP/1.1\r\nHost: {h}\r\n\r\n".encode()).split(b"\r\n")[0]
    assert not session.log.actions


@pytest.mark.parametrize("length,code", [("-1", b" 400 "), ("abc", b" 400 "), (None, b" 411 "),
                                         (str(10**7), b" 413 ")])
def test_bad_content_lengths_are_refused_and_closed(server, length, code):
    _, url, session = server
    port = url.rstrip("/").rsplit(":", 1)[1]
    head = (f"POST /api/grade HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"X-Deepmine-Token: {session.token}\r\n" + (f"Content-Length: {length}\r\n" if length else "") + "\r\n")
    answer = _raw(url, head.encode())
    assert code in answer.split(b"\r\n")[0] and b"Connection: close" in answer
    assert not session.log.actions


def test_stalled_connections_neither_hold_the_server_nor_block_a_grader(server, monkeypatch):
    """Clients that declare a body and never send it: they time out, and a grader grading beside
    them is served at once; connections beyond the bound get 503 instead of a thread."""
    import deepmine.inference.inspect.server as ia

    _, url, session = server
    port = int(url.rstrip("/").rsplit(":", 1)[1])
    stalled = []
    for _ in range(ia.MAX_HANDLERS + 8):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.sendall(f"POST /api/grade HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 100\r\n\r\n".encode())
        stalled.append(sock)
    import threading
    import time

    time.sleep(0.5)
    assert threading.active_count() < ia.MAX_HANDLERS + 15
    for s in stalled:
        s.close()
    time.sleep(0.5)
    r = _post(url + "api/grade", _grade(session), session=session)
    assert r["grades"] == {"ann": "A"}


def test_port_in_use_is_a_clear_error(scan):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(InputError, match=f"--port {port}: port already in use"):
            make_server(InspectSession(scan, top=3), "127.0.0.1", port)


def test_one_server_per_grades_file(scan):
    first = InspectSession(scan, top=3)
    with pytest.raises(InputError, match="grades file in use by another 'deepmine inspect'"):
        InspectSession(scan, top=3)
    first.close()
    InspectSession(scan, top=3).close()


def test_grades_of_another_catalogue_are_refused(tmp_path, make_scan):
    cat = make_scan(tmp_path)
    log = GradeLog(tmp_path / "g.ecsv")
    log.grade({"id": 5, "source": "elsewhere.npy", "index": 99}, "A", "ann")
    with pytest.raises(InputError, match="grades another catalogue"):
        InspectSession(cat, grades=tmp_path / "g.ecsv")


# -- export -------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_export_writes_graded_stacks_with_the_source_dtype(tmp_path, dtype, make_scan):
    cat = make_scan(tmp_path, n=30, sources=2, dtype=dtype)
    s = InspectSession(cat, top=10, grader="ann")
    plan = {0: "A", 1: "N", 2: "X", 3: "B", 4: "C", 5: "N"}
    for rank, g in plan.items():
        s.grade(rank, g, "ann")
    res = export_grades([s.grades_path], tmp_path / "fp.npy", tmp_path / "found.npy")
    assert (res.n_negatives, res.n_lenses, res.n_undecided) == (3, 2, 1)
    fp, found = np.load(tmp_path / "fp.npy"), np.load(tmp_path / "found.npy")
    assert fp.dtype == dtype and fp.shape == (3, 3, 32, 32) and found.shape == (2, 3, 32, 32)
    rows = Table.read(rows_path(tmp_path / "fp.npy"))
    stacks = {f"stack{k}.npy": np.load(tmp_path / f"stack{k}.npy") for k in range(2)}
    for k, row in enumerate(rows):
        np.testing.assert_array_equal(fp[k], stacks[row["source"]][row["index"]])
    neg_ids = {int(s.rows["id"][r]) for r, g in plan.items() if g in "NX"}
    assert set(rows["id"]) == neg_ids
    res = export_grades([s.grades_path], lenses=tmp_path / "found_c.npy", include_c=True)
    assert np.load(tmp_path / "found_c.npy").shape[0] == 3


def test_export_errors(tmp_path, make_scan):
    cat = make_scan(tmp_path, n=20)
    s = InspectSession(cat, top=5, grader="ann")
    with pytest.raises(InputError, match="--negatives and/or --lenses"):
        export_grades([s.grades_path])
    s.grade(0, "N", "ann")
    with pytest.raises(InputError, match="name the output"):
        export_grades([s.grades_path], negatives=tmp_path / "fp.fits")
    with pytest.raises(InputError, match="name the same file"):
        export_grades([s.grades_path], negatives=tmp_path / "a.npy", lenses=tmp_path / "a.npy")
    with pytest.raises(InputError, match="no grades by that grader"):
        export_grades([s.grades_path], negatives=tmp_path / "fp.npy", graders=["zed"])
    (tmp_path / "stack0.npy").unlink()
    with pytest.raises(InputError, match="not found.*--cutouts"):
        export_grades([s.grades_path], negatives=tmp_path / "fp.npy")
    assert not (tmp_path / "fp.npy").exists()


def test_catalogue_of_a_directory_of_fits_cutouts(tmp_path, make_cutouts):
    """A scanned directory of single-cutout FITS files: source = each file, index 0 (DM_INPUT fits_dir)."""
    from astropy.io import fits

    cut = make_cutouts(6, dtype=np.float32)
    (tmp_path / "cutouts").mkdir()
    paths = []
    for k in range(6):
        paths.append(str(tmp_path / "cutouts" / f"obj{k}.fits"))
        fits.PrimaryHDU(cut[k]).writeto(paths[-1])
    t = Table({"id": np.arange(6), "source": paths, "index": np.zeros(6, np.int64),
               "logit": np.arange(6, dtype=np.float32), "probability": np.full(6, 0.5, np.float32),
               "ordinality": np.arange(1, 7) / 6, "flags": np.zeros(6, np.int32)})
    t.meta["DM_INPUT"] = [{"kind": "fits_dir", "paths": paths, "n": 6, "name": str(tmp_path / "cutouts"), "options": {}}]
    t.meta["DM_META"] = json.loads(ModelMetadata(architecture="toy", input_shape=[3, 32, 32]).to_json())
    cat = write_catalog(t, tmp_path / "scan.fits", ["fits"])["fits"]
    s = InspectSession(cat, top=4, grader="ann")
    assert s.store.n_bands == 3 and s.image(0)[:4] == b"\x89PNG"
    np.testing.assert_array_equal(s.store.get(paths[5], 0), cut[5])   # rank 0 = largest logit = obj5
    s.grade(0, "N", "ann")
    export_grades([s.grades_path], negatives=tmp_path / "fp.npy")
    np.testing.assert_array_equal(np.load(tmp_path / "fp.npy"), cut[5:6])


def test_survey_scan_cutouts_are_recut_from_the_survey_images(tmp_path, monkeypatch):
    """A survey scan's rows point at the source catalogue; inspect re-cuts them from the images
    as the scanner did (provenance DM_INPUT), also after the folder moved."""
    from astropy.io import fits

    from deepmine.inference.inputs.readers import read_block, resolve_inputs

    rng = np.random.default_rng(3)
    imgs = {b: rng.normal(size=(90, 110)).astype(np.float32) for b in "irg"}
    for b, img in imgs.items():
        h = fits.Header()
        h["FILTER"] = f"HSC-{b.upper()}"
        fits.PrimaryHDU(img, header=h).writeto(tmp_path / f"img_{b}.fits")
    xs, ys = rng.uniform(10, 100, 12), rng.uniform(10, 80, 12)
    Table({"x": xs, "y": ys}).write(tmp_path / "sources.ecsv")
    meta = ModelMetadata(architecture="toy", input_shape=[3, 16, 16])
    monkeypatch.chdir(tmp_path)                      # relative paths, as a user types them
    (spec,), _ = resolve_inputs(["img_i.fits", "img_r.fits", "img_g.fits"], meta, catalog="sources.ecsv")
    expected = read_block(spec, 0, spec.n, meta).images
    logit = rng.normal(size=12).astype(np.float32)
    t = Table({"id": np.arange(12), "source": [spec.name] * 12, "index": np.arange(12), "x": xs, "y": ys,
               "logit": logit, "probability": np.full(12, 0.5, np.float32), "ordinality": np.linspace(0, 1, 12),
               "flags": np.zeros(12, np.int32)})
    t.meta.update({"DM_INPUT": [spec.to_dict()], "DM_META": json.loads(meta.to_json())})
    write_catalog(t, tmp_path / "scan.fits", ["fits"])
    monkeypatch.chdir("/")                           # inspect runs from elsewhere
    s = InspectSession(tmp_path / "scan.fits", top=5, grader="ann")
    top = np.argsort(-logit)[:5]
    for rank, i in enumerate(top):
        np.testing.assert_array_equal(s.store.get(spec.name, i), expected[i])
        assert s.image(rank)[:4] == b"\x89PNG"
    s.grade(0, "X", "ann")
    s.grade(1, "A", "ann")
    res = export_grades([s.grades_path], negatives=tmp_path / "fp.npy", lenses=tmp_path / "found.npy")
    assert (res.n_negatives, res.n_lenses) == (1, 1)
    np.testing.assert_array_equal(np.load(tmp_path / "fp.npy"), expected[top[:1]])
    np.testing.assert_array_equal(np.load(tmp_path / "found.npy"), expected[top[1:2]])
    (tmp_path / "img_g.fits").unlink()               # inputs gone: a clear error, not a crash
    with pytest.raises(InputError, match="cannot re-cut the cutouts of source 'sources.ecsv': survey input "
                                         "img_g.fits not found"):
        InspectSession(tmp_path / "scan.fits", top=5, grades=tmp_path / "other.ecsv")


def test_restart_on_another_catalogue_refuses_the_old_pages_grades(tmp_path, make_scan):
    """The README's loop: inspect a catalogue, rescan, inspect the new one on the same port. A
    page still showing the first catalogue can neither load its images nor grade."""
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    a_dir.mkdir()
    b_dir.mkdir()
    a = InspectSession(make_scan(a_dir, n=40), top=10, grader="ann")
    b = InspectSession(make_scan(b_dir, n=44), top=10, grader="ann")
    assert a.catalog_id != b.catalog_id
    stale = {"catalog": a.catalog_id, "rank": 0, "id": a._records[0]["id"], "grade": "A", "grader": "ann"}
    a.close()
    srv = make_server(b, "127.0.0.1", 0)
    serve_in_thread(srv)
    url = server_url(srv)
    try:
        with pytest.raises(urllib.error.HTTPError) as exc:
            _post(url + "api/grade", stale, {"X-Deepmine-Token": b.token})
        assert exc.value.code == 409 and "reload the page" in json.loads(exc.value.read())["error"]
        with pytest.raises(urllib.error.HTTPError) as exc:
            _get(url + _cutout(a, 0))
        assert exc.value.code == 404
        assert not b.grades_path.exists() and not b.log.actions
    finally:
        srv.shutdown()
        srv.server_close()


def test_export_refuses_grade_files_of_different_catalogues(tmp_path, make_scan):
    from deepmine.inference.inspect.export import export_grades

    files = []
    for name, n in (("a", 40), ("b", 44)):
        d = tmp_path / name
        d.mkdir()
        s = InspectSession(make_scan(d, n=n), top=10, grader="ann")
        s.grade(0, "N", "ann")
        s.close()
        files.append(s.grades_path)
    before = [f.read_bytes() for f in files]
    with pytest.raises(InputError, match="grades another catalogue"):
        export_grades(files, negatives=tmp_path / "fp.npy")
    assert not (tmp_path / "fp.npy").exists() and [f.read_bytes() for f in files] == before
    # a grades file cannot be reopened on another catalogue either
    with pytest.raises(InputError, match="grades catalogue"):
        InspectSession(make_scan(tmp_path / "b", n=40), top=10, grades=files[1])
