"""attention_cnn/runs.py: the run files train, evaluate and report exchange, written and read by one module."""
from __future__ import annotations

import json
import math
import re
import shlex
from pathlib import Path

import pytest
import yaml

from attention_cnn import runs
from attention_cnn.common import StageError

ROOT = Path(__file__).resolve().parents[2]


def metrics(**changes) -> dict:
    m = {"dataset": "mnist", "variant": "cnn", "seed": 3, "source": "idx", "features": "pixels 28x28",
         "params": 10, "model_size_bytes": 100, "epochs_run": 2.0, "train_time_s": 1, "test_time_ms": 2.5,
         "latency_ms_p50": 0.5, "latency_ms_p95": 0.9, "test_loss": 0.1, "test_accuracy": 0.9,
         "best_val_accuracy": 0.8, "num_test": 4, "class_names": ["0", "1"],
         "per_class": {"0": {"precision": 1.0, "recall": 0.5, "support": 2}, "1": {"precision": 0.5}}}
    m.update(changes)
    return m


def test_history_round_trip_and_errors(tmp_path):
    path = tmp_path / runs.HISTORY_FILE
    runs.write_history(path, [[1, 0.5, 0.7, "", ""], [2, 0.25, 0.8, "", ""]])  # no validation data
    assert path.read_text().splitlines()[0] == ",".join(runs.HISTORY_COLUMNS)
    df = runs.read_history(path)
    assert df["epoch"].tolist() == [1, 2] and df["epoch"].dtype == "int64"
    assert df["loss"].tolist() == [0.5, 0.25] and df["val_loss"].isna().all()
    path.write_text("epoch,loss,accuracy,val_loss,val_accuracy\n1,x,0.5,,\n")
    with pytest.raises(StageError, match=re.escape(str(path)) + ": column 'loss' has non-numeric values"):
        runs.read_history(path)
    path.write_text("epoch,loss,accuracy,val_loss,val_accuracy\n1.5,0.1,0.5,,\n")
    with pytest.raises(StageError, match="'epoch' must hold whole numbers"):
        runs.read_history(path)
    path.write_text("epoch,loss,accuracy,val_loss,val_accuracy\n")
    with pytest.raises(StageError, match="no epochs recorded"):
        runs.read_history(path)
    path.write_text("epoch,loss\n1,0.1\n")
    with pytest.raises(StageError, match="missing column\\(s\\) accuracy, val_loss, val_accuracy"):
        runs.read_history(path)
    with pytest.raises(StageError, match=re.escape(str(tmp_path / "nope.csv")) + ": not found; run `dvc repro`"):
        runs.read_history(tmp_path / "nope.csv")


def test_summary_round_trip_and_errors(tmp_path):
    path = tmp_path / runs.SUMMARY_FILE
    summary = {"dataset": "mnist", "variant": "cnn", "seed": 0, "epochs_run": 3, "train_time_s": 1.5,
               "best_val_accuracy": None}
    runs.write_summary(path, summary)
    assert runs.read_summary(path) == summary
    with pytest.raises(ValueError, match="train_time_s"):
        runs.write_summary(path, {k: v for k, v in summary.items() if k != "train_time_s"})
    path.write_text(json.dumps({"dataset": "mnist"}))
    with pytest.raises(StageError, match=re.escape(str(path)) + ": missing key\\(s\\) variant, seed"):
        runs.read_summary(path)
    path.write_text("[1]")
    with pytest.raises(StageError, match="expected a JSON object"):
        runs.read_summary(path)
    with pytest.raises(StageError, match="not found; run the train stage first"):
        runs.read_summary(tmp_path / "absent.json")


def test_metrics_are_checked_against_their_run(tmp_path):
    path = tmp_path / runs.METRICS_FILE
    runs.write_metrics(path, metrics())
    rec = runs.read_metrics(path, "mnist", "cnn", 3)
    assert rec["epochs_run"] == 2 and isinstance(rec["epochs_run"], int)
    assert rec["train_time_s"] == 1.0 and isinstance(rec["train_time_s"], float)
    assert rec["per_class"]["1"]["precision"] == 0.5 and math.isnan(rec["per_class"]["1"]["recall"])
    with pytest.raises(StageError, match="'seed' is 3 but the file's location says 4"):
        runs.read_metrics(path, "mnist", "cnn", 4)
    runs.write_metrics(path, metrics(best_val_accuracy=None))  # no validation data: allowed, NaN
    assert math.isnan(runs.read_metrics(path, "mnist", "cnn", 3)["best_val_accuracy"])
    runs.write_metrics(path, metrics(test_loss=None))  # every other number is required
    with pytest.raises(StageError, match="'test_loss' must be a number"):
        runs.read_metrics(path, "mnist", "cnn", 3)
    runs.write_metrics(path, metrics(params=1.5))
    with pytest.raises(StageError, match="'params' must be an integer"):
        runs.read_metrics(path, "mnist", "cnn", 3)
    with pytest.raises(ValueError, match="per_class"):
        runs.write_metrics(path, {k: v for k, v in metrics().items() if k != "per_class"})


def test_predictions_keep_class_names_as_text(tmp_path):
    path = tmp_path / runs.PREDICTIONS_FILE
    runs.write_predictions(path, [[7, "0", "1", 0.6], [9, "NA", "NA", 0.9]])
    df = runs.read_predictions(path)
    assert list(df.columns) == list(runs.PREDICTION_COLUMNS) and runs.probability_columns(df) == []
    assert df["actual"].tolist() == ["0", "NA"] and df["predicted"].tolist() == ["1", "NA"]


def test_predictions_carry_one_probability_column_per_class(tmp_path):
    path = tmp_path / runs.PREDICTIONS_FILE
    runs.write_predictions(path, [[7, "0", "1", 0.6, 0.4, 0.6], [9, "1", "1", 0.9, 0.1, 0.9]], ["0", "1"])
    df = runs.read_predictions(path)
    assert list(df.columns) == [*runs.PREDICTION_COLUMNS, "p_0", "p_1"]
    assert runs.probability_columns(df) == ["p_0", "p_1"] and df["p_1"].tolist() == [0.6, 0.9]


def _cmd_paths(stage: dict) -> dict[str, str]:
    """``{--option: value}`` of a dvc.yaml stage command, with the matrix item filled in."""
    cmd = " ".join(stage["cmd"].split()).replace("${item.dataset}", "D").replace("${item.variant}", "V")
    words = shlex.split(cmd.replace("${item.seed}", "7"))
    return {w: words[i + 1] for i, w in enumerate(words[:-1]) if w.startswith("--")}


def test_dvc_yaml_paths_are_the_run_folders():
    """The paths dvc.yaml gives train and evaluate are where the report looks (runs.run_dir + file names)."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    train, evaluate, report = (_cmd_paths(stages[name]) for name in ("train", "evaluate", "report"))
    train_root, eval_root = report["--train-dir"], report["--eval-dir"]
    assert train["--history"] == str(runs.run_dir(train_root, "D", "V", 7) / runs.HISTORY_FILE)
    assert train["--summary"] == str(runs.run_dir(train_root, "D", "V", 7) / runs.SUMMARY_FILE)
    assert evaluate["--train-summary"] == train["--summary"]
    assert evaluate["--metrics"] == str(runs.run_dir(eval_root, "D", "V", 7) / runs.METRICS_FILE)
    assert evaluate["--predictions"] == str(runs.run_dir(eval_root, "D", "V", 7) / runs.PREDICTIONS_FILE)
    assert evaluate["--attention-dir"] == str(runs.run_dir(eval_root, "D", "V", 7) / runs.ATTENTION_DIR)
