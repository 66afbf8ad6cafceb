"""``dvc exp run`` in the workspace, refused before anything is touched when another run is at work there.

    python -m attention_cnn.team.exp run -S train.epochs=5     # same arguments as dvc exp run

A plain second ``dvc exp run`` writes its ``-S`` values into ``params.yaml`` first and only then finds the
workspace busy (DVC's order, before any project code runs). This entry point checks first: it holds an
exclusive lock (``.dvc/tmp/exp-run.lock``) for as long as its ``dvc exp run`` runs, and also refuses while
DVC's own lock table (``.dvc/tmp/rwlock``) names a live process (a ``dvc repro`` or a plain ``dvc exp run``).
Queued runs (``--queue``) and ``dvc queue`` commands work in their own copies and pass straight through.
"""
from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

from attention_cnn.common import StageError, run_main

QUEUE = "queue it instead: dvc exp run --queue {args}; dvc queue start"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def dvc_busy(root: Path) -> tuple[int, str] | None:
    """``(pid, command)`` of a live process in DVC's lock table, or None."""
    try:
        table = json.loads((root / ".dvc" / "tmp" / "rwlock").read_text() or "{}")
    except (OSError, ValueError):
        return None
    holders = list((table.get("write") or {}).values())
    for readers in (table.get("read") or {}).values():
        holders.extend(readers if isinstance(readers, list) else [readers])
    for info in holders:
        if isinstance(info, dict) and _alive(int(info.get("pid", 0) or 0)):
            return int(info["pid"]), str(info.get("cmd", "dvc"))
    return None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] != "run":
        raise StageError("usage: python -m attention_cnn.team.exp run [dvc exp run arguments]")
    args = argv[1:]
    shown = " ".join(args)
    if "--queue" in args:
        return subprocess.run([sys.executable, "-m", "dvc", "exp", "run", *args]).returncode
    root = Path.cwd()
    if not (root / ".dvc").is_dir():
        raise StageError(f"{root}: not a DVC project root (no .dvc/); run from the project root")
    (root / ".dvc" / "tmp").mkdir(exist_ok=True)
    with open(root / ".dvc" / "tmp" / "exp-run.lock", "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            raise StageError(f"another experiment is running in this workspace ({lock.read().strip() or 'busy'}); "
                             f"params.yaml untouched; {QUEUE.format(args=shown)}") from None
        busy = dvc_busy(root)
        if busy:
            raise StageError(f"DVC is at work in this workspace (PID {busy[0]}: {busy[1]}); params.yaml untouched; "
                             f"{QUEUE.format(args=shown)}")
        lock.seek(0)
        lock.truncate()
        lock.write(f"PID {os.getpid()}: dvc exp run {shown}\n")
        lock.flush()
        return subprocess.run([sys.executable, "-m", "dvc", "exp", "run", *args]).returncode


if __name__ == "__main__":
    run_main(main)
