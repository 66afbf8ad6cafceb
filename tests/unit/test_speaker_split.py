"""data.speech.split: the speaker-independent split of FSDD (and of FSDD-style folders), its validation,
what source.json and the report say about it; small generated WAVs, plus one check on the real archive."""
from __future__ import annotations

import copy
import csv
import io
import json
import math
import struct
import sys
import tarfile
import wave
from collections import Counter
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]

from attention_cnn.data import speech as fetch_speech

from attention_cnn.data import fsdd

from attention_cnn.config import parse_config, read_yaml
from stages import fetch_speech as fetch_speech_stage

from attention_cnn.report import document, load
from attention_cnn.common import StageError

REAL_ARCHIVE = ROOT.parent / "shared/data/fsdd/free-spoken-digit-dataset-1.0.10.tar.gz"
CHECKSUMS = ROOT / fsdd.CHECKSUM_FILE
REAL_PARAMS = read_yaml(ROOT / "params.yaml")

SPEAKERS = ("alice", "bob", "carol")
DIGITS = (0, 1, 2)
TAKES = range(7)  # 0-4: official test, 5-6: official train


# --------------------------------------------------------------------------- helpers


def wav_bytes(digit: int, speaker: int, take: int, rate: int = 8000) -> bytes:
    """A short, distinct, audible 16-bit mono tone (so no two recordings are byte-identical)."""
    freq = 200.0 + 100 * digit + 37 * speaker + 11 * take
    n = rate // 10
    frames = b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * freq * i / rate))) for i in range(n))
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(frames)
    return buf.getvalue()


def recordings(speakers=SPEAKERS) -> dict[str, bytes]:
    return {f"{d}_{s}_{t}.wav": wav_bytes(d, i, t) for i, s in enumerate(speakers) for d in DIGITS for t in TAKES}


@pytest.fixture(scope="module")
def small_archive(tmp_path_factory) -> Path:
    """An FSDD-shaped archive: 3 speakers x 3 digits x takes 0..6 (63 recordings)."""
    path = tmp_path_factory.mktemp("archive") / "fsdd-small.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        for name, data in sorted(recordings().items()):
            info = tarfile.TarInfo(f"fsdd-small/recordings/{name}")
            info.size, info.mode, info.mtime = len(data), 0o644, 1_600_000_000
            tf.addfile(info, io.BytesIO(data))
    return path


def fsdd_params(archive: Path, split: str | None = "speakers", test_speakers=("bob",)) -> dict:
    speech = {"source": "fsdd", "url": str(archive), "sha256": None}
    if split is not None:
        speech["split"] = split
    if test_speakers is not None:
        speech["test_speakers"] = list(test_speakers)
    return {"data": {"speech": speech}}


def manifest(out: Path) -> list[dict[str, str]]:
    with (out / "manifest.csv").open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def data_config(params: dict):
    """The validated ``data`` section: the project's params.yaml with ``params['data']['speech']`` changed."""
    return parse_config(params_with(**params["data"]["speech"])).data


def fetch(params: dict, out: Path, checksums: Path | None = None) -> dict:
    """fetch_speech.fetch without the committed FSDD checksums (the small archive is not FSDD)."""
    return fetch_speech.fetch(data_config(params), out, checksums or out.parent / "no-checksums.sha256")


def params_with(**speech) -> dict:
    params = copy.deepcopy(REAL_PARAMS)
    params["data"]["speech"].update(speech)
    return params


def one_line_error(fn, *args) -> str:
    with pytest.raises(StageError) as info:
        fn(*args)
    message = str(info.value)
    assert "\n" not in message, message
    return message


# --------------------------------------------------------------------------- the split itself (pure)


def rows_of(names) -> list[dict]:
    return [{"file": f"recordings/{n}", "label": n.split("_")[0], "split": "train", "speaker": n.split("_")[1]}
            for n in names]


def test_split_by_speakers_holds_out_every_recording_of_the_test_speakers_and_nothing_else():
    rows = rows_of(sorted(recordings()))
    before = copy.deepcopy(rows)
    out = fetch_speech.split_by_speakers(rows, ["bob", "carol"])
    assert rows == before                                   # pure: the input rows are not changed
    assert [r["file"] for r in out] == [r["file"] for r in rows]
    assert {r["speaker"] for r in out if r["split"] == "train"} == {"alice"}
    assert all(r["split"] == "test" for r in out if r["speaker"] in ("bob", "carol"))
    assert Counter(r["split"] for r in out) == {"test": 42, "train": 21}
    assert fetch_speech.apply_split(rows, "official", ["bob"]) is rows


def test_unknown_speaker_names_the_key_and_lists_the_available_ones():
    rows = rows_of(sorted(recordings()))
    message = one_line_error(fetch_speech.split_by_speakers, rows, ["Bob"])
    assert message == ("params.yaml: unknown speaker 'Bob' in data.speech.test_speakers (did you mean 'bob'?); "
                       "available: alice, bob, carol")
    message = one_line_error(fetch_speech.split_by_speakers, rows, ["bob", "zed"])
    assert message == "params.yaml: unknown speaker 'zed' in data.speech.test_speakers; available: alice, bob, carol"


def test_holding_out_every_speaker_or_none_is_an_error():
    rows = rows_of(sorted(recordings()))
    message = one_line_error(fetch_speech.split_by_speakers, rows, ["carol", "alice", "bob"])
    assert "data.speech.test_speakers holds out every speaker (alice, bob, carol)" in message
    assert one_line_error(parse_config, params_with(source="fsdd", split="speakers", test_speakers=[])) == \
        "params.yaml: data.speech.test_speakers must not be empty"  # none: the config refuses it


def test_a_recording_without_a_speaker_is_an_error_under_the_speaker_split():
    rows = rows_of(["0_alice_0.wav", "1_bob_0.wav"]) + [
        {"file": "recordings/test/2/take.wav", "label": "2", "split": "test", "speaker": ""}]
    message = one_line_error(fetch_speech.apply_split, rows, "speakers", ["bob"])
    assert message.startswith("recordings/test/2/take.wav: no speaker in the file name (1 such file(s))")
    assert "data.speech.split: official" in message
    assert fetch_speech.apply_split(rows, "official", ["bob"]) == rows  # the official split needs no speakers


# --------------------------------------------------------------------------- params.yaml


def test_params_defaults_and_valid_values():
    assert REAL_PARAMS["data"]["speech"]["split"] == "official"  # the study's split stays the default
    assert REAL_PARAMS["data"]["speech"]["test_speakers"] == ["theo"]
    in_checksums = {fsdd.parse_fsdd_name(name)[1] for name in fsdd.read_checksum_file(CHECKSUMS)}
    assert in_checksums == set(fsdd.SPEAKERS)                    # the committed v1.0.10 recordings
    assert set(REAL_PARAMS["data"]["speech"]["test_speakers"]) <= set(fsdd.SPEAKERS)
    parse_config(params_with(source="fsdd", split="speakers", test_speakers=["theo", "george"]))
    parse_config(params_with(source="folder", split="speakers", test_speakers=["me"]))
    old = copy.deepcopy(REAL_PARAMS)          # an older params.yaml without the keys
    del old["data"]["speech"]["split"], old["data"]["speech"]["test_speakers"]
    speech = parse_config(old).data.speech
    assert speech.split == "official" and speech.test_speakers == ["theo"]


@pytest.mark.parametrize("speech, expected", [
    ({"split": "speaker"},
     "params.yaml: data.speech.split must be one of official, speakers, got 'speaker' (did you mean 'speakers'?)"),
    ({"test_speakers": []}, "params.yaml: data.speech.test_speakers must not be empty"),
    ({"test_speakers": "theo"}, "params.yaml: data.speech.test_speakers must be a list, got 'theo'"),
    ({"test_speakers": ["theo", "theo"]}, "params.yaml: data.speech.test_speakers lists 'theo' twice"),
    ({"test_speakers": ["theo", 3]}, "params.yaml: data.speech.test_speakers[1] must be a string, got 3"),
    ({"split": "speakers"},  # the default source is embedded
     "params.yaml: data.speech.split is 'speakers' but data.speech.source is 'embedded', whose test voices are "
     "never in training anyway; use data.speech.source fsdd or folder, or data.speech.split: official"),
])
def test_bad_params_are_one_line_naming_the_key(speech, expected):
    assert one_line_error(parse_config, params_with(**speech)) == expected


def test_fetch_refuses_the_speaker_split_for_the_embedded_source_before_any_work(tmp_path):
    params = {"data": {"speech": {"source": "embedded", "split": "speakers"}}}
    assert "data.speech.split is 'speakers'" in one_line_error(fetch, params, tmp_path / "out")  # the config refuses
    assert not (tmp_path / "out").exists()


def test_fetch_speech_stage_reruns_when_the_split_changes():
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]["fetch-speech"]
    assert "data.speech" in stage["params"]           # the whole section: split and test_speakers included
    report_deps = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]["report"]["deps"]
    assert "data/raw/speech/source.json" in report_deps  # so the report's split sentence follows


# --------------------------------------------------------------------------- fetch, small archive


def test_fsdd_speaker_split_end_to_end(small_archive, tmp_path):
    info = fetch(fsdd_params(small_archive, "speakers", ["bob"]), tmp_path / "out")
    rows = manifest(tmp_path / "out")
    assert len(rows) == 63
    train_speakers = {r["speaker"] for r in rows if r["split"] == "train"}
    assert "bob" not in train_speakers and train_speakers == {"alice", "carol"}
    bob = [r for r in rows if r["speaker"] == "bob"]
    assert len(bob) == 21 and all(r["split"] == "test" for r in bob)          # every take, 0-4 and 5-6
    assert {r["split"] for r in rows if r["speaker"] != "bob"} == {"train"}
    assert info["counts"] == {"train": 42, "test": 21}
    assert info["speakers"] == {"train": ["alice", "carol"], "test": ["bob"]}
    saved = json.loads((tmp_path / "out" / "source.json").read_text(encoding="utf-8"))
    assert saved == info
    assert saved["split"] == "speakers" and saved["test_speakers"] == ["bob"]
    assert saved["speakers_in_both_splits"] == []
    assert saved["split_description"] == (
        "speaker-independent (`data.speech.split: speakers`): every recording of the held-out speaker(s) bob is "
        "test (21), the other 2 speaker(s) train (42); no speaker in both train and test")
    assert sorted(p.name for p in (tmp_path / "out" / "recordings").iterdir()) == sorted(recordings())


def test_fsdd_official_split_is_unchanged_and_says_so(small_archive, tmp_path):
    for split, out in (("official", tmp_path / "a"), (None, tmp_path / "b")):  # given, and absent (default)
        info = fetch(fsdd_params(small_archive, split, None), out)
        rows = manifest(out)
        assert all((r["split"] == "test") == (int(r["file"].rsplit("_", 1)[1][:-4]) <= 4) for r in rows)
        assert info["counts"] == {"train": 18, "test": 45}
        assert info["split"] == "official" and info["test_speakers"] == []
        assert info["speakers_in_both_splits"] == list(SPEAKERS)
        assert info["split_description"] == ("official FSDD split (take index 0-4 of every digit and speaker is "
                                              "test); all 3 speaker(s) are in both train and test")
    assert (tmp_path / "a" / "manifest.csv").read_bytes() == (tmp_path / "b" / "manifest.csv").read_bytes()


def test_speaker_split_manifest_is_deterministic(small_archive, tmp_path):
    fetch(fsdd_params(small_archive, "speakers", ["carol", "alice"]), tmp_path / "one")
    fetch(fsdd_params(small_archive, "speakers", ["alice", "carol"]), tmp_path / "two")  # order does not matter
    for name in ("manifest.csv", "source.json"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
    rows = manifest(tmp_path / "one")
    assert [r["file"] for r in rows] == sorted(r["file"] for r in rows)
    assert {r["speaker"] for r in rows if r["split"] == "train"} == {"bob"}


def test_unknown_speaker_in_fetch_leaves_no_output(small_archive, tmp_path):
    message = one_line_error(fetch, fsdd_params(small_archive, "speakers", ["theo"]), tmp_path / "out")
    assert message == "params.yaml: unknown speaker 'theo' in data.speech.test_speakers; available: alice, bob, carol"
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left behind


def test_fsdd_speaker_split_cli_line(small_archive, tmp_path, capsys):
    params = params_with(**fsdd_params(small_archive, "speakers", ["bob"])["data"]["speech"])
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    assert fetch_speech_stage.main(["--params", str(tmp_path / "params.yaml"), "--checksums", str(tmp_path / "none"),
                              "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "42 train / 21 test recordings" in out and "(split: speakers, held-out speakers: bob)" in out


# --------------------------------------------------------------------------- fetch, a folder of FSDD-style names


def write_folder(root: Path, layout: dict[str, list[str]]) -> None:
    for split, names in layout.items():
        for name in names:
            d, s, t = name[:-4].split("_")
            path = root / split / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(wav_bytes(int(d), SPEAKERS.index(s) if s in SPEAKERS else 5, int(t)))


def test_folder_speaker_split_pools_train_and_test_folders(tmp_path):
    root = tmp_path / "mine"
    write_folder(root, {"train": ["0_alice_5.wav", "1_alice_6.wav", "0_bob_5.wav", "1_bob_6.wav"],
                        "test": ["0_alice_0.wav", "1_bob_1.wav", "0_carol_0.wav", "1_carol_1.wav"]})
    params = {"data": {"speech": {"source": "folder", "path": str(root), "labels": "prefix",
                                  "split": "speakers", "test_speakers": ["bob"]}}}
    info = fetch(params, tmp_path / "out")
    rows = manifest(tmp_path / "out")
    assert {(r["file"], r["split"]) for r in rows if r["speaker"] == "bob"} == {
        ("recordings/train/0_bob_5.wav", "test"), ("recordings/train/1_bob_6.wav", "test"),
        ("recordings/test/1_bob_1.wav", "test")}
    assert {r["speaker"] for r in rows if r["split"] == "train"} == {"alice", "carol"}
    assert info["counts"] == {"train": 5, "test": 3} and info["speakers_in_both_splits"] == []
    # the official split keeps the folders, and says that speakers are shared
    params["data"]["speech"]["split"] = "official"
    info = fetch(params, tmp_path / "official")
    assert info["counts"] == {"train": 4, "test": 4}
    assert info["speakers_in_both_splits"] == ["alice", "bob"]
    assert info["split_description"] == ("the train/ and test/ folders of `data.speech.path`; "
                                          "2 speaker(s) in both train and test (alice, bob)")


def test_folder_speaker_split_needs_speaker_names(tmp_path):
    root = tmp_path / "mine"
    write_folder(root, {"train": ["0_alice_5.wav", "1_bob_6.wav"], "test": ["0_bob_0.wav"]})
    (root / "test" / "1.wav").write_bytes(wav_bytes(1, 0, 0))
    params = {"data": {"speech": {"source": "folder", "path": str(root), "labels": "cyclic",
                                  "split": "speakers", "test_speakers": ["bob"]}}}
    message = one_line_error(fetch, params, tmp_path / "out")
    assert message.startswith("recordings/test/1.wav: no speaker in the file name")
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- the report


def test_report_states_the_split_per_data_set(tmp_path):
    (tmp_path / "speech").mkdir()
    text = "speaker-independent: theo held out"
    (tmp_path / "speech" / "source.json").write_text(json.dumps({"skipped": 0, "split_description": text}))
    info = load.load_input_info(tmp_path, ["speech", "mnist"])
    assert info["speech"].split == text and info["mnist"].split == ""
    assert document.input_lines(info["speech"])[0] == f"Train/test split: {text}."
    assert not any(line.startswith("Train/test split") for line in document.input_lines(info["mnist"]))


# --------------------------------------------------------------------------- the real archive


@pytest.mark.realdata
@pytest.mark.skipif(not REAL_ARCHIVE.is_file(), reason=f"real FSDD archive not available at {REAL_ARCHIVE}")
def test_real_fsdd_speaker_split_holds_out_theo(tmp_path):
    params = fsdd_params(REAL_ARCHIVE, "speakers", REAL_PARAMS["data"]["speech"]["test_speakers"])
    info = fetch_speech.fetch(data_config(params), tmp_path / "out", CHECKSUMS)   # every recording verified
    rows = manifest(tmp_path / "out")
    assert len(rows) == 3000 and info["counts"] == {"train": 2500, "test": 500}
    assert info["speakers"] == {"train": ["george", "jackson", "lucas", "nicolas", "yweweler"], "test": ["theo"]}
    assert {r["speaker"] for r in rows} == set(fsdd.SPEAKERS)
    assert all((r["split"] == "test") == (r["speaker"] == "theo") for r in rows)
    assert Counter(r["label"] for r in rows if r["split"] == "test") == {str(d): 50 for d in range(10)}
    assert info["speakers_in_both_splits"] == [] and info["duplicates_across_splits"] == 0
    again = fetch_speech.fetch(data_config(params), tmp_path / "again", CHECKSUMS)
    assert again == info
    assert (tmp_path / "out" / "manifest.csv").read_bytes() == (tmp_path / "again" / "manifest.csv").read_bytes()
