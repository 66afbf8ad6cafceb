"""The Free Spoken Digit Dataset (FSDD) v1.0.10: unpack, verify and index it.

The archive holds ``<top>/recordings/{digit}_{speaker}_{index}.wav`` (3,000
mono 16-bit 8 kHz WAVs, 6 speakers, index 0..49).  The official split puts
index 0-4 in test and 5-49 in train (:func:`fsdd_split`); with
``data.speech.split: speakers`` the fetch stage re-splits the rows by speaker
instead (:func:`attention_cnn.data.speech.split_by_speakers`; v1.0.10's speakers are
:data:`SPEAKERS`).  Recordings are verified one by one against a committed
sha256sum-style file (``data/checksums/fsdd-1.0.10.sha256``), so the check
does not depend on how the archive itself was packed.

Regenerate the checksum file (once, from a trusted archive) with::

    python -m attention_cnn.data.fsdd --write-checksums ARCHIVE data/checksums/fsdd-1.0.10.sha256
"""
from __future__ import annotations

import argparse
import contextlib
import os
import re
import tempfile
import wave
from pathlib import Path
from typing import Iterator

from attention_cnn.common import StageError, atomic_dir, atomic_write_text, run_main, sha256_file
from attention_cnn.data.download import safe_extract_tar

FSDD_DEFAULT_URL = "https://github.com/Jakobovski/free-spoken-digit-dataset/archive/refs/tags/v1.0.10.tar.gz"
CHECKSUM_FILE = Path("data/checksums/fsdd-1.0.10.sha256")  # per-recording digests, committed
RECORDINGS = "recordings"
TEST_INDICES = range(0, 5)
SPEAKERS = ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")  # v1.0.10, 500 recordings each

_NAME_RE = re.compile(r"([0-9])_([A-Za-z][A-Za-z0-9-]*)_([0-9]+)\.wav")
_CHECKSUM_LINE_RE = re.compile(r"([0-9a-fA-F]{64}) [ *](.+)")
MANIFEST_KEYS = ("file", "label", "split", "speaker", "duration_s", "sample_rate_hz", "sha256")


def parse_fsdd_name(name: str) -> tuple[int, str, int]:
    """``"3_theo_12.wav"`` -> ``(3, "theo", 12)``; a path's last component is used."""
    base = str(name).replace("\\", "/").rsplit("/", 1)[-1]
    m = _NAME_RE.fullmatch(base)
    if m is None:
        raise StageError(
            f"{name!r} is not an FSDD recording name; expected '<digit>_<speaker>_<index>.wav' such as '3_theo_12.wav'"
        )
    return int(m.group(1)), m.group(2), int(m.group(3))


def fsdd_split(index: int) -> str:
    """The official split: recordings 0-4 of each digit and speaker are test, the rest train."""
    if index < 0:
        raise StageError(f"FSDD recording index {index} is negative; expected 0..49")
    return "test" if index in TEST_INDICES else "train"


def read_checksum_file(path: Path) -> dict[str, str]:
    """Parse a sha256sum-format file into ``{relative path: hex digest}``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StageError(f"checksum file {path} not found; restore it from git or regenerate it with --write-checksums") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise StageError(f"cannot read checksum file {path}: {exc}") from None
    out: dict[str, str] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = _CHECKSUM_LINE_RE.fullmatch(line.rstrip("\r"))
        if m is None:
            raise StageError(f"{path}:{lineno}: not a '<sha256>  <path>' line; fix or regenerate the checksum file")
        rel = m.group(2)
        if rel in out:
            raise StageError(f"{path}:{lineno}: {rel} is listed twice; fix or regenerate the checksum file")
        out[rel] = m.group(1).lower()
    if not out:
        raise StageError(f"checksum file {path} lists no files; regenerate it with --write-checksums")
    return out


@contextlib.contextmanager
def _extracted(archive: Path, scratch_parent: Path) -> Iterator[Path]:
    """Safely extract ``archive`` into a temporary folder (always removed); yield its recordings/ dir."""
    archive = Path(archive)
    scratch_parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".fsdd-extract-", dir=scratch_parent) as tmp:
        root = Path(tmp) / "x"
        safe_extract_tar(archive, root)
        yield _find_recordings(archive, root)


def _find_recordings(archive: Path, root: Path) -> Path:
    """The single ``recordings/`` folder: at the top or one level down (e.g. ``free-spoken-digit-dataset-1.0.10/``)."""
    candidates: list[Path] = []
    top = root / RECORDINGS
    if top.is_dir() and not top.is_symlink():
        candidates.append(top)
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.is_dir(follow_symlinks=False):
            rec = Path(entry.path) / RECORDINGS
            if rec.is_dir() and not rec.is_symlink():
                candidates.append(rec)
    if not candidates:
        raise StageError(f"{archive}: no '{RECORDINGS}/' folder found (at the top or one folder down); is this the FSDD archive?")
    if len(candidates) > 1:
        names = ", ".join(str(c.relative_to(root)) for c in candidates)
        raise StageError(f"{archive}: several '{RECORDINGS}/' folders ({names}); expected exactly one")
    return candidates[0]


def _list_wavs(archive: Path, rec_dir: Path) -> dict[str, Path]:
    """``{"recordings/<name>.wav": path}`` for every WAV in ``rec_dir`` (names validated)."""
    out: dict[str, Path] = {}
    for entry in os.scandir(rec_dir):
        if not entry.name.lower().endswith(".wav"):
            continue
        if not entry.is_file(follow_symlinks=False):
            raise StageError(f"{archive}: {RECORDINGS}/{entry.name} is not a regular file; is this the FSDD archive?")
        try:
            parse_fsdd_name(entry.name)
        except StageError:
            raise StageError(
                f"{archive}: {RECORDINGS}/{entry.name} is not an FSDD recording name "
                "('<digit>_<speaker>_<index>.wav'); is this the FSDD archive?"
            ) from None
        out[f"{RECORDINGS}/{entry.name}"] = Path(entry.path)
    if not out:
        raise StageError(f"{archive}: '{RECORDINGS}/' holds no .wav files; is this the FSDD archive?")
    return out


def _verify(archive: Path, checksum_file: Path, actual: dict[str, str]) -> None:
    expected = read_checksum_file(checksum_file)
    problems: list[tuple[str, str]] = []
    for rel in sorted(set(expected) | set(actual)):
        if rel not in actual:
            problems.append((rel, "missing from the archive"))
        elif rel not in expected:
            problems.append((rel, "not listed in the checksum file"))
        elif actual[rel] != expected[rel]:
            problems.append((rel, f"sha256 {actual[rel]}, expected {expected[rel]}"))
    if problems:
        first, why = problems[0]
        raise StageError(
            f"{archive}: {len(problems)} recording(s) fail verification against {checksum_file} "
            f"(first: {first}: {why}); delete the archive and download it again, "
            "or regenerate the checksum file if the dataset version changed on purpose"
        )


def _wav_info(archive: Path, rel: str, path: Path) -> tuple[float, int]:
    try:
        with wave.open(str(path), "rb") as w:
            frames, rate = w.getnframes(), w.getframerate()
    except (wave.Error, EOFError, OSError) as exc:
        raise StageError(f"{archive}: {rel} is not a readable WAV file ({exc}); delete the archive and download it again") from None
    if rate <= 0:
        raise StageError(f"{archive}: {rel} has sample rate {rate} in its header; the file is corrupt")
    return round(frames / rate, 4), int(rate)


def prepare_fsdd(archive: Path, out_dir: Path, checksum_file: Path | None) -> list[dict]:
    """Unpack the FSDD archive's recordings into ``out_dir/recordings/`` and return manifest rows.

    The archive is safely extracted into a temporary sibling of ``out_dir``
    (removed afterwards, also on error).  With ``checksum_file`` every
    recording must match it exactly: a missing, extra or changed recording is
    a one-line :class:`StageError` naming the first bad file and the count.
    ``out_dir/recordings/`` is replaced atomically, and only on success.  Rows
    are sorted by ``file`` and have the keys :data:`MANIFEST_KEYS`.
    """
    archive = Path(archive)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with _extracted(archive, out_dir.parent) as rec_dir:
        wavs = _list_wavs(archive, rec_dir)
        digests = {rel: sha256_file(path) for rel, path in wavs.items()}
        if checksum_file is not None:
            _verify(archive, Path(checksum_file), digests)
        rows: list[dict] = []
        for rel in sorted(wavs):
            label, speaker, index = parse_fsdd_name(rel)
            duration_s, rate = _wav_info(archive, rel, wavs[rel])
            rows.append({
                "file": rel,
                "label": label,
                "split": fsdd_split(index),
                "speaker": speaker,
                "duration_s": duration_s,
                "sample_rate_hz": rate,
                "sha256": digests[rel],
            })
        with atomic_dir(out_dir / RECORDINGS) as tmp_rec:
            for rel, path in wavs.items():
                # Same filesystem (the scratch folder is a sibling): a rename, not a copy.
                os.replace(path, tmp_rec / path.name)
    return rows


def write_checksum_file(archive: Path, out: Path) -> int:
    """Write ``<sha256>  recordings/<name>.wav`` lines (sorted by path) for every recording in ``archive``.

    Returns the number of recordings listed.  Run it once on a trusted archive
    and commit the result.
    """
    archive = Path(archive)
    out = Path(out)
    with _extracted(archive, Path(tempfile.gettempdir())) as rec_dir:
        wavs = _list_wavs(archive, rec_dir)
        lines = [f"{sha256_file(wavs[rel])}  {rel}\n" for rel in sorted(wavs)]
    atomic_write_text(out, "".join(lines))
    return len(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m attention_cnn.data.fsdd", description=__doc__.splitlines()[0])
    parser.add_argument("--write-checksums", nargs=2, metavar=("ARCHIVE", "OUT"), required=True,
                        help="write the per-recording sha256 file for ARCHIVE to OUT")
    args = parser.parse_args(argv)
    archive, out = (Path(p) for p in args.write_checksums)
    n = write_checksum_file(archive, out)
    print(f"wrote {n} checksums to {out}")
    return 0


if __name__ == "__main__":
    run_main(main)
