"""Decoding audio files into float32 mono samples.

- WAV of any common encoding (8-bit unsigned, 16/24/32-bit integer PCM, 32/64-bit
  float, WAVE_FORMAT_EXTENSIBLE) is decoded with ``scipy.io.wavfile`` (no
  TensorFlow needed, fast). Before that, the RIFF chunks are walked so that a
  file cut short (the header declares more sample bytes than the file holds),
  a header without samples, and a corrupt ``fmt`` chunk are reported instead of
  being decoded silently into a shorter clip.
- FLAC, Ogg Vorbis and MP3 are decoded with ``tensorflow_io``
  (``tfio.audio.AudioIOTensor``, which reads the sample rate too). MP3
  *decoding* does not need libmp3lame (only encoding does), so the warning
  tensorflow-io prints about it at import time is harmless; it is hidden.
  Its decoders are not thread-safe (two threads decoding at once abort the
  process or report a readable file as corrupt), so one lock serializes them;
  featurize reads files from several threads.

Multi-channel audio is mixed to mono; the sample rate is returned as is
(featurize resamples). Every failure is a :class:`BadFileError` (a
:class:`~attention_cnn.common.StageError`) whose one-line message is
``<file>: <reason>``; ``reason`` alone is kept for the skip list of
``data.on_bad_file: skip``.
"""
from __future__ import annotations

import io
import os
import stat
import struct
import threading
import warnings
from pathlib import Path

import numpy as np

from attention_cnn.common import StageError

WAV_SUFFIXES = (".wav",)
TFIO_SUFFIXES = {".flac": "FLAC", ".ogg": "Ogg Vorbis", ".mp3": "MP3"}
AUDIO_SUFFIXES = WAV_SUFFIXES + tuple(TFIO_SUFFIXES)
# Audio that people record or export, that this pipeline cannot decode: such files are
# reported as bad files (not silently ignored) so that a folder of .m4a files is noticed.
UNSUPPORTED_AUDIO_SUFFIXES = (".aif", ".aiff", ".aifc", ".amr", ".au", ".caf", ".m4a", ".aac", ".mp4",
                              ".oga", ".opus", ".sph", ".w64", ".webm", ".wma")
_TFIO_LOCK = threading.Lock()  # tensorflow-io's audio decoders share state across threads (module docstring)
MIN_RATE_HZ = 1000            # below this a "sample rate" is a corrupt header, not speech
SILENCE_PEAK = 1e-4           # |sample| never above -80 dBFS (about 3 LSB of 16-bit audio): silence


class BadFileError(StageError):
    """An input file that cannot be used; ``str()`` is ``"<path>: <reason>"``."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = display_path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def display_path(path: str | os.PathLike) -> str:
    """A path as printable UTF-8 text (undecodable bytes of a file name shown as ``\\xff``)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def to_float_mono(data: np.ndarray) -> np.ndarray:
    """Integer or float PCM of shape (samples,) or (samples, channels) -> float32 (samples,) in [-1, 1].

    Channels are summed in order and divided by their number (``mean(axis=1)`` for fewer than 8 channels, in
    fewer passes than reducing the short axis). An integer scale is a power of two, so applying it once to the
    sum gives the same bits as scaling every sample first.
    """
    if data.dtype == np.uint8:  # 8-bit WAV is unsigned, centred at 128
        audio, scale = data.astype(np.float32) - np.float32(128.0), np.float32(1 / 128)
    elif np.issubdtype(data.dtype, np.integer):  # scipy left-justifies 24-bit into int32
        audio, scale = data.astype(np.float32), np.float32(1 / (np.iinfo(data.dtype).max + 1))
    else:
        audio, scale = data.astype(np.float32), None
    if audio.ndim == 2:
        channels = audio.shape[1]
        mono = audio[:, 0] + audio[:, 1] if channels > 1 else audio[:, 0].copy()
        for channel in range(2, channels):
            mono += audio[:, channel]
        audio = mono
    if scale is not None:
        audio *= scale
    if data.ndim == 2:
        audio /= np.float32(data.shape[1])
    return np.ascontiguousarray(audio, dtype=np.float32)


def is_silent(samples: np.ndarray) -> bool:
    """True when no sample rises above :data:`SILENCE_PEAK` (a silence-only clip)."""
    return samples.size == 0 or float(np.max(np.abs(samples))) <= SILENCE_PEAK


def _looks_like_text(head: bytes) -> bool:
    if not head:
        return False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:  # a multi-byte character cut at the end of the sample is fine
        if exc.start < len(head) - 3:
            return False
        text = head[:exc.start].decode("utf-8")
    return all(ch.isprintable() or ch in "\t\r\n\f" for ch in text)


def _not_audio_reason(head: bytes, kind: str) -> str:
    if _looks_like_text(head):
        return f"a text file, not {kind} audio"
    article = "an" if kind[0] in "AEIOM" else "a"  # an MP3, an Ogg Vorbis, a WAV, a FLAC
    return f"not {article} {kind} file (starts with bytes {head[:4].hex(' ')})"


def _check_wav_structure(path: Path, content: bytes) -> None:
    """Walk the RIFF chunks of the file's bytes: a clear reason for files scipy would reject cryptically or
    read silently short."""
    if content[:4] not in (b"RIFF", b"RIFX", b"RF64"):
        raise BadFileError(path, _not_audio_reason(content[:512], "WAV"))
    size = len(content)
    fh = io.BytesIO(content)
    head = fh.read(12)
    if len(head) < 12 or head[8:12] != b"WAVE":
        raise BadFileError(path, "not a WAV file (RIFF header without 'WAVE'; the file may be cut short)"
                           if len(head) < 12 else f"RIFF file of type {head[8:12]!r}, not WAVE audio")
    endian = ">" if head[:4] == b"RIFX" else "<"
    pos, seen_fmt = 12, False
    while True:
        chunk = fh.read(8)
        if len(chunk) < 8:
            if not seen_fmt:
                raise BadFileError(path, "WAV header without a 'fmt ' chunk (the file is cut short or corrupt)")
            raise BadFileError(path, "WAV header only: no 'data' chunk with audio samples")
        cid, csize = chunk[:4], struct.unpack(endian + "I", chunk[4:])[0]
        pos += 8
        if cid == b"fmt ":
            fmt = fh.read(min(csize, 16))
            if len(fmt) < 16:
                raise BadFileError(path, "WAV 'fmt ' chunk is cut short")
            _tag, channels, rate, _bps, _align, bits = struct.unpack(endian + "HHIIHH", fmt)
            if channels == 0:
                raise BadFileError(path, "WAV header says 0 channels")
            if bits == 0:
                raise BadFileError(path, "WAV header says 0 bits per sample")
            if rate < MIN_RATE_HZ:
                raise BadFileError(path, f"invalid sample rate {rate} Hz in the WAV header")
            seen_fmt = True
        elif cid == b"data":
            available = size - pos
            # RF64 and streaming writers put 0xFFFFFFFF here: the real size is elsewhere / unknown.
            if head[:4] != b"RF64" and csize != 0xFFFFFFFF and csize > available:
                raise BadFileError(path, f"truncated WAV data: the header declares {csize} bytes of samples "
                                         f"but only {max(available, 0)} are present")
            if csize == 0 or available <= 0:
                raise BadFileError(path, "WAV header only: the file has no audio samples")
            return
        pos += csize + (csize & 1)  # chunks are padded to an even size
        if pos > size:
            raise BadFileError(path, f"truncated WAV file: chunk {cid!r} runs past the end of the file")
        fh.seek(pos)


def _read_wav(path: Path, content: bytes) -> tuple[np.ndarray, int]:
    """Decode a WAV file from its bytes (read once: the RIFF walk and scipy both parse them)."""
    from scipy.io import wavfile

    _check_wav_structure(path, content)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scipy warns on unknown chunks (LIST, etc.)
            rate, data = wavfile.read(io.BytesIO(content), mmap=False)
    except Exception as exc:  # noqa: BLE001 - any decoder failure means this file is unusable
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BadFileError(path, f"not a readable WAV file ({reason})") from None
    return data, int(rate)


def _tfio_message(exc: Exception) -> str:
    """The useful part of a TensorFlow op error: drop '{{function_node ...}}' and '[Op:...]'."""
    msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if "}}" in msg:
        msg = msg.rsplit("}}", 1)[1]
    return msg.split(" [Op:", 1)[0].strip() or type(exc).__name__


def _read_tfio(path: Path, kind: str) -> tuple[np.ndarray, int]:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # hide the libmp3lame import warning and op logs
    try:
        import tensorflow_io as tfio
    except Exception as exc:  # noqa: BLE001
        raise BadFileError(path, f"cannot decode {kind}: tensorflow-io is not usable here "
                                 f"({_tfio_message(exc)}); convert the file to WAV") from None
    try:
        with _TFIO_LOCK:
            tensor = tfio.audio.AudioIOTensor(str(path))
            rate = int(tensor.rate.numpy())
            data = tensor.to_tensor().numpy()
    except Exception as exc:  # noqa: BLE001 - tf.errors.* for corrupt input
        msg = _tfio_message(exc)
        if "unknown file type" in msg:
            with open(path, "rb") as fh:
                raise BadFileError(path, _not_audio_reason(fh.read(512), kind)) from None
        if any(k in msg for k in ("less bytes than requested", "unable to seek", "unable to read at", "failed")):
            raise BadFileError(path, f"truncated or corrupt {kind} data ({msg})") from None
        raise BadFileError(path, f"cannot decode {kind} ({msg})") from None
    if rate < MIN_RATE_HZ:
        raise BadFileError(path, f"invalid sample rate {rate} Hz in the {kind} header")
    return data, rate


def read_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Decode one file -> (float32 mono samples, sample rate in Hz); :class:`BadFileError` if it is unusable."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in AUDIO_SUFFIXES:
        raise BadFileError(path, f"unsupported audio type '{path.suffix}'; convert it to WAV")
    try:
        st = path.stat()  # follows symbolic links
        if not stat.S_ISREG(st.st_mode):  # a FIFO or device would block or never end
            raise BadFileError(path, "not a regular file")
        size = st.st_size
        with open(path, "rb") as fh:
            # a WAV is read whole, once (clips are small); other formats only their first bytes here
            content = fh.read() if suffix in WAV_SUFFIXES else fh.read(512)
        head = content[:512]
    except FileNotFoundError:
        reason = "broken symbolic link" if path.is_symlink() else "file not found"
        raise BadFileError(path, reason) from None
    except OSError as exc:  # ELOOP (symlink loop), EACCES, EISDIR, EIO...
        raise BadFileError(path, f"cannot read ({exc.strerror or exc})") from None
    if size == 0:
        raise BadFileError(path, "empty file (0 bytes)")
    if suffix in WAV_SUFFIXES:
        data, rate = _read_wav(path, content)
    else:
        kind = TFIO_SUFFIXES[suffix]
        if _looks_like_text(head):
            raise BadFileError(path, f"a text file, not {kind} audio")
        data, rate = _read_tfio(path, kind)
    if data.size == 0:
        raise BadFileError(path, "no audio samples")
    if rate < MIN_RATE_HZ:
        raise BadFileError(path, f"invalid sample rate {rate} Hz")
    samples = to_float_mono(data)
    if not np.isfinite(samples).all():
        raise BadFileError(path, "contains NaN or infinite sample values")
    return samples, rate
