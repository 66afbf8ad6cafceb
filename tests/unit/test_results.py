"""The results page (issue 14): finished recipe runs found in git (DVC's experiment refs, the workspace), kept in
results/<recipe>/, written into docs/results.md from results/ alone; the benchmark's table in docs/speed.md.

The experiments here are real git commits under refs/exps/<baseline>/<name>, laid out as DVC stores them, with
result files in the pipeline's formats; tests/pipeline/test_recipes_e2e.py makes them with DVC itself."""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from attention_cnn import recipes
from attention_cnn.results.collect import collect
from attention_cnn.results.page import render
from attention_cnn.results.speed import BEGIN, END, write_speed
from conftest import ROOT

MACHINE = {"cpu": "Test CPU 9000", "avx2": True, "avx512f": False, "avx512_bf16": False, "amx_bf16": False,
           "onednn": True, "gpus": []}
RESULTS_HEADER = ("dataset,variant,seed,source,features,params,epochs_run,train_time_s,test_time_ms,latency_ms_p50,"
                  "latency_ms_p95,test_loss,test_accuracy,best_val_accuracy,model_size_bytes,num_test,"
                  "test_accuracy_mean,test_accuracy_sd")
COMPARISONS_HEADER = ("dataset,variant,baseline,delta_accuracy,ci_low,ci_high,mcnemar_p,seeds,n_pairs,"
                      "baseline_only_correct,variant_only_correct")


def git(root: Path, *args: str, date: str = "2026-01-02T03:04:05+00:00") -> str:
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@x.invalid", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@x.invalid", GIT_AUTHOR_DATE=date, GIT_COMMITTER_DATE=date)
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True, env=env).stdout.strip()


def write_reports(root: Path, datasets, variants, seeds, accuracies: dict, precision: str, machine=MACHINE) -> None:
    """reports/results.csv, comparisons.csv and each run's summary.json, as the pipeline writes them."""
    rows = [RESULTS_HEADER]
    for d in datasets:
        for v in variants:
            accs = [accuracies[(d, v, s)] for s in seeds]
            mean = sum(accs) / len(accs)
            sd = (sum((a - mean) ** 2 for a in accs) / (len(accs) - 1)) ** 0.5 if len(accs) > 1 else ""
            for s in seeds:
                rows.append(f"{d},{v},{s},embedded,pixels 28x28,1000,3,4.5,10.0,0.5,0.8,0.2,{accuracies[(d, v, s)]},"
                            f",4000,1000,{mean},{sd}")
                summary = root / "reports" / "train" / d / v / f"seed{s}" / "summary.json"
                summary.parent.mkdir(parents=True, exist_ok=True)
                summary.write_text(json.dumps({"dataset": d, "variant": v, "seed": s, "epochs_run": 3,
                                               "train_time_s": 4.5, "mixed_precision": precision,
                                               "machine": machine, "validation": "none"}))
    (root / "reports").mkdir(exist_ok=True)
    (root / "reports" / "results.csv").write_text("\n".join(rows) + "\n")
    seeds_text = " ".join(map(str, seeds))
    (root / "reports" / "comparisons.csv").write_text(
        f"{COMPARISONS_HEADER}\n{datasets[0]},{variants[1]},{variants[0]},-0.001,-0.01,0.008,1.0,{seeds_text},"
        f"{1000 * len(seeds)},10,9\n")


TWO_SEEDS = ("description: Two seeds of the study's models on MNIST in float32\nshows: a test\n"
             "set:\n  datasets: [mnist]\n  train.seeds: [0, 1]\n  train.mixed_precision: float32\n")
ACC = {("mnist", "cnn", 0): 0.95, ("mnist", "cnn", 1): 0.96,
       ("mnist", "cnn_attention", 0): 0.955, ("mnist", "cnn_attention", 1): 0.945}


def commit_experiment(repo: Path, name: str, flags: list[str], write_outputs, date: str) -> str:
    """A finished DVC experiment as git holds it: a commit on the baseline with the run's params.yaml (set with
    DVC's own -S code) and the git-tracked outputs ``write_outputs(folder)`` writes, under
    refs/exps/<baseline>/<name>."""
    from dvc.utils.hydra import apply_overrides

    work = repo.parent / f"exp-{name}"
    shutil.rmtree(work, ignore_errors=True)
    git(repo.parent, "clone", "-q", str(repo), str(work))
    apply_overrides(work / "params.yaml", flags)
    write_outputs(work)
    git(work, "add", "-A")
    git(work, "commit", "-qm", f"dvc: commit experiment {name}", date=date)
    git(repo, "fetch", "-q", str(work), "HEAD")
    baseline = git(repo, "rev-parse", "HEAD")
    git(repo, "update-ref", f"refs/exps/{baseline[:2]}/{baseline[2:]}/{name}", "FETCH_HEAD")
    return git(repo, "rev-parse", "FETCH_HEAD")


def experiment(repo: Path, name: str, flags: list[str], seeds: list[int], date: str) -> str:
    return commit_experiment(repo, name, flags,
                             lambda work: write_reports(work, ["mnist"], ["cnn", "cnn_attention"], seeds, ACC, "float32"),
                             date)


@pytest.fixture
def repo(tmp_path):
    root = tmp_path / "repo"
    (root / "recipes").mkdir(parents=True)
    shutil.copy(ROOT / "params.yaml", root / "params.yaml")
    shutil.copy(ROOT / "recipes" / "default.yaml", root / "recipes" / "default.yaml")
    (root / "recipes" / "two-seeds.yaml").write_text(TWO_SEEDS)
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "base")
    return root


def test_collect_keeps_finished_recipe_runs_and_the_page_shows_them(repo):
    recipe = recipes.load_recipe("two-seeds", repo)
    good = experiment(repo, "two-seeds", recipes.set_flags(recipe), [0, 1], "2026-01-03T10:00:00+00:00")
    # a newer run under the recipe's name with other params (one seed): not the recipe's, so skipped
    experiment(repo, "two-seeds.2", recipes.set_flags(recipe) + ["++train.seeds=[0]"], [0], "2026-01-04T10:00:00+00:00")
    # the default recipe's results committed in the workspace
    write_reports(repo, ["mnist", "speech"], ["cnn", "cnn_attention"], [0],
                  {(d, v, 0): 0.9 for d in ("mnist", "speech") for v in ("cnn", "cnn_attention")}, "bfloat16",
                  machine=None)
    (repo / "dvc.lock").write_text("schema: '2.0'\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "default run", date="2026-01-02T09:00:00+00:00")
    results_commit = git(repo, "rev-parse", "HEAD")

    lines = collect(repo, repo / "results")
    assert lines[0] == "default: results/default <- the workspace (2026-01-02T09:00:00+00:00)", lines
    assert lines[1].startswith("two-seeds: results/two-seeds <- experiment 'two-seeds' (2026-01-03T10:00:00+00:00); "
                               "skipped newer experiment 'two-seeds.2': its params differ from "), lines
    assert "train.seeds ([0], the recipe [0, 1])" in lines[1]
    kept = repo / "results" / "two-seeds"
    assert sorted(p.name for p in kept.iterdir()) == ["comparisons.csv", "params.yaml", "results.csv", "run.json"]
    assert (kept / "params.yaml").read_bytes() == git(repo, "show", f"{good}:params.yaml").encode() + b"\n"
    run = json.loads((kept / "run.json").read_text())
    assert run["experiment"] == "two-seeds" and run["experiment_commit"] == good
    assert [r["mixed_precision"] for r in run["runs"]] == ["float32"] * 4 and run["runs"][0]["machine"] == MACHINE
    assert json.loads((repo / "results" / "default" / "run.json").read_text())["commit"] == results_commit
    assert collect(repo, repo / "results")[1] == "two-seeds: unchanged (experiment 'two-seeds', " \
                                                  "2026-01-03T10:00:00+00:00); skipped newer experiment " \
                                                  "'two-seeds.2': " + lines[1].split("'two-seeds.2': ", 1)[1]

    page = render(repo / "results", repo)
    section = page.split("## two-seeds", 1)[1]
    assert "Two seeds of the study's models on MNIST in float32" in section
    assert f"results from experiment `two-seeds`, commit `{run['commit'][:10]}` (experiment commit `{good[:10]}`), " \
           "2026-01-03 10:00 UTC" in section
    assert "- Precision: float32 (`train.mixed_precision: float32`)." in section
    assert "- Machine: Test CPU 9000 with avx2, without amx_bf16, avx512_bf16, avx512f; oneDNN on; no GPU." in section
    assert "| mnist (embedded) | `cnn` | 0, 1 | 95.00 / 96.00 | 95.50 ± 0.71 | 3 | 4.5 ± 0.0 |" in section
    assert "| mnist | `cnn_attention` vs `cnn` | 0, 1 | −0.1 | −1.0 to +0.8 | p = 1.00 | 2000 |" in section
    default = page.split("## default", 1)[1].split("## two-seeds")[0]
    assert "results from the workspace, commit" in default and "- Precision: bfloat16 (`train.mixed_precision: auto`)" \
        in default and "not recorded" in default and "| speech (embedded) | `cnn_attention` | 0 | 90.00 | 90.00 |" \
        in default

    # a fresh clone: results/ alone regenerates the same page
    clone = repo.parent / "clone"
    git(repo.parent, "clone", "-q", str(repo), str(clone))
    shutil.copytree(repo / "results", clone / "results")
    assert render(clone / "results", clone) == page


def test_a_recipe_without_runs_is_listed_as_not_run(repo):
    lines = collect(repo, repo / "results")
    assert lines == ["default: not run yet", "two-seeds: not run yet", "workspace: not used (no reports/results.csv)"]
    page = render(repo / "results", repo)
    assert page.rstrip().endswith("## Not run yet\n\n- `default`: `make recipe NAME=default`\n"
                                  "- `two-seeds`: `make recipe NAME=two-seeds`")


def test_speed_page_from_bench_json(tmp_path):
    bench = json.loads((ROOT / "reports" / "bench.json").read_text()) if (ROOT / "reports" / "bench.json").is_file() \
        else pytest.skip("no reports/bench.json")
    bench["epoch_time_ratio_vs_study"] = 0.123
    (tmp_path / "bench.json").write_text(json.dumps(bench))
    doc = tmp_path / "speed.md"
    prose, more = "# Speed\n\nProse a person wrote.\n\n", "## Levers\n\nMore prose.\n"
    doc.write_text(prose + BEGIN + "\nold table\n" + END + "\n\n" + more)
    assert write_speed(tmp_path / "bench.json", doc) == f"{doc}: figures from {tmp_path / 'bench.json'}"
    text = doc.read_text()
    assert text.startswith(prose + BEGIN) and text.endswith(more)
    assert "old table" not in text
    table = text.split(BEGIN)[1].split(END)[0]
    rows = {r["key"]: r for r in csv.DictReader(io.StringIO("\n".join(
        line.strip("|").replace(" | ", ",").strip() for line in table.splitlines()
        if line.startswith("| `") or line.startswith("| key"))))}
    assert rows["`epoch_time_ratio_vs_study`"]["value"] == "0.123"
    assert rows["`epoch_time_ratio_vs_study`"]["goal"] == bench["goals"]["epoch_time_ratio_vs_study"]
    assert write_speed(tmp_path / "bench.json", doc).endswith("unchanged")
    assert write_speed(tmp_path / "none.json", tmp_path / "new.md").endswith("not found; make bench writes it)")
    assert not (tmp_path / "new.md").exists()


def test_committed_results_that_dvc_lock_says_are_stale_are_not_used(repo):
    write_reports(repo, ["mnist", "speech"], ["cnn", "cnn_attention"], [0],
                  {(d, v, 0): 0.9 for d in ("mnist", "speech") for v in ("cnn", "cnn_attention")}, "bfloat16")
    (repo / "dvc.lock").write_text("schema: '2.0'\nstages:\n  train@mnist-cnn-0:\n    params:\n      params.yaml:\n"
                                   "        train.epochs: 3\n        models.cnn:\n          filters: 32\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "a run with 3 epochs")
    assert collect(repo, repo / "results")[-1] == ("workspace: not used (its committed results are stale: dvc.lock's "
                                                   "train@mnist-cnn-0 ran with train.epochs=3, params.yaml has 15; "
                                                   "run dvc repro)")
    (repo / "dvc.lock").write_text((repo / "dvc.lock").read_text().replace("epochs: 3", "epochs: 15"))
    git(repo, "commit", "-qam", "the run with 15 epochs")
    assert collect(repo, repo / "results")[0].startswith("default: results/default <- the workspace")


def write_result(results: Path, name: str, accuracies: list[float], variant: str = "resnet") -> None:
    """results/<name>/ as collect keeps it: run.json and results.csv of one variant on speech, a seed per accuracy."""
    folder = results / name
    folder.mkdir(parents=True)
    rows = [RESULTS_HEADER] + [f"speech,{variant},{s},fsdd,log-mel 98x64,1000,15,60.0,10.0,0.5,0.8,0.2,{a},,4000,500,,"
                               for s, a in enumerate(accuracies)]
    (folder / "results.csv").write_text("\n".join(rows) + "\n")
    (folder / "run.json").write_text(json.dumps({
        "commit": "a" * 40, "date": "2026-01-02T03:04:05+00:00", "description": name, "experiment": name,
        "requested_precision": "float32", "runs": [{"dataset": "speech", "variant": variant, "seed": s,
                                                   "train_time_s": 60.0, "mixed_precision": "float32",
                                                   "machine": MACHINE} for s in range(len(accuracies))]}))


def test_a_lever_is_shown_against_the_recipe_it_changes_with_welchs_interval(repo):
    """compare_with: the page sets the two recipes' per-seed accuracies side by side; the difference of the means with
    Welch's t interval (unequal variances, Welch-Satterthwaite degrees of freedom) and its p."""
    import math

    from scipy.stats import t as student_t

    (repo / "recipes" / "lever.yaml").write_text(TWO_SEEDS.replace("shows: a test", "shows: a lever")
                                                 + "compare_with: two-seeds\n")
    mine, theirs = [0.95, 0.96, 0.97], [0.90, 0.92, 0.91]
    results = repo / "results"
    write_result(results, "lever", mine)
    section = render(results, repo).split("## lever", 1)[1]
    assert "Against `two-seeds`: it has no results yet (`make recipe NAME=two-seeds`)." in section

    write_result(results, "two-seeds", theirs)
    va, vb = (sum((x - sum(v) / 3) ** 2 for x in v) / 2 / 3 for v in (mine, theirs))
    df = (va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 2)
    half = student_t.ppf(0.975, df) * math.sqrt(va + vb)
    p = 2 * student_t.sf(0.05 / math.sqrt(va + vb), df)
    section = render(results, repo).split("## lever", 1)[1].split("## two-seeds")[0]
    assert "Against [two-seeds](#two-seeds), the same recipe without this one's lever" in section
    assert (f"| speech | `resnet` | 96.00 ± 1.00 | 91.00 ± 1.00 | +5.0 | +{100 * (0.05 - half):.1f} to "
            f"+{100 * (0.05 + half):.1f} | p = {p:.3f} |") in section, section
    assert "Against" not in render(results, repo).split("## two-seeds", 1)[1]   # only the recipe that names it
