"""Faults: kill -9 at any moment, resume, deterministic outputs, safe model loading."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import ROOT, copy_project, run
from attention_cnn.features.tfrecords import FeatureSpec, ShardedWriter, assign_folds, serialize_example, write_spec

PY = sys.executable


def make_features(folder: Path, n_train: int, n_test: int = 20, shape=(12, 12, 1)) -> Path:
    """Random, learnable features (class = brightest quadrant) written with the real TFRecord writer."""
    rng = np.random.default_rng(0)
    spec = FeatureSpec(dataset="toy", shape=list(shape), storage_dtype="float32", class_names=["0", "1", "2", "3"])
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        labels = np.arange(n) % 4
        x = rng.random((n, *shape), dtype=np.float32) * 0.5
        for i, lab in enumerate(labels):
            r, c = divmod(int(lab), 2)
            x[i, r * 6:(r + 1) * 6, c * 6:(c + 1) * 6] += 0.5
        folds = assign_folds(labels)
        with ShardedWriter(folder, spec, split, 500) as writer:
            for i in range(n):
                writer.write(serialize_example(x[i], labels[i], i, folds[i], spec))
        spec.counts[split] = {str(c): int(np.sum(labels == c)) for c in range(4)}
    write_spec(folder, spec)
    return folder


def write_params(path: Path, epochs: int, resume: bool) -> Path:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["train"].update({"epochs": epochs, "batch_size": 32, "resume": resume,
                            "early_stopping": {"monitor": "accuracy", "patience": 100}})
    path.write_text(yaml.safe_dump(params))
    return path


def train_cmd(tmp: Path, features: Path, params: Path, tag: str, checkpoint: Path | None = None) -> list[str]:
    cmd = [PY, "-m", "stages.train", "--params", str(params), "--dataset", "toy", "--variant", "cnn", "--seed", "0",
           "--features", str(features), "--out", str(tmp / tag / "model"), "--history", str(tmp / tag / "history.csv"),
           "--summary", str(tmp / tag / "summary.json"), "--live-dir", str(tmp / tag / "live")]
    return cmd + (["--checkpoint-dir", str(checkpoint)] if checkpoint else [])


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_same_seed_gives_byte_identical_model_files(tmp_path):
    features = make_features(tmp_path / "feat", 64)
    params = write_params(tmp_path / "params.yaml", epochs=2, resume=False)
    for tag in ("a", "b"):
        run(train_cmd(tmp_path, features, params, tag), ROOT)
    for name in ("model.keras", "config.json", "class_names.json"):
        assert sha(tmp_path / "a" / "model" / name) == sha(tmp_path / "b" / "model" / name), name
    assert sorted(p.name for p in (tmp_path / "a" / "model").iterdir()) == ["class_names.json", "config.json",
                                                                            "model.keras"]


def start_group(cmd: list[str], cwd: Path, log: Path) -> subprocess.Popen:
    env = dict(os.environ, PATH=f"{Path(PY).parent}{os.pathsep}{os.environ['PATH']}", PYTHONUNBUFFERED="1")
    return subprocess.Popen(cmd, cwd=cwd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)


def kill9(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_resume_continues_after_kill_9(tmp_path):
    features = make_features(tmp_path / "feat", 3000, shape=(28, 28, 1))
    params = write_params(tmp_path / "params.yaml", epochs=5, resume=True)
    ckpt = tmp_path / "ckpt"
    state = ckpt / "state.json"
    proc = start_group(train_cmd(tmp_path, features, params, "run", ckpt), ROOT, tmp_path / "log1.txt")
    wait_for(lambda: state.is_file() and json.loads(state.read_text())["epoch"] >= 2 or proc.poll() is not None,
             300, "two epochs")
    assert proc.poll() is None, (tmp_path / "log1.txt").read_text()
    kill9(proc)
    done = json.loads(state.read_text())["epoch"]
    assert 2 <= done < 5 and not (tmp_path / "run" / "model").exists()  # nothing half-written in the output

    out = run(train_cmd(tmp_path, features, params, "run", ckpt), ROOT).stdout
    assert f"resume: continuing toy/cnn seed=0 after epoch {done}" in out
    history = (tmp_path / "run" / "history.csv").read_text().splitlines()
    assert [int(line.split(",")[0]) for line in history[1:]] == [1, 2, 3, 4, 5]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["epochs_run"] == 5 and summary["resumed_from_epoch"] == done
    assert not ckpt.exists()  # cleared after success: a later run starts fresh
    assert (tmp_path / "run" / "model" / "model.keras").is_file()
    # The resumed run trained on the batches the uninterrupted run trains on (not the first pass's again).
    run(train_cmd(tmp_path, features, params, "whole", tmp_path / "ckpt-whole"), ROOT)
    assert (tmp_path / "whole" / "history.csv").read_text().splitlines() == history


def test_checkpoint_from_other_settings_is_not_resumed(tmp_path):
    features = make_features(tmp_path / "feat", 64)
    ckpt = tmp_path / "ckpt"
    from attention_cnn.training.train import Checkpoint
    Checkpoint(ckpt, "x").folder.mkdir(parents=True)
    (ckpt / "state.json").write_text(json.dumps({"key": "other", "epoch": 1}))
    (ckpt / "state.keras").write_bytes(b"not used")
    params = write_params(tmp_path / "params.yaml", epochs=1, resume=True)
    out = run(train_cmd(tmp_path, features, params, "run", ckpt), ROOT).stdout
    assert "discarded: it has no fingerprint (written by older code); starting from scratch" in out


def test_models_load_in_safe_mode_only(tmp_path):
    """A .keras file with a Lambda layer (arbitrary code) is refused, not executed."""
    import keras
    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Lambda(lambda t: t * 2)(inputs))
    model.save(tmp_path / "evil.keras")
    from attention_cnn.config.params import Evaluate
    from attention_cnn.evaluation.evaluate import run_evaluation
    (tmp_path / "m").mkdir()
    (tmp_path / "evil.keras").rename(tmp_path / "m" / "model.keras")
    (tmp_path / "summary.json").write_text(json.dumps({"dataset": "t", "variant": "v", "seed": 0, "epochs_run": 1,
                                                     "train_time_s": 1.0}))
    features = make_features(tmp_path / "feat", 8)
    from attention_cnn.common import StageError
    with pytest.raises(StageError, match=r"model.keras: refused: .* names keras.layers.Lambda"):  # the allow-list
        run_evaluation(tmp_path / "m", features, tmp_path / "summary.json",
                       Evaluate(batch_size=8, latency_repeats=1, latency_warmup=1), attention=False)


def cached_out_hashes(root: Path) -> dict[str, str]:
    """md5 of every DVC-cached output recorded in dvc.lock (cache: false outputs carry timings)."""
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    cached_prefixes = ("data/", "models/")
    return {out["path"]: out["md5"] for stage in lock["stages"].values() for out in stage.get("outs", [])
            if out["path"].startswith(cached_prefixes)}


@pytest.mark.slow
def test_kill_9_during_repro_then_repro_reproduces_the_uninterrupted_outputs(built_project, tmp_path):
    root = copy_project(built_project, tmp_path / "p")
    reference = cached_out_hashes(built_project)
    assert len(reference) == 2 + 2 + 4  # raw, features, models
    # Kill while speech features are written (their temp folder exists), then in the middle of training
    # a model (fit has begun). Waiting for the work itself, not a fixed delay, keeps this
    # right on a fast or a loaded machine. --force makes DVC really execute the stage (no cache checkout).
    features = root / "data" / "features"
    kill_points = (
        ("featurize@speech", lambda log: any(features.glob(".speech.*.tmp"))),
        # the train stage prints this line just before model.fit (Keras prints no "Epoch 1/1" for one epoch)
        ("train@speech-cnn-0", lambda log: "train speech/cnn seed=0:" in log.read_text()),
    )
    for i, (stage, working) in enumerate(kill_points):
        log = tmp_path / f"log{i}.txt"
        proc = start_group(["dvc", "repro", "--force", "--single-item", stage], root, log)
        marker = f"Running stage '{stage}'"
        wait_for(lambda: (marker in log.read_text() and working(log)) or proc.poll() is not None, 600,
                 f"{stage} at work")
        assert proc.poll() is None, log.read_text()[-3000:]  # still running when killed
        kill9(proc)
        # Never a partial output: each output is either gone or still the complete previous one. The
        # one exception is by design: dvclive's folder (`.../live`) is a progress log that training
        # rewrites every epoch; it is recreated from scratch when the stage reruns, and DVC caches it
        # only when the stage completes.
        status = json.loads(run(["dvc", "status", "--json", stage], root).stdout or "{}")
        changed = {path: state for entry in status.get(stage, []) if isinstance(entry, dict)
                   for path, state in entry.get("changed outs", {}).items()}
        partial = {path: state for path, state in changed.items() if state == "modified" and not path.endswith("/live")}
        assert not partial, status
        out = run(["dvc", "repro", "--force", "--single-item", stage], root).stdout  # rerun to completion
        assert marker in out
    run(["dvc", "repro"], root)
    assert cached_out_hashes(root) == reference
    assert "up to date" in run(["dvc", "status"], root).stdout
    leftovers = [str(p) for d in ("data/raw", "data/features", "models") for p in (root / d).rglob(".*.tmp")]
    assert not leftovers, leftovers
