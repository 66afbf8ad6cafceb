"""Keep each finished recipe run's small result files in git, under ``results/<recipe>/``.

A run of recipe ``r`` is the newest of: a DVC experiment named ``r`` (or ``r.<suffix>``) whose ``params.yaml``
is the recipe on top of its baseline's ``params.yaml``, and the workspace when its ``params.yaml`` is the recipe
on top of the committed one and its results are committed or up to date (``dvc status``). Any other data set
location (``data.speech.url``) counts as the same recipe. Copied: ``results.csv``, ``comparisons.csv`` (and
``ensembles.csv`` where the run wrote it) and
``params.yaml`` as the run wrote them, and ``run.json``: where the results came from (experiment, commits, date)
and per training run its precision and machine (``summary.json``'s ``mixed_precision`` and ``machine``).
A recipe with folds keeps each fold's run, the experiment ``<recipe>-<fold>``, in ``results/<recipe>/<fold>/``
and the per-fold summary in ``results/<recipe>/folds.csv`` (:mod:`attention_cnn.results.folds`).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from attention_cnn import recipes
from attention_cnn.common import StageError
from attention_cnn.config import Params, parse_config
from attention_cnn.provenance import MISSING, leaves, lookup, same_value, show
from attention_cnn.results.experiments import Experiment, experiments, git, head, read_at, yaml_data
from attention_cnn.results.folds import write_folds

RESULTS_DIR = Path("results")
RESULT_FILES = ("results.csv", "comparisons.csv")   # under reports/ in a run, copied as they are
OPTIONAL_FILES = ("ensembles.csv",)                   # copied when the run wrote them (older runs did not)
IGNORED_KEYS = {recipes.FSDD_URL_KEY}               # where the archive came from does not change the recipe
SUMMARY = "reports/train/{dataset}/{variant}/seed{seed}/summary.json"


@dataclass
class Candidate:
    """One finished run that may be a recipe's: an experiment or the workspace."""
    label: str                                   # for messages: "experiment 'x'" or "the workspace"
    experiment: str | None
    commit: str                                  # the code's commit
    experiment_commit: str | None
    date: str
    uncommitted: bool
    read: Callable[[str], bytes | None]          # a file of the run by its path in the project
    baseline_params: Callable[[], bytes | None]  # params.yaml before the recipe's changes


def difference(expected: Params, actual: Params) -> str | None:
    """The first key whose value differs (the FSDD location aside), as ``key (x, recipe y)``, or None."""
    a, b = (dict(leaves("", p.model_dump(mode="json"))) for p in (actual, expected))
    for key in sorted(set(a) | set(b)):
        if key not in IGNORED_KEYS and a.get(key) != b.get(key):
            return f"{key} ({json.dumps(a.get(key))}, the recipe {json.dumps(b.get(key))})"
    return None


def matches(recipe: recipes.Recipe, cand: Candidate) -> tuple[Params | None, str]:
    """The run's validated config when it is the recipe's, else None and why not."""
    base, run = yaml_data(cand.baseline_params()), yaml_data(cand.read("params.yaml"))
    if base is None or run is None:
        return None, "no readable params.yaml"
    try:
        expected = recipes.recipe_config(recipe, params=base)
        actual = parse_config(run, f"{cand.label}'s params.yaml")
    except StageError as exc:
        return None, f"its params do not validate with this code ({exc})"
    diff = difference(expected, actual)
    return (None, f"its params differ from {recipe.path}: {diff}") if diff else (actual, "")


def run_records(cand: Candidate, config: Params) -> tuple[list[dict] | None, str]:
    """Per training run: precision, machine, epochs, time (from its summary.json); None if one is missing."""
    runs = []
    for dataset in config.datasets:
        for variant in config.variants:
            for seed in config.train.seeds:
                path = SUMMARY.format(dataset=dataset, variant=variant, seed=seed)
                try:
                    summary = json.loads(cand.read(path) or b"null")
                except ValueError:
                    summary = None
                if not isinstance(summary, dict):
                    return None, f"{path} missing"
                runs.append({"dataset": dataset, "variant": variant, "seed": seed,
                             "mixed_precision": summary.get("mixed_precision"), "machine": summary.get("machine"),
                             "epochs_run": summary.get("epochs_run"), "train_time_s": summary.get("train_time_s"),
                             "validation": summary.get("validation")})
    return runs, ""


def experiment_candidate(root: Path, exp: Experiment) -> Candidate:
    return Candidate(label=f"experiment '{exp.name}'", experiment=exp.name, commit=exp.baseline,
                     experiment_commit=exp.commit, date=exp.date, uncommitted=False,
                     read=lambda path: read_at(root, exp.commit, path),
                     baseline_params=lambda: read_at(root, exp.baseline, "params.yaml"))


def lock_disagrees(root: Path) -> str | None:
    """The first param ``dvc.lock`` records with another value than ``params.yaml`` has, or None."""
    lock = yaml_data((root / "dvc.lock").read_bytes()) if (root / "dvc.lock").is_file() else None
    params = yaml_data((root / "params.yaml").read_bytes()) or {}
    for stage, entry in ((lock or {}).get("stages") or {}).items():
        recorded = ((entry or {}).get("params") or {}).get("params.yaml") or {}
        for dotted, value in recorded.items():
            for key, locked in leaves(dotted, value):
                now = lookup(params, key)
                if now is MISSING or not same_value(now, locked):
                    return f"dvc.lock's {stage} ran with {key}={json.dumps(locked)}, params.yaml has {show(now)}"
    return None


def workspace_candidate(root: Path) -> tuple[Candidate | None, str]:
    """The workspace's results: committed ones as of the commit that wrote them, others only when up to date."""
    results = root / "reports" / "results.csv"
    if not results.is_file():
        return None, "no reports/results.csv"
    tracked = ["dvc.lock", *(f"reports/{f}" for f in RESULT_FILES)]
    changed = git(root, "status", "--porcelain", "--", *tracked).stdout.strip()
    baseline = head(root)
    params_changed = (yaml_data(read_at(root, baseline, "params.yaml"))
                      != yaml_data((root / "params.yaml").read_bytes()))
    if not changed and not params_changed:   # the committed results (comments in params.yaml may differ)
        disagreement = lock_disagrees(root)
        if disagreement:
            return None, f"its committed results are stale: {disagreement}; run dvc repro"
        commit, date = git(root, "log", "-1", "--format=%H %cI", "--", "reports/results.csv").stdout.split()
        uncommitted = False
    else:
        status = subprocess.run([sys.executable, "-m", "dvc", "status", "--json"], cwd=root, capture_output=True,
                                text=True)
        if status.returncode != 0 or status.stdout.strip() not in ("{}", ""):
            return None, "its results are neither committed nor up to date (dvc status); run dvc repro"
        commit, uncommitted = baseline, True
        date = datetime.fromtimestamp(results.stat().st_mtime, timezone.utc).isoformat(timespec="seconds")

    def read(path: str) -> bytes | None:
        p = root / path
        return p.read_bytes() if p.is_file() else None

    return Candidate(label="the workspace", experiment=None, commit=commit, experiment_commit=None, date=date,
                     uncommitted=uncommitted, read=read,
                     baseline_params=lambda: read_at(root, baseline, "params.yaml")), ""


def _date(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(timezone.utc)


def existing_run(out: Path) -> dict | None:
    try:
        return json.loads((out / "run.json").read_text())
    except (OSError, ValueError):
        return None


def write_run(out: Path, recipe: recipes.Recipe, cand: Candidate, config: Params, runs: list[dict]) -> None:
    """results/<recipe>/ replaced as a whole (written beside it, then renamed)."""
    record = {"recipe": recipe.name, "fold": recipe.fold, "description": recipe.description,
              "experiment": cand.experiment,
              "commit": cand.commit, "experiment_commit": cand.experiment_commit, "date": cand.date,
              "uncommitted": cand.uncommitted, "requested_precision": config.train.mixed_precision,
              "datasets": list(config.datasets), "variants": list(config.variants),
              "seeds": list(config.train.seeds), "runs": runs}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for name in RESULT_FILES:
            (tmp / name).write_bytes(cand.read(f"reports/{name}") or b"")
        for name in OPTIONAL_FILES:
            data = cand.read(f"reports/{name}")
            if data is not None:
                (tmp / name).write_bytes(data)
        (tmp / "params.yaml").write_bytes(cand.read("params.yaml") or b"")
        (tmp / "run.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        os.chmod(tmp, 0o755)
        old = out.with_name(f".{out.name}.old")
        if out.exists():
            out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def collect_run(root: Path, exps: list[Experiment], workspace: Candidate | None, recipe: recipes.Recipe,
                out: Path, shown: str) -> str:
    """Refresh ``out`` from the newest finished run of ``recipe`` (one fold, for a folded recipe); one line."""
    name = recipe.experiment
    cands = [experiment_candidate(root, e) for e in exps if recipes.run_suffix(e.name)[0] == name]
    cands += [workspace] if workspace else []
    cands.sort(key=lambda c: _date(c.date), reverse=True)
    skipped: list[str] = []
    kept = existing_run(out)
    for cand in cands:
        config, why = matches(recipe, cand)
        if config is None:
            if cand.experiment is not None:   # the workspace is usually another recipe's: no news
                skipped.append(f"{cand.label}: {why}")
            continue
        runs, why = run_records(cand, config)
        missing = [f for f in RESULT_FILES if cand.read(f"reports/{f}") is None]
        if runs is None or missing:
            skipped.append(f"{cand.label}: {why or 'reports/' + missing[0] + ' missing'}")
            continue
        source = cand.experiment_commit or cand.commit
        same = kept and (kept.get("experiment_commit") or kept.get("commit")) == source
        if same and kept.get("date") == cand.date:
            line = f"{name}: unchanged ({cand.label}, {cand.date})"
        elif kept and _date(kept["date"]) > _date(cand.date):
            line = f"{name}: kept {shown} ({kept['date']}), newer than {cand.label} ({cand.date})"
        else:
            write_run(out, recipe, cand, config, runs)
            line = f"{name}: {shown} <- {cand.label} ({cand.date})"
        return line + (f"; skipped newer {'; '.join(skipped)}" if skipped else "")
    state = f"kept {shown} ({kept['date']})" if kept else "not run yet"
    return f"{name}: {state}" + (f"; skipped {'; '.join(skipped)}" if skipped else "")


def collect(root: Path, out_dir: Path, names: list[str] | None = None) -> list[str]:
    """Refresh ``out_dir/<recipe>/`` for every recipe with a newer finished run; a line per recipe (and per fold)
    on what happened."""
    exps = experiments(root)
    workspace, why_not_workspace = workspace_candidate(root)
    lines = []
    for name in names if names is not None else recipes.names(root):
        recipe = recipes.load_recipe(name, root)
        if not recipe.folds:
            lines.append(collect_run(root, exps, workspace, recipe, out_dir / name, f"results/{name}"))
            continue
        for run in recipes.expand(recipe):
            lines.append(collect_run(root, exps, workspace, run, out_dir / name / run.fold,
                                     f"results/{name}/{run.fold}"))
        if any((out_dir / name / fold / "run.json").is_file() for fold in recipe.folds):
            lines.append(write_folds(out_dir / name, recipe))
    if workspace is None and why_not_workspace:
        lines.append(f"workspace: not used ({why_not_workspace})")
    return lines
