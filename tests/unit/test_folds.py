"""A recipe with folds on the results page (issue 15's leave-one-speaker-out): each fold's experiment kept in
results/<recipe>/<fold>/, folds.csv with per fold mean ± sd over seeds, the mean over folds (per seed, then over
seeds) and the worst fold, and no mean while a fold is missing or the folds ran with different settings.

The experiments are real git commits under refs/exps/<baseline>/<name>, as in test_results.py."""
from __future__ import annotations

import csv
import io
import json
import re
import shutil
import statistics
from pathlib import Path

import pytest

from attention_cnn import recipes
from attention_cnn.results.collect import collect
from attention_cnn.results.folds import aggregate, write_folds
from attention_cnn.results.page import render
from conftest import ROOT
from stages import results as results_stage
from test_results import COMPARISONS_HEADER, MACHINE, RESULTS_HEADER, commit_experiment, git

FOLDED = ("description: Three held-out speakers\nshows: a test\nset:\n  datasets: [speech]\n  variants: [resnet]\n"
          "  data.speech.source: fsdd\n  data.speech.split: speakers\n  train.seeds: [0, 1, 2]\n"
          "folds:\n  a: {data.speech.test_speakers: [george]}\n  b: {data.speech.test_speakers: [jackson]}\n"
          "  c: {data.speech.test_speakers: [theo]}\n")
# per fold, per seed 0, 1, 2: means a 92, b 83, c 98; per seed over folds 90, 92, 91 -> 91 ± 1
ACC = {"a": [0.90, 0.92, 0.94], "b": [0.80, 0.86, 0.83], "c": [1.00, 0.98, 0.96]}


def results_rows(accs: list[float], seeds: list[int]) -> list[dict[str, str]]:
    return [{"dataset": "speech", "variant": "resnet", "seed": str(s), "test_accuracy": repr(a)}
            for s, a in zip(seeds, accs)]


def write_reports(root: Path, accs: list[float], seeds: list[int]) -> None:
    """reports/results.csv, comparisons.csv (one variant: no rows) and each run's summary.json."""
    rows = [RESULTS_HEADER]
    for s, a in zip(seeds, accs):
        rows.append(f"speech,resnet,{s},fsdd,logmel,1000,15,300.0,10.0,0.5,0.8,0.2,{a},,4000,500,,")
        summary = root / "reports" / "train" / "speech" / "resnet" / f"seed{s}" / "summary.json"
        summary.parent.mkdir(parents=True, exist_ok=True)
        summary.write_text(json.dumps({"dataset": "speech", "variant": "resnet", "seed": s, "epochs_run": 15,
                                       "train_time_s": 300.0, "mixed_precision": "float32", "machine": MACHINE,
                                       "validation": "none"}))
    (root / "reports" / "results.csv").write_text("\n".join(rows) + "\n")
    (root / "reports" / "comparisons.csv").write_text(COMPARISONS_HEADER + "\n")


def fold_experiment(repo: Path, recipe: recipes.Recipe, fold: str, date: str, extra: list[str] = (),
                    seeds: list[int] = (0, 1, 2), accs: list[float] | None = None) -> str:
    """The fold's finished experiment '<recipe>-<fold>': its params.yaml set by DVC's own -S code."""
    (run,) = [r for r in recipes.expand(recipe) if r.fold == fold]
    accs = list(accs or ACC[fold])[:len(seeds)]
    return commit_experiment(repo, run.experiment, recipes.set_flags(run) + list(extra),
                             lambda work: write_reports(work, accs, list(seeds)), date)


@pytest.fixture
def repo(tmp_path):
    root = tmp_path / "repo"
    (root / "recipes").mkdir(parents=True)
    shutil.copy(ROOT / "params.yaml", root / "params.yaml")
    (root / "recipes" / "folded.yaml").write_text(FOLDED)
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "base")
    return root


def folds_csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


def test_mean_over_folds_is_per_seed_then_over_seeds_and_worst_is_the_lowest_mean():
    results = {f: results_rows(ACC[f], [0, 1, 2]) for f in ACC}
    params = {f: {"data": {"speech": {"test_speakers": [f]}}} for f in ACC}
    rows = aggregate(["a", "b", "c"], results, params, {"data.speech.test_speakers"})
    assert [(r["row"], r["fold"]) for r in rows] == [("fold", "a"), ("fold", "b"), ("fold", "c"), ("mean", ""),
                                                     ("worst", "b")]
    mean, worst = rows[3], rows[4]
    assert [float(x) for x in mean["test_accuracy_per_seed"].split()] == pytest.approx([0.90, 0.92, 0.91])
    assert float(mean["test_accuracy_mean"]) == pytest.approx(0.91)
    assert float(mean["test_accuracy_sd"]) == pytest.approx(0.01)
    assert float(worst["test_accuracy_mean"]) == pytest.approx(0.83)
    assert float(worst["test_accuracy_sd"]) == pytest.approx(0.03)
    assert float(rows[0]["test_accuracy_sd"]) == pytest.approx(statistics.stdev(ACC["a"]))
    assert mean["seeds"] == "0 1 2"


def ensemble_rows(accuracy: float, seeds: str = "0 1 2") -> list[dict[str, str]]:
    """One fold's ensembles.csv rows, as the report writes them."""
    return [{"dataset": "speech", "variant": "resnet", "n_seeds": str(len(seeds.split())), "seeds": seeds,
             "num_test": "500", "accuracy": repr(accuracy), "seed_accuracy_mean": "0.9", "gain": "0.01"}]


def test_the_seeds_ensemble_per_fold_its_mean_over_folds_and_worst_fold():
    """Every fold averaged its three seeds' probabilities: one accuracy per fold, their mean and the lowest fold;
    a fold without that ensemble (or one of other seeds) means no ensemble rows at all."""
    results = {f: results_rows(ACC[f], [0, 1, 2]) for f in ACC}
    params = {f: {"data": {"speech": {"test_speakers": [f]}}} for f in ACC}
    keys = {"data.speech.test_speakers"}
    ensembles = {"a": ensemble_rows(0.95), "b": ensemble_rows(0.88), "c": ensemble_rows(0.99)}
    rows = aggregate(["a", "b", "c"], results, params, keys, ensembles)
    assert [(r["row"], r["fold"]) for r in rows][5:] == [("ensemble", "a"), ("ensemble", "b"), ("ensemble", "c"),
                                                         ("ensemble_mean", ""), ("ensemble_worst", "b")]
    assert float(rows[8]["test_accuracy_mean"]) == pytest.approx((0.95 + 0.88 + 0.99) / 3)
    assert float(rows[9]["test_accuracy_mean"]) == 0.88 and rows[9]["test_accuracy_sd"] == ""
    for partial in ({**ensembles, "c": []}, {**ensembles, "c": ensemble_rows(0.99, "0 1")}):
        assert [r["row"] for r in aggregate(["a", "b", "c"], results, params, keys, partial)][5:] == []


def test_an_incomplete_recipe_shows_each_finished_folds_ensemble_and_no_mean():
    """A lever measured on one fold first: that fold's ensemble is a result of its own; no mean or worst fold."""
    params = {f: {"data": {"speech": {"test_speakers": [f]}}} for f in ACC}
    results = {f: results_rows(ACC[f], [0, 1, 2]) for f in "ab"}
    ensembles = {"a": ensemble_rows(0.95), "b": ensemble_rows(0.88, "0 1")}   # b's is not of its three seeds
    rows = aggregate(["a", "b", "c"], results, params, {"data.speech.test_speakers"}, ensembles)
    assert [(r["row"], r["fold"]) for r in rows] == [("fold", "a"), ("fold", "b"), ("missing", "c"),
                                                     ("ensemble", "a")]
    assert float(rows[3]["test_accuracy_mean"]) == 0.95 and rows[3]["seeds"] == "0 1 2"


def test_no_mean_when_a_fold_is_missing_or_the_folds_differ():
    params = {f: {"data": {"speech": {"test_speakers": [f]}}, "train": {"epochs": 15}} for f in ACC}
    two = aggregate(["a", "b", "c"], {f: results_rows(ACC[f], [0, 1, 2]) for f in "ab"}, params,
                    {"data.speech.test_speakers"})
    assert [(r["row"], r["fold"]) for r in two] == [("fold", "a"), ("fold", "b"), ("missing", "c")]
    params["c"]["train"]["epochs"] = 20
    full = {f: results_rows(ACC[f], [0, 1, 2]) for f in ACC}
    other = aggregate(["a", "b", "c"], full, params, {"data.speech.test_speakers"})
    assert other[-1]["row"] == "mismatch" and other[-1]["note"].startswith(
        "train.epochs is 15 in fold a and 20 in fold c")
    params["c"]["train"]["epochs"] = 15
    full["c"] = results_rows(ACC["c"][:2], [0, 1])
    seeds = aggregate(["a", "b", "c"], full, params, {"data.speech.test_speakers"})
    assert seeds[-1]["row"] == "mismatch" and "fold c has seeds 0 1" in seeds[-1]["note"]
    assert not [r for r in two + other + seeds if r["row"] in ("mean", "worst")]


def test_collect_keeps_each_fold_and_the_page_shows_the_folds_table(repo, monkeypatch, capsys):
    recipe = recipes.load_recipe("folded", repo)
    fold_experiment(repo, recipe, "a", "2026-01-03T10:00:00+00:00")
    fold_experiment(repo, recipe, "b", "2026-01-03T11:00:00+00:00")
    # fold c with other seeds: not the recipe's fold, so it does not count
    fold_experiment(repo, recipe, "c", "2026-01-03T12:00:00+00:00", ["++train.seeds=[0,1]"], seeds=[0, 1])

    lines = collect(repo, repo / "results")
    assert lines[:2] == ["folded-a: results/folded/a <- experiment 'folded-a' (2026-01-03T10:00:00+00:00)",
                         "folded-b: results/folded/b <- experiment 'folded-b' (2026-01-03T11:00:00+00:00)"], lines
    assert lines[2].startswith("folded-c: not run yet; skipped experiment 'folded-c': its params differ") and \
        "train.seeds ([0, 1], the recipe [0, 1, 2])" in lines[2], lines
    assert lines[3] == "folded: results/folded/folds.csv: 2 of 3 folds (missing c)"
    run = json.loads((repo / "results" / "folded" / "a" / "run.json").read_text())
    assert (run["recipe"], run["fold"], run["experiment"]) == ("folded", "a", "folded-a")
    assert [(r["row"], r["fold"]) for r in folds_csv(repo / "results" / "folded" / "folds.csv")] == \
        [("fold", "a"), ("fold", "b"), ("missing", "c")]
    page = render(repo / "results", repo)
    section = page.split("## folded", 1)[1]
    assert "| speech | `resnet` | `a` | 0, 1, 2 | 90.00 / 92.00 / 94.00 | 92.00 ± 2.00 |" in section
    assert "**Incomplete: 1 of 3 folds have no results (c)**" in section and \
        "`python -m stages.recipe run folded --queue --fold c`" in section
    assert "| **mean over folds** |" not in section and "worst fold**" not in section

    fold_experiment(repo, recipe, "c", "2026-01-04T10:00:00+00:00")
    lines = collect(repo, repo / "results")
    assert lines[0] == "folded-a: unchanged (experiment 'folded-a', 2026-01-03T10:00:00+00:00)"
    assert lines[3] == "folded: results/folded/folds.csv: 3 of 3 folds (complete)"
    page = render(repo / "results", repo)
    section = page.split("## folded", 1)[1]
    assert "| speech | `resnet` | **mean over folds** | 0, 1, 2 | 90.00 / 92.00 / 91.00 | 91.00 ± 1.00 |" in section
    assert "| speech | `resnet` | **worst fold**: `b` | 0, 1, 2 | 80.00 / 86.00 / 83.00 | 83.00 ± 3.00 |" in section
    assert "Incomplete" not in section and "- Results from 3 of 3 folds' experiments" in section
    assert "- Precision: float32 (`train.mixed_precision: auto`)." in section
    assert re.search(r"\| \[folded\]\(#folded\) \| a test \| 9 models, [0-9.]+ min \(float32, [^)]*\) \| 2026-01-04 \|", page), page[:1500]

    # a fresh clone: results/ alone regenerates the same page
    clone = repo.parent / "clone"
    git(repo.parent, "clone", "-q", str(repo), str(clone))
    shutil.copytree(repo / "results", clone / "results")
    assert render(clone / "results", clone) == page
    # make results there counts the folded recipe (results/folded/ holds folds, no run.json of its own)
    monkeypatch.chdir(clone)
    assert results_stage.main(["--no-collect", "--page", "page.md", "--readme", "none.md"]) == 0
    assert "page.md: 1 recipe(s) with results" in capsys.readouterr().out
    assert (clone / "page.md").read_text() == page

    # each fold's report averaged its seeds (ensembles.csv kept beside results.csv): the ensemble's rows
    for fold, accuracy in (("a", 0.95), ("b", 0.88), ("c", 0.99)):
        rows = ensemble_rows(accuracy)
        (repo / "results" / "folded" / fold / "ensembles.csv").write_text(
            ",".join(rows[0]) + "\n" + ",".join(rows[0].values()) + "\n")
    assert write_folds(repo / "results" / "folded", recipe).endswith("3 of 3 folds (complete)")
    section = render(repo / "results", repo).split("## folded", 1)[1]
    assert "| speech | `resnet` x 3 (ensemble) | `b` | 0, 1, 2 | one model | 88.00 |" in section
    assert "| speech | `resnet` x 3 (ensemble) | **mean over folds** | 0, 1, 2 | one model | 94.00 |" in section
    assert "| speech | `resnet` x 3 (ensemble) | **worst fold**: `b` | 0, 1, 2 | one model | 88.00 |" in section

    # a fold kept from a run with other settings (the recipe changed since): the folds, but no mean
    kept = repo / "results" / "folded" / "c" / "params.yaml"
    kept.write_text(kept.read_text().replace("epochs: 15", "epochs: 3", 1))
    assert write_folds(repo / "results" / "folded", recipe) == \
        "folded: results/folded/folds.csv: 3 of 3 folds (folds ran with different settings)"
    section = render(repo / "results", repo).split("## folded", 1)[1]
    assert "**No mean over folds**: train.epochs is 15 in fold a and 3 in fold c; run the folds again with one " \
           "recipe." in section
    assert "| `c` | 0, 1, 2 |" in section and "| **mean over folds** |" not in section and "worst fold**" not in section


def test_a_folded_recipe_not_run_is_listed_with_the_queue_command(repo):
    assert collect(repo, repo / "results")[:3] == ["folded-a: not run yet", "folded-b: not run yet",
                                                   "folded-c: not run yet"]
    assert not (repo / "results" / "folded").exists()
    assert "- `folded`: `make recipe NAME=folded QUEUE=1`, then `dvc queue start`" in render(repo / "results", repo)


def test_a_folded_lever_is_shown_against_its_recipe_fold_by_fold(repo):
    """compare_with between folded recipes: per fold both have run, the two runs' accuracies side by side with
    Welch's interval of the difference (a lever measured on the worst fold before the others); a fold the other
    recipe has not run is named."""
    import math

    from scipy.stats import t as student_t

    lever_text = ("description: With a lever\nshows: a lever\nbased_on: folded\nset:\n"
                  "  models.resnet.time_warp: 0.1\ncompare_with: folded\n")   # the base's set and folds
    (repo / "recipes" / "folded-lever.yaml").write_text(lever_text)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "a lever")
    base, lever = recipes.load_recipe("folded", repo), recipes.load_recipe("folded-lever", repo)
    mine = [0.90, 0.92, 0.91]
    fold_experiment(repo, base, "b", "2026-01-03T10:00:00+00:00")
    fold_experiment(repo, lever, "b", "2026-01-03T11:00:00+00:00", accs=mine)
    fold_experiment(repo, lever, "c", "2026-01-03T12:00:00+00:00")
    collect(repo, repo / "results")
    section = render(repo / "results", repo).split("## folded-lever", 1)[1].split("\n## ")[0]
    assert "Against [folded](#folded), the same recipe without this one's lever" in section and "Fold by fold:" in section
    assert "- Settings: [folded](#folded)'s, with `models.resnet.time_warp: 0.1` (`recipes/folded-lever.yaml`)." \
        in section.splitlines()
    theirs = ACC["b"]
    va, vb = (statistics.variance(v) / 3 for v in (mine, theirs))
    df = (va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 2)
    half = student_t.ppf(0.975, df) * math.sqrt(va + vb)
    p = 2 * student_t.sf(0.08 / math.sqrt(va + vb), df)
    assert (f"| b | speech | `resnet` | 91.00 ± 1.00 | 83.00 ± 3.00 | +8.0 | +{100 * (0.08 - half):.1f} to "
            f"+{100 * (0.08 + half):.1f} | p = {p:.3f} |") in section, section
    assert "Against `folded`: no results in common for fold c." in section
    assert "mean over the" not in section          # one fold in common: nothing to average

    # the base runs fold c too: per seed the mean over the two folds both ran, then Welch's interval over seeds
    fold_experiment(repo, base, "c", "2026-01-03T13:00:00+00:00", accs=[0.97, 0.99, 0.98])
    collect(repo, repo / "results")
    section = render(repo / "results", repo).split("## folded-lever", 1)[1].split("\n## ")[0]
    assert "then over the folds both ran: per seed the mean of those folds' accuracies" in section
    mine_mean = [statistics.fmean(x) for x in zip(mine, ACC["c"])]          # lever: b and c, per seed
    theirs_mean = [statistics.fmean(x) for x in zip(ACC["b"], [0.97, 0.99, 0.98])]
    va, vb = (statistics.variance(v) / 3 for v in (mine_mean, theirs_mean))
    delta = statistics.fmean(mine_mean) - statistics.fmean(theirs_mean)
    df = (va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 2)
    half = student_t.ppf(0.975, df) * math.sqrt(va + vb)
    p = 2 * student_t.sf(abs(delta) / math.sqrt(va + vb), df)
    row = (f"| mean over the 2 folds both ran | speech | `resnet` | {100 * statistics.fmean(mine_mean):.2f} ± "
           f"{100 * statistics.stdev(mine_mean):.2f} | {100 * statistics.fmean(theirs_mean):.2f} ± "
           f"{100 * statistics.stdev(theirs_mean):.2f} | {100 * delta:+.1f} | {100 * (delta - half):+.1f} to "
           f"{100 * (delta + half):+.1f} | p = {p:.3f} |").replace("-", "−")
    assert row in section, section
    assert "Against" not in render(repo / "results", repo).split("## folded\n", 1)[1].split("\n## ")[0]
