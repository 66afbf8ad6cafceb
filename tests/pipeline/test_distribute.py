"""tf.distribute in the train stage (issue #4): MirroredStrategy, ``train.strategy: auto``, multi-worker.

TensorFlow work runs in subprocesses: the two logical CPU devices must be configured before
TensorFlow initializes, and MultiWorkerMirroredStrategy needs one process per worker.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from attention_cnn.common import StageError
from attention_cnn.training.runtime import check_multi_worker, is_chief, task_name
from conftest import config

ROOT = Path(__file__).resolve().parents[2]
RESULT = "DISTRIBUTE_RESULT "

# Writes a small learnable feature folder (12x12x1, 10 classes: a bright patch whose place is the
# class) through attention_cnn.features.tfrecords, then trains the seed `cnn` (shrunk, no dropout) through
# attention_cnn.training.train.fit once with the default strategy and once with MirroredStrategy over two logical CPUs.
SCRIPT = r'''
import json, sys, time
from pathlib import Path
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

from attention_cnn.training.runtime import configure_tensorflow, select_strategy
configure_tensorflow(seed=0)
import keras
import numpy as np
from attention_cnn.features.tfrecords import (FeatureSpec, ShardedWriter, assign_folds, count_by_class, serialize_example,
                              write_spec)
from attention_cnn.training.train import fit

folder = Path(sys.argv[1])
folder.mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(0)
spec = FeatureSpec(dataset="mnist", shape=[12, 12, 1], storage_dtype="float32",
                   class_names=[str(i) for i in range(10)])
for split, n in (("train", 160), ("test", 40)):
    labels = np.arange(n) % 10
    x = rng.normal(0.0, 0.3, (n, 12, 12, 1)).astype(np.float32)
    for i, c in enumerate(labels):
        x[i, (c // 5) * 6:(c // 5) * 6 + 6, (c % 5) * 2:(c % 5) * 2 + 3, 0] += 1.0
    folds = assign_folds(labels)
    spec.counts[split] = count_by_class(labels, spec.class_names)
    with ShardedWriter(folder, spec, split, 64) as writer:   # several shards, as featurize writes them
        for i in range(n):
            writer.write(serialize_example(x[i], labels[i], i, folds[i], spec))
write_spec(folder, spec)

# 120 training examples (80 %), 40 for validation: batches of 8 split evenly over 2 replicas.
import attention_cnn
from attention_cnn.config import load_config
config = load_config(Path(attention_cnn.__file__).parents[1] / "params.yaml", {
    "train.epochs": 3, "train.batch_size": 8, "train.shuffle_buffer": 64, "train.validation_fraction": 0.2,
    "train.validate_on_test": False, "train.early_stopping.enabled": False, "train.resume": False,
    "train.mixed_precision": "float32", "models.cnn": {"filters": 4, "kernel_size": 3, "dense_units": 8,
                                                       "dropout": 0.0, "learning_rate": 0.002}})
out = {"logical_cpus": len(tf.config.list_logical_devices("CPU")), "gpus": len(tf.config.list_logical_devices("GPU"))}
for name in ("default", "mirrored"):
    keras.utils.set_random_seed(0)
    model, spec, rows, summary, _ = fit(folder, "mnist", "cnn", 0, config.train.model_copy(update={"strategy": name}),
                                        config.model("cnn"), verbose=0)
    out[name] = {"replicas": summary["num_replicas"], "rows": rows,
                 "weights": [w.ravel().tolist() for w in model.get_weights()]}
auto = select_strategy("auto")
out["auto"] = {"class": type(auto).__name__, "replicas": auto.num_replicas_in_sync,
               "is_default": auto is tf.distribute.get_strategy()}
print("DISTRIBUTE_RESULT " + json.dumps(out), flush=True)
'''


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def mirrored(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("distribute") / "features"
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(folder)], cwd=ROOT, capture_output=True, text=True,
                          env=_env(), timeout=300)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT)]
    assert proc.returncode == 0 and lines, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return {**json.loads(lines[-1][len(RESULT):]), "features": folder}


def test_mirrored_on_two_logical_cpus_matches_one_device(mirrored):
    one, two = mirrored["default"], mirrored["mirrored"]
    assert mirrored["logical_cpus"] == 2
    assert (one["replicas"], two["replicas"]) == (1, 2)
    # Same data order, same initial weights, gradients all-reduced over the two halves of each batch:
    # the trained weights agree up to float rounding (summation order). The learning rate is small enough
    # that training does not amplify that rounding (at 0.01 it grew from 1e-6 to 3e-4 in the third epoch).
    diffs = [max(abs(a - b) for a, b in zip(w1, w2)) for w1, w2 in zip(one["weights"], two["weights"])]
    assert max(diffs) < 2e-5, diffs
    # Validation loss is computed on the same examples with the same weights.
    for r1, r2 in zip(one["rows"], two["rows"]):
        assert r2[3] == pytest.approx(r1[3], rel=0.02), (one["rows"], two["rows"])
    assert one["rows"][-1][1] < one["rows"][0][1]  # the loss falls: a real training run, not a no-op


def test_auto_picks_the_default_strategy_on_this_machine(mirrored):
    # No GPU here (two logical CPUs do not count): `auto` must not distribute.
    assert mirrored["gpus"] == 0
    assert mirrored["auto"] == {"class": "_DefaultDistributionStrategy", "replicas": 1, "is_default": True}


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _train_cmd(params: Path, features: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "stages.train", "--params", str(params), "--dataset", "mnist", "--variant", "cnn",
            "--seed", "0", "--features", str(features), "--out", str(out / "model"),
            "--history", str(out / "history.csv"), "--summary", str(out / "summary.json"),
            "--live-dir", str(out / "live"), "--checkpoint-dir", str(out / "ckpt")]


def _params(tmp_path: Path, **train) -> Path:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["train"].update({"epochs": 2, "batch_size": 16, "shuffle_buffer": 64, "validation_fraction": 0.2, **train})
    params["models"]["cnn"].update({"filters": 4, "dense_units": 8, "dropout": 0.0})
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def test_two_workers_train_together_and_only_the_chief_writes(mirrored, tmp_path):
    """A real MultiWorkerMirroredStrategy run: two `python -m stages.train` processes on loopback."""
    params = _params(tmp_path, strategy="multi_worker")
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for index in (0, 1):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        procs.append(subprocess.Popen(_train_cmd(params, mirrored["features"], tmp_path / f"w{index}"), cwd=ROOT,
                                      env=_env(TF_CONFIG=tf_config), stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    logs = []
    try:
        for proc in procs:
            logs.append(proc.communicate(timeout=240)[0])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for proc, log in zip(procs, logs):
        assert proc.returncode == 0, log[-3000:]
    chief, worker = tmp_path / "w0", tmp_path / "w1"
    for name in ("model/model.keras", "model/config.json", "history.csv", "summary.json", "live/metrics.json"):
        assert (chief / name).is_file(), name
    assert json.loads((chief / "summary.json").read_text())["num_replicas"] == 2
    assert not worker.exists(), sorted(str(p) for p in worker.rglob("*"))  # not one file, not dvclive's folder
    assert "not the chief: nothing written" in logs[1]
    # Synchronous training: both workers saw the same (all-reduced) loss in every epoch.
    final = [[line for line in log.splitlines() if " - loss: " in line][-1].split(" - loss: ")[1][:6] for log in logs]
    assert final[0] == final[1], final


def test_multi_worker_without_tf_config_is_one_line(monkeypatch, tmp_path):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(StageError, match="train.strategy=multi_worker needs the TF_CONFIG environment variable"):
        check_multi_worker("multi_worker")
    # The stage says so in one line before loading data or TensorFlow (the features folder does not even exist).
    params = _params(tmp_path, strategy="multi_worker")
    proc = subprocess.run(_train_cmd(params, tmp_path / "missing", tmp_path / "out"), cwd=ROOT, capture_output=True,
                          text=True, env=_env(), timeout=120)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: train.strategy=multi_worker needs the TF_CONFIG"), proc.stderr
    assert not (tmp_path / "out").exists()


def test_unknown_strategy_and_bad_tf_config_are_one_line(monkeypatch):
    with pytest.raises(StageError, match="train.strategy must be one of auto, default, mirrored, multi_worker"):
        config({"train.strategy": "mirror"})
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(StageError, match="TF_CONFIG is not valid JSON"):
        is_chief()
    monkeypatch.setenv("TF_CONFIG", "[1, 2]")
    with pytest.raises(StageError, match="TF_CONFIG must be a JSON object"):
        check_multi_worker("multi_worker")


@pytest.mark.parametrize("tf_config, chief, name", [
    (None, True, "chief"),                                                             # one machine
    ("", True, "chief"),
    ({"cluster": {"worker": ["a:1", "b:1"]}}, True, "chief"),                          # no task: not a cluster member
    ({"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 0}}, True, "worker-0"),
    ({"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 1}}, False, "worker-1"),
    ({"cluster": {"chief": ["c:1"], "worker": ["a:1"]}, "task": {"type": "chief", "index": 0}}, True, "chief-0"),
    ({"cluster": {"chief": ["c:1"], "worker": ["a:1"]}, "task": {"type": "worker", "index": 0}}, False, "worker-0"),
    ({"cluster": {"worker": ["a:1"], "evaluator": ["e:1"]}, "task": {"type": "evaluator", "index": 0}}, False,
     "evaluator-0"),
])
def test_is_chief(monkeypatch, tf_config, chief, name):
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config if isinstance(tf_config, str) else json.dumps(tf_config))
    assert is_chief() is chief
    assert task_name() == name
