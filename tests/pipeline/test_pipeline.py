"""End to end: `dvc repro` of the whole pipeline in a temporary git repo with tiny params.

The real code path, shrunk: 2 synthetic training voices, 4000-sample clips, one
epoch. A second part runs the real FSDD archive (from ../shared/data, served on
loopback) through `dvc exp run -S data.speech.source=fsdd`.
"""
from __future__ import annotations

import csv
import json

import pytest

from conftest import FSDD_ARCHIVE, copy_project, run

pytestmark = pytest.mark.slow
DATASETS, VARIANTS = ("mnist", "speech"), ("cnn", "cnn_attention")
RESULT_COLUMNS = ["dataset", "variant", "seed", "source", "params", "epochs_run", "train_time_s", "test_time_ms",
                  "latency_ms_p50", "test_loss", "test_accuracy"]


class _Proc:
    def __init__(self, stdout):
        self.stdout = stdout


@pytest.fixture(scope="module")
def project(built_project):
    return built_project, _Proc((built_project / ".repro-stdout.txt").read_text())


def read_results(root):
    with open(root / "reports" / "results.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_every_stage_writes_its_outputs(project):
    root, proc = project
    for ds in DATASETS:
        assert (root / f"data/raw/{ds}/manifest.csv").is_file()
        assert (root / f"data/raw/{ds}/source.json").is_file()
        spec = json.loads((root / f"data/features/{ds}/spec.json").read_text())
        assert spec["counts"]["train"] and spec["counts"]["test"]
        for variant in VARIANTS:
            model_dir = root / f"models/{ds}/{variant}/seed0"
            for name in ("model.keras", "config.json", "class_names.json"):
                assert (model_dir / name).is_file(), model_dir / name
            config = json.loads((model_dir / "config.json").read_text())
            assert config["variant"] == variant and config["class_names"] == spec["class_names"]
            assert "tensorflow" in config["versions"]
            history = (root / f"reports/train/{ds}/{variant}/seed0/history.csv").read_text().splitlines()
            assert history[0] == "epoch,loss,accuracy,val_loss,val_accuracy" and len(history) == 2
            assert (root / f"reports/train/{ds}/{variant}/seed0/live/metrics.json").is_file()
            summary = json.loads((root / f"reports/train/{ds}/{variant}/seed0/summary.json").read_text())
            assert summary["epochs_run"] == 1 and summary["train_time_s"] > 0
            metrics = json.loads((root / f"reports/eval/{ds}/{variant}/seed0/metrics.json").read_text())
            assert 0.0 <= metrics["test_accuracy"] <= 1.0 and metrics["latency_ms_p50"] > 0
            assert metrics["test_accuracy"] == pytest.approx(metrics["test_accuracy_check"], abs=1e-4)
            preds = (root / f"reports/eval/{ds}/{variant}/seed0/predictions.csv").read_text().splitlines()
            probs = ",".join(f"p_{name}" for name in metrics["class_names"])
            assert preds[0] == f"index,actual,predicted,confidence,{probs}" and len(preds) == 1 + metrics["num_test"]
            row = [float(x) for x in preds[1].split(",")[4:]]
            assert abs(sum(row) - 1) < 1e-4 and max(row) == float(preds[1].split(",")[3])
    assert "Running stage 'report'" in proc.stdout


def test_results_csv_has_one_row_per_dataset_variant_seed(project):
    root, _ = project
    rows = read_results(root)
    assert set(RESULT_COLUMNS) <= set(rows[0]) and list(rows[0])[:3] == ["dataset", "variant", "seed"]
    assert sorted((r["dataset"], r["variant"], r["seed"]) for r in rows) == [
        (d, v, "0") for d in DATASETS for v in VARIANTS]
    for r in rows:
        assert r["source"] == "embedded" and int(r["epochs_run"]) == 1
        # tiny params: 4,000-sample clips, hop 128 -> 29 frames x 257 bins
        assert r["features"] == {"mnist": "pixels 28x28", "speech": "linear |STFT| 29x257"}[r["dataset"]]
    counts = {(r["dataset"], r["variant"]): int(r["params"]) for r in rows}
    assert counts[("mnist", "cnn")] == 173_738 and counts[("mnist", "cnn_attention")] == 174_027


def test_report_and_metrics_for_dvc(project):
    root, _ = project
    html = (root / "reports/report.html").read_text()
    assert "data:image/png;base64," in html and "src=\"figures/" not in html
    assert (root / "reports/report.md").is_file()
    metrics = json.loads((root / "reports/metrics.json").read_text())
    assert set(metrics) == set(DATASETS) and set(metrics["speech"]) == set(VARIANTS)
    shown = run(["dvc", "metrics", "show", "--json"], root).stdout
    assert "test_accuracy" in shown
    plots = json.loads(run(["dvc", "plots", "show", "--json"], root).stdout)
    assert not plots.get("errors"), plots.get("errors")
    names = set(plots["data"])
    assert {"reports/plots/learning_curves_speech.csv", "reports/plots/timing.csv"} <= names  # all variants in one chart
    assert {f"reports/eval/{d}/{v}/seed0/predictions.csv" for d in DATASETS for v in VARIANTS} <= names  # confusion
    assert {f"reports/train/{d}/{v}/seed0/history.csv" for d in DATASETS for v in VARIANTS} <= names

def test_nothing_to_do_on_second_repro(project):
    root, _ = project
    status = run(["dvc", "status"], root).stdout
    assert "up to date" in status, status
    again = run(["dvc", "repro"], root).stdout
    assert "Running stage" not in again, again


@pytest.mark.realdata
def test_real_fsdd_through_dvc_exp_run(built_project, tmp_path, serve_dir):
    if not FSDD_ARCHIVE.is_file():
        pytest.skip(f"real FSDD archive not found at {FSDD_ARCHIVE}")
    root = copy_project(built_project, tmp_path / "fsdd")
    url = serve_dir(FSDD_ARCHIVE.parent) + FSDD_ARCHIVE.name
    proc = run(["dvc", "exp", "run", "-n", "fsdd-tiny", "-S", "data.speech.source=fsdd", "-S",
                f"data.speech.url={url}", "-S", "datasets=[speech]", "-S", "variants=[cnn]"], root)
    assert "Running stage 'fetch-speech'" in proc.stdout
    assert "Running stage 'fetch-mnist'" not in proc.stdout  # unchanged stages are reused
    manifest = (root / "data/raw/speech/manifest.csv").read_text().splitlines()
    assert len(manifest) == 1 + 3000
    rows = read_results(root)
    assert {(r["dataset"], r["source"]) for r in rows} == {("speech", "fsdd")}
    spec = json.loads((root / "data/features/speech/spec.json").read_text())
    assert sum(spec["counts"]["test"].values()) == 300 and sum(spec["counts"]["train"].values()) == 2700
