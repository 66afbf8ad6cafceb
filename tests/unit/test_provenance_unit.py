"""Fast checks of attention_cnn.provenance and the checkpoint fingerprint (the DVC-level tests: test_provenance)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from attention_cnn.common import StageError
from attention_cnn.provenance import ParamsGuard, check_recorded_params, same_value
from attention_cnn.training.checkpoints import data_digests, stale_reason

PARAMS = "train:\n  epochs: 3\n  seeds: [0]\nmodels:\n  cnn:\n    dense_units: 32\n  resnet:\n    filters: 16\n"


def test_guard_refuses_only_a_change_of_a_key_the_stage_reads(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(PARAMS)
    guard = ParamsGuard(path, ["train", "models.cnn"])
    path.write_text(PARAMS.replace("filters: 16", "filters: 8") + "# comment\n")
    guard.check("train@mnist-cnn-0")  # another variant's key: not this stage's business
    path.write_text(PARAMS.replace("epochs: 3", "epochs: 010"))
    with pytest.raises(StageError, match=r"params.yaml changed while train@mnist-cnn-0 ran: train.epochs is now 10, "
                                         r"this run used 3 \(another dvc exp run"):
        guard.check("train@mnist-cnn-0")
    path.write_text("train: [unclosed\n")
    with pytest.raises(StageError, match="now unreadable"):
        guard.check("train@mnist-cnn-0")


def test_values_compare_as_dvc_reads_them():
    assert same_value(10, 10.0) and same_value(5e-05, 0.00005) and same_value({"a": [1, 2]}, {"a": [1, 2]})
    assert not same_value("1:30", 90) and not same_value(True, 1) and not same_value({"a": 1}, {"a": 1, "b": 2})


def _run(tmp_path: Path, used: dict | None) -> Path:
    folder = tmp_path / "train" / "mnist" / "cnn" / "seed0"
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps({} if used is None else {"params_used": used}))
    lock = tmp_path / "dvc.lock"
    lock.write_text("schema: '2.0'\nstages:\n  train@mnist-cnn-0:\n    cmd: x\n    params:\n      params.yaml:\n"
                    "        train.epochs: 3\n        models.cnn:\n          dense_units: 32\n")
    return lock


def test_recorded_params_are_checked_leaf_by_leaf(tmp_path):
    lock = _run(tmp_path, {"train": {"epochs": 3}, "models": {"cnn": {"dense_units": 64, "pool_size": 2}}})
    with pytest.raises(StageError, match=r"^train@mnist-cnn-0: dvc.lock records models.cnn.dense_units=32 but the "
                                         r"run trained with 64 "):
        check_recorded_params(lock, tmp_path / "train", [("mnist", "cnn", 0)])


def test_recorded_params_match_and_older_summaries_are_refused(tmp_path):
    lock = _run(tmp_path / "a", {"train": {"epochs": 3.0}, "models": {"cnn": {"dense_units": 32, "pool_size": 2}}})
    check_recorded_params(lock, tmp_path / "a" / "train", [("mnist", "cnn", 0)])  # defaults beyond dvc.lock: fine
    lock = _run(tmp_path / "b", None)
    with pytest.raises(StageError, match="records no params_used"):
        check_recorded_params(lock, tmp_path / "b" / "train", [("mnist", "cnn", 0)])
    with pytest.raises(StageError, match="has no record of train@mnist-cnn-1"):
        check_recorded_params(lock, tmp_path / "b" / "train", [("mnist", "cnn", 1)])
    check_recorded_params(tmp_path / "none.lock", tmp_path / "b" / "train", [("mnist", "cnn", 0)])  # outside DVC


def test_checkpoint_fingerprint_names_what_changed(tmp_path):
    (tmp_path / "spec.json").write_text("{}")
    (tmp_path / "train-0.tfrecord").write_bytes(b"abc")
    saved = {"params": "p", "code": {"attention_cnn/models/cnn.py": "1"}, "data": data_digests(tmp_path)}
    assert stale_reason(saved, dict(saved)) is None
    (tmp_path / "train-0.tfrecord").write_bytes(b"abd")
    now = {"params": "q", "code": {"attention_cnn/models/cnn.py": "2"}, "data": data_digests(tmp_path)}
    assert stale_reason(saved, now) == ("params changed; code changed (attention_cnn/models/cnn.py); "
                                        "data changed (train-0.tfrecord)")
    assert stale_reason({"key": "old"}, now) == "it has no fingerprint (written by older code)"
