"""Decoding audio files into float32 mono samples.

WAV of any common encoding (8/16/24/32-bit integer PCM, 32/64-bit float) is
decoded with ``scipy.io.wavfile`` (no TensorFlow needed, fast). Every failure is
a :class:`StageError` naming the file.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from stages.common import StageError

AUDIO_SUFFIXES = (".wav",)


def to_float_mono(data: np.ndarray) -> np.ndarray:
    """Integer or float PCM of shape (samples,) or (samples, channels) -> float32 (samples,) in [-1, 1]."""
    if data.dtype == np.uint8:  # 8-bit WAV is unsigned, centred at 128
        audio = (data.astype(np.float32) - 128.0) / 128.0
    elif np.issubdtype(data.dtype, np.integer):
        audio = data.astype(np.float32) / float(np.iinfo(data.dtype).max + 1)
    else:
        audio = data.astype(np.float32)
    if audio.ndim == 2:  # mix channels to mono
        audio = audio.mean(axis=1)
    return np.ascontiguousarray(audio, dtype=np.float32)


def read_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Decode one file -> (float32 mono samples, sample rate in Hz)."""
    from scipy.io import wavfile

    path = Path(path)
    if path.suffix.lower() not in AUDIO_SUFFIXES:
        raise StageError(f"{path}: unsupported audio type '{path.suffix}'; convert it to WAV")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scipy warns on unknown chunks (LIST, etc.)
            rate, data = wavfile.read(path, mmap=False)
    except FileNotFoundError:
        raise StageError(f"{path}: file not found") from None
    except (ValueError, EOFError, OSError, IndexError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise StageError(f"{path}: not a readable WAV file ({reason})") from None
    if data.size == 0:
        raise StageError(f"{path}: WAV file has no samples")
    if rate <= 0:
        raise StageError(f"{path}: invalid sample rate {rate}")
    return to_float_mono(data), int(rate)
