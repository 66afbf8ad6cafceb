"""Verified transfers (issue 18, item 4): `python -m attention_cnn.team.remote push|verify` against a real
local-folder DVC remote, after a real `dvc push` killed with SIGKILL, a remote that lost files while its `.dir`
manifest stayed (DVC then calls it complete), and a corrupted object; a teammate's fresh clone then pulls.

The project here is a small DVC pipeline of its own (one stage writing a folder of 283 files, one large file
added with `dvc add`), so these tests do not depend on the ML stages.
"""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT, run
from test_faults import start_group, wait_for

pytestmark = pytest.mark.slow

NFILES = 283
ENV = {"PYTHONPATH": str(ROOT)}
GEN = f'''import os, sys
os.makedirs(sys.argv[1], exist_ok=True)
for i in range({NFILES}):
    with open(os.path.join(sys.argv[1], f"clip{{i:03d}}.bin"), "wb") as fh:
        fh.write(i.to_bytes(4, "big") * 20000)
'''


def remote_cmd(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run(["python", "-m", "attention_cnn.team.remote", *args], root, check=check, env=ENV)


def objects(remote: Path) -> list[Path]:
    return [p for p in (remote / "files" / "md5").rglob("*") if p.is_file() and not p.name.endswith(".tmp")]


def big_tmp(remote: Path) -> bool:
    for path in remote.rglob("*.tmp"):
        try:
            if path.stat().st_size > 1 << 20:
                return True
        except FileNotFoundError:  # renamed into place meanwhile
            pass
    return False


@pytest.fixture
def project(tmp_path):
    """A git + DVC project: dvc.lock references a 283-file folder, big.bin.dvc a 300 MB file; remote `shared`."""
    root = tmp_path / "a"
    root.mkdir()
    run(["git", "init", "-q"], root)
    run(["dvc", "init", "-q"], root)
    (root / "gen.py").write_text(GEN)
    (root / "dvc.yaml").write_text("stages:\n  gen:\n    cmd: python gen.py data/clips\n    deps: [gen.py]\n"
                                   "    outs: [data/clips]\n")
    run(["dvc", "repro"], root)
    with open(root / "big.bin", "wb") as fh:  # one large file: a kill lands inside its copy
        block = os.urandom(1 << 20)
        for i in range(300):
            fh.write(hashlib.sha256(str(i).encode()).digest() + block[32:])
    run(["dvc", "add", "big.bin"], root)
    remote = tmp_path / "remote"
    run(["dvc", "remote", "add", "-d", "shared", str(remote)], root)
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "data"], root)
    return root, remote


def teammate_pulls(tmp_path: Path, origin: Path) -> None:
    clone = tmp_path / "b"
    run(["git", "clone", "-q", str(origin), str(clone)], tmp_path)
    run(["dvc", "pull"], clone)
    for rel in ["big.bin"] + [f"data/clips/clip{i:03d}.bin" for i in range(NFILES)]:
        assert (clone / rel).read_bytes() == (origin / rel).read_bytes(), rel


def test_push_killed_with_sigkill_is_found_repaired_and_cleaned(project, tmp_path):
    root, remote = project
    log = tmp_path / "push.txt"
    proc = start_group(["dvc", "push"], root, log)
    # The kill lands while big.bin is being copied (its temporary file has grown past 1 MB).
    wait_for(lambda: big_tmp(remote) or proc.poll() is not None, 300, "big.bin's copy in progress")
    assert proc.poll() is None, log.read_text()
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert len(objects(remote)) < NFILES + 2 and any(remote.rglob("*.tmp"))

    check = remote_cmd(root, "verify", "--no-repair", check=False)
    assert check.returncode == 1
    missing = [ln for ln in check.stdout.splitlines() if "missing from the remote" in ln]
    assert missing and len(missing) == NFILES + 2 - len(objects(remote)), check.stdout[-2000:]
    assert "NOT complete" in check.stderr

    fixed = remote_cmd(root, "push", "--tmp-age-s", "0")
    assert "verified 285 object(s), every one present with the right md5" in fixed.stdout, fixed.stdout
    assert "leftover .tmp file(s)" in fixed.stdout
    assert not any(remote.rglob("*.tmp")) and len(objects(remote)) == NFILES + 2
    teammate_pulls(tmp_path, root)


def test_remote_that_lost_files_behind_its_manifest_is_repaired(project, tmp_path):
    """DVC's own check passes (push: up to date; status -c: in sync) though files are gone; ours does not."""
    root, remote = project
    run(["dvc", "push"], root)
    lost = sorted(p for p in objects(remote) if not p.name.endswith(".dir") and p.stat().st_size < 1_000_000)[:211]
    for path in lost:
        path.chmod(0o644)
        path.unlink()
    assert "Everything is up to date" in run(["dvc", "push"], root).stdout        # DVC, before our command
    assert "in sync" in run(["dvc", "status", "-c"], root).stdout

    out = remote_cmd(root, "push").stdout
    assert "211 object(s) missing or wrong (211 in the local cache); repairing" in out, out
    assert "verified 285 object(s)" in out and len(objects(remote)) == NFILES + 2
    teammate_pulls(tmp_path, root)


def test_corrupted_object_in_the_remote_is_found_and_replaced(project, tmp_path):
    root, remote = project
    run(["dvc", "push"], root)
    oid = hashlib.md5((root / "data/clips/clip007.bin").read_bytes()).hexdigest()
    victim = remote / "files" / "md5" / oid[:2] / oid[2:]
    victim.chmod(0o644)
    with open(victim, "r+b") as fh:
        fh.seek(12345)
        fh.write(b"\0" * 16)
    assert "Everything is up to date" in run(["dvc", "push"], root).stdout  # DVC does not look at content
    assert "in sync" in run(["dvc", "status", "-c"], root).stdout

    check = remote_cmd(root, "verify", "--no-repair", check=False)
    assert check.returncode == 1
    lines = [ln for ln in check.stdout.splitlines() if "wrong content" in ln]
    assert lines == [f"data/clips/clip007.bin: wrong content in the remote (md5 differs) (object {oid})"], check.stdout

    out = remote_cmd(root, "verify").stdout
    assert "verified 285 object(s)" in out, out
    assert hashlib.md5(victim.read_bytes()).hexdigest() == oid
    teammate_pulls(tmp_path, root)


def test_object_missing_everywhere_is_one_line_and_exit_1(project, tmp_path):
    root, remote = project
    run(["dvc", "push"], root)
    oid = (root / "big.bin.dvc").read_text().split("md5: ")[1].split()[0]
    for folder in (remote, root / ".dvc" / "cache"):
        path = folder / "files" / "md5" / oid[:2] / oid[2:]
        path.chmod(0o644)
        path.unlink()
    proc = remote_cmd(root, "verify", check=False)
    assert proc.returncode == 1
    assert (f"big.bin: missing from the remote (object {oid}); not in the local cache either: whoever has it "
            "must run `make push`") in proc.stdout, proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr
