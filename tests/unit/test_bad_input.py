"""Robust to bad input (issue #6): every odd or broken input file, with data.on_bad_file error and skip.

Files are tiny and generated here: odd WAV encodings are written byte by byte with
``struct``; FLAC and Ogg Vorbis with tensorflow-io's encoders; MP3 with ``soundfile``
(skipped where it is not installed).
"""
from __future__ import annotations

import io

import json
import os
import re
import signal
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.io import wavfile

from conftest import config
from attention_cnn.data import audio
from attention_cnn.features import featurize
from attention_cnn.data import speech as fetch_speech
from attention_cnn.common import StageError, read_csv_dicts
from attention_cnn.config import parse_config, read_yaml
from attention_cnn.features.tfrecords import load_split

ROOT = Path(__file__).resolve().parents[2]
RATE = 8000
FREQ = 440.0
AMP = 0.5
FEATURES = config({f"features.speech.{k}": v for k, v in {
    "sample_rate_hz": 8000, "clip_samples": 4000, "frame_length": 320, "frame_step": 128, "fft_length": 512,
    "storage_dtype": "float32", "examples_per_shard": 64, "chunk_clips": 4}.items()}).features


# ----------------------------------------------------------------------------- file makers


def sine(rate: int = RATE, seconds: float = 0.25, freq: float = FREQ, channels: int = 1) -> np.ndarray:
    """float64 (samples,) or (samples, channels) sine of amplitude AMP."""
    t = np.arange(int(rate * seconds)) / rate
    x = AMP * np.sin(2 * np.pi * freq * t)
    return np.repeat(x[:, None], channels, axis=1) if channels > 1 else x


def wav_bytes(tag: int, channels: int, rate: int, bits: int, data: bytes, declared: int | None = None,
              extensible: bool = False) -> bytes:
    """A WAV file by hand: format tag (1 PCM, 3 float, 6 A-law), any width; ``declared`` fakes the data size."""
    align = channels * bits // 8
    if extensible:
        guid = struct.pack("<H", tag) + b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
        fmt = struct.pack("<HHIIHH", 0xFFFE, channels, rate, rate * align, align, bits)
        fmt += struct.pack("<HHI", 22, bits, 0) + guid
    else:
        fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * align, align, bits)
    size = len(data) if declared is None else declared
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", size) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def pcm_bytes(x: np.ndarray, bits: int) -> bytes:
    """Interleaved little-endian integer PCM of float samples in [-1, 1]; 8-bit is unsigned."""
    flat = np.asarray(x, np.float64).ravel()
    if bits == 8:
        return np.clip(np.round(flat * 128 + 128), 0, 255).astype(np.uint8).tobytes()
    scale = 2 ** (bits - 1)
    ints = np.clip(np.round(flat * scale), -scale, scale - 1).astype(np.int64)
    if bits == 24:
        return b"".join(struct.pack("<i", int(v))[:3] for v in ints)
    return ints.astype({16: "<i2", 32: "<i4"}[bits]).tobytes()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def write_wav(path: Path, freq: float = FREQ, rate: int = RATE, seconds: float = 0.25) -> Path:
    """A plain 16-bit mono WAV; ``freq`` makes its bytes unique."""
    path.parent.mkdir(parents=True, exist_ok=True)
    wavfile.write(path, rate, (sine(rate, seconds, freq) * 32767).astype(np.int16))
    return path


def encode_tfio(kind: str, x: np.ndarray, rate: int) -> bytes:
    import tensorflow as tf
    import tensorflow_io as tfio

    x2 = x if x.ndim == 2 else x[:, None]
    if kind == "flac":  # libsndfile's encoder: tfio's encode_flac once wrote a file its own decoder could not seek
        sf = pytest.importorskip("soundfile")
        buf = io.BytesIO()
        sf.write(buf, x2, rate, format="FLAC", subtype="PCM_16")
        return buf.getvalue()
    return tfio.audio.encode_vorbis(tf.constant(x2.astype(np.float32)), rate=rate).numpy()


def encode_mp3(x: np.ndarray, rate: int, path: Path) -> Path:
    sf = pytest.importorskip("soundfile")
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x, rate, format="MP3")
    return path


def good_folder(root: Path, classes=("0", "1")) -> Path:
    """train/<c>/a.wav, train/<c>/b.wav, test/<c>/a.wav with distinct contents (no duplicates)."""
    for i, c in enumerate(classes):
        write_wav(root / "train" / c / "a.wav", 300 + 10 * i)
        write_wav(root / "train" / c / "b.wav", 600 + 10 * i)
        write_wav(root / "test" / c / "a.wav", 900 + 10 * i)
    return root


def raw_params(root: Path, on_bad_file: str | None = "error", labels: str = "subfolder") -> dict:
    """The project's params.yaml (as loaded) with the speech source set to the folder ``root``."""
    p = read_yaml(ROOT / "params.yaml")
    p["data"]["speech"].update({"source": "folder", "path": str(root), "labels": labels})
    if on_bad_file is None:
        del p["data"]["on_bad_file"]
    else:
        p["data"]["on_bad_file"] = on_bad_file
    return p


def params(root: Path, on_bad_file: str | None = "error", labels: str = "subfolder"):
    """The ``data`` config fetch_speech.fetch takes."""
    return parse_config(raw_params(root, on_bad_file, labels)).data


def no_output(out: Path) -> bool:
    return not out.exists() and not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


@pytest.fixture
def watchdog():
    """Fail (instead of hanging the suite) if the body runs longer than 60 s."""
    def on_alarm(signum, frame):
        raise TimeoutError("fetch did not finish in 60 s (a symlink loop followed?)")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


# ----------------------------------------------------------------------------- bad files: error and skip

def _symlink_loop(root: Path) -> Path:
    d = root / "train" / "0"
    d.mkdir(parents=True, exist_ok=True)
    os.symlink("loop_b.wav", d / "loop_a.wav")
    os.symlink("loop_a.wav", d / "loop_b.wav")
    return d / "loop_a.wav"  # loop_b.wav is bad too; the first in sorted order is named


def _broken_link(root: Path) -> Path:
    (root / "train" / "0").mkdir(parents=True, exist_ok=True)
    os.symlink("does-not-exist.wav", root / "train" / "0" / "dangling.wav")
    return root / "train" / "0" / "dangling.wav"


def _fifo(root: Path) -> Path:
    (root / "train" / "0").mkdir(parents=True, exist_ok=True)
    os.mkfifo(root / "train" / "0" / "pipe.wav")
    return root / "train" / "0" / "pipe.wav"


def _bad_utf8_name(root: Path) -> Path:
    folder = root / "train" / "0"
    folder.mkdir(parents=True, exist_ok=True)
    name = os.fsencode(folder) + b"/caf\xe9.wav"  # Latin-1 'é': not UTF-8
    wavfile.write(name, RATE, (sine() * 32767).astype(np.int16))
    return Path(os.fsdecode(name))


def _truncated_flac(root: Path) -> Path:
    data = encode_tfio("flac", sine(22050, 0.5), 22050)
    return write(root / "train" / "0" / "cut.flac", data[: len(data) // 2])


BAD_CASES = {
    # name: (make the bad file under root -> its path, regex for the reason)
    "zero_length": (lambda r: write(r / "train" / "0" / "empty.wav", b""), r"empty file \(0 bytes\)"),
    "header_only": (lambda r: write(r / "train" / "0" / "hdr.wav", wav_bytes(1, 1, RATE, 16, b"")),
                    r"WAV header only"),
    "truncated_data": (lambda r: write(r / "train" / "0" / "cut.wav",
                                       wav_bytes(1, 1, RATE, 16, b"\x01\x00" * 100, declared=16000)),
                       r"truncated WAV data: the header declares 16000 bytes of samples but only 200 are present"),
    "random_bytes": (lambda r: write(r / "train" / "0" / "noise.wav",
                                     bytes(np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8))),
                     r"not a WAV file \(starts with bytes"),
    "text_file": (lambda r: write(r / "train" / "0" / "notes.wav", "just some notes, äöü\n".encode()),
                  r"a text file, not WAV audio"),
    "alaw_encoding": (lambda r: write(r / "train" / "0" / "alaw.wav", wav_bytes(6, 1, RATE, 8, b"\x55" * 800)),
                      r"not a readable WAV file \(Unknown wave file format: ALAW"),
    "nan_samples": (lambda r: write(r / "train" / "0" / "nan.wav",
                                    wav_bytes(3, 1, RATE, 32, struct.pack("<4f", 0, float("nan"), 0.1, 0))),
                    r"NaN or infinite"),
    "zero_rate": (lambda r: write(r / "train" / "0" / "rate0.wav", wav_bytes(1, 1, 0, 16, b"\x01\x00" * 50)),
                  r"invalid sample rate 0 Hz"),
    "random_flac": (lambda r: write(r / "train" / "0" / "x.flac", bytes(range(256)) * 8), r"not a FLAC file"),
    "truncated_flac": (_truncated_flac, r"FLAC"),
    "text_ogg": (lambda r: write(r / "train" / "0" / "x.ogg", b"hello\n"), r"a text file, not Ogg Vorbis audio"),
    "random_mp3": (lambda r: write(r / "train" / "0" / "x.mp3", bytes(np.random.default_rng(1).integers(
        0, 256, 3000, dtype=np.uint8))), r"MP3"),
    "unsupported_type": (lambda r: write(r / "train" / "0" / "voice.m4a", b"\x00\x00\x00\x20ftypM4A "),
                         r"unsupported audio type '\.m4a'; convert it to WAV"),
    "symlink_loop_file": (_symlink_loop, r"cannot read \(Too many levels of symbolic links\)"),
    "broken_symlink": (_broken_link, r"broken symbolic link"),
    "fifo": (_fifo, r"not a regular file"),
    "non_utf8_name": (_bad_utf8_name, r"file name is not valid UTF-8"),
    "no_class_subfolder": (lambda r: write_wav(r / "train" / "loose.wav", 1234), r"not inside a class subfolder"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_file_error_mode_stops_with_one_line_naming_the_file(case, tmp_path):
    root = good_folder(tmp_path / "mine")
    make, reason = BAD_CASES[case]
    bad = make(root)
    out = tmp_path / "out"
    with pytest.raises(StageError) as err:
        fetch_speech.fetch(params(root, "error"), out)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(audio.display_path(bad) + ": "), msg
    assert re.search(reason, msg), msg
    assert "data.on_bad_file: skip" in msg
    assert no_output(out)


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_file_skip_mode_lists_it_and_keeps_the_good_files(case, tmp_path, capsys):
    root = good_folder(tmp_path / "mine")
    make, reason = BAD_CASES[case]
    bad = make(root)
    out = tmp_path / "out"
    info = fetch_speech.fetch(params(root, "skip"), out)
    skipped = read_csv_dicts(out / "skipped.csv")
    assert [r["file"] for r in skipped][:1] == [audio.display_path(bad)]
    assert all(r["split"] == "train" for r in skipped)
    assert re.search(reason, skipped[0]["reason"]), skipped[0]["reason"]
    assert info["skipped"] == len(skipped) == (2 if case == "symlink_loop_file" else 1)
    assert json.loads((out / "source.json").read_text())["skipped"] == len(skipped)
    assert info["counts"] == {"train": 4, "test": 2}  # every good file kept
    rows = read_csv_dicts(out / "manifest.csv")
    assert len(rows) == 6 and all((out / r["file"]).is_file() for r in rows)
    assert sorted(p.name for p in (out / "recordings").rglob("*") if p.is_file()) == ["a.wav"] * 4 + ["b.wav"] * 2
    err = capsys.readouterr().err
    assert f"warning: skipped {len(skipped)} bad file(s)" in err and "skipped.csv" in err


def test_default_is_error_and_an_unknown_mode_is_a_clear_error(tmp_path):
    root = good_folder(tmp_path / "mine")
    write(root / "test" / "1" / "empty.wav", b"")
    with pytest.raises(StageError, match=r"empty\.wav: empty file"):
        fetch_speech.fetch(params(root, None), tmp_path / "out")  # no data.on_bad_file at all
    with pytest.raises(StageError, match="data.on_bad_file must be one of error, skip, got 'ignore'"):
        params(root, "ignore")
    assert no_output(tmp_path / "out")


def test_label_that_cannot_be_parsed_prefix_rule(tmp_path):
    root = tmp_path / "mine"
    write_wav(root / "train" / "3_ann_0.wav", 300)
    write_wav(root / "train" / "three_ann_1.wav", 310)
    write_wav(root / "test" / "3_bob_0.wav", 320)
    with pytest.raises(StageError, match=r"three_ann_1\.wav: file name has no digits before '_'"):
        fetch_speech.fetch(params(root, "error", "prefix"), tmp_path / "out")
    assert no_output(tmp_path / "out")
    info = fetch_speech.fetch(params(root, "skip", "prefix"), tmp_path / "out")
    assert info["skipped"] == 1 and info["labels"] == ["3"]
    assert "no digits" in read_csv_dicts(tmp_path / "out" / "skipped.csv")[0]["reason"]


def test_cyclic_labels_do_not_shift_when_a_file_is_skipped(tmp_path):
    root = tmp_path / "mine"
    for i in range(14):
        write_wav(root / "train" / f"clip{i:02d}.wav", 200 + 10 * i)
    write(root / "train" / "clip03.wav", b"broken")
    for i in range(10):
        write_wav(root / "test" / f"t{i}.wav", 400 + 10 * i)
    fetch_speech.fetch(params(root, "skip", "cyclic"), tmp_path / "out")
    train = {Path(r["file"]).name: r["label"] for r in read_csv_dicts(tmp_path / "out" / "manifest.csv")
             if r["split"] == "train"}
    assert "clip03.wav" not in train
    assert train == {f"clip{i:02d}.wav": str(i % 10) for i in range(14) if i != 3}


# ----------------------------------------------------------------------------- odd but valid encodings


def _wav_case(bits: int, tag: int = 1, channels: int = 1, rate: int = RATE, extensible: bool = False):
    def make(path: Path) -> Path:
        x = sine(rate, 0.25, channels=channels)
        if tag == 3:
            data = x.astype("<f4" if bits == 32 else "<f8").tobytes()
        else:
            data = pcm_bytes(x, bits)
        return write(path.with_suffix(".wav"), wav_bytes(tag, channels, rate, bits, data, extensible=extensible))
    return make


GOOD_CASES = {
    # name: (make(path) -> path, expected rate, max abs error against the float sine; None: lossy, check pitch)
    "pcm8_unsigned": (_wav_case(8), RATE, 1 / 128),
    "pcm16": (_wav_case(16), RATE, 1 / 2 ** 15),
    "pcm24": (_wav_case(24), RATE, 1 / 2 ** 23),
    "pcm24_extensible": (_wav_case(24, extensible=True), RATE, 1 / 2 ** 23),
    "pcm32": (_wav_case(32), RATE, 1 / 2 ** 30),
    "float32": (_wav_case(32, tag=3), RATE, 1e-7),
    "float64": (_wav_case(64, tag=3), RATE, 1e-7),
    "stereo16": (_wav_case(16, channels=2), RATE, 1 / 2 ** 15),
    "rate44100": (_wav_case(16, rate=44100), 44100, 1 / 2 ** 15),
    "rate48000_stereo24": (_wav_case(24, channels=2, rate=48000), 48000, 1 / 2 ** 23),
    "flac22050": (lambda p: write(p.with_suffix(".flac"), encode_tfio("flac", sine(22050), 22050)), 22050, 1 / 2 ** 14),
    "ogg16000_stereo": (lambda p: write(p.with_suffix(".ogg"), encode_tfio("vorbis", sine(16000, channels=2), 16000)),
                        16000, None),
    "ogg44100": (lambda p: write(p.with_suffix(".ogg"), encode_tfio("vorbis", sine(44100), 44100)), 44100, None),
    "mp3_16000": (lambda p: encode_mp3(sine(16000), 16000, p.with_suffix(".mp3")), 16000, None),
}


def dominant_hz(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * rate / len(x))


@pytest.mark.parametrize("case", sorted(GOOD_CASES))
def test_every_supported_encoding_decodes_to_the_same_float_mono_signal(case, tmp_path):
    make, rate, tol = GOOD_CASES[case]
    path = make(tmp_path / "clip")
    samples, got_rate = audio.read_audio(path)
    assert got_rate == rate and samples.dtype == np.float32 and samples.ndim == 1
    ref = sine(rate)
    if tol is not None:  # lossless: sample for sample
        assert len(samples) == len(ref)
        np.testing.assert_allclose(samples, ref, atol=tol * 1.01 + 1e-7)
    else:  # lossy: duration, pitch and level
        assert abs(len(samples) - len(ref)) <= rate // 10
        assert abs(dominant_hz(samples, rate) - FREQ) < 10
        assert 0.3 < np.abs(samples).max() < 0.7


def test_compressed_suffixes_are_supported_because_they_decode():
    assert set(audio.AUDIO_SUFFIXES) == {".wav", ".flac", ".ogg", ".mp3"}


def test_without_tensorflow_io_a_compressed_file_is_a_clear_error(tmp_path, monkeypatch):
    path = write(tmp_path / "a.flac", encode_tfio("flac", sine(), RATE))
    monkeypatch.setitem(sys.modules, "tensorflow_io", None)  # import fails as if it were not installed
    with pytest.raises(audio.BadFileError, match=r"a\.flac: cannot decode FLAC: tensorflow-io is not usable here "
                                                 r".*convert the file to WAV"):
        audio.read_audio(path)


THREADED_DECODE = """
import sys, threading
from attention_cnn.data import audio
files = sys.argv[1:]
errors = []
def run(i):
    try:
        for k in range(200):
            audio.read_audio(files[(i + k) % len(files)])
    except Exception as exc:
        errors.append(str(exc))
threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
for t in threads: t.start()
for t in threads: t.join()
print(errors[0] if errors else "decoded")
"""


@pytest.mark.slow  # a fresh Python with TensorFlow: a decoder that is not thread-safe aborts the process
def test_compressed_files_decode_from_several_threads_at_once(tmp_path):
    """featurize reads files from worker threads; tensorflow-io's decoders, run side by side, once aborted the
    process ('Check failed: dtype() == expected_dtype') or reported a good file as corrupt ('unable to seek')."""
    x = sine(22050)
    files = [write(tmp_path / "a.flac", encode_tfio("flac", x, 22050)),
             write(tmp_path / "b.ogg", encode_tfio("vorbis", np.stack([x, x], 1), 22050)),
             encode_mp3(x, 22050, tmp_path / "c.mp3")]
    done = subprocess.run([sys.executable, "-c", THREADED_DECODE, *map(str, files)], capture_output=True, text=True,
                          timeout=600, cwd=Path(__file__).resolve().parents[2],
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert done.returncode == 0 and done.stdout.strip() == "decoded", done.stdout[-500:] + done.stderr[-2000:]


def test_featurize_on_kept_files_resamples_mixes_cuts_and_counts(tmp_path, capsys):
    """44.1/48 kHz, stereo, 8/24-bit, float, FLAC, Ogg, a long clip and a silent clip: all featurized at 8 kHz."""
    root = tmp_path / "mine"
    for i, case in enumerate(("rate44100", "rate48000_stereo24", "pcm8_unsigned", "float32", "flac22050",
                              "ogg16000_stereo")):
        GOOD_CASES[case][0](root / "train" / "tone" / case)
    write(root / "train" / "tone" / "long.wav", wav_bytes(1, 1, RATE, 16, pcm_bytes(sine(RATE, 1.0), 16)))
    write(root / "train" / "quiet" / "silence.wav", wav_bytes(1, 1, RATE, 16, b"\x00\x00" * 2000))
    write(root / "train" / "quiet" / "hush.wav", wav_bytes(3, 1, RATE, 32, np.zeros(2000, "<f4").tobytes()))
    write(root / "test" / "tone" / "t.wav", wav_bytes(1, 2, 48000, 24, pcm_bytes(sine(48000, 0.3, channels=2), 24)))
    write(root / "test" / "quiet" / "s.wav", wav_bytes(1, 1, RATE, 8, b"\x80" * 1000))
    info = fetch_speech.fetch(params(root, "error"), tmp_path / "raw")
    assert info["counts"] == {"train": 9, "test": 2} and info["skipped"] == 0 and info["silent"] == 3
    err = capsys.readouterr().err
    assert "warning: 3 silence-only recording(s) kept" in err and "recordings/train/quiet/hush.wav" in err
    rates = {Path(r["file"]).name: int(r["sample_rate_hz"]) for r in read_csv_dicts(tmp_path / "raw/manifest.csv")}
    assert rates["rate44100.wav"] == 44100 and rates["rate48000_stereo24.wav"] == 48000

    spec = featurize.featurize("speech", tmp_path / "raw", tmp_path / "feat", FEATURES, progress=False)
    assert spec.counts == {"train": {"quiet": 2, "tone": 7}, "test": {"quiet": 1, "tone": 1}}
    assert spec.stats["clips_cut"] == 1 and spec.stats["clips_padded"] == 10  # long.wav: 8000 > 4000 samples
    assert "1 of 11 clips are longer than features.speech.clip_samples" in capsys.readouterr().err
    # every tone clip, whatever its rate, width or channels, peaks at 440 Hz after resampling to 8 kHz
    peak_bin = round(FREQ / 8000 * 512)
    tone = spec.class_names.index("tone")
    for split in ("train", "test"):
        for ex in load_split(tmp_path / "feat", spec, split):
            feats = ex["feature"].numpy()[..., 0]
            if int(ex["label"]) == tone:
                assert abs(int(np.argmax(feats.mean(axis=0))) - peak_bin) <= 1
            else:
                assert float(np.abs(feats).max()) < 1e-3  # silence stays silence


# ----------------------------------------------------------------------------- classes, splits, duplicates


def test_class_with_no_files(tmp_path, capsys):
    root = good_folder(tmp_path / "mine", classes=("0", "1", "2"))
    (root / "train" / "7").mkdir()  # an empty class folder in both splits: not a class
    (root / "test" / "7").mkdir()
    for f in (root / "test" / "2").iterdir():  # class 2: train only
        f.unlink()
    info = fetch_speech.fetch(params(root, "error"), tmp_path / "out")
    assert info["labels"] == ["0", "1", "2"]
    err = capsys.readouterr().err
    assert "class(es) 2 have train recordings but no test recordings" in err
    assert "3 class folder(s) hold no audio files" in err  # train/7, test/2 and test/7
    assert str(root / "train" / "7") in err and str(root / "test" / "2") in err
    # a class in test with no train recordings: the model could never predict it
    for f in (root / "train" / "1").iterdir():
        f.unlink()
    with pytest.raises(StageError, match="class\\(es\\) 1 have test recordings but no train recordings"):
        fetch_speech.fetch(params(root, "error"), tmp_path / "out2")
    assert no_output(tmp_path / "out2")


def test_class_left_without_train_files_by_skipping_is_an_error_that_says_so(tmp_path):
    root = good_folder(tmp_path / "mine")
    for f in (root / "train" / "1").iterdir():
        f.write_bytes(b"")
    with pytest.raises(StageError, match=r"class\(es\) 1 have test recordings but no train recordings "
                                         r"\(2 bad file\(s\) were skipped\)"):
        fetch_speech.fetch(params(root, "skip"), tmp_path / "out")
    assert no_output(tmp_path / "out")


def test_empty_split(tmp_path):
    root = good_folder(tmp_path / "mine")
    for f in (root / "test").rglob("*.wav"):
        f.write_bytes(b"RIFF")
    with pytest.raises(StageError, match=r"produced no test recordings left after skipping 2 bad file\(s\)"):
        fetch_speech.fetch(params(root, "skip"), tmp_path / "out")
    assert no_output(tmp_path / "out")
    for f in (root / "test").rglob("*.wav"):
        f.unlink()
    (root / "test" / "README.txt").write_text("nothing here yet")
    with pytest.raises(StageError, match="no audio files .* found for split 'test'"):
        fetch_speech.fetch(params(root, "skip"), tmp_path / "out")
    assert no_output(tmp_path / "out")


def test_duplicate_recordings_across_train_and_test_warn(tmp_path, capsys):
    root = good_folder(tmp_path / "mine")
    (root / "test" / "1" / "copy.wav").write_bytes((root / "train" / "1" / "b.wav").read_bytes())
    info = fetch_speech.fetch(params(root, "error"), tmp_path / "out")
    assert info["duplicates_across_splits"] == 1
    assert json.loads((tmp_path / "out" / "source.json").read_text())["duplicates_across_splits"] == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if "byte-identical" in line]
    assert lines == ["warning: 1 test recording(s) are byte-identical to train recordings, so test accuracy may "
                     "be optimistic (first: recordings/test/1/copy.wav = recordings/train/1/b.wav)"]


def test_non_ascii_file_and_class_names(tmp_path):
    root = tmp_path / "mine"
    write_wav(root / "train" / "fünf" / "Zoë_ß.wav", 300)
    write_wav(root / "train" / "fünf" / "b.wav", 310)
    write_wav(root / "train" / "七" / "録音.wav", 320)
    write_wav(root / "test" / "fünf" / "été.wav", 330)
    write_wav(root / "test" / "七" / "テスト.wav", 340)
    info = fetch_speech.fetch(params(root, "error"), tmp_path / "raw")
    assert info["labels"] == ["fünf", "七"]
    text = (tmp_path / "raw" / "manifest.csv").read_bytes().decode("utf-8")
    assert "recordings/train/七/録音.wav" in text and "recordings/test/fünf/été.wav" in text
    rows = read_csv_dicts(tmp_path / "raw" / "manifest.csv")
    assert all((tmp_path / "raw" / r["file"]).is_file() for r in rows)
    spec = featurize.featurize("speech", tmp_path / "raw", tmp_path / "feat", FEATURES, progress=False)
    assert spec.class_names == ["fünf", "七"] and spec.counts["test"] == {"fünf": 1, "七": 1}


def test_symlink_loops_never_hang_and_file_links_are_followed(tmp_path, capsys, watchdog):
    root = good_folder(tmp_path / "mine")
    outside = write_wav(tmp_path / "elsewhere" / "real.wav", 1500)
    write_wav(tmp_path / "elsewhere" / "sub" / "other.wav", 1600)
    os.symlink(outside, root / "train" / "0" / "linked.wav")          # a link to a file: followed
    os.symlink(tmp_path / "elsewhere", root / "train" / "0" / "more")  # a link to a folder: not followed
    os.symlink("..", root / "train" / "0" / "up")                      # folder loops
    os.symlink(".", root / "test" / "1" / "self")
    os.symlink(root, root / "test" / "0" / "root")
    info = fetch_speech.fetch(params(root, "error"), tmp_path / "out")
    assert info["counts"] == {"train": 5, "test": 2}
    rows = {r["file"]: r for r in read_csv_dicts(tmp_path / "out" / "manifest.csv")}
    linked = tmp_path / "out" / "recordings/train/0/linked.wav"
    assert "recordings/train/0/linked.wav" in rows and linked.is_file() and not linked.is_symlink()
    assert linked.read_bytes() == outside.read_bytes()
    assert not any("other.wav" in f for f in rows)
    err = capsys.readouterr().err
    assert "4 symbolic link(s) to folders not followed" in err


# ----------------------------------------------------------------------------- other sources, the CLI


def test_embedded_and_fsdd_rows_are_validated_the_same_way(tmp_path):
    """check_rows (used for the embedded and fsdd sources) decodes every written file."""
    out = tmp_path / "raw"
    write_wav(out / "recordings" / "1_a_5.wav", 300)
    write(out / "recordings" / "2_a_5.wav", b"RIFF\x00\x00")
    write(out / "recordings" / "3_a_5.wav", wav_bytes(1, 1, RATE, 16, b"\x00\x00" * 800))
    rows = [{"file": f"recordings/{d}_a_5.wav", "split": "train"} for d in (1, 2, 3)]
    with pytest.raises(StageError, match=r"recordings/2_a_5\.wav: not a WAV file"):
        fetch_speech.check_rows(rows, out, fetch_speech.BadFiles("error"), fetch_speech.Notes())
    bad, notes = fetch_speech.BadFiles("skip"), fetch_speech.Notes()
    kept = fetch_speech.check_rows(rows, out, bad, notes)
    assert [r["file"] for r in kept] == ["recordings/1_a_5.wav", "recordings/3_a_5.wav"]
    assert bad.skipped[0][:2] == ("recordings/2_a_5.wav", "train")
    assert not (out / "recordings" / "2_a_5.wav").exists() and notes.silent == ["recordings/3_a_5.wav"]


def _cli(tmp_path: Path, on_bad_file: str, bad_name: str = "zz_broken.wav") -> subprocess.CompletedProcess:
    root = good_folder(tmp_path / "mine")
    write(root / "train" / "1" / bad_name, bytes(range(200)))
    # the stage validates the whole file, so start from the project's params.yaml
    (tmp_path / "params.yaml").write_text(json.dumps(raw_params(root, on_bad_file)), encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "stages.fetch_speech", "--params", str(tmp_path / "params.yaml"),
                           "--out", str(tmp_path / "out")], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.slow  # starts the stage in a fresh Python per file (make test-fast skips it)
@pytest.mark.parametrize("bad_name,reason", [("zz_broken.wav", "not a WAV file"),
                                             ("zz_broken.flac", "not a FLAC file")])  # no TensorFlow log noise
def test_cli_bad_file_is_one_error_line_without_traceback(tmp_path, bad_name, reason):
    proc = _cli(tmp_path, "error", bad_name)
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and f"{bad_name}: {reason}" in lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert no_output(tmp_path / "out")


def test_cli_skip_reports_the_count(tmp_path):
    proc = _cli(tmp_path, "skip")
    assert proc.returncode == 0, proc.stderr
    assert "1 bad file(s) skipped" in proc.stdout
    assert proc.stderr.startswith("warning: skipped 1 bad file(s)") and "Traceback" not in proc.stderr
    assert read_csv_dicts(tmp_path / "out" / "skipped.csv")[0]["file"].endswith("zz_broken.wav")
