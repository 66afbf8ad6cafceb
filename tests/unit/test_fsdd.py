"""Tests for attention_cnn.data.fsdd: name parsing, split rule, and prepare_fsdd on real and tampered archives."""
from __future__ import annotations

import hashlib
import io
import os
import sys
import tarfile
import threading
import time
import wave
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

from attention_cnn.common import StageError
from attention_cnn.data.download import download
from attention_cnn.data.fsdd import (
    CHECKSUM_FILE,
    FSDD_DEFAULT_URL,
    MANIFEST_KEYS,
    fsdd_split,
    main,
    parse_fsdd_name,
    prepare_fsdd,
    read_checksum_file,
    write_checksum_file,
)

# In CI the shared data lives at ../shared/data relative to the repository root.
REAL_ARCHIVE = ROOT.parent / "shared/data/fsdd/free-spoken-digit-dataset-1.0.10.tar.gz"
CHECKSUMS = ROOT / CHECKSUM_FILE
_skip_without_archive = pytest.mark.skipif(
    not REAL_ARCHIVE.is_file(), reason=f"real FSDD archive not available at {REAL_ARCHIVE}"
)


def needs_real_archive(fn):
    """Mark a test as needing ../shared/data (``-m realdata``) and skip it when that is absent."""
    return pytest.mark.realdata(_skip_without_archive(fn))


# --------------------------------------------------------------------------- loopback file server


class _FileHandler(BaseHTTPRequestHandler):
    """Serves ``server.files[path]`` with a Content-Length, streamed in chunks."""

    def log_message(self, fmt: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        path = self.server.files.get(self.path)  # type: ignore[attr-defined]
        if path is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/gzip")
        self.send_header("Content-Length", str(path.stat().st_size))
        self.end_headers()
        try:
            with open(path, "rb") as fh:
                while chunk := fh.read(1 << 16):
                    self.wfile.write(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass


@pytest.fixture
def file_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FileHandler)
    server.daemon_threads = True
    server.files = {}  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    server.base_url = f"http://127.0.0.1:{server.server_address[1]}"  # type: ignore[attr-defined]
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# --------------------------------------------------------------------------- helpers


def wav_bytes(frames: int, rate: int = 8000, seed: int = 0) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(bytes((seed + i) % 256 for i in range(frames * 2)))
    return buf.getvalue()


def sample_recordings(n: int = 6) -> dict[str, bytes]:
    """A few recordings: real ones from the shared archive when present, else synthetic WAVs."""
    if REAL_ARCHIVE.is_file():
        out: dict[str, bytes] = {}
        with tarfile.open(REAL_ARCHIVE, "r:gz") as tf:
            for m in tf:
                if m.isfile() and "/recordings/" in m.name and m.name.endswith(".wav"):
                    out[m.name.rsplit("/", 1)[1]] = tf.extractfile(m).read()
                    if len(out) == n:
                        break
        return out
    names = ["0_george_0.wav", "0_george_5.wav", "1_theo_3.wav", "1_theo_49.wav", "7_jackson_12.wav", "9_lucas_4.wav"]
    return {name: wav_bytes(4000 + 100 * i, seed=i) for i, name in enumerate(names[:n])}


def pack(path: Path, files: dict[str, bytes], top: str = "fsdd-small") -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for rel, data in sorted(files.items()):
            info = tarfile.TarInfo(f"{top}/{rel}" if top else rel)
            info.size, info.mode, info.mtime = len(data), 0o644, 1_600_000_000
            tf.addfile(info, io.BytesIO(data))
    return path


def pack_recordings(path: Path, recs: dict[str, bytes]) -> Path:
    return pack(path, {f"recordings/{n}": d for n, d in recs.items()})


def checksum_text(files: dict[str, bytes]) -> str:
    return "".join(f"{hashlib.sha256(d).hexdigest()}  recordings/{n}\n" for n, d in sorted(files.items()))


def no_scratch_left(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.startswith(".")]


# --------------------------------------------------------------------------- names and split


@pytest.mark.parametrize("name, expected", [
    ("3_theo_12.wav", (3, "theo", 12)),
    ("0_george_0.wav", (0, "george", 0)),
    ("9_yweweler_49.wav", (9, "yweweler", 49)),
    ("recordings/5_nicolas_7.wav", (5, "nicolas", 7)),
])
def test_parse_fsdd_name_good(name, expected):
    assert parse_fsdd_name(name) == expected


@pytest.mark.parametrize("name", [
    "", "3_theo_12", "3_theo_12.mp3", "12_theo_1.wav", "x_theo_1.wav", "3__1.wav", "3_theo.wav",
    "3_theo_-1.wav", "3_the_o_1.wav", "3_theo_1.wav.bak", "README.md",
])
def test_parse_fsdd_name_bad(name):
    with pytest.raises(StageError) as ei:
        parse_fsdd_name(name)
    msg = str(ei.value)
    assert "\n" not in msg and repr(name) in msg


def test_split_rule():
    assert [fsdd_split(i) for i in range(7)] == ["test"] * 5 + ["train"] * 2
    assert fsdd_split(49) == "train"
    with pytest.raises(StageError):
        fsdd_split(-1)


def test_default_url_is_the_v1_0_10_tag():
    assert FSDD_DEFAULT_URL.endswith("/v1.0.10.tar.gz") and FSDD_DEFAULT_URL.startswith("https://github.com/")


def test_committed_checksum_file_is_well_formed():
    sums = read_checksum_file(CHECKSUMS)
    assert len(sums) == 3000
    names = list(sums)
    assert names == sorted(names) and all(n.startswith("recordings/") for n in names)
    assert len({parse_fsdd_name(n)[1] for n in names}) == 6


# --------------------------------------------------------------------------- the real archive


@needs_real_archive
def test_prepare_real_archive_over_http(file_server, tmp_path):
    file_server.files["/v1.0.10.tar.gz"] = REAL_ARCHIVE
    archive = download(file_server.base_url + "/v1.0.10.tar.gz", tmp_path / "dl" / "fsdd.tar.gz", progress=False)
    assert archive.stat().st_size == REAL_ARCHIVE.stat().st_size

    out = tmp_path / "work" / "fsdd"
    t0 = time.perf_counter()
    rows = prepare_fsdd(archive, out, CHECKSUMS)
    elapsed = time.perf_counter() - t0
    print(f"\nprepare_fsdd on the real archive: {elapsed:.2f}s")

    assert len(rows) == 3000
    assert all(tuple(sorted(r)) == tuple(sorted(MANIFEST_KEYS)) for r in rows)
    assert [r["file"] for r in rows] == sorted(r["file"] for r in rows)
    assert sum(r["split"] == "test" for r in rows) == 300
    assert all((r["split"] == "test") == (parse_fsdd_name(r["file"])[2] <= 4) for r in rows)
    assert len({r["speaker"] for r in rows}) == 6
    assert Counter(r["label"] for r in rows) == {d: 300 for d in range(10)}
    assert {r["sample_rate_hz"] for r in rows} == {8000}
    assert all(isinstance(r["duration_s"], float) and 0 < r["duration_s"] < 10 for r in rows)
    assert all(r["duration_s"] == round(r["duration_s"], 4) for r in rows)

    expected = read_checksum_file(CHECKSUMS)
    assert {r["file"]: r["sha256"] for r in rows} == expected
    on_disk = sorted(p.name for p in (out / "recordings").iterdir())
    assert len(on_disk) == 3000
    for r in rows[::97]:  # spot-check the copied bytes
        assert hashlib.sha256((out / r["file"]).read_bytes()).hexdigest() == r["sha256"]
    assert no_scratch_left(out.parent) and no_scratch_left(out)
    assert elapsed < 30


# --------------------------------------------------------------------------- small archives


def test_tampered_recording_is_named(tmp_path):
    recs = sample_recordings()
    sums = tmp_path / "small.sha256"
    sums.write_text(checksum_text(recs))
    victim = sorted(recs)[2]
    tampered = dict(recs)
    data = bytearray(tampered[victim])
    data[-1] ^= 0xFF
    tampered[victim] = bytes(data)
    archive = pack_recordings(tmp_path / "tampered.tar.gz", tampered)
    out = tmp_path / "work" / "fsdd"

    with pytest.raises(StageError) as ei:
        prepare_fsdd(archive, out, sums)
    msg = str(ei.value)
    assert "\n" not in msg
    assert f"recordings/{victim}" in msg and "1 recording(s)" in msg and str(archive) in msg
    assert not (out / "recordings").exists()
    assert no_scratch_left(out.parent) and no_scratch_left(out)

    # The untampered archive passes with the same checksum file.
    rows = prepare_fsdd(pack_recordings(tmp_path / "good.tar.gz", recs), out, sums)
    assert [r["file"] for r in rows] == [f"recordings/{n}" for n in sorted(recs)]


def test_missing_and_extra_recordings_are_counted(tmp_path):
    recs = sample_recordings()
    names = sorted(recs)
    listed = {n: recs[n] for n in names[1:]}          # first recording is not listed: extra
    listed["9_zz_9.wav"] = b"never shipped"           # listed but absent: missing
    sums = tmp_path / "s.sha256"
    sums.write_text(checksum_text(listed))
    with pytest.raises(StageError) as ei:
        prepare_fsdd(pack_recordings(tmp_path / "a.tar.gz", recs), tmp_path / "out", sums)
    msg = str(ei.value)
    assert "2 recording(s)" in msg and f"recordings/{names[0]}" in msg and "not listed" in msg
    assert no_scratch_left(tmp_path)


def test_prepare_without_checksums_other_top_folder_and_durations(tmp_path):
    recs = {"3_theo_12.wav": wav_bytes(4000), "3_theo_2.wav": wav_bytes(12345, rate=16000)}
    files = {f"recordings/{n}": d for n, d in recs.items()}
    files["README.md"] = b"readme"
    files["recordings/notes.txt"] = b"ignored"
    archive = pack(tmp_path / "x.tgz", files, top="some-other-name-main")
    out = tmp_path / "out"
    (out / "recordings").mkdir(parents=True)
    (out / "recordings" / "stale.wav").write_bytes(b"old")

    rows = prepare_fsdd(archive, out, None)
    assert rows == [
        {"file": "recordings/3_theo_12.wav", "label": 3, "split": "train", "speaker": "theo",
         "duration_s": 0.5, "sample_rate_hz": 8000, "sha256": hashlib.sha256(recs["3_theo_12.wav"]).hexdigest()},
        {"file": "recordings/3_theo_2.wav", "label": 3, "split": "test", "speaker": "theo",
         "duration_s": 0.7716, "sample_rate_hz": 16000, "sha256": hashlib.sha256(recs["3_theo_2.wav"]).hexdigest()},
    ]
    assert sorted(os.listdir(out / "recordings")) == ["3_theo_12.wav", "3_theo_2.wav"]
    assert no_scratch_left(tmp_path) and no_scratch_left(out)


def test_archive_without_recordings_folder(tmp_path):
    archive = pack(tmp_path / "x.tar.gz", {"data/0_george_0.wav": wav_bytes(10)})
    with pytest.raises(StageError) as ei:
        prepare_fsdd(archive, tmp_path / "out", None)
    assert "recordings/" in str(ei.value) and str(archive) in str(ei.value)
    assert no_scratch_left(tmp_path)


def test_badly_named_recording(tmp_path):
    archive = pack(tmp_path / "x.tar.gz", {"recordings/0_george_0.wav": wav_bytes(10), "recordings/oops.wav": b"x"})
    with pytest.raises(StageError) as ei:
        prepare_fsdd(archive, tmp_path / "out", None)
    assert "recordings/oops.wav" in str(ei.value)
    assert no_scratch_left(tmp_path)


def test_corrupt_wav_header(tmp_path):
    archive = pack(tmp_path / "x.tar.gz", {"recordings/0_george_0.wav": b"not a wav file at all"})
    with pytest.raises(StageError) as ei:
        prepare_fsdd(archive, tmp_path / "out", None)
    assert "recordings/0_george_0.wav" in str(ei.value) and "\n" not in str(ei.value)
    assert no_scratch_left(tmp_path)


def test_write_checksum_file_round_trip_and_cli(tmp_path, capsys):
    recs = sample_recordings(4)
    archive = pack_recordings(tmp_path / "s.tar.gz", recs)
    out = tmp_path / "sums" / "s.sha256"
    assert write_checksum_file(archive, out) == 4
    assert out.read_text() == checksum_text(recs)
    out2 = tmp_path / "cli.sha256"
    assert main(["--write-checksums", str(archive), str(out2)]) == 0
    assert out2.read_text() == out.read_text()
    assert "wrote 4 checksums" in capsys.readouterr().out
    rows = prepare_fsdd(archive, tmp_path / "o", out)
    assert len(rows) == 4


def test_bad_checksum_file_line(tmp_path):
    recs = sample_recordings(2)
    bad = tmp_path / "bad.sha256"
    bad.write_text("not a checksum line\n")
    with pytest.raises(StageError) as ei:
        prepare_fsdd(pack_recordings(tmp_path / "a.tar.gz", recs), tmp_path / "out", bad)
    assert f"{bad}:1" in str(ei.value)
    assert no_scratch_left(tmp_path)
