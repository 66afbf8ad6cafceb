"""predict: classify audio files (speech models) or PNG images (MNIST models) with an exported model.

``python -m stages.predict --model exports/speech/cnn/seed0 FILE_OR_FOLDER... [--csv out.csv]`` prints
one line per file, ``path<TAB>label<TAB>probability``, in the order given (folders: their files sorted, walked
recursively). Audio is read by :func:`attention_cnn.data.audio.read_audio` (WAV of any PCM or float
encoding, FLAC, Ogg Vorbis, MP3; mono or stereo; any rate), as the fetch stage reads it, and goes through
the SavedModel's ``waveform`` signature (resampled, cut or padded and transformed as featurize does). PNG
images are converted to 8-bit grey and must be 28 x 28 pixels, white digit on black as MNIST.

A file that cannot be used gets one line on stderr, ``error: <file>: <reason>`` (the reasons the fetch
stage gives), and the others go on; the exit status is 1 when any file failed. ``--csv`` writes every file
with columns ``path,label,probability,error``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from attention_cnn.common import StageError, write_csv_rows
from attention_cnn.data.audio import (AUDIO_SUFFIXES, UNSUPPORTED_AUDIO_SUFFIXES, BadFileError, _looks_like_text,
                                      display_path, read_audio)

IMAGE_SUFFIXES = (".png",)
# Images people have that this command does not read: reported, not silently passed over in a folder.
UNSUPPORTED_IMAGE_SUFFIXES = (".bmp", ".gif", ".jpeg", ".jpg", ".tif", ".tiff", ".webp")
CSV_HEADER = ["path", "label", "probability", "error"]


def read_png(path: str | os.PathLike, shape: tuple[int, int]) -> np.ndarray:
    """A PNG file -> uint8 grey pixels of ``shape``; :class:`BadFileError` with a one-line reason otherwise."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise BadFileError(path, f"unsupported image type '{path.suffix}'; convert it to PNG")
    try:
        with open(path, "rb") as fh:
            head = fh.read(512)
            fh.seek(0)
            with Image.open(fh, formats=["PNG"]) as image:
                image.load()
                pixels = np.asarray(image.convert("L"))
    except FileNotFoundError:
        raise BadFileError(path, "broken symbolic link" if path.is_symlink() else "file not found") from None
    except UnidentifiedImageError:
        raise BadFileError(path, _not_png_reason(head)) from None
    except OSError as exc:  # EACCES, EISDIR; PIL's "image file is truncated"
        raise BadFileError(path, f"cannot read ({exc.strerror or exc})") from None
    except (ValueError, SyntaxError) as exc:  # PIL's corrupt-chunk errors
        raise BadFileError(path, f"not a readable PNG file ({exc})") from None
    if pixels.shape != tuple(shape):
        raise BadFileError(path, f"image is {pixels.shape[1]}x{pixels.shape[0]} pixels; the model takes "
                                 f"{shape[1]}x{shape[0]} (white digit on black, as MNIST)")
    return pixels


def _not_png_reason(head: bytes) -> str:
    if not head:
        return "empty file (0 bytes)"
    if _looks_like_text(head):
        return "a text file, not a PNG image"
    return f"not a PNG file (starts with bytes {head[:4].hex(' ')})"


class Predictor:
    """An exported model (:mod:`attention_cnn.serving.export`) loaded once; :meth:`predict_file` per file."""

    def __init__(self, export_dir: str | os.PathLike):
        from attention_cnn.serving.export import load_saved_model, read_export

        self.folder = Path(export_dir)
        self.info = read_export(self.folder)
        self.dataset = self.info["dataset"]
        self.names = list(self.info["class_names"])
        self.suffixes = AUDIO_SUFFIXES if self.dataset == "speech" else IMAGE_SUFFIXES
        self.unsupported = UNSUPPORTED_AUDIO_SUFFIXES if self.dataset == "speech" else UNSUPPORTED_IMAGE_SUFFIXES
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        self.model = load_saved_model(self.folder, self.info)  # checks files and ops first (trust.py)

    def probabilities(self, path: str | os.PathLike) -> np.ndarray:
        """Class probabilities (classes,) for one file; :class:`BadFileError` when it cannot be read."""
        import tensorflow as tf

        if self.dataset == "speech":
            samples, rate = read_audio(path)
            out = self.model.waveform(tf.constant(samples), tf.constant(rate, tf.int64))
        else:
            pixels = read_png(path, tuple(self.info["input_shape"][:2]))
            out = self.model.serving_default(tf.constant(pixels[None]))
        return out["probabilities"].numpy()[0]

    def predict_file(self, path: str | os.PathLike) -> tuple[str, float]:
        """(label, its probability) for one file."""
        probs = self.probabilities(path)
        best = int(np.argmax(probs))
        return self.names[best], float(probs[best])

    def expand(self, target: Path) -> Iterator[Path | BadFileError]:
        """The files to predict for one argument: a file as given; a folder's audio or image files, sorted."""
        if not target.is_dir():
            yield target
            return
        found = False
        for root, dirs, files in os.walk(target):
            dirs.sort()
            for name in sorted(files):
                if Path(name).suffix.lower() in self.suffixes + self.unsupported:
                    found = True
                    yield Path(root) / name
        if not found:
            kinds = "audio files" if self.dataset == "speech" else "PNG images"
            yield BadFileError(target, f"no {kinds} ({', '.join(self.suffixes)}) in this folder")


def measure_latency_ms(predictor: Predictor, path: Path, repeats: int, warmup: int) -> tuple[float, float]:
    """Median and p95 wall time (ms) of one file through :meth:`Predictor.predict_file`: read, decode, featurize
    and classify, as the predict command does."""
    for _ in range(max(1, warmup)):
        predictor.predict_file(path)
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        predictor.predict_file(path)
        times.append((time.perf_counter() - start) * 1000.0)
    return float(np.median(times)), float(np.percentile(times, 95))


def sample_file(raw_dir: Path, dataset: str, workdir: Path) -> Path:
    """The first test example as a file: the recording featurize puts first in the test split, or MNIST's first
    test image written as a PNG into ``workdir`` (the example evaluate's model-only latency uses)."""
    from attention_cnn.common import read_csv_dicts

    if dataset == "speech":
        try:
            rows = sorted((r for r in read_csv_dicts(raw_dir / "manifest.csv") if r["split"] == "test"),
                          key=lambda r: r["file"])
        except FileNotFoundError:
            raise StageError(f"{raw_dir}/manifest.csv not found; run the fetch stage first (dvc repro)") from None
        if not rows:
            raise StageError(f"{raw_dir}/manifest.csv: no test recordings")
        return raw_dir / rows[0]["file"]
    from PIL import Image

    from attention_cnn.data.idx import read_idx_gz

    path = workdir / "first-test-image.png"
    Image.fromarray(read_idx_gz(raw_dir / "t10k-images-idx3-ubyte.gz")[0]).save(path)
    return path


def end_to_end_latency_ms(export_dir: Path, raw_dir: Path, repeats: int, warmup: int) -> dict[str, float]:
    """``e2e_latency_ms_p50`` / ``_p95``: one test file through the exported model, as the predict command runs it
    (:func:`measure_latency_ms`)."""
    import tempfile

    predictor = Predictor(export_dir)
    with tempfile.TemporaryDirectory() as tmp:
        path = sample_file(Path(raw_dir), predictor.dataset, Path(tmp))
        p50, p95 = measure_latency_ms(predictor, path, repeats, warmup)
    return {"e2e_latency_ms_p50": round(p50, 4), "e2e_latency_ms_p95": round(p95, 4)}


def predict_paths(predictor: Predictor, targets: list[Path], out=sys.stdout, err=sys.stderr) -> list[list[Any]]:
    """Predict every file; print a line per file (errors on ``err``); return the CSV rows."""
    rows = []
    for target in targets:
        for item in predictor.expand(target):
            try:
                if isinstance(item, BadFileError):
                    raise item
                label, probability = predictor.predict_file(item)
            except BadFileError as exc:
                print(f"error: {exc}", file=err, flush=True)
                rows.append([exc.path, "", "", exc.reason])
                continue
            print(f"{display_path(item)}\t{label}\t{probability:.4f}", file=out, flush=True)
            rows.append([display_path(item), label, f"{probability:.6f}", ""])
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="an export folder, e.g. exports/speech/cnn/seed0")
    parser.add_argument("paths", type=Path, nargs="+", metavar="FILE_OR_FOLDER")
    parser.add_argument("--csv", type=Path, default=None, help="also write path,label,probability,error here")
    args = parser.parse_args(argv)
    predictor = Predictor(args.model)
    rows = predict_paths(predictor, args.paths)
    if args.csv is not None:
        write_csv_rows(args.csv, CSV_HEADER, rows)
    failed = sum(1 for row in rows if row[3])
    if failed:
        print(f"error: {failed} of {len(rows)} file(s) could not be read (listed above)", file=sys.stderr)
    return 1 if failed else 0
