"""DVC experiments as git stores them: ``refs/exps/<baseline sha[:2]>/<baseline sha[2:]>/<name>``, one commit each.

Only finished, successful experiments get such a ref (queued and failed ones live under ``refs/exps/celery``,
running ones under ``refs/exps/exec``), and the experiment's commit holds every git-tracked file of the run,
``params.yaml`` and the uncached report outputs among them. Reading refs directly is what ``dvc exp show``
does, without collecting every metric of every experiment.
"""
from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from attention_cnn.common import StageError

EXP_REF = re.compile(r"refs/exps/([0-9a-f]{2})/([0-9a-f]{38})/([^/]+)")


@dataclass(frozen=True)
class Experiment:
    name: str
    baseline: str      # the commit the experiment ran on (code, params.yaml before -S)
    commit: str        # the experiment's own commit
    date: str          # its committer date, ISO 8601


def git(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    except FileNotFoundError:
        raise StageError("git not found; install git (DVC experiments live in git)") from None
    if check and proc.returncode != 0:
        raise StageError(f"git {' '.join(args)}: {' '.join(proc.stderr.split()) or 'failed'}")
    return proc


def head(root: Path) -> str:
    proc = git(root, "rev-parse", "--verify", "-q", "HEAD", check=False)
    if proc.returncode != 0:
        raise StageError(f"{root}: not a git clone with a commit; DVC experiments need one (git commit first)")
    return proc.stdout.strip()


def experiments(root: Path) -> list[Experiment]:
    """Every finished experiment of the repository, oldest first."""
    out = git(root, "for-each-ref", "--sort=committerdate",
              "--format=%(refname) %(objectname) %(committerdate:iso-strict)", "refs/exps").stdout
    found = []
    for line in out.splitlines():
        ref, sha, date = line.split(" ", 2)
        match = EXP_REF.fullmatch(ref)
        if match:
            found.append(Experiment(name=match[3], baseline=match[1] + match[2], commit=sha, date=date))
    return found


def read_at(root: Path, commit: str, path: str) -> bytes | None:
    """A file's bytes in a commit, or None when the commit has no such file."""
    proc = subprocess.run(["git", "show", f"{commit}:{path}"], cwd=root, capture_output=True)
    return proc.stdout if proc.returncode == 0 else None


def yaml_data(data: bytes | None) -> dict | None:
    """Loaded as DVC loads params (YAML 1.2, safe); None when absent or not a mapping."""
    if data is None:
        return None
    from ruamel.yaml import YAML

    try:
        loaded = YAML(typ="safe").load(data.decode("utf-8"))
    except Exception:  # noqa: BLE001 - any parse failure: not this recipe's run
        return None
    return loaded if isinstance(loaded, dict) else None
