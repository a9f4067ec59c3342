"""End-to-end: grade candidates with the keyboard in headless Chromium, reload, check the saved table.

Needs Debian's ``chromium`` (``/usr/bin/chromium``, or ``DEEPMINE_CHROMIUM``) and the Python
``playwright`` package (its own browser download is not used); skipped when either is missing.
Set ``DEEPMINE_SCREENSHOTS=folder`` to keep the screenshots.
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from astropy.table import Table

from deepmine.inference.inspect.app import InspectSession
from deepmine.inference.inspect.server import make_server, serve_in_thread, server_url

sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = os.environ.get("DEEPMINE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason="chromium not installed (apt-get install chromium)"),
]


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def served(tmp_path, make_scan):
    cat = make_scan(tmp_path, n=120, sources=2)
    session = InspectSession(cat, top=60, grader="ann")
    srv = make_server(session, "127.0.0.1", 0)
    serve_in_thread(srv)
    yield session, server_url(srv)
    srv.shutdown()
    srv.server_close()


def _wait(predicate, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    raise AssertionError("timed out waiting for the page")


def _shot(page, tmp_path, name):
    folder = Path(os.environ.get("DEEPMINE_SCREENSHOTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / name))
    return folder / name


def _open(browser, url):
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    page.wait_for_selector("body[data-ready='1']", timeout=15000)
    return page, errors


def test_grade_with_keys_reload_and_resume(browser, served, tmp_path):
    session, url = served
    page, errors = _open(browser, url)
    assert page.locator(".tile").count() == 48          # one page of the grid
    assert page.locator("#tile-0.current").count() == 1
    # every image on the page loaded (none broken)
    _wait(lambda: page.evaluate("[...document.images].every(i => i.complete && i.naturalWidth > 0)"))
    for key in "anx":
        page.keyboard.press(key)
    _wait(lambda: len(session.log.actions) == 3)
    page.keyboard.press("u")                        # undo the X of rank 2; the cursor goes back to it
    _wait(lambda: len(session.log.actions) == 4)
    _wait(lambda: page.locator("#tile-2.current").count() == 1)
    page.keyboard.press("b")
    _wait(lambda: len(session.log.actions) == 5)
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowRight")               # on rank 4; rank 3 is still ungraded
    _wait(lambda: page.locator("#tile-4.current").count() == 1)
    _wait(lambda: "graded 3 / 60 by ann" in page.inner_text("#progress-text"))
    assert page.inner_text("#tile-0 .badge") == "A" and page.inner_text("#tile-2 .badge") == "B"
    _shot(page, tmp_path, "inspect-grading.png")

    saved = Table.read(session.grades_path, format="ascii.ecsv")
    assert list(saved["grade"]) == ["A", "N", "X", "undo", "B"]
    assert set(saved["grader"]) == {"ann"}
    top_ids = list(session.rows["id"][:3])
    assert list(saved["id"]) == [top_ids[0], top_ids[1], top_ids[2], top_ids[2], top_ids[2]]

    page.reload()                                   # a closed browser loses nothing; grading resumes
    page.wait_for_selector("body[data-ready='1']", timeout=15000)
    assert page.locator("#tile-3.current").count() == 1
    assert "graded 3 / 60 by ann" in page.inner_text("#progress-text")
    assert page.inner_text("#tile-1 .badge") == "N"
    assert not errors, errors


def test_second_grader_stretch_and_zoom(browser, served, tmp_path):
    session, url = served
    session.grade(0, "A", "ann")
    page, errors = _open(browser, url)
    page.fill("#grader", "bob")
    page.keyboard.press("Enter")                    # Enter leaves the field, which applies the name
    _wait(lambda: "graded 0 / 60 by bob" in page.inner_text("#progress-text"))
    _wait(lambda: page.locator("#tile-0.current").count() == 1)     # bob starts at the top
    _wait(lambda: "ann:A" in page.inner_text("#tile-0 .others"))
    page.keyboard.press("c")
    _wait(lambda: session.log.grades_of(int(session.rows["id"][0])) == {"ann": "A", "bob": "C"})
    # zoom view: RGB and the three bands, labelled; the stretch reaches the server
    assert [f.inner_text() for f in page.locator("#zoom-bands figcaption").all()] == ["i", "r", "g"]
    page.keyboard.press("s")
    _wait(lambda: "stretch=asinh" in page.get_attribute("#zoom-rgb", "src"))
    _wait(lambda: page.evaluate("[...document.images].every(i => i.complete && i.naturalWidth > 0)"))
    page.keyboard.press("?")
    assert page.locator("#help").is_visible()
    shot = _shot(page, tmp_path, "inspect-help-asinh.png")
    assert shot.stat().st_size > 10_000
    page.keyboard.press("Escape")
    page.keyboard.press("End")                      # the last candidate is on page 2
    _wait(lambda: page.locator("#tile-59.current").count() == 1)
    assert "page 2 / 2 · candidate 60 / 60" in page.inner_text("#page-text")
    assert page.locator(".tile").count() == 12
    page.keyboard.press("PageUp")
    _wait(lambda: page.locator("#tile-11.current").count() == 1)
    assert not errors, errors


def test_a_grade_that_cannot_be_saved_is_shown_and_not_kept(browser, served, tmp_path):
    session, url = served
    page, errors = _open(browser, url)
    session.grades_path.mkdir()                     # the grades file cannot be written any more
    page.keyboard.press("a")
    _wait(lambda: page.locator("#toast.error").is_visible())
    assert "grade NOT saved" in page.inner_text("#toast")
    _wait(lambda: page.locator("#tile-0.current").count() == 1)   # back on the candidate
    _wait(lambda: page.inner_text("#tile-0 .badge") == "·")        # no grade shown
    assert session.log.actions == [] and "graded 0 / 60" in page.inner_text("#progress-text")
    _shot(page, tmp_path, "inspect-save-failed.png")
    assert not errors, errors


def test_a_page_of_an_earlier_catalogue_cannot_grade_after_a_restart(browser, tmp_path, make_scan):
    """The README's loop on the default port: inspect, rescan, inspect the new catalogue on the
    same port. The page left open shows the old catalogue: its grade is refused (409, one line in
    the page) and the new catalogue's grades file is never written."""
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    a_dir.mkdir()
    b_dir.mkdir()
    a = InspectSession(make_scan(a_dir, n=80), top=20, grader="ann")
    srv = make_server(a, "127.0.0.1", 0)
    port = srv.server_address[1]
    serve_in_thread(srv)
    page, _ = _open(browser, server_url(srv))
    srv.shutdown()
    srv.server_close()
    a.close()
    b = InspectSession(make_scan(b_dir, n=90), top=20, grader="ann")
    srv = make_server(b, "127.0.0.1", port)
    serve_in_thread(srv)
    try:
        page.keyboard.press("a")
        _wait(lambda: page.locator("#toast.error").is_visible())
        assert "reload the page" in page.inner_text("#toast")
        assert not b.log.actions and not b.grades_path.exists()
        assert not a.grades_path.exists()
        page.reload()                               # a fresh page grades the new catalogue
        page.wait_for_selector("body[data-ready='1']", timeout=15000)
        page.keyboard.press("n")
        _wait(lambda: len(b.log.actions) == 1)
        assert b.log.actions[0].id == int(b.rows["id"][0])
    finally:
        srv.shutdown()
        srv.server_close()


def test_a_cross_site_page_cannot_grade(browser, served, tmp_path):
    """A page served from another local port posts to the grading server the ways a browser
    allows without CORS (no-cors, text/plain, a pipelined second request in the body): nothing
    is recorded and the grades file is never written."""
    import http.server
    import threading

    session, url = served
    port = url.rstrip("/").rsplit(":", 1)[1]
    inner = (f'{{"catalog": "{session.catalog_id}", "rank": 0, "id": {int(session.rows["id"][0])}, '
             '"grade": "A", "grader": "mallory"}')
    smuggled = (f"POST /api/grade HTTP/1.1\\r\\nHost: 127.0.0.1:{port}\\r\\nContent-Type: application/json\\r\\n"
                f"Content-Length: {len(inner)}\\r\\n\\r\\n{inner}")
    script = f"""
      const u = "{url}api/grade";
      const go = (opts) => fetch(u, Object.assign({{method: "POST", signal: AbortSignal.timeout(4000)}}, opts))
        .then((r) => r.type + ":" + r.status, (e) => "error:" + e.name);
      const done = Promise.all([
        go({{mode: "no-cors", headers: {{"Content-Type": "text/plain"}}, body: `{smuggled}`}}),
        go({{mode: "no-cors", headers: {{"Content-Type": "text/plain"}}, body: '{inner}'}}),
        go({{headers: {{"Content-Type": "application/json"}}, body: '{inner}'}}),
      ]);
    """
    html = "<!doctype html><body>cross-site page</body>"

    class Evil(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            body = html.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    evil = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Evil)
    threading.Thread(target=evil.serve_forever, daemon=True).start()
    try:
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{evil.server_address[1]}/")
        outcomes = page.evaluate(f"async () => {{ {script}; return await done; }}")
        assert len(outcomes) == 3 and not any(o.endswith(":200") for o in outcomes), outcomes
        time.sleep(0.5)
        assert not session.log.actions and not session.grades_path.exists()
    finally:
        evil.shutdown()
        evil.server_close()


def test_a_stalled_client_does_not_stop_a_grader(browser, served, tmp_path):
    import socket

    session, url = served
    port = int(url.rstrip("/").rsplit(":", 1)[1])
    stalled = []
    for _ in range(8):                              # clients that never finish their request
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.sendall(f"POST /api/grade HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: -1\r\n".encode())
        stalled.append(sock)
    try:
        page, errors = _open(browser, url)
        for key in "an":
            page.keyboard.press(key)
        _wait(lambda: len(session.log.actions) == 2, timeout=30)
        assert not errors, errors
    finally:
        for s in stalled:
            s.close()
