"""Trust what is cached: damaged or crafted files in a real DVC project's cache stop the stage that reads them
with one line naming the file and how to restore it; nothing from a model file runs."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import copy_project, run
from attention_cnn.common import StageError
from attention_cnn.features.tfrecords import FeatureSpec, ShardedWriter, load_split, read_spec, serialize_example, write_spec

# ---------------------------------------------------------------- feature shards, in a plain folder (fast)


def write_toy(folder: Path, n: int = 40, per_shard: int = 16, side: int = 8) -> FeatureSpec:
    spec = FeatureSpec(dataset="toy", shape=[side, side, 1], storage_dtype="float32", class_names=["0", "1"])
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        spec.counts[split] = {"0": n // 2, "1": n - n // 2}
        with ShardedWriter(folder, spec, split, per_shard) as writer:
            for i in range(n):
                writer.write(serialize_example(rng.random((side, side, 1), dtype=np.float32) + 0.1, i % 2, i, i % 100, spec))
    write_spec(folder, spec)
    return read_spec(folder)


def damage(path: Path, how: str, count: int = 16) -> None:
    """Flip or zero ``count`` bytes in the middle of ``path`` (its size unchanged), even if it is read-only."""
    os.chmod(path, stat.S_IMODE(path.stat().st_mode) | stat.S_IWUSR)
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid:mid + count] = bytes(count) if how == "zero" else bytes(b ^ 0xFF for b in data[mid:mid + count])
    path.write_bytes(bytes(data))


def test_spec_records_every_shards_digest(tmp_path):
    from attention_cnn.common import sha256_file

    spec = write_toy(tmp_path / "f")
    names = spec.shards["train"] + spec.shards["test"]
    assert sorted(spec.checksums) == sorted(names) and len(names) == 6
    for name in names:
        assert spec.checksums[name] == {"sha256": sha256_file(tmp_path / "f" / name), "bytes": (tmp_path / "f" / name).stat().st_size}


@pytest.mark.parametrize("how", ["zero", "flip"])
def test_damaged_shard_is_one_line_naming_it(tmp_path, how):
    spec = write_toy(tmp_path / "f")
    good = [ex["feature"] for ex in load_split(tmp_path / "f", spec, "test").as_numpy_iterator()]
    shard = tmp_path / "f" / spec.shards["test"][1]
    damage(shard, how)
    with pytest.raises(StageError) as err:
        load_split(tmp_path / "f", spec, "test")
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{shard}: damaged feature shard"), message
    assert f"dvc checkout --relink {tmp_path / 'f'}" in message and "dvc repro -f featurize@toy" in message
    # the other split is intact and still reads
    assert len(list(load_split(tmp_path / "f", spec, "train"))) == 40
    assert len(good) == 40


def test_shard_of_other_size_is_named(tmp_path):
    spec = write_toy(tmp_path / "f")
    shard = tmp_path / "f" / spec.shards["train"][0]
    with open(shard, "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(StageError, match=r"damaged feature shard \(is \d+ bytes, spec.json recorded \d+\)"):
        load_split(tmp_path / "f", spec, "train")


def test_disk_full_while_writing_shards_is_one_line(tmp_path):
    """A real full file system: a 1 MiB tmpfs (root only; CI runs as root)."""
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("mounting a tmpfs needs root")
    try:
        with pytest.raises(StageError) as err:
            write_toy(mount / "f", n=200, per_shard=50, side=64)  # 16 kB per example
        message = str(err.value)
        assert "\n" not in message and "disk full while writing the train features" in message, message
        assert message.startswith(str(mount / "f" / "train-0000")) and "about" in message and "needed" in message
    finally:
        subprocess.run(["umount", str(mount)], check=True)


# ---------------------------------------------------------------- a real DVC project's cache (slow)


def cache_object(root: Path, out: str, relpath: str) -> Path:
    """The DVC cache file holding ``relpath`` inside the directory output ``out`` (per dvc.lock)."""
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    md5 = next(o["md5"] for s in lock["stages"].values() for o in s.get("outs", []) if o["path"] == out)
    cache = root / ".dvc" / "cache" / "files" / "md5"
    entries = json.loads((cache / md5[:2] / md5[2:]).read_text())
    file_md5 = next(e["md5"] for e in entries if e["relpath"] == relpath)
    return cache / file_md5[:2] / file_md5[2:]


def repro_fails_with_one_line(root: Path, stage: str, *needles: str) -> str:
    """``dvc repro -f -s stage`` fails with exactly one ``error:`` line (no traceback) holding every needle."""
    proc = run(["dvc", "repro", "-f", "-s", stage], root, check=False)
    text = proc.stdout + proc.stderr
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert proc.returncode != 0 and len(errors) == 1 and "Traceback" not in text, text[-3000:]
    assert all(n in errors[0] for n in needles), errors[0]
    return errors[0]


def put_in_cache(root: Path, out: str, relpath: str, data: bytes | None = None, how: str | None = None) -> Path:
    """Replace (``data``) or damage (``how``) a cached file, then check the output out from the cache."""
    obj = cache_object(root, out, relpath)
    if data is not None:
        os.chmod(obj, 0o644)
        obj.write_bytes(data)
    else:
        damage(obj, how)
    run(["dvc", "checkout", "--relink", "--force", out], root)
    return root / out / relpath


@pytest.mark.slow
def test_crafted_model_in_the_cache_runs_nothing(built_project, tmp_path):
    from test_safe_load import rewrite_config, subprocess_layer

    root = copy_project(built_project, tmp_path / "p")
    marker = tmp_path / "marker"
    model = root / "models/mnist/cnn/seed0/model.keras"
    evil = rewrite_config(model, tmp_path / "evil.keras", subprocess_layer(marker)).read_bytes()
    path = put_in_cache(root, "models/mnist/cnn/seed0", "model.keras", data=evil)
    assert path.read_bytes() == evil  # checked out from the cache as any teammate would get it
    repro_fails_with_one_line(root, "evaluate@mnist-cnn-0", "models/mnist/cnn/seed0/model.keras: refused",
                              "subprocess.run")
    assert not marker.exists()


@pytest.mark.slow
def test_damaged_files_in_the_cache_are_named(built_project, tmp_path):
    """Flipped bytes in a cached model and raw files, zeroed bytes in a training shard: each stage that reads
    one stops with one line naming it and how to restore it (the shard once trained without any error)."""
    root = copy_project(built_project, tmp_path / "p")
    put_in_cache(root, "models/mnist/cnn/seed0", "model.keras", how="flip")
    repro_fails_with_one_line(root, "evaluate@mnist-cnn-0", "models/mnist/cnn/seed0/model.keras: corrupt model file",
                              "dvc checkout --relink models/mnist/cnn/seed0")

    spec = read_spec(root / "data/features/speech")
    shard = spec.shards["train"][len(spec.shards["train"]) // 2]
    put_in_cache(root, "data/features/speech", shard, how="zero")
    repro_fails_with_one_line(root, "train@speech-cnn-0", f"data/features/speech/{shard}: damaged feature shard",
                              "dvc checkout --relink data/features/speech", "dvc repro -f featurize@speech")

    manifest = (root / "data/raw/speech/manifest.csv").read_text().splitlines()
    recording = manifest[1].split(",")[0]
    put_in_cache(root, "data/raw/speech", recording, how="flip")
    repro_fails_with_one_line(root, "featurize@speech", f"data/raw/speech/{recording}: raw file does not match",
                              "dvc repro -f fetch-speech")

    put_in_cache(root, "data/raw/mnist", "train-images-idx3-ubyte.gz", how="flip")
    repro_fails_with_one_line(root, "featurize@mnist", "data/raw/mnist/train-images-idx3-ubyte.gz: raw file does not",
                              "source.json")


@pytest.mark.slow
def test_disk_full_during_featurize_is_one_line(built_project, tmp_path):
    """featurize@mnist into a real 1 MiB file system mounted on data/features: one line with the path and the
    space needed, no traceback, nothing left behind."""
    root = copy_project(built_project, tmp_path / "p")
    features = root / "data" / "features"
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(features)], capture_output=True).returncode:
        pytest.skip("mounting a tmpfs needs root")
    try:
        line = repro_fails_with_one_line(root, "featurize@mnist", "disk full while writing the train features",
                                         "needed for this split")
        assert "data/features/.mnist." in line, line
        assert not any(features.iterdir()), list(features.iterdir())  # the temporary folder is gone
    finally:
        subprocess.run(["umount", str(features)], check=True)
