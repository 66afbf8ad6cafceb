"""fetch (speech): write immutable raw spoken-digit recordings plus a manifest.

Sources (``data.speech.source``):

- ``embedded`` (default, offline): digits "zero".."nine" synthesized with espeak-ng
  over many voices, rates and pitches, with light noise; test voices never occur
  in training; byte-for-byte deterministic (``data.speech.embedded``).
- ``fsdd``: the Free Spoken Digit Dataset release archive from ``data.speech.url``
  (an http(s) URL or a local path), official split (take index 0-4 test) or
  speaker-independent (``data.speech.split``, below). The archive is checked
  against ``data.speech.sha256`` when given, and every recording against the
  per-recording digests kept in ``data/checksums/``.
- ``folder``: the user's recordings under ``data.speech.path`` in ``train/`` and
  ``test/`` subfolders (any letter case), labelled per ``data.speech.labels``:
  ``subfolder`` (the parent folder's name), ``prefix`` (the digits before the
  first ``_``, FSDD style) or ``cyclic`` (0..9 repeating over sorted file names,
  the study's convention). Audio files are ``.wav``, ``.flac``, ``.ogg`` (Vorbis)
  and ``.mp3`` (see :mod:`attention_cnn.data.audio`); other audio types (``.m4a``, ``.aiff``...)
  are bad files; anything else (notes, ``.DS_Store``) is ignored.

Synthetic voices in training (``data.speech.extra_train_voices``, fsdd and folder): that many espeak-ng voices
from the whole voice grid, and ``extra_train_accented_voices`` more with non-native accents, speak the ten
digits (``data.speech.embedded``'s takes, noise, reverb and seed) into ``synthetic/recordings/``, every clip in
the train split, never test. ``source.json`` counts them (``extra_train_voices``, ``extra_train_accented_voices``,
``extra_train_clips``); its speakers and split sentence name the real speakers.

Bad input
---------
Every recording, of every source, is decoded once here (:func:`attention_cnn.data.audio.read_audio`).
A file is *bad* when it cannot be decoded (empty, header only, truncated, random
bytes or text under an audio name, an encoding or type that cannot be decoded,
NaN samples, a broken symbolic link or a link loop, not a regular file), when no
label can be taken from it (``prefix`` rule: no digits before ``_``; ``subfolder``
rule: the file lies directly in ``train/`` or ``test/``), or when its name is not
valid UTF-8. ``data.on_bad_file`` decides what happens:

- ``error`` (default): the first bad file stops the stage with one line
  ``error: <file>: <reason> ...``; no output folder is written.
- ``skip``: bad files are left out (not copied) and listed, with the reason, in
  ``skipped.csv`` (file, split, reason) of the output folder; ``source.json``
  counts them (``skipped``). With ``cyclic`` labels a skipped file still takes
  its place in the 0..9 cycle, so skipping never shifts the labels of the others.

Kept, with one ``warning:`` line on stderr per kind (after the folder is written):
silence-only clips (``silent`` in ``source.json``); test recordings byte-identical
to train recordings (``duplicates_across_splits``; test accuracy may be
optimistic); classes with train but no test recordings; class subfolders without
audio files; symbolic links to folders (not followed). Clips longer than
``features.speech.clip_samples`` are fine: featurize cuts them and counts them.

Train/test split (``data.speech.split``)
----------------------------------------
- ``official`` (default): FSDD's own split (take index 0-4 of every digit and speaker
  is test), so the same speakers are in train and test; a folder keeps its
  ``train/`` and ``test/``; the embedded voices are speaker-independent by construction.
- ``speakers`` (fsdd, folder): speaker-independent. Every recording of a speaker in
  ``data.speech.test_speakers`` is test, every other recording train, whatever its
  take index or folder. The speaker is the second ``_`` field of the file name
  (``3_theo_12.wav``); a file without one, a name not among the data's speakers, or
  a list holding out every speaker is a one-line error. (A folder's files keep their
  ``recordings/<folder>/`` path; the manifest's ``split`` column is what counts.)

``source.json`` records ``split``, ``test_speakers``, the speakers per split,
``speakers_in_both_splits`` and a sentence for the report (``split_description``).

Always errors, whatever ``data.on_bad_file`` says: a split left without recordings,
and a class with test recordings but no train recordings (the model could never
predict it).

Folders are walked with :func:`os.walk` without following symbolic links to
folders, so a link loop can never hang the walk; symbolic links to *files* are
followed (their content is copied). ``train/`` and ``test/`` themselves may be links.

Output folder: ``recordings/...`` (the audio files as they were), ``manifest.csv``
(file, label, split, speaker, duration_s, sample_rate_hz, sha256; UTF-8, sorted by
file), ``skipped.csv`` and ``source.json``. The DVC entry point is ``stages/fetch_speech.py``.
"""
from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attention_cnn.data.audio import (AUDIO_SUFFIXES, UNSUPPORTED_AUDIO_SUFFIXES, BadFileError, display_path, is_silent,
                          read_audio)
from attention_cnn.data import fsdd
from attention_cnn.common import StageError, atomic_dir, atomic_write_json, sha256_file, write_csv_rows
from attention_cnn.config.errors import did_you_mean, show
from attention_cnn.config.params import Data, SpeechData, SpeechEmbedded

MANIFEST_HEADER = ["file", "label", "split", "speaker", "duration_s", "sample_rate_hz", "sha256"]
SKIPPED_HEADER = ["file", "split", "reason"]
SKIPPED_FILE = "skipped.csv"
SPLITS = ("train", "test")
SHOW = 3  # examples named in a warning line
SYNTHETIC_DIR = "synthetic"  # data.speech.extra_train_voices: their recordings, beside the real ones


class BadFiles:
    """Applies ``data.on_bad_file``: 'error' raises at the first bad file, 'skip' records it and goes on."""

    def __init__(self, mode: str = "error"):
        self.mode = mode
        self.skipped: list[tuple[str, str, str]] = []  # (file, split, reason)

    def handle(self, exc: BadFileError, split: str) -> None:
        if self.mode == "error":
            raise StageError(f"{exc.path}: {exc.reason} (fix or remove the file, or set data.on_bad_file: skip)")
        self.skipped.append((exc.path, split, exc.reason))


@dataclass
class Notes:
    """Things kept but worth a warning, gathered while fetching and printed at the end."""

    silent: list[str] = field(default_factory=list)
    linked_dirs: list[str] = field(default_factory=list)
    empty_class_dirs: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)


def _examples(items: list[str]) -> str:
    shown = ", ".join(items[:SHOW])
    return shown + (", ..." if len(items) > SHOW else "")


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def find_split_dirs(root: Path) -> dict[str, Path]:
    """Map "train"/"test" to the matching subfolders of ``root`` (matched in any letter case)."""
    if not root.is_dir():
        raise StageError(f"data.speech.path: folder '{root}' does not exist; point it at a folder with train/ and test/")
    found: dict[str, Path] = {}
    for child in sorted(root.iterdir()):
        key = child.name.lower()
        if child.is_dir() and key in SPLITS:
            if key in found:
                raise StageError(f"{root}: both '{found[key].name}' and '{child.name}' exist; keep one {key} folder")
            found[key] = child
    missing = [s for s in SPLITS if s not in found]
    if missing:
        raise StageError(f"{root}: no '{missing[0]}' subfolder (any case); put recordings in train/ and test/")
    return found


def walk_split(folder: Path) -> tuple[list[Path], list[Path], list[tuple[Path, str]]]:
    """Files with an audio suffix (supported or not) under ``folder``, sorted; symbolic links to folders
    (not followed, so loops cannot hang); folders that could not be listed, with the reason."""
    files: list[Path] = []
    linked: list[Path] = []
    unreadable: list[tuple[Path, str]] = []

    def onerror(err: OSError) -> None:
        unreadable.append((Path(err.filename or folder), err.strerror or str(err)))

    for dirpath, dirnames, filenames in os.walk(folder, onerror=onerror, followlinks=False):
        base = Path(dirpath)
        linked.extend(base / d for d in dirnames if (base / d).is_symlink())
        files.extend(base / f for f in filenames
                     if Path(f).suffix.lower() in AUDIO_SUFFIXES + UNSUPPORTED_AUDIO_SUFFIXES)
    return sorted(files), sorted(linked), sorted(unreadable)


_PREFIX = re.compile(r"^(\d+)_")


def label_for(path: Path, rule: str, position: int, split_dir: Path | None = None) -> str:
    """The class name of one recording under a labelling rule (position = rank in sorted order).

    A file whose label cannot be parsed raises :class:`BadFileError`.
    """
    if rule == "subfolder":
        if split_dir is not None and path.parent == split_dir:
            raise BadFileError(path, "not inside a class subfolder (data.speech.labels=subfolder takes the label "
                                     "from the folder name, e.g. train/3/a.wav)")
        return path.parent.name
    if rule == "prefix":
        match = _PREFIX.match(path.name)
        if not match:
            raise BadFileError(path, "file name has no digits before '_' to take a label from "
                                     "(data.speech.labels=prefix expects names like 3_alice_0.wav)")
        return str(int(match.group(1)))
    return str(position % 10)  # cyclic


def speaker_for(path: Path) -> str:
    """FSDD-style ``{label}_{speaker}_{take}`` names give a speaker; other names give ''."""
    parts = path.stem.split("_")
    return parts[1] if len(parts) >= 3 else ""


def _folder_row(path: Path, folder: Path, split: str, rule: str, position: int, out: Path,
                notes: Notes) -> dict[str, Any]:
    """Validate one user file (name, label, audio), copy it into ``out`` and return its manifest row."""
    try:
        os.fsencode(path).decode("utf-8")
    except UnicodeDecodeError:
        raise BadFileError(path, "file name is not valid UTF-8; rename it") from None
    label = label_for(path, rule, position, split_dir=folder)
    samples, rate = read_audio(path)
    rel = Path("recordings") / split / path.relative_to(folder)
    dest = out / rel
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dest)
    except OSError as exc:
        raise StageError(f"cannot copy {display_path(path)} to {dest}: {exc.strerror or exc}") from None
    if is_silent(samples):
        notes.silent.append(rel.as_posix())
    return {"file": rel.as_posix(), "label": label, "split": split, "speaker": speaker_for(path),
            "duration_s": round(len(samples) / rate, 4), "sample_rate_hz": rate, "sha256": sha256_file(dest)}


def collect_folder(root: Path, rule: str, out: Path, bad: BadFiles | None = None,
                   notes: Notes | None = None) -> list[dict[str, Any]]:
    """Copy a user's train/test recordings into ``out/recordings/<split>/`` and return manifest rows."""
    bad = bad if bad is not None else BadFiles()
    notes = notes if notes is not None else Notes()
    rows = []
    split_dirs = find_split_dirs(root)
    for split, folder in split_dirs.items():
        files, linked, unreadable = walk_split(folder)
        notes.linked_dirs.extend(display_path(p) for p in linked)
        for path, why in unreadable:
            bad.handle(BadFileError(path, f"cannot list this folder ({why})"), split)
        if not files:
            raise StageError(f"{folder}: no audio files ({', '.join(AUDIO_SUFFIXES)}) found for split '{split}'")
        if rule == "subfolder":
            used = {f.relative_to(folder).parts[0] for f in files}
            notes.empty_class_dirs.extend(display_path(child) for child in sorted(folder.iterdir())
                                          if child.is_dir() and not child.is_symlink() and child.name not in used)
        # position counts every file, bad ones too: skipping never shifts the cyclic labels of the rest
        for position, path in enumerate(files):
            try:
                rows.append(_folder_row(path, folder, split, rule, position, out, notes))
            except BadFileError as exc:
                bad.handle(exc, split)
    return rows


def check_rows(rows: list[dict[str, Any]], out: Path, bad: BadFiles, notes: Notes) -> list[dict[str, Any]]:
    """Decode every recording a source wrote into ``out``; drop (and delete) bad ones per ``bad``."""
    kept = []
    for row in rows:
        path = out / row["file"]
        try:
            samples, _ = read_audio(path)
        except BadFileError as exc:
            bad.handle(BadFileError(row["file"], exc.reason), row["split"])
            path.unlink(missing_ok=True)
            continue
        if is_silent(samples):
            notes.silent.append(str(row["file"]))
        kept.append(row)
    return kept


def _label_key(label: str) -> tuple[int, Any]:
    return (0, int(label)) if label.lstrip("-").isdigit() else (1, label)


def check_classes(rows: list[dict[str, Any]], bad: BadFiles, notes: Notes) -> None:
    """Error for a class with test but no train recordings; a warning for one with train but no test ones."""
    labels = {s: {str(r["label"]) for r in rows if r["split"] == s} for s in SPLITS}
    only_test = sorted(labels["test"] - labels["train"], key=_label_key)
    if only_test:
        hint = f" ({len(bad.skipped)} bad file(s) were skipped)" if bad.skipped else ""
        raise StageError(f"class(es) {', '.join(only_test)} have test recordings but no train recordings{hint}, "
                         "so the model could never predict them; add train recordings or remove those test files")
    only_train = sorted(labels["train"] - labels["test"], key=_label_key)
    if only_train:
        notes.lines.append(f"class(es) {_examples(only_train)} have train recordings but no test recordings; "
                           "their test metrics will be empty")


def duplicates_across_splits(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(test file, train file) for every test recording byte-identical (same sha256) to a train recording."""
    train: dict[str, str] = {}
    for r in sorted(rows, key=lambda r: r["file"]):
        if r["split"] == "train":
            train.setdefault(r["sha256"], r["file"])
    return [(r["file"], train[r["sha256"]]) for r in sorted(rows, key=lambda r: r["file"])
            if r["split"] == "test" and r["sha256"] in train]


def check_test_speakers(test_speakers: list[str], available: list[str]) -> None:
    """``data.speech.test_speakers`` against the speakers the data really has (known only once fetched):
    every name must exist, and at least one speaker must stay in training."""
    key = "data.speech.test_speakers"
    for name in test_speakers:
        if name not in available:
            raise StageError(f"params.yaml: unknown speaker {show(name)} in {key}{did_you_mean(name, available)}; "
                             f"available: {', '.join(available)}")
    if set(available) <= set(test_speakers):
        raise StageError(f"params.yaml: {key} holds out every speaker ({', '.join(available)}), leaving none for "
                         "training; keep at least one out of the list")


def split_by_speakers(rows: list[dict[str, Any]], test_speakers: list[str]) -> list[dict[str, Any]]:
    """``data.speech.split: speakers``: new rows, ``split`` = test for every recording of ``test_speakers``,
    train for all others. Every row needs a speaker; the names are checked against the rows' speakers."""
    unnamed = [str(r["file"]) for r in rows if not r["speaker"]]
    if unnamed:
        raise StageError(f"{unnamed[0]}: no speaker in the file name ({len(unnamed)} such file(s)), but "
                         "data.speech.split is 'speakers'; name files '<label>_<speaker>_<take>.<ext>' "
                         "(e.g. 3_alice_0.wav) or set data.speech.split: official")
    check_test_speakers(test_speakers, sorted({str(r["speaker"]) for r in rows}))
    held_out = set(test_speakers)
    return [dict(r, split="test" if r["speaker"] in held_out else "train") for r in rows]


def apply_split(rows: list[dict[str, Any]], split: str, test_speakers: list[str]) -> list[dict[str, Any]]:
    """The rows under ``data.speech.split``: ``official`` keeps the source's split, ``speakers`` re-splits."""
    return rows if split == "official" else split_by_speakers(rows, test_speakers)


def split_summary(source: str, split: str, test_speakers: list[str], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """What ``source.json`` says about the split: the rule, the held-out speakers, speakers per split and
    in both, and one sentence for the report, all read from the final rows."""
    speakers = {s: sorted({str(r["speaker"]) for r in rows if r["split"] == s and r["speaker"]}) for s in SPLITS}
    both = sorted(set(speakers["train"]) & set(speakers["test"]))
    counts = {s: sum(1 for r in rows if r["split"] == s) for s in SPLITS}
    if split == "speakers":
        text = (f"speaker-independent (`data.speech.split: speakers`): every recording of the held-out "
                f"speaker(s) {', '.join(sorted(test_speakers))} is test ({counts['test']:,}), the other "
                f"{len(speakers['train'])} speaker(s) train ({counts['train']:,})")
    elif source == "fsdd":
        text = "official FSDD split (take index 0-4 of every digit and speaker is test)"
    elif source == "embedded":
        text = (f"synthetic voices: {len(speakers['train'])} train and {len(speakers['test'])} test voices "
                "(`data.speech.embedded`)")
    else:
        text = "the train/ and test/ folders of `data.speech.path`"
    if both and set(both) == set(speakers["train"]) | set(speakers["test"]):
        text += f"; all {len(both)} speaker(s) are in both train and test"
    elif both:
        text += f"; {len(both)} speaker(s) in both train and test ({_examples(both)})"
    elif speakers["train"] and speakers["test"]:
        text += "; no speaker in both train and test"
    return {"split": split, "test_speakers": sorted(test_speakers) if split == "speakers" else [],
            "speakers": speakers, "speakers_in_both_splits": both, "split_description": text}


def collect_embedded(cfg: SpeechEmbedded, out: Path) -> list[dict[str, Any]]:
    from attention_cnn.data import synth

    train_voices, test_voices = synth.split_voices(cfg.train_voices, cfg.test_voices, cfg.seed)
    return _synthesize(cfg, out, train_voices, test_voices)


def _synthesize(cfg: SpeechEmbedded, out: Path, train_voices: list, test_voices: list) -> list[dict[str, Any]]:
    """The voices' digits as ``data.speech.embedded`` makes every synthetic clip: its takes, noise, reverb, edge
    cuts and seed."""
    from attention_cnn.data import synth

    return synth.synthesize_digits(out, train_voices, test_voices, takes_per_voice=cfg.takes_per_voice,
                                   noise_snr_db=float(cfg.noise_snr_db), seed=cfg.seed,
                                   reverb_rt60_s=cfg.reverb_rt60_s, edge_cut_fraction=cfg.edge_cut_fraction)


def _synthetic_voices(cfg: SpeechData) -> str:
    """'' without synthetic voices in training, else how many: '400' or '400 + 200 accented'."""
    parts = [str(cfg.extra_train_voices)] if cfg.extra_train_voices else []
    if cfg.extra_train_accented_voices:
        parts.append(f"{cfg.extra_train_accented_voices} accented")
    return " + ".join(parts)


def collect_extra_train(cfg: SpeechData, out: Path) -> list[dict[str, Any]]:
    """``data.speech.extra_train_voices`` synthetic voices, then ``extra_train_accented_voices`` with a non-native
    accent, in ``out/synthetic/``, every row in the train split.

    Drawn from the whole voice grid (any accent, timbre, rate, pitch) with ``data.speech.embedded``'s takes, noise,
    reverb, edge cuts and seed; the real test speakers are never among them."""
    from attention_cnn.data import synth

    emb = cfg.embedded
    voices = synth.voice_grid(cfg.extra_train_voices, emb.seed) + \
        synth.accented_voice_grid(cfg.extra_train_accented_voices, emb.seed)
    rows = _synthesize(emb, out / SYNTHETIC_DIR, voices, [])
    return [dict(r, file=f"{SYNTHETIC_DIR}/{r['file']}", split="train") for r in rows]


def collect_fsdd(cfg: SpeechData, out: Path, checksums: Path) -> list[dict[str, Any]]:
    """The FSDD archive's recordings in ``out`` and their manifest rows, under ``split``."""
    from attention_cnn.data.download import download

    url = cfg.url or fsdd.FSDD_DEFAULT_URL
    with tempfile.TemporaryDirectory(prefix="fsdd-download-") as tmp:
        archive = download(url, Path(tmp) / "fsdd.tar.gz", sha256=cfg.sha256 or None)
        rows = fsdd.prepare_fsdd(archive, out, checksums if checksums.is_file() else None)
    return apply_split(rows, cfg.split, list(cfg.test_speakers))


def fetch(data: Data, out: Path, checksums: Path = fsdd.CHECKSUM_FILE) -> dict[str, Any]:
    """Write the raw speech folder ``out`` for ``data.speech`` (bad files: ``data.on_bad_file``); return source info.

    Bad files are handled per ``data.on_bad_file`` (see the module docstring); warnings
    go to stderr once the folder is written.
    """
    cfg = data.speech
    source, split_rule, test_speakers = cfg.source, cfg.split, list(cfg.test_speakers)
    bad = BadFiles(data.on_bad_file)
    notes = Notes()
    with atomic_dir(out) as tmp:
        if source == "embedded":
            rows = check_rows(collect_embedded(cfg.embedded, tmp), tmp, bad, notes)
            origin = "espeak-ng synthesis (espeakng-loader)"
        elif source == "fsdd":
            rows = check_rows(collect_fsdd(cfg, tmp, checksums), tmp, bad, notes)
            origin = str(cfg.url)
        else:  # folder
            root = Path(cfg.path)
            rows = apply_split(collect_folder(root, cfg.labels, tmp, bad, notes), split_rule, test_speakers)
            origin = f"folder {root}"
        synthetic = _synthetic_voices(cfg)
        if synthetic:
            keys = cfg.synthetic_voice_keys()
            not_digits = sorted({str(r["label"]) for r in rows} - {str(d) for d in range(10)}, key=_label_key)
            if not_digits:
                raise StageError(f"{' and '.join(keys)}: the synthetic voices speak the digits 0-9, but the recordings "
                                 f"have other labels ({_examples(not_digits)}); set {': 0 and '.join(keys)}: 0")
            rows = rows + check_rows(collect_extra_train(cfg, tmp), tmp, bad, notes)
            origin += f" + {synthetic} espeak-ng voices in train"
        rows = sorted(rows, key=lambda r: r["file"])
        counts = {s: sum(1 for r in rows if r["split"] == s) for s in SPLITS}
        for split, n in counts.items():
            if n == 0:
                left = f" left after skipping {len(bad.skipped)} bad file(s) (see {SKIPPED_FILE})" if bad.skipped else ""
                raise StageError(f"speech source '{source}' produced no {split} recordings{left}; check data.speech")
        check_classes(rows, bad, notes)
        duplicates = duplicates_across_splits(rows)
        write_csv_rows(tmp / "manifest.csv", MANIFEST_HEADER, [[r[k] for k in MANIFEST_HEADER] for r in rows])
        write_csv_rows(tmp / SKIPPED_FILE, SKIPPED_HEADER, sorted(bad.skipped, key=lambda r: (r[1], r[0])))
        real = [r for r in rows if not str(r["file"]).startswith(f"{SYNTHETIC_DIR}/")]
        info = {"dataset": "speech", "source": source, "origin": origin, "counts": counts,
                "labels": sorted({str(r["label"]) for r in rows}),
                "speakers": {s: sorted({r["speaker"] for r in real if r["split"] == s}) for s in SPLITS},
                "extra_train_voices": cfg.extra_train_voices,
                "extra_train_accented_voices": cfg.extra_train_accented_voices,
                "extra_train_clips": len(rows) - len(real),
                "on_bad_file": bad.mode, "skipped": len(bad.skipped),
                "duplicates_across_splits": len(duplicates), "silent": len(notes.silent)}
        summary = split_summary(source, split_rule, test_speakers, real)
        info.update({k: v for k, v in summary.items() if k != "speakers"})
        if synthetic:
            info["split_description"] += (f"; plus {len(rows) - len(real):,} clips of {synthetic} "
                                          f"synthetic espeak-ng voices in train only (`{'` and `'.join(keys)}`)")
        atomic_write_json(tmp / "source.json", info)
    for line in _warning_lines(out, bad, notes, duplicates):
        warn(line)
    return info


def _warning_lines(out: Path, bad: BadFiles, notes: Notes, duplicates: list[tuple[str, str]]) -> list[str]:
    lines = []
    if bad.skipped:
        path, _, reason = bad.skipped[0]
        lines.append(f"skipped {len(bad.skipped)} bad file(s), listed with the reason in {out / SKIPPED_FILE} "
                     f"(first: {path}: {reason})")
    if notes.silent:
        lines.append(f"{len(notes.silent)} silence-only recording(s) kept (no sample above -80 dBFS): "
                     f"{_examples(notes.silent)}")
    if duplicates:
        test, train = duplicates[0]
        lines.append(f"{len(duplicates)} test recording(s) are byte-identical to train recordings, so test accuracy "
                     f"may be optimistic (first: {test} = {train})")
    if notes.empty_class_dirs:
        lines.append(f"{len(notes.empty_class_dirs)} class folder(s) hold no audio files and are not classes: "
                     f"{_examples(notes.empty_class_dirs)}")
    if notes.linked_dirs:
        lines.append(f"{len(notes.linked_dirs)} symbolic link(s) to folders not followed (link the files instead): "
                     f"{_examples(notes.linked_dirs)}")
    return lines + notes.lines
