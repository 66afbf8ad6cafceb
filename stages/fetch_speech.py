"""fetch (speech): write immutable raw spoken-digit recordings plus a manifest.

Sources (``data.speech.source``):

- ``embedded`` (default, offline): digits "zero".."nine" synthesized with espeak-ng
  over many voices, rates and pitches, with light noise; test voices never occur
  in training; byte-for-byte deterministic (``data.speech.embedded``).
- ``fsdd``: the Free Spoken Digit Dataset release archive from ``data.speech.url``
  (an http(s) URL or a local path), official split (take index 0-4 test). The
  archive is checked against ``data.speech.sha256`` when given, and every
  recording against the per-recording digests kept in ``data/checksums/``.
- ``folder``: the user's recordings under ``data.speech.path`` in ``train/`` and
  ``test/`` subfolders (any letter case), labelled per ``data.speech.labels``:
  ``subfolder`` (the parent folder's name), ``prefix`` (the digits before the
  first ``_``, FSDD style) or ``cyclic`` (0..9 repeating over sorted file names,
  the study's convention).

Output folder: ``recordings/...`` (WAV files), ``manifest.csv`` (file, label,
split, speaker, duration_s, sample_rate_hz, sha256; sorted by file) and
``source.json``.
"""
from __future__ import annotations

import argparse
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from stages.audio import AUDIO_SUFFIXES, read_audio
from stages.common import (StageError, atomic_dir, atomic_write_json, get_param, load_params, run_main,
                           sha256_file, write_csv_rows)

MANIFEST_HEADER = ["file", "label", "split", "speaker", "duration_s", "sample_rate_hz", "sha256"]
LABEL_RULES = ("subfolder", "prefix", "cyclic")
FSDD_CHECKSUMS = Path("data/checksums/fsdd-1.0.10.sha256")


def find_split_dirs(root: Path) -> dict[str, Path]:
    """Map "train"/"test" to the matching subfolders of ``root`` (matched in any letter case)."""
    if not root.is_dir():
        raise StageError(f"data.speech.path: folder '{root}' does not exist; point it at a folder with train/ and test/")
    found: dict[str, Path] = {}
    for child in sorted(root.iterdir()):
        key = child.name.lower()
        if child.is_dir() and key in ("train", "test"):
            if key in found:
                raise StageError(f"{root}: both '{found[key].name}' and '{child.name}' exist; keep one {key} folder")
            found[key] = child
    missing = [s for s in ("train", "test") if s not in found]
    if missing:
        raise StageError(f"{root}: no '{missing[0]}' subfolder (any case); put recordings in train/ and test/")
    return found


def list_audio(folder: Path) -> list[Path]:
    """Audio files under ``folder``, recursively, in sorted (deterministic) order."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)


_PREFIX = re.compile(r"^(\d+)_")


def label_for(path: Path, rule: str, position: int) -> str:
    """The class name of one recording under a labelling rule (position = rank in sorted order)."""
    if rule == "subfolder":
        return path.parent.name
    if rule == "prefix":
        match = _PREFIX.match(path.name)
        if not match:
            raise StageError(f"{path}: file name has no digits before '_' to take a label from "
                             "(data.speech.labels=prefix expects names like 3_alice_0.wav)")
        return str(int(match.group(1)))
    if rule == "cyclic":
        return str(position % 10)
    raise StageError(f"params.yaml: data.speech.labels must be one of {LABEL_RULES}, got '{rule}'")


def speaker_for(path: Path) -> str:
    """FSDD-style ``{label}_{speaker}_{take}`` names give a speaker; other names give ''."""
    parts = path.stem.split("_")
    return parts[1] if len(parts) >= 3 else ""


def collect_folder(root: Path, rule: str, out: Path) -> list[dict[str, Any]]:
    """Copy a user's train/test recordings into ``out/recordings/<split>/`` and return manifest rows."""
    rows = []
    for split, folder in find_split_dirs(root).items():
        files = list_audio(folder)
        if not files:
            raise StageError(f"{folder}: no audio files ({', '.join(AUDIO_SUFFIXES)}) found for split '{split}'")
        for position, path in enumerate(files):
            label = label_for(path, rule, position)
            samples, rate = read_audio(path)
            rel = Path("recordings") / split / path.relative_to(folder)
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, out / rel)
            rows.append({"file": rel.as_posix(), "label": label, "split": split, "speaker": speaker_for(path),
                         "duration_s": round(len(samples) / rate, 4), "sample_rate_hz": rate,
                         "sha256": sha256_file(out / rel)})
    return rows


def collect_embedded(cfg: dict[str, Any], out: Path) -> list[dict[str, Any]]:
    from stages import synth

    seed = int(cfg.get("seed", 0))
    train_voices, test_voices = synth.split_voices(int(cfg["train_voices"]), int(cfg["test_voices"]), seed)
    return synth.synthesize_digits(out, train_voices, test_voices, takes_per_voice=int(cfg["takes_per_voice"]),
                                   noise_snr_db=float(cfg["noise_snr_db"]), seed=seed)


def collect_fsdd(cfg: dict[str, Any], out: Path, checksums: Path) -> list[dict[str, Any]]:
    from stages import fsdd
    from stages.download import download

    url = cfg.get("url") or fsdd.FSDD_DEFAULT_URL
    with tempfile.TemporaryDirectory(prefix="fsdd-download-") as tmp:
        archive = download(str(url), Path(tmp) / "fsdd.tar.gz", sha256=cfg.get("sha256") or None)
        return fsdd.prepare_fsdd(archive, out, checksums if checksums.is_file() else None)


def fetch(params: dict[str, Any], out: Path, checksums: Path = FSDD_CHECKSUMS) -> dict[str, Any]:
    """Write the raw speech folder ``out`` for ``params['data']['speech']``; return source info."""
    cfg = get_param(params, "data.speech")
    source = cfg.get("source", "embedded")
    with atomic_dir(out) as tmp:
        if source == "embedded":
            rows = collect_embedded(get_param(params, "data.speech.embedded"), tmp)
            origin = "espeak-ng synthesis (espeakng-loader)"
        elif source == "fsdd":
            rows = collect_fsdd(cfg, tmp, checksums)
            origin = str(cfg.get("url"))
        elif source == "folder":
            root = Path(get_param(params, "data.speech.path"))
            rows = collect_folder(root, cfg.get("labels", "subfolder"), tmp)
            origin = f"folder {root}"
        else:
            raise StageError(f"params.yaml: data.speech.source must be 'embedded', 'fsdd' or 'folder', got '{source}'")
        rows = sorted(rows, key=lambda r: r["file"])
        write_csv_rows(tmp / "manifest.csv", MANIFEST_HEADER, [[r[k] for k in MANIFEST_HEADER] for r in rows])
        counts = {s: sum(1 for r in rows if r["split"] == s) for s in ("train", "test")}
        for split, n in counts.items():
            if n == 0:
                raise StageError(f"speech source '{source}' produced no {split} recordings; check data.speech")
        info = {"dataset": "speech", "source": source, "origin": origin, "counts": counts,
                "labels": sorted({str(r["label"]) for r in rows}),
                "speakers": {s: sorted({r["speaker"] for r in rows if r["split"] == s}) for s in ("train", "test")}}
        atomic_write_json(tmp / "source.json", info)
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--checksums", type=Path, default=FSDD_CHECKSUMS)
    parser.add_argument("--out", type=Path, default=Path("data/raw/speech"))
    args = parser.parse_args(argv)
    info = fetch(load_params(args.params), args.out, args.checksums)
    print(f"speech: {info['counts']['train']} train / {info['counts']['test']} test recordings "
          f"from {info['origin']} -> {args.out}")
    return 0


if __name__ == "__main__":
    run_main(main)
