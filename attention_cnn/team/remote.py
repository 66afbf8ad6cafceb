"""Verified transfers: push to a DVC remote, then prove every object the project references is there, intact.

    python -m attention_cnn.team.remote push   [-r REMOTE]   # dvc push, then verify (and repair)
    python -m attention_cnn.team.remote verify [-r REMOTE]   # verify (and repair) only

``dvc push`` trusts its own record of what a remote holds: once a directory's ``.dir`` manifest is in the remote
(or in DVC's remote index, ``<site cache>/index/<sha256 of the remote URL>``), DVC assumes every file of that
directory is there too and pushes nothing, and ``dvc status -c`` says "in sync", even if files are missing or
damaged. This command reads the remote itself: every object referenced by the outputs in dvc.lock and the
``.dvc`` files, directories as their ``.dir`` manifest plus every file it lists, each hashed (md5 of the bytes
in the remote, which is the object's name). What is missing or wrong is repaired from the local cache (wrong
objects and incomplete directories' manifests are deleted from the remote, DVC's remote index is cleared, and
``dvc push`` runs again), then checked once more; what cannot be repaired (not in the local cache either) is
one line each, and the exit status is 1. In a local-folder remote, ``.tmp`` files that an interrupted push left
behind are deleted once older than ``--tmp-age-s``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from attention_cnn.common import StageError, run_main

TMP_AGE_S = 3600  # a younger .tmp file may belong to a push that is still running


@dataclass
class Problem:
    what: str        # "missing" | "corrupt"
    oid: str         # md5, with ".dir" for a directory manifest
    name: str        # the workspace path it belongs to
    dir_oid: str | None = None   # the directory whose manifest lists it


@dataclass
class Report:
    checked: int = 0
    problems: list[Problem] = field(default_factory=list)


def md5_of(fs, path: str) -> str | None:
    """md5 of a file in ``fs``, or None when it is not there."""
    digest = hashlib.md5()
    try:
        with fs.open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    except FileNotFoundError:
        return None
    return digest.hexdigest()


def referenced(repo, legacy: bool = False) -> list[tuple[str, str]]:
    """``(workspace path, oid)`` of every cached output in dvc.lock and the .dvc files (what dvc push sends).

    ``legacy``: instead, the outputs still hashed by DVC 2 (``md5-dos2unix``, another folder of the remote),
    which this command does not verify.
    """
    seen = {}
    for out in repo.index.outs:
        if out.use_cache and out.hash_info and out.hash_info.value and (out.hash_info.name != "md5") == legacy:
            seen.setdefault(out.hash_info.value, str(out))
    return sorted((name, oid) for oid, name in seen.items())


def read_manifest(fs, path: str) -> list[dict] | None:
    try:
        with fs.open(path, "rb") as fh:
            entries = json.loads(fh.read())
    except (FileNotFoundError, ValueError, UnicodeDecodeError):
        return None
    return entries if isinstance(entries, list) else None


def verify(repo, odb) -> Report:
    """Hash every referenced object in the remote ``odb``."""
    local = repo.cache.local
    report = Report()
    for name, oid in referenced(repo):
        if not oid.endswith(".dir"):
            report.checked += 1
            got = md5_of(odb.fs, odb.oid_to_path(oid))
            if got != oid:
                report.problems.append(Problem("missing" if got is None else "corrupt", oid, name))
            continue
        report.checked += 1
        got = md5_of(odb.fs, odb.oid_to_path(oid))
        if got != oid.removesuffix(".dir"):
            report.problems.append(Problem("missing" if got is None else "corrupt", oid, name, oid))
        # The file list: the remote's manifest when intact, else the local cache's copy.
        entries = read_manifest(odb.fs, odb.oid_to_path(oid)) if got == oid.removesuffix(".dir") else None
        if entries is None:
            entries = read_manifest(local.fs, local.oid_to_path(oid))
        if entries is None:
            report.problems.append(Problem("unlisted", oid, name, oid))
            continue
        for entry in entries:
            report.checked += 1
            file_oid = entry.get("md5", "")
            got = md5_of(odb.fs, odb.oid_to_path(file_oid))
            if got != file_oid:
                report.problems.append(Problem("missing" if got is None else "corrupt", file_oid,
                                               f"{name}/{entry.get('relpath', '?')}", oid))
    return report


def in_local_cache(repo, oid: str) -> bool:
    local = repo.cache.local
    return md5_of(local.fs, local.oid_to_path(oid)) == oid.removesuffix(".dir")


def clear_remote_index(repo, odb) -> None:
    """Forget what DVC believes the remote holds, so the next push checks the remote itself."""
    from dvc_data.hashfile.db import get_index

    index = get_index(odb)  # <site cache>/index/<sha256 of the remote URL>
    try:
        index.clear()
    finally:
        index.close()
    repo.drop_data_index()  # the cached listing under <site cache>/index/data as well


def clean_tmp(odb, max_age_s: float) -> tuple[int, int, int]:
    """Delete ``*.tmp`` leftovers older than ``max_age_s`` from a local-folder remote: (deleted, bytes, kept)."""
    if odb.fs.protocol != "local":
        return 0, 0, 0
    deleted = size = kept = 0
    now = time.time()
    for path in Path(odb.path).rglob("*.tmp"):
        try:
            st = path.stat()
            if now - st.st_mtime < max_age_s:
                kept += 1
                continue
            path.unlink()
        except FileNotFoundError:
            continue
        deleted, size = deleted + 1, size + st.st_size
    return deleted, size, kept


def dvc(args: list[str], root: Path) -> int:
    print("$ dvc " + " ".join(args), flush=True)
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root).returncode


def repair(repo, odb, report: Report, remote_name: str, root: Path) -> None:
    """Delete wrong objects and incomplete directories' manifests from the remote, clear DVC's index, push."""
    bad_dirs = {p.dir_oid for p in report.problems if p.dir_oid}
    for p in report.problems:
        if p.what == "corrupt":
            odb.fs.rm(odb.oid_to_path(p.oid))
    for dir_oid in bad_dirs:  # a .dir in the remote makes DVC assume all its files are there
        path = odb.oid_to_path(dir_oid)
        if odb.fs.exists(path):
            odb.fs.rm(path)
    clear_remote_index(repo, odb)
    dvc(["push", "-r", remote_name], root)


def describe(p: Problem, repairable: bool) -> str:
    fix = "" if repairable else "; not in the local cache either: whoever has it must run `make push`"
    what = {"missing": "missing from the remote", "corrupt": "wrong content in the remote (md5 differs)",
            "unlisted": "directory manifest unreadable in the remote and the local cache"}[p.what]
    return f"{p.name}: {what} (object {p.oid}){fix}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m attention_cnn.team.remote", description=__doc__.splitlines()[0])
    ap.add_argument("command", choices=("push", "verify"))
    ap.add_argument("-r", "--remote", default=None, help="remote name (default: the project's default remote)")
    ap.add_argument("--no-repair", action="store_true", help="only report what is missing or wrong")
    ap.add_argument("--run-cache", action="store_true", help="push: also push DVC's run cache (not verified)")
    ap.add_argument("--tmp-age-s", type=float, default=TMP_AGE_S,
                    help="delete .tmp leftovers in a local remote older than this (a younger one may be a push at work)")
    args = ap.parse_args(argv)

    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        repo = Repo(".")
        remote = repo.cloud.get_remote(args.remote)
        odb = repo.cloud.get_remote_odb(remote.name)
    except DvcException as exc:
        raise StageError(f"dvc remote: {' '.join(str(exc).split())}") from None
    root = Path(repo.root_dir)
    if args.command == "push" and dvc(["push", "-r", remote.name] + ["--run-cache"] * args.run_cache, root) != 0:
        print("dvc push failed; verifying what the remote holds", flush=True)

    report = verify(repo, odb)
    if report.problems and not args.no_repair:
        fixable = [p for p in report.problems if in_local_cache(repo, p.oid)]
        print(f"remote '{remote.name}': {len(report.problems)} object(s) missing or wrong "
              f"({len(fixable)} in the local cache); repairing", flush=True)
        if fixable:
            repair(repo, odb, report, remote.name, root)
            repo = Repo(".")  # fresh index and caches after the push
            odb = repo.cloud.get_remote_odb(remote.name)
            report = verify(repo, odb)
    deleted, size, kept = clean_tmp(odb, args.tmp_age_s)
    if deleted:
        print(f"remote '{remote.name}': deleted {deleted} leftover .tmp file(s), {size / 1e6:.1f} MB")
    if kept:
        print(f"remote '{remote.name}': kept {kept} .tmp file(s) younger than {args.tmp_age_s:g} s (a push at work?)")
    legacy = referenced(repo, legacy=True)
    if legacy:
        print(f"not verified: {len(legacy)} output(s) hashed by DVC 2 (md5-dos2unix), e.g. {legacy[0][0]}; "
              f"rehash them with dvc commit -f")
    for p in report.problems:
        print(describe(p, in_local_cache(repo, p.oid)))
    if report.problems:
        print(f"remote '{remote.name}': NOT complete: {len(report.problems)} of {report.checked} object(s) missing "
              f"or wrong", file=sys.stderr)
        return 1
    print(f"remote '{remote.name}': verified {report.checked} object(s), every one present with the right md5")
    return 0


if __name__ == "__main__":
    run_main(main)
