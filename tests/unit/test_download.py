"""Tests for attention_cnn.data.download: a real HTTP client against a loopback server, and tar safety."""
from __future__ import annotations

import hashlib
import io
import os
import socket
import tarfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]

from attention_cnn.common import StageError
from attention_cnn.data.download import download, safe_extract_tar

BODY = os.urandom(150_000)
BODY_SHA = hashlib.sha256(BODY).hexdigest()


# --------------------------------------------------------------------------- loopback server

Route = Callable[["_Handler", int], None]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.routes: dict[str, Route] = {}
        self.hits: dict[str, int] = {}
        self.headers_seen: list[dict[str, str]] = []
        self.release = threading.Event()  # set at teardown: stalled handlers give up
        self.lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, fmt: str, *args: object) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:  # noqa: N802
        path = self.path.split("?", 1)[0]
        with self.server.lock:
            n = self.server.hits.get(path, 0) + 1
            self.server.hits[path] = n
            self.server.headers_seen.append(dict(self.headers.items()))
        route = self.server.routes.get(path)
        try:
            if route is None:
                send(self, b"no such route", status=404)
            else:
                route(self, n)
        except (BrokenPipeError, ConnectionResetError):
            pass


def send(h: BaseHTTPRequestHandler, body: bytes, *, status: int = 200, length: int | None = None,
         headers: dict[str, str] | None = None) -> None:
    h.send_response(status)
    h.send_header("Content-Type", "application/octet-stream")
    h.send_header("Content-Length", str(len(body) if length is None else length))
    for k, v in (headers or {}).items():
        h.send_header(k, v)
    h.end_headers()
    h.wfile.write(body)
    h.wfile.flush()


@pytest.fixture
def http_server():
    server = _Server()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    server.base_url = f"http://127.0.0.1:{server.server_address[1]}"  # type: ignore[attr-defined]
    try:
        yield server
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def fast(**kw):
    """download() options for tests: tiny backoff, no progress bar."""
    opts = {"backoff_s": 0.01, "progress": False, "timeout_s": 5.0}
    opts.update(kw)
    return opts


def assert_one_line(exc: BaseException) -> str:
    msg = str(exc)
    assert "\n" not in msg and msg.strip() == msg and msg
    return msg


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --------------------------------------------------------------------------- download: http


def test_download_ok_and_checksum_verified(http_server, tmp_path):
    http_server.routes["/data.bin"] = lambda h, n: send(h, BODY)
    dest = tmp_path / "sub" / "data.bin"
    out = download(http_server.base_url + "/data.bin", dest, sha256=BODY_SHA.upper(), **fast())
    assert out == dest
    assert dest.read_bytes() == BODY
    assert leftovers(dest.parent) == ["data.bin"]
    assert http_server.hits["/data.bin"] == 1


def test_download_with_progress_bar_and_no_content_length(http_server, tmp_path, capsys):
    def close_delimited(h, n):  # HTTP/1.0 body ended by closing the connection
        h.send_response(200)
        h.end_headers()
        h.wfile.write(BODY)

    http_server.routes["/nolen"] = close_delimited
    dest = tmp_path / "nolen.bin"
    download(http_server.base_url + "/nolen", dest, sha256=BODY_SHA, progress=True, backoff_s=0.01)
    assert dest.read_bytes() == BODY


def test_checksum_mismatch_removes_file_and_names_url(http_server, tmp_path):
    http_server.routes["/data.bin"] = lambda h, n: send(h, BODY)
    dest = tmp_path / "data.bin"
    wrong = "0" * 64
    url = http_server.base_url + "/data.bin"
    with pytest.raises(StageError) as ei:
        download(url, dest, sha256=wrong, **fast())
    msg = assert_one_line(ei.value)
    assert url in msg and wrong in msg and BODY_SHA in msg
    assert leftovers(tmp_path) == []
    assert http_server.hits["/data.bin"] == 1  # a mismatch is not retried


def test_invalid_expected_checksum_is_rejected_before_downloading(http_server, tmp_path):
    http_server.routes["/data.bin"] = lambda h, n: send(h, BODY)
    with pytest.raises(StageError) as ei:
        download(http_server.base_url + "/data.bin", tmp_path / "d", sha256="abc", **fast())
    assert "abc" in assert_one_line(ei.value)
    assert "/data.bin" not in http_server.hits


def test_500_twice_then_200_retries_and_succeeds(http_server, tmp_path):
    http_server.routes["/flaky"] = lambda h, n: send(h, b"oops", status=500) if n <= 2 else send(h, BODY)
    dest = tmp_path / "flaky.bin"
    download(http_server.base_url + "/flaky", dest, sha256=BODY_SHA, retries=4, **fast())
    assert dest.read_bytes() == BODY
    assert http_server.hits["/flaky"] == 3
    assert leftovers(tmp_path) == ["flaky.bin"]


def test_429_is_retried_honouring_retry_after(http_server, tmp_path):
    http_server.routes["/busy"] = lambda h, n: (send(h, b"slow down", status=429, headers={"Retry-After": "0"})
                                                if n == 1 else send(h, BODY))
    dest = tmp_path / "busy.bin"
    download(http_server.base_url + "/busy", dest, **fast())
    assert dest.read_bytes() == BODY and http_server.hits["/busy"] == 2


def test_always_500_fails_after_n_attempts_leaving_nothing(http_server, tmp_path):
    http_server.routes["/down"] = lambda h, n: send(h, b"broken", status=500)
    dest = tmp_path / "down.bin"
    url = http_server.base_url + "/down"
    t0 = time.monotonic()
    with pytest.raises(StageError) as ei:
        download(url, dest, retries=2, **fast())
    msg = assert_one_line(ei.value)
    assert msg.startswith(f"download failed: {url}: HTTP 500")
    assert "after 3 attempts" in msg and "check the URL or your network" in msg
    assert http_server.hits["/down"] == 3
    assert leftovers(tmp_path) == []
    assert time.monotonic() - t0 < 5


def test_backoff_is_exponential(http_server, tmp_path, monkeypatch):
    import attention_cnn.data.download as mod

    sleeps: list[float] = []
    monkeypatch.setattr(mod.time, "sleep", lambda s: sleeps.append(s))
    http_server.routes["/down"] = lambda h, n: send(h, b"broken", status=503)
    with pytest.raises(StageError):
        download(http_server.base_url + "/down", tmp_path / "x", retries=3, backoff_s=0.5, progress=False)
    assert sleeps == [0.5, 1.0, 2.0]


def test_404_is_not_retried(http_server, tmp_path):
    http_server.routes["/missing"] = lambda h, n: send(h, b"not here", status=404)
    url = http_server.base_url + "/missing"
    with pytest.raises(StageError) as ei:
        download(url, tmp_path / "m.bin", retries=4, **fast())
    msg = assert_one_line(ei.value)
    assert url in msg and "404" in msg
    assert http_server.hits["/missing"] == 1
    assert leftovers(tmp_path) == []


def test_truncated_body_is_an_error_after_retries(http_server, tmp_path):
    http_server.routes["/short"] = lambda h, n: send(h, BODY[:1000], length=len(BODY))
    url = http_server.base_url + "/short"
    with pytest.raises(StageError) as ei:
        download(url, tmp_path / "short.bin", retries=1, **fast())
    msg = assert_one_line(ei.value)
    assert url in msg and "after 2 attempts" in msg
    assert http_server.hits["/short"] == 2
    assert leftovers(tmp_path) == []


def test_truncated_body_then_full_body_succeeds(http_server, tmp_path):
    http_server.routes["/short"] = lambda h, n: send(h, BODY[:1000], length=len(BODY)) if n == 1 else send(h, BODY)
    dest = tmp_path / "short.bin"
    download(http_server.base_url + "/short", dest, sha256=BODY_SHA, **fast())
    assert dest.read_bytes() == BODY and http_server.hits["/short"] == 2


def test_read_timeout_before_headers(http_server, tmp_path):
    def stall(h, n):
        h.server.release.wait(10)

    http_server.routes["/slow"] = stall
    url = http_server.base_url + "/slow"
    t0 = time.monotonic()
    with pytest.raises(StageError) as ei:
        download(url, tmp_path / "slow.bin", timeout_s=0.5, retries=1, backoff_s=0.01, progress=False)
    elapsed = time.monotonic() - t0
    msg = assert_one_line(ei.value)
    assert url in msg and "timed out" in msg and "after 2 attempts" in msg
    assert http_server.hits["/slow"] == 2
    assert elapsed < 5
    assert leftovers(tmp_path) == []


def test_read_timeout_mid_body(http_server, tmp_path):
    def stall_mid_body(h, n):
        h.send_response(200)
        h.send_header("Content-Length", str(len(BODY)))
        h.end_headers()
        h.wfile.write(BODY[:5000])
        h.wfile.flush()
        h.server.release.wait(10)

    http_server.routes["/stall"] = stall_mid_body
    with pytest.raises(StageError) as ei:
        download(http_server.base_url + "/stall", tmp_path / "stall.bin", timeout_s=0.5, retries=0,
                 backoff_s=0.01, progress=False)
    msg = assert_one_line(ei.value)
    assert "timed out" in msg and "after 1 attempt;" in msg
    assert leftovers(tmp_path) == []


def test_connection_refused_is_retried_then_reported(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/x"
    with pytest.raises(StageError) as ei:
        download(url, tmp_path / "x", retries=1, **fast())
    msg = assert_one_line(ei.value)
    assert url in msg and "connection error" in msg and "after 2 attempts" in msg


def test_leftover_part_file_is_discarded(http_server, tmp_path):
    http_server.routes["/data.bin"] = lambda h, n: send(h, BODY)
    dest = tmp_path / "data.bin"
    (tmp_path / "data.bin.part").write_bytes(b"stale junk from an interrupted run" * 100)
    download(http_server.base_url + "/data.bin", dest, sha256=BODY_SHA, **fast())
    assert dest.read_bytes() == BODY
    assert leftovers(tmp_path) == ["data.bin"]


def test_failed_download_keeps_previous_dest(http_server, tmp_path):
    http_server.routes["/down"] = lambda h, n: send(h, b"", status=503)
    dest = tmp_path / "keep.bin"
    dest.write_bytes(b"previous good copy")
    with pytest.raises(StageError):
        download(http_server.base_url + "/down", dest, retries=0, **fast())
    assert dest.read_bytes() == b"previous good copy"
    assert leftovers(tmp_path) == ["keep.bin"]


def test_custom_session_is_used(http_server, tmp_path):
    http_server.routes["/data.bin"] = lambda h, n: send(h, BODY)
    with requests.Session() as sess:
        sess.headers["User-Agent"] = "dvc-mnist-tests/1"
        download(http_server.base_url + "/data.bin", tmp_path / "d", session=sess, **fast())
    assert http_server.headers_seen[-1]["User-Agent"] == "dvc-mnist-tests/1"


# --------------------------------------------------------------------------- download: local


def test_local_path_and_file_url_are_copied_and_verified(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(BODY)
    out_dir = tmp_path / "out"
    a = download(str(src), out_dir / "a.bin", sha256=BODY_SHA, progress=False)
    b = download(src.as_uri(), out_dir / "b.bin", sha256=BODY_SHA, progress=False)
    assert a.read_bytes() == BODY and b.read_bytes() == BODY
    assert leftovers(out_dir) == ["a.bin", "b.bin"]


def test_local_copy_checksum_mismatch(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(BODY)
    with pytest.raises(StageError) as ei:
        download(str(src), tmp_path / "out" / "a.bin", sha256="1" * 64, progress=False)
    msg = assert_one_line(ei.value)
    assert str(src) in msg and "1" * 64 in msg and BODY_SHA in msg
    assert leftovers(tmp_path / "out") == []


def test_missing_local_file(tmp_path):
    with pytest.raises(StageError) as ei:
        download(str(tmp_path / "nope.tar.gz"), tmp_path / "out.tar.gz", progress=False)
    assert "nope.tar.gz" in assert_one_line(ei.value)
    assert leftovers(tmp_path) == []


def test_unsupported_scheme(tmp_path):
    with pytest.raises(StageError) as ei:
        download("ftp://example.invalid/x.tar.gz", tmp_path / "x", progress=False)
    assert "ftp://example.invalid/x.tar.gz" in assert_one_line(ei.value)


# --------------------------------------------------------------------------- safe_extract_tar


def make_tar(path: Path, members: list[tuple], mode: str = "w:gz") -> Path:
    """members: (name, kind, payload) with kind in file/dir/symlink/hardlink/fifo/chr."""
    with tarfile.open(path, mode) as tf:
        for name, kind, payload in members:
            info = tarfile.TarInfo(name)
            info.mtime = 1_600_000_000
            if kind == "file":
                data = payload if isinstance(payload, bytes) else str(payload).encode()
                info.size = len(data)
                info.mode = 0o644
                tf.addfile(info, io.BytesIO(data))
                continue
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, payload
            elif kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, payload
            elif kind == "fifo":
                info.type = tarfile.FIFOTYPE
            elif kind == "chr":
                info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
            else:  # pragma: no cover
                raise ValueError(kind)
            tf.addfile(info)
    return path


def test_extracts_regular_tree(tmp_path):
    arc = make_tar(tmp_path / "ok.tar.gz", [
        ("top/", "dir", None),
        ("top/README", "file", "hello"),
        ("top/recordings/0_a_0.wav", "file", b"RIFF...."),
        ("top/recordings/link.wav", "symlink", "0_a_0.wav"),
        ("top/copy.wav", "hardlink", "top/recordings/0_a_0.wav"),
        ("./top/nested/deep/x.txt", "file", "x"),
    ])
    dest = tmp_path / "out"
    files = safe_extract_tar(arc, dest)
    assert files == ["top/README", "top/copy.wav", "top/nested/deep/x.txt", "top/recordings/0_a_0.wav"]
    assert (dest / "top/README").read_text() == "hello"
    assert (dest / "top/copy.wav").read_bytes() == b"RIFF...."
    assert os.readlink(dest / "top/recordings/link.wav") == "0_a_0.wav"
    assert leftovers(tmp_path) == ["ok.tar.gz", "out"]


def test_plain_tar_and_replacing_existing_dest(tmp_path):
    arc = make_tar(tmp_path / "plain.tar", [("a.txt", "file", "A")], mode="w")
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "old.txt").write_text("old")
    assert safe_extract_tar(arc, dest) == ["a.txt"]
    assert leftovers(dest) == ["a.txt"]


MALICIOUS = {
    "absolute": ([("ok.txt", "file", "fine"), ("/tmp/evil.txt", "file", "pwned")], "/tmp/evil.txt"),
    "dotdot": ([("ok.txt", "file", "fine"), ("../x", "file", "pwned")], "../x"),
    "dotdot_nested": ([("a/b/../../../x", "file", "pwned")], "a/b/../../../x"),
    "symlink_abs": ([("passwd", "symlink", "/etc/passwd")], "passwd"),
    "symlink_up": ([("d/up", "symlink", "../../outside")], "d/up"),
    "symlink_chain": ([("a", "symlink", "."), ("x", "symlink", "a/a/../..")], "'x'"),
    "write_through_symlink": ([("d", "dir", None), ("a", "symlink", "d"), ("a/f.txt", "file", "x")], "a/f.txt"),
    "hardlink_abs": ([("h", "hardlink", "/etc/passwd")], "'h'"),
    "hardlink_up": ([("h", "hardlink", "../outside.txt")], "'h'"),
    "hardlink_unknown": ([("h", "hardlink", "not/in/archive")], "'h'"),
    "fifo": ([("ok.txt", "file", "fine"), ("pipe", "fifo", None)], "pipe"),
    "chardev": ([("null", "chr", None)], "null"),
    "duplicate_as_symlink": ([("g", "file", "x"), ("f", "file", "x"), ("f", "symlink", "g")], "appears twice"),
}


@pytest.mark.parametrize("case", sorted(MALICIOUS))
def test_malicious_members_are_refused_and_nothing_is_written(tmp_path, case):
    members, named = MALICIOUS[case]
    arc = make_tar(tmp_path / "evil.tar.gz", members)
    dest = tmp_path / "out"
    with pytest.raises(StageError) as ei:
        safe_extract_tar(arc, dest)
    msg = assert_one_line(ei.value)
    assert str(arc) in msg and named in msg and "refusing" in msg
    assert leftovers(tmp_path) == ["evil.tar.gz"]
    assert not (tmp_path.parent / "x").exists() and not (tmp_path.parent / "outside.txt").exists()


def test_failed_extraction_keeps_existing_dest(tmp_path):
    arc = make_tar(tmp_path / "evil.tar.gz", [("ok.txt", "file", "fine"), ("../x", "file", "pwned")])
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "keep.txt").write_text("keep")
    with pytest.raises(StageError):
        safe_extract_tar(arc, dest)
    assert leftovers(dest) == ["keep.txt"]
    assert leftovers(tmp_path) == ["evil.tar.gz", "out"]


def test_too_many_members(tmp_path):
    arc = make_tar(tmp_path / "many.tar.gz", [(f"f{i}.txt", "file", "x") for i in range(6)])
    with pytest.raises(StageError) as ei:
        safe_extract_tar(arc, tmp_path / "out", max_members=5)
    msg = assert_one_line(ei.value)
    assert str(arc) in msg and "more than 5 members" in msg and "f5.txt" in msg
    assert leftovers(tmp_path) == ["many.tar.gz"]
    assert safe_extract_tar(arc, tmp_path / "out", max_members=6) == [f"f{i}.txt" for i in range(6)]


def test_too_big_total(tmp_path):
    arc = make_tar(tmp_path / "big.tar.gz", [("a.bin", "file", b"\0" * 60), ("b.bin", "file", b"\0" * 60)])
    with pytest.raises(StageError) as ei:
        safe_extract_tar(arc, tmp_path / "out", max_total_bytes=100)
    msg = assert_one_line(ei.value)
    assert str(arc) in msg and "b.bin" in msg and "100 bytes" in msg
    assert leftovers(tmp_path) == ["big.tar.gz"]


def test_hardlinks_count_towards_total_size(tmp_path):
    arc = make_tar(tmp_path / "hl.tar.gz", [("a.bin", "file", b"\0" * 60), ("b.bin", "hardlink", "a.bin")])
    with pytest.raises(StageError):
        safe_extract_tar(arc, tmp_path / "out", max_total_bytes=100)
    assert leftovers(tmp_path) == ["hl.tar.gz"]


def test_not_a_tar_file(tmp_path):
    bogus = tmp_path / "bogus.tar.gz"
    bogus.write_bytes(b"this is not an archive at all\n" * 50)
    with pytest.raises(StageError) as ei:
        safe_extract_tar(bogus, tmp_path / "out")
    assert str(bogus) in assert_one_line(ei.value)
    assert leftovers(tmp_path) == ["bogus.tar.gz"]


def test_truncated_gzip_archive(tmp_path):
    full = make_tar(tmp_path / "full.tar.gz", [(f"f{i}.bin", "file", os.urandom(20_000)) for i in range(5)])
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(StageError) as ei:
        safe_extract_tar(cut, tmp_path / "out")
    assert str(cut) in assert_one_line(ei.value)
    assert leftovers(tmp_path) == ["cut.tar.gz", "full.tar.gz"]


def test_missing_archive(tmp_path):
    with pytest.raises(StageError) as ei:
        safe_extract_tar(tmp_path / "none.tar.gz", tmp_path / "out")
    assert "none.tar.gz" in assert_one_line(ei.value)
