"""fetch stages: MNIST embedded split and IDX download/checksums; the three speech label rules."""
from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
from scipy.io import wavfile

from attention_cnn.data import mnist as fetch_mnist

from attention_cnn.data import speech as fetch_speech
from attention_cnn.data import synth
from attention_cnn.common import StageError, read_csv_dicts, sha256_file
from conftest import config


# ---------- MNIST ----------

@pytest.mark.slow  # builds the embedded MNIST split twice (make test-fast skips it)
def test_embedded_split_is_stratified_and_deterministic(tmp_path):
    params = config({"data.mnist.source": "embedded", "data.mnist.embedded_test_per_class": 100,
                     "data.mnist.split_seed": 0}).data.mnist
    info = fetch_mnist.fetch(params, tmp_path / "a")
    assert info["counts"] == {"train": 4000, "test": 1000}
    rows = read_csv_dicts(tmp_path / "a" / "manifest.csv")
    for split, per_class in (("train", 400), ("test", 100)):
        labels = [int(r["label"]) for r in rows if r["split"] == split]
        assert np.bincount(labels).tolist() == [per_class] * 10
    # no digit is in both splits
    train = {r["sha256"] for r in rows if r["split"] == "train"}
    assert not train & {r["sha256"] for r in rows if r["split"] == "test"}
    # byte-for-byte reproducible
    fetch_mnist.fetch(params, tmp_path / "b")
    for name in fetch_mnist.IDX_FILES:
        assert sha256_file(tmp_path / "a" / name) == sha256_file(tmp_path / "b" / name)
    images = fetch_mnist.read_idx_gz(tmp_path / "a" / "t10k-images-idx3-ubyte.gz")
    assert images.shape == (1000, 28, 28) and images.dtype == np.uint8 and images.max() > 200


def test_idx_encode_decode_round_trip_and_bad_bytes():
    images = np.arange(2 * 28 * 28, dtype=np.uint32).reshape(2, 28, 28).astype(np.uint8)
    np.testing.assert_array_equal(fetch_mnist.decode_idx(fetch_mnist.encode_idx(images)), images)
    labels = np.array([3, 7], np.uint8)
    np.testing.assert_array_equal(fetch_mnist.decode_idx(fetch_mnist.encode_idx(labels)), labels)
    with pytest.raises(StageError, match="not an IDX"):
        fetch_mnist.decode_idx(b"\x00\x00\x09\x99" + b"\x00" * 20, "x")
    with pytest.raises(StageError, match="expected 4 data bytes"):
        fetch_mnist.decode_idx(b"\x00\x00\x08\x01\x00\x00\x00\x04\x01", "x")


def make_idx_mirror(folder, n_train=30, n_test=10):
    """Small but valid IDX files (random digits) and their digests."""
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (n_train, 28, 28)).astype(np.uint8),
        "train-labels-idx1-ubyte.gz": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (n_test, 28, 28)).astype(np.uint8),
        "t10k-labels-idx1-ubyte.gz": (np.arange(n_test) % 10).astype(np.uint8),
    }
    digests = {}
    for name, array in arrays.items():
        (folder / name).write_bytes(gzip.compress(fetch_mnist.encode_idx(array)))
        digests[name] = sha256_file(folder / name)
    return digests


def test_idx_download_from_loopback_mirror_verifies_checksums(tmp_path, serve_dir):
    digests = make_idx_mirror(tmp_path / "mirror")
    base = serve_dir(tmp_path / "mirror")
    params = config({"data.mnist.source": "idx", "data.mnist.url": base, "data.mnist.path": str(tmp_path / "none"),
                     "data.mnist.sha256": digests}).data.mnist
    info = fetch_mnist.fetch(params, tmp_path / "out")
    assert info["counts"] == {"train": 30, "test": 10} and info["origin"] == base
    assert len(read_csv_dicts(tmp_path / "out" / "manifest.csv")) == 40


def test_idx_checksum_mismatch_fails_and_leaves_no_output(tmp_path, serve_dir):
    make_idx_mirror(tmp_path / "mirror")  # digests differ from the published MNIST ones
    params = config({"data.mnist.source": "idx", "data.mnist.url": [serve_dir(tmp_path / "mirror")],
                     "data.mnist.path": str(tmp_path / "x")}).data.mnist
    with pytest.raises(StageError, match="could not get MNIST IDX files") as err:
        fetch_mnist.fetch(params, tmp_path / "out")
    assert "\n" not in str(err.value) and "sha256" in str(err.value).lower()
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_idx_from_local_folder(tmp_path):
    digests = make_idx_mirror(tmp_path / "mine")
    params = config({"data.mnist.source": "idx", "data.mnist.path": str(tmp_path / "mine"),
                     "data.mnist.sha256": digests}).data.mnist
    assert fetch_mnist.fetch(params, tmp_path / "out")["origin"].startswith("folder")


def test_own_idx_files_with_other_digests_say_which_key_to_set(tmp_path):
    """A user's own files are not "deleted" and there is no URL: the line names the file and data.mnist.sha256."""
    make_idx_mirror(tmp_path / "mine")  # digests differ from the published MNIST ones
    params = config({"data.mnist.source": "idx", "data.mnist.path": str(tmp_path / "mine")}).data.mnist
    with pytest.raises(StageError) as err:
        fetch_mnist.fetch(params, tmp_path / "out")
    msg = str(err.value)
    assert "\n" not in msg and "train-images-idx3-ubyte.gz" in msg and "data.mnist.sha256" in msg
    assert "deleted" not in msg and "URL" not in msg
    assert (tmp_path / "mine" / "train-images-idx3-ubyte.gz").is_file() and not (tmp_path / "out").exists()


def test_unknown_mnist_source_and_unknown_digest_key():
    with pytest.raises(StageError, match="data.mnist.source must be one of embedded, idx, got 'kaggle'"):
        config({"data.mnist.source": "kaggle"})
    with pytest.raises(StageError, match="unknown key 'data.mnist.sha256.train.gz'"):
        config({"data.mnist.sha256": {"train.gz": "0" * 64}})


# ---------- speech: user folder and label rules ----------

def write_wav(path, seconds=0.25, rate=8000, freq=440.0):
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    wavfile.write(path, rate, (0.3 * np.sin(2 * np.pi * freq * t) * 32767).astype(np.int16))


def speech_params(root, labels):
    return config({"data.speech.source": "folder", "data.speech.path": str(root), "data.speech.labels": labels}).data


def test_labels_from_subfolders_with_study_style_capitalised_splits(tmp_path):
    root = tmp_path / "mine"
    for split in ("Train", "Test"):
        for label in ("yes", "no"):
            write_wav(root / split / label / "a.wav")
            write_wav(root / split / label / "b.WAV")
    info = fetch_speech.fetch(speech_params(root, "subfolder"), tmp_path / "out")
    rows = read_csv_dicts(tmp_path / "out" / "manifest.csv")
    assert info["counts"] == {"train": 4, "test": 4} and info["labels"] == ["no", "yes"]
    assert {(r["split"], r["label"]) for r in rows} == {(s, lab) for s in ("train", "test") for lab in ("yes", "no")}
    for r in rows:
        assert (tmp_path / "out" / r["file"]).is_file() and r["sha256"] == sha256_file(tmp_path / "out" / r["file"])
        assert float(r["duration_s"]) == pytest.approx(0.25) and r["sample_rate_hz"] == "8000"


def test_labels_from_fsdd_style_prefix(tmp_path):
    root = tmp_path / "mine"
    write_wav(root / "train" / "7_alice_0.wav")
    write_wav(root / "train" / "10_bob_3.wav")
    write_wav(root / "train" / "3_carol_2.wav")  # every test class needs train recordings
    write_wav(root / "test" / "03_alice_1.wav")
    fetch_speech.fetch(speech_params(root, "prefix"), tmp_path / "out")
    rows = {r["file"].split("/")[-1]: r for r in read_csv_dicts(tmp_path / "out" / "manifest.csv")}
    assert rows["7_alice_0.wav"]["label"] == "7" and rows["10_bob_3.wav"]["label"] == "10"
    assert rows["03_alice_1.wav"]["label"] == "3" and rows["03_alice_1.wav"]["speaker"] == "alice"


def test_prefix_rule_names_a_file_without_a_label(tmp_path):
    root = tmp_path / "mine"
    write_wav(root / "train" / "seven.wav")
    write_wav(root / "test" / "1_a_0.wav")
    with pytest.raises(StageError, match=r"seven\.wav: file name has no digits"):
        fetch_speech.fetch(speech_params(root, "prefix"), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cyclic_rule_is_the_studys_sorted_order_convention(tmp_path):
    root = tmp_path / "mine"
    for i in range(12):
        write_wav(root / "train" / f"clip{i:02d}.wav")
    write_wav(root / "test" / "z.wav")
    fetch_speech.fetch(speech_params(root, "cyclic"), tmp_path / "out")
    train = [r for r in read_csv_dicts(tmp_path / "out" / "manifest.csv") if r["split"] == "train"]
    assert [r["label"] for r in sorted(train, key=lambda r: r["file"])] == [str(i % 10) for i in range(12)]


def test_missing_split_folder_and_unknown_rule_are_clear(tmp_path):
    root = tmp_path / "mine"
    write_wav(root / "train" / "1_a_0.wav")
    with pytest.raises(StageError, match="no 'test' subfolder"):
        fetch_speech.fetch(speech_params(root, "prefix"), tmp_path / "out")
    write_wav(root / "test" / "1_a_1.wav")
    with pytest.raises(StageError, match="data.speech.labels must be one of"):
        speech_params(root, "alphabetical")
    with pytest.raises(StageError, match="does not exist"):
        fetch_speech.fetch(speech_params(tmp_path / "nowhere", "prefix"), tmp_path / "out")


def test_embedded_speech_source_writes_manifest_and_disjoint_speakers(tmp_path):
    params = config({"data.speech.source": "embedded", "data.speech.embedded": {
        "train_voices": 2, "test_voices": 1, "takes_per_voice": 1, "noise_snr_db": 30.0, "seed": 0}}).data
    info = fetch_speech.fetch(params, tmp_path / "out")
    assert info["counts"] == {"train": 20, "test": 10}
    assert not set(info["speakers"]["train"]) & set(info["speakers"]["test"])
    assert json.loads((tmp_path / "out" / "source.json").read_text())["source"] == "embedded"


# ---------- speech: synthetic voices in training ----------

def alice_and_bob(root):
    """A folder of real digits: alice's ten in train, bob's ten in test (FSDD-style names)."""
    for digit in range(10):
        write_wav(root / "train" / f"{digit}_alice_0.wav")
        write_wav(root / "test" / f"{digit}_bob_0.wav")
    return root


def test_extra_train_voices_go_to_train_only_and_leave_the_real_split_alone(tmp_path):
    root = alice_and_bob(tmp_path / "mine")
    data = config({"data.speech.source": "folder", "data.speech.path": str(root), "data.speech.labels": "prefix",
                   "data.speech.extra_train_voices": 2, "data.speech.embedded.noise_snr_db": 30.0}).data
    info = fetch_speech.fetch(data, tmp_path / "out")
    rows = read_csv_dicts(tmp_path / "out" / "manifest.csv")
    synthetic = [r for r in rows if r["file"].startswith("synthetic/recordings/")]
    assert len(synthetic) == 20 and {r["split"] for r in synthetic} == {"train"}
    assert sorted(int(r["label"]) for r in synthetic) == sorted(list(range(10)) * 2)
    assert {r["split"] for r in rows if r["speaker"] == "bob"} == {"test"} and len(rows) == 40
    assert info["counts"] == {"train": 30, "test": 10}
    assert info["extra_train_voices"] == 2 and info["extra_train_clips"] == 20
    assert info["speakers"] == {"train": ["alice"], "test": ["bob"]}
    assert "plus 20 clips of 2 synthetic espeak-ng voices in train only" in info["split_description"]
    for r in synthetic:
        assert r["sha256"] == sha256_file(tmp_path / "out" / r["file"]) and int(r["sample_rate_hz"]) > 8000
    # deterministic: the same voices and bytes again
    fetch_speech.fetch(data, tmp_path / "again")
    assert read_csv_dicts(tmp_path / "again" / "manifest.csv") == rows


def test_extra_train_voices_refused_for_non_digit_labels_and_embedded_source(tmp_path):
    root = tmp_path / "mine"
    for split in ("train", "test"):
        write_wav(root / split / "yes" / "a.wav")
    data = config({"data.speech.source": "folder", "data.speech.path": str(root), "data.speech.labels": "subfolder",
                   "data.speech.extra_train_voices": 1}).data
    with pytest.raises(StageError, match=r"extra_train_voices: the synthetic voices speak the digits 0-9, but the "
                                         r"recordings have other labels \(yes\)"):
        fetch_speech.fetch(data, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(StageError, match="data.speech.extra_train_voices adds synthetic voices to real recordings"):
        config({"data.speech.source": "embedded", "data.speech.extra_train_voices": 3})


def test_accented_voices_join_the_english_ones_in_train_and_are_named_and_counted(tmp_path):
    root = alice_and_bob(tmp_path / "mine")
    folder = {"data.speech.source": "folder", "data.speech.path": str(root), "data.speech.labels": "prefix",
              "data.speech.extra_train_voices": 1}
    data = config({**folder, "data.speech.extra_train_accented_voices": 2}).data
    info = fetch_speech.fetch(data, tmp_path / "out")
    rows = read_csv_dicts(tmp_path / "out" / "manifest.csv")
    synthetic = [r for r in rows if r["file"].startswith("synthetic/recordings/")]
    assert len(synthetic) == 30 and {r["split"] for r in synthetic} == {"train"}
    bases = {r["speaker"].split("_")[0] for r in synthetic}
    assert len(bases & set(synth.ACCENTS)) == 2 and len(bases - set(synth.ACCENTS)) == 1   # 2 accents, 1 English
    assert info["extra_train_voices"] == 1 and info["extra_train_accented_voices"] == 2
    assert info["extra_train_clips"] == 30 and info["origin"].endswith(" + 1 + 2 accented espeak-ng voices in train")
    assert ("plus 30 clips of 1 + 2 accented synthetic espeak-ng voices in train only (`data.speech.extra_train_voices` "
            "and `data.speech.extra_train_accented_voices`)") in info["split_description"]
    # the English voices are the same bytes with or without accented ones beside them
    alone = fetch_speech.fetch(config(folder).data, tmp_path / "alone")
    english = {r["file"]: r["sha256"] for r in read_csv_dicts(tmp_path / "alone" / "manifest.csv")
               if r["file"].startswith("synthetic/")}
    assert alone["extra_train_clips"] == 10 and {f: h for f, h in ((r["file"], r["sha256"]) for r in synthetic)
                                                  if f in english} == english


def test_accented_voices_refused_for_the_embedded_source():
    with pytest.raises(StageError, match="data.speech.extra_train_accented_voices adds synthetic voices to real "
                                         "recordings, but data.speech.source is 'embedded'"):
        config({"data.speech.source": "embedded", "data.speech.extra_train_accented_voices": 3})
