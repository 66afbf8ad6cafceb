"""Experiments to diff (issue #3): `dvc exp run -S`, `exp show`, `exp/metrics/params diff`, `plots diff`, a queued grid.

All on a private copy of the tiny ``built_project`` (both data sets, both study variants, one seed), so
each experiment retrains only what its change touches.
"""
from __future__ import annotations

import csv
import io
import json
import re
import time

import pytest

from conftest import copy_project, run

pytestmark = pytest.mark.slow
RUNNING = re.compile(r"^Running stage '([^']+)'", re.MULTILINE)


@pytest.fixture(scope="module")
def exp_project(built_project, tmp_path_factory):
    """The tiny project plus one experiment ``lr`` that changes only ``models.cnn_attention.learning_rate``."""
    root = copy_project(built_project, tmp_path_factory.mktemp("exp") / "project")
    proc = run(["dvc", "exp", "run", "-n", "lr", "-S", "models.cnn_attention.learning_rate=0.01"], root)
    return root, proc.stdout


def exp_rows(root, *args: str) -> list[dict[str, str]]:
    out = run(["dvc", "exp", "show", "--csv", *args], root).stdout
    return list(csv.DictReader(io.StringIO(out)))


def test_exp_run_reruns_only_the_changed_variant(exp_project):
    _, stdout = exp_project
    ran = set(RUNNING.findall(stdout))
    assert ran == {f"{stage}@{d}-cnn_attention-0" for stage in ("train", "evaluate", "export") for d in ("mnist", "speech")
                   } | {"report"}, ran


def test_exp_show_has_readable_metric_columns(exp_project):
    root, _ = exp_project
    rows = exp_rows(root)
    for dataset in ("mnist", "speech"):
        for variant in ("cnn", "cnn_attention"):
            for metric in ("test_accuracy", "train_time_s"):
                assert f"{dataset}.{variant}.{metric}" in rows[0], sorted(rows[0])[:20]
    by_name = {r["Experiment"]: r for r in rows if r["Experiment"]}
    assert by_name["lr"]["models.cnn_attention.learning_rate"] == "0.01"
    base = next(r for r in rows if r["typ"] == "baseline" and r["rev"] != "workspace")
    assert base["models.cnn_attention.learning_rate"] == "0.001"
    # the unchanged variant's metrics are carried over, not recomputed
    assert by_name["lr"]["speech.cnn.test_accuracy"] == base["speech.cnn.test_accuracy"]
    assert 0.0 <= float(by_name["lr"]["speech.cnn_attention.test_accuracy"]) <= 1.0


def test_exp_show_only_changed_sort_and_markdown(exp_project):
    root, _ = exp_project
    changed = exp_rows(root, "--only-changed")
    assert "models.cnn_attention.learning_rate" in changed[0]
    assert "train.epochs" not in changed[0] and "speech.cnn.test_accuracy" not in changed[0]
    assert "mnist.cnn_attention.train_time_s" in changed[0]
    run(["dvc", "exp", "show", "--csv", "--sort-by", "speech.cnn_attention.test_accuracy", "--sort-order", "desc"], root)
    md = run(["dvc", "exp", "show", "--md", "--only-changed"], root).stdout
    assert md.lstrip().startswith("| Experiment") and "[lr]" in md


def test_exp_metrics_and_params_diff(exp_project):
    root, _ = exp_project
    exp = json.loads(run(["dvc", "exp", "diff", "HEAD", "lr", "--json"], root).stdout)
    assert set(exp["params"]["params.yaml"]) == {"models.cnn_attention.learning_rate"}
    changed = set(exp["metrics"]["reports/metrics.json"])
    assert "speech.cnn_attention.train_time_s" in changed
    assert not any(k.split(".")[1] == "cnn" for k in changed), changed   # the cnn was not retrained
    metrics = json.loads(run(["dvc", "metrics", "diff", "HEAD", "lr", "--json"], root).stdout)
    assert set(metrics["reports/metrics.json"]) == changed
    params = json.loads(run(["dvc", "params", "diff", "HEAD", "lr", "--json"], root).stdout)
    assert params["params.yaml"]["models.cnn_attention.learning_rate"]["new"] == 0.01
    assert params["params.yaml"]["models.cnn_attention.learning_rate"]["old"] == 0.001


def test_plots_diff_overlays_both_experiments(exp_project):
    root, _ = exp_project
    out = json.loads(run(["dvc", "plots", "diff", "HEAD", "lr", "--json"], root).stdout)
    assert not out.get("errors"), out.get("errors")
    data = out["data"]
    expected = {"reports/plots/learning_curves_mnist.csv", "reports/plots/learning_curves_speech.csv",
                "reports/plots/timing.csv"}
    expected |= {f"reports/train/{d}/{v}/seed0/history.csv" for d in ("mnist", "speech") for v in ("cnn", "cnn_attention")}
    expected |= {f"reports/eval/{d}/{v}/seed0/predictions.csv" for d in ("mnist", "speech") for v in ("cnn", "cnn_attention")}
    assert expected <= set(data), sorted(set(data))
    for plot_id in expected:
        revisions = {rev for plot in data[plot_id] for rev in plot.get("revisions", [])}
        assert revisions == {"HEAD", "lr"}, (plot_id, revisions)
    # dvc plots show renders every declared plot into one HTML page
    run(["dvc", "plots", "show", "-o", "plots_html"], root)
    page = (root / "plots_html" / "index.html").read_text()
    for plot_id in expected:   # each plot is a <div> named after its file: slashes and dots as '_'
        assert re.sub(r"[/.]", "_", plot_id) in page, plot_id


def test_queued_grid_runs_in_parallel_workers(exp_project):
    root, _ = exp_project
    # A grid over an evaluate setting on MNIST's cnn alone: each queued experiment reruns its evaluate stage and the
    # report only (no training), which keeps the test short; what is tested is the queue, its workers and exp show.
    run(["dvc", "exp", "run", "--queue", "-S", "evaluate.latency_repeats=2,4", "-S", "datasets=[mnist]",
         "-S", "variants=[cnn]"], root)
    # The daemon `dvc queue start` leaves behind has been seen to hang after its workers finished (DVC 3,
    # celery): its output goes to a file, so only the status poll below, with its deadline, waits on it.
    run(["dvc", "queue", "start", "-j", "2"], root, output=root.parent / "queue-start.log")
    deadline = time.monotonic() + 900
    while True:
        status = run(["dvc", "queue", "status"], root).stdout
        if "Queued" not in status and "Running" not in status:
            break
        assert time.monotonic() < deadline, status
        time.sleep(1)
    assert status.count("Success") == 2 and "Failed" not in status, status
    rows = [r for r in exp_rows(root) if r["typ"] != "baseline" and r["Experiment"] != "lr"]
    assert sorted(r["evaluate.latency_repeats"] for r in rows) == ["2", "4"], rows
    for r in rows:
        assert 0.0 <= float(r["mnist.cnn.test_accuracy"]) <= 1.0
