"""A real browser: reports/report.html, made by the real report stage, opened in headless Chromium.

Chromium is driven over the DevTools protocol on ``--remote-debugging-pipe`` (file descriptors 3 and 4,
NUL-separated JSON), so nothing beyond the standard library is needed and the page is opened unmodified
from a ``file://`` URL. After the load event, a script in the page reports every ``<img>`` (complete,
natural size), every ``<table>`` (caption, header, body rows) and the visible text; the test compares
that with what the report says it contains (``report.md``, built from the same blocks, and the PNG files
in ``figures/``). Any request the page makes that fails is an error too.

Needs Debian's ``chromium`` (``apt-get install chromium``; ``.ci/run`` installs it) or a Chromium/Chrome
binary named by ``$CHROMIUM``; without one the tests are skipped and say why.
"""
from __future__ import annotations

import base64
import fcntl
import json
import os
import re
import select
import shutil
import signal
import struct
import subprocess
import time
import zlib
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
from stages.report import main as report_main  # noqa: E402
from test_report import argv_for, write_tree  # noqa: E402  the small hand-made eval/train tree

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def find_chromium() -> str | None:
    named = os.environ.get("CHROMIUM")
    if named:
        return shutil.which(named) or (named if os.access(named, os.X_OK) else None)
    return next((found for name in CANDIDATES if (found := shutil.which(name))), None)


CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="headless Chromium not installed (Debian: apt-get install chromium; .ci/run installs it; "
           "or set $CHROMIUM to a Chromium/Chrome binary)")


# --------------------------------------------------------------------------- a minimal DevTools client


class BrowserError(RuntimeError):
    pass


class DevTools:
    """Chromium in headless mode, spoken to over ``--remote-debugging-pipe`` (fd 3: commands in, fd 4: out)."""

    def __init__(self, binary: str, profile: Path, timeout_s: float = 60.0):
        self.timeout_s = timeout_s
        self.next_id = 0
        self.events: list[dict[str, Any]] = []
        self.buffer = b""
        cmd_r, self.cmd_w = os.pipe()     # we write commands, chromium reads fd 3
        self.out_r, out_w = os.pipe()     # chromium writes fd 4, we read

        def child_fds() -> None:          # runs in the child between fork and exec
            high_r = fcntl.fcntl(cmd_r, fcntl.F_DUPFD, 10)
            high_w = fcntl.fcntl(out_w, fcntl.F_DUPFD, 10)
            os.dup2(high_r, 3)            # dup2 makes them inheritable; the pipe originals close on exec
            os.dup2(high_w, 4)

        args = [binary, "--headless", "--remote-debugging-pipe", f"--user-data-dir={profile}",
                "--no-sandbox",  # CI runs as root in a container, where the sandbox cannot start
                "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
                "--disable-extensions", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--mute-audio", "about:blank"]
        self.stderr_path = profile.parent / "chromium-stderr.txt"
        with self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                         close_fds=False, preexec_fn=child_fds, start_new_session=True)
        os.close(cmd_r)
        os.close(out_w)

    # -- messages

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError(f"no answer from Chromium within {self.timeout_s:.0f}s{self._stderr_tail()}")
            ready, _, _ = select.select([self.out_r], [], [], left)
            if ready:
                chunk = os.read(self.out_r, 1 << 20)
                if not chunk:
                    raise BrowserError(f"Chromium closed the DevTools pipe (exit {self.proc.poll()})"
                                       f"{self._stderr_tail()}")
                self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(raw)

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict[str, Any]:
        """Send one command and return its result (events that arrive meanwhile are kept in ``events``)."""
        self.next_id += 1
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        data = json.dumps(message).encode() + b"\0"
        while data:
            data = data[os.write(self.cmd_w, data):]
        deadline = time.monotonic() + self.timeout_s
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error'].get('message')}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_event(self, method: str, session: str | None = None) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout_s
        while True:
            for event in self.events:
                if event.get("method") == method and event.get("sessionId") == session:
                    return event
            self.events.append(self._read_message(deadline))

    def _stderr_tail(self) -> str:
        try:
            tail = self.stderr_path.read_text(errors="replace").strip().splitlines()[-3:]
        except OSError:
            tail = []
        return f" (stderr: {' | '.join(tail)})" if tail else ""

    # -- lifetime

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                try:
                    self.send("Browser.close")
                except (BrowserError, OSError):
                    pass
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
            # Chromium's helper processes share the process group this test started (start_new_session):
            # give them a moment to exit with the browser, then end whatever of that group is left.
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and _group_alive(self.proc.pid):
                time.sleep(0.1)
            if _group_alive(self.proc.pid):
                os.killpg(self.proc.pid, signal.SIGKILL)
            if self.proc.poll() is None:
                self.proc.wait(timeout=10)
        finally:
            for fd in (self.cmd_w, self.out_r):
                try:
                    os.close(fd)
                except OSError:
                    pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# What the page says about itself once loaded: images decoded (or not), tables, visible text.
INSPECT_JS = r"""
(async () => {
  const images = [...document.images];
  await Promise.all(images.map(img => img.decode().catch(() => null)));
  const cell = el => el.textContent.replace(/\s+/g, " ").trim();
  return {
    title: document.title,
    images: images.map(img => ({alt: img.alt, complete: img.complete, width: img.naturalWidth,
                                height: img.naturalHeight, rendered: img.getBoundingClientRect().width,
                                scheme: img.currentSrc.split(":")[0]})),
    tables: [...document.querySelectorAll("table")].map(t => ({
      caption: t.caption ? cell(t.caption) : "",
      header: [...t.querySelectorAll("thead th")].map(cell),
      rows: t.tBodies.length ? [...t.tBodies[0].rows].map(r => [...r.cells].map(cell)) : [],
      rendered: t.getBoundingClientRect().height})),
    headings: [...document.querySelectorAll("h1, h2, h3")].map(cell),
    text: document.body ? document.body.innerText : "",
  };
})()
"""


def inspect_page(html_file: Path, workdir: Path, binary: str | None = None) -> dict[str, Any]:
    """Open ``html_file`` in headless Chromium; return what :data:`INSPECT_JS` saw, plus ``failed_requests``."""
    profile = workdir / "chromium-profile"
    profile.mkdir(parents=True, exist_ok=True)
    browser = DevTools(binary or CHROMIUM, profile)
    try:
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        browser.send("Page.enable", session=session)
        browser.send("Network.enable", session=session)
        nav = browser.send("Page.navigate", {"url": html_file.resolve().as_uri()}, session=session)
        if nav.get("errorText"):
            raise BrowserError(f"cannot open {html_file}: {nav['errorText']}")
        browser.wait_event("Page.loadEventFired", session)
        result = browser.send("Runtime.evaluate", {"expression": INSPECT_JS, "awaitPromise": True,
                                                   "returnByValue": True}, session=session)
        if "exceptionDetails" in result:
            raise BrowserError(f"inspection script failed: {result['exceptionDetails'].get('text')}")
        page = result["result"]["value"]
        page["failed_requests"] = [e["params"].get("errorText", "") for e in browser.events
                                   if e.get("method") == "Network.loadingFailed" and e.get("sessionId") == session]
        return page
    finally:
        browser.close()


# --------------------------------------------------------------------------- what the report says it holds


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()[:24]
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", path
    return struct.unpack(">II", data[16:24])


def plain(text: str) -> str:
    """Markdown/inline text as the browser shows it: `code` marks dropped, spaces collapsed."""
    return re.sub(r"\s+", " ", text.replace("`", "")).strip()


def expected_from_markdown(md: str) -> tuple[list[str], list[tuple[str, str]]]:
    """(table captions, [(figure caption, figure path)]) in page order, from report.md."""
    captions, lines = [], md.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("| ") and (i == 0 or not lines[i - 1].startswith("|")):
            above = lines[i - 2] if i >= 2 and not lines[i - 1].strip() else ""
            captions.append(plain(above[1:-1]) if above.startswith("*") and above.endswith("*") else "")
    figures = [(plain(c), p) for c, p in re.findall(r"!\[([^\]]*)\]\(([^)]+)\)", md)]
    return captions, figures


# --------------------------------------------------------------------------- the tests


SPLIT_TEXT = "speaker-independent (`data.speech.split: speakers`): theo held out"


@pytest.fixture(scope="module")
def real_report(tmp_path_factory) -> dict[str, Path]:
    """reports/report.html from the real report stage on the small tree of tests/unit/test_report.py."""
    root = tmp_path_factory.mktemp("browser")
    paths = write_tree(root)
    (paths["raw"] / "speech").mkdir(parents=True)
    (paths["raw"] / "speech" / "source.json").write_text(
        json.dumps({"source": "fsdd", "skipped": 0, "split_description": SPLIT_TEXT}), encoding="utf-8")
    assert report_main(argv_for(paths)) == 0
    return paths


@pytest.fixture(scope="module")
def seen(real_report, tmp_path_factory) -> dict[str, Any]:
    return inspect_page(real_report["out"] / "report.html", tmp_path_factory.mktemp("chromium"))


def test_every_figure_loads(real_report, seen):
    md = (real_report["out"] / "report.md").read_text(encoding="utf-8")
    _, figures = expected_from_markdown(md)
    assert len(figures) >= 8                              # learning curves, confusions, accuracy, timing
    assert len(seen["images"]) == len(figures), (len(seen["images"]), figures)
    for img, (caption, rel) in zip(seen["images"], figures):
        assert img["complete"] and img["width"] > 0 and img["height"] > 0, (caption, img)
        assert (img["width"], img["height"]) == png_size(real_report["out"] / rel), caption  # the whole PNG
        assert img["rendered"] > 0, caption                                                   # laid out
        assert img["scheme"] == "data" and plain(img["alt"]) == caption
    assert seen["failed_requests"] == []


def test_every_table_is_present_and_filled(real_report, seen):
    md = (real_report["out"] / "report.md").read_text(encoding="utf-8")
    captions, _ = expected_from_markdown(md)
    assert [t["caption"] for t in seen["tables"]] == captions
    for d in ("mnist", "speech"):                         # the tables a reader looks for, by name
        for caption in (f"{d}: this pipeline, per variant", f"{d}: the study's published numbers beside "
                        "this pipeline's", f"{d}: per-class precision and recall (mean over seeds)"):
            assert caption in captions, caption
    assert "Every run in this report and the data source it used" in captions
    for table in seen["tables"]:
        assert table["header"] and all(table["header"]), table["caption"]
        assert table["rows"] and all(len(r) == len(table["header"]) for r in table["rows"]), table["caption"]
        assert table["rendered"] > 0, table["caption"]
    runs = next(t for t in seen["tables"] if t["caption"].startswith("Every run"))
    assert len(runs["rows"]) == 8                         # 2 data sets x 2 variants x 2 seeds


def test_page_text_headings_and_split(seen):
    assert seen["title"] and seen["headings"][0].startswith("Does attention help")
    assert {"Data set: mnist", "Data set: speech"} <= set(seen["headings"])
    assert f"Train/test split: {plain(SPLIT_TEXT)}." in plain(seen["text"])


def test_the_check_sees_a_broken_figure_and_a_missing_table(tmp_path):
    """The same inspection on a page with one good and one corrupt image and no table: it must say so."""
    def tiny_png(w: int, h: int) -> bytes:
        def chunk(kind: bytes, data: bytes) -> bytes:
            return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        raw = b"".join(b"\0" + b"\xff\x00\x00" * w for _ in range(h))
        return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))

    ok = base64.b64encode(tiny_png(7, 5)).decode()
    broken = base64.b64encode(tiny_png(7, 5)[:40]).decode()  # truncated: header only
    page = tmp_path / "page.html"
    page.write_text(f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>t</title></head><body>'
                    f'<img alt="good" src="data:image/png;base64,{ok}">'
                    f'<img alt="broken" src="data:image/png;base64,{broken}">'
                    f'<img alt="missing" src="figures/nowhere.png"></body></html>', encoding="utf-8")
    seen = inspect_page(page, tmp_path, CHROMIUM)
    by_alt = {img["alt"]: img for img in seen["images"]}
    assert (by_alt["good"]["width"], by_alt["good"]["height"]) == (7, 5)
    assert by_alt["broken"]["width"] == 0 and by_alt["missing"]["width"] == 0
    assert seen["tables"] == []
    assert seen["failed_requests"]                      # figures/nowhere.png could not be read
