"""A recipe with folds (e.g. leave-one-speaker-out): ``results/<recipe>/<fold>/`` per fold, and ``folds.csv``.

``folds.csv`` has, per data set and variant, one row per fold and two summary rows:

- ``fold``: the fold's test accuracy per seed, and its mean and sample sd over seeds;
- ``mean``: the mean over folds computed per seed (one number per seed: the whole cross-validation run with that
  seed), then the mean and sample sd of those numbers over seeds;
- ``worst``: the fold with the lowest mean over seeds, with its own sd over seeds;
- ``ensemble`` (where the folds' reports averaged their seeds' probabilities, ``ensembles.csv``): per fold the
  accuracy of that one averaged model; ``ensemble_mean``, the mean of those over the folds, and
  ``ensemble_worst``, the fold where it is lowest. The seeds are one model here, so these have no sd.

The summary rows are written only when every fold of the recipe has results with the same seeds and the same
settings apart from the folds' own keys; otherwise ``missing`` rows name the folds without results, or a
``mismatch`` row says what differs. A mean over some of the folds is never presented as the whole.
"""
from __future__ import annotations

import csv
import io
import json
import statistics
from pathlib import Path
from typing import Any

from attention_cnn import recipes
from attention_cnn.common import atomic_write_text
from attention_cnn.provenance import leaves
from attention_cnn.results.experiments import yaml_data

FOLDS_CSV = "folds.csv"
COLUMNS = ("dataset", "variant", "row", "fold", "seeds", "test_accuracy_per_seed", "test_accuracy_mean",
           "test_accuracy_sd", "note")


def read_csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8")))) if path.is_file() else []


def _sd(values: list[float]) -> float | None:
    return statistics.stdev(values) if len(values) > 1 else None


def _row(dataset: str, variant: str, row: str, fold: str, seeds: list[int], accs: list[float],
         note: str = "") -> dict[str, Any]:
    return {"dataset": dataset, "variant": variant, "row": row, "fold": fold, "seeds": " ".join(map(str, seeds)),
            "test_accuracy_per_seed": " ".join(repr(a) for a in accs),
            "test_accuracy_mean": repr(statistics.fmean(accs)) if accs else "",
            "test_accuracy_sd": "" if _sd(accs) is None else repr(_sd(accs)), "note": note}


def accuracies(results: list[dict[str, str]]) -> dict[tuple[str, str], dict[int, float]]:
    """``{(dataset, variant): {seed: test accuracy}}`` from a run's ``results.csv`` rows."""
    out: dict[tuple[str, str], dict[int, float]] = {}
    for r in results:
        out.setdefault((r["dataset"], r["variant"]), {})[int(r["seed"])] = float(r["test_accuracy"])
    return out


def settings_difference(params: dict[str, dict | None], fold_keys: set[str]) -> str | None:
    """The first setting two folds ran with differently, the folds' own keys and the FSDD location aside."""
    def shared(data: dict | None) -> dict[str, Any]:
        return {k: v for k, v in leaves("", data or {}) if k != recipes.FSDD_URL_KEY
                and not any(k == f or k.startswith(f + ".") for f in fold_keys)}

    folds = list(params)
    first = shared(params[folds[0]])
    for fold in folds[1:]:
        other = shared(params[fold])
        for key in sorted(set(first) | set(other)):
            if first.get(key) != other.get(key):
                return (f"{key} is {first.get(key)!r} in fold {folds[0]} and {other.get(key)!r} in fold {fold}; "
                        f"run the folds again with one recipe")
    return None


def aggregate(folds: list[str], results: dict[str, list[dict[str, str]]], params: dict[str, dict | None],
              fold_keys: set[str], ensembles: dict[str, list[dict[str, str]]] | None = None) -> list[dict[str, Any]]:
    """The rows of ``folds.csv``: ``results``, ``params`` (loaded) and ``ensembles`` (each fold's
    ``ensembles.csv`` rows, where it has them) for the folds that have results."""
    done = [f for f in folds if f in results]
    accs = {f: accuracies(results[f]) for f in done}
    groups = list(dict.fromkeys(g for f in done for g in accs[f]))
    missing = [f for f in folds if f not in results]
    mismatch = settings_difference({f: params.get(f) for f in done}, fold_keys) if len(done) > 1 else None
    rows: list[dict[str, Any]] = []
    for dataset, variant in groups:
        per_fold = {f: accs[f].get((dataset, variant), {}) for f in done}
        for f in done:
            seeds = sorted(per_fold[f])
            rows.append(_row(dataset, variant, "fold", f, seeds, [per_fold[f][s] for s in seeds]))
        rows += [_row(dataset, variant, "missing", f, [], [], "no finished run") for f in missing]
        seed_sets = {tuple(sorted(per_fold[f])) for f in done}
        if missing:   # no mean or worst fold yet; each finished fold's ensemble is still its own result
            rows += [_row(dataset, variant, "ensemble", f, sorted(per_fold[f]), [acc]) for f in done
                     if (acc := ensemble_accuracy(dataset, variant, f, sorted(per_fold[f]), ensembles or {})) is not None]
            continue
        if mismatch is None and len(seed_sets) > 1:
            mismatch = "; ".join(f"fold {f} has seeds {' '.join(map(str, sorted(per_fold[f])))}" for f in done)
        if mismatch or not seed_sets or not next(iter(seed_sets)):
            rows.append(_row(dataset, variant, "mismatch", "", [], [], mismatch or "no seeds"))
            continue
        seeds = list(next(iter(seed_sets)))
        per_seed = [statistics.fmean(per_fold[f][s] for f in done) for s in seeds]
        rows.append(_row(dataset, variant, "mean", "", seeds, per_seed))
        worst = min(done, key=lambda f: statistics.fmean(per_fold[f].values()))
        rows.append(_row(dataset, variant, "worst", worst, seeds, [per_fold[worst][s] for s in seeds]))
        rows += ensemble_rows(dataset, variant, done, seeds, ensembles or {})
    return rows


def ensemble_accuracy(dataset: str, variant: str, fold: str, seeds: list[int],
                      ensembles: dict[str, list[dict[str, str]]]) -> float | None:
    """The accuracy of ``fold``'s ensemble of exactly ``seeds`` (at least two), or ``None`` where it has none."""
    if len(seeds) < 2:
        return None
    for r in ensembles.get(fold, []):
        if (r["dataset"], r["variant"]) == (dataset, variant) and \
                sorted(int(s) for s in r["seeds"].split()) == sorted(seeds):
            return float(r["accuracy"])
    return None


def ensemble_rows(dataset: str, variant: str, folds: list[str], seeds: list[int],
                  ensembles: dict[str, list[dict[str, str]]]) -> list[dict[str, Any]]:
    """Per fold the ensemble of ``seeds`` (every seed the folds ran), then its mean over the folds and its worst
    fold; nothing unless every fold has that ensemble."""
    accuracy = {f: ensemble_accuracy(dataset, variant, f, seeds, ensembles) for f in folds}
    if None in accuracy.values():
        return []
    rows = [_row(dataset, variant, "ensemble", f, seeds, [accuracy[f]]) for f in folds]
    mean = _row(dataset, variant, "ensemble_mean", "", seeds, [statistics.fmean(accuracy.values())])
    worst = min(folds, key=lambda f: accuracy[f])
    return rows + [mean, _row(dataset, variant, "ensemble_worst", worst, seeds, [accuracy[worst]])]


def fold_keys(recipe: recipes.Recipe) -> set[str]:
    return {key for changes in recipe.folds.values() for key, _ in recipes.leaf_changes(changes)}


def write_folds(out: Path, recipe: recipes.Recipe) -> str:
    """``out/folds.csv`` from ``out/<fold>/`` (results.csv, params.yaml); a line saying what it holds."""
    results, params, ensembles = {}, {}, {}
    for fold in recipe.folds:
        rows = read_csv(out / fold / "results.csv")
        if rows and (out / fold / "run.json").is_file():
            results[fold] = rows
            ensembles[fold] = read_csv(out / fold / "ensembles.csv")
            params[fold] = yaml_data((out / fold / "params.yaml").read_bytes()) \
                if (out / fold / "params.yaml").is_file() else None
    rows = aggregate(list(recipe.folds), results, params, fold_keys(recipe), ensembles)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / FOLDS_CSV, text.getvalue())
    missing = [f for f in recipe.folds if f not in results]
    state = f"missing {', '.join(missing)}" if missing else (
        "folds ran with different settings" if any(r["row"] == "mismatch" for r in rows) else "complete")
    return f"{recipe.name}: results/{recipe.name}/{FOLDS_CSV}: {len(results)} of {len(recipe.folds)} folds ({state})"
