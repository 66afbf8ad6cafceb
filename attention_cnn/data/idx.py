"""The MNIST IDX file format: encode, decode, deterministic gzip.

Shared by fetch (writes and checks the files) and featurize (reads them), so both
declare this one file as a DVC dependency.
"""
from __future__ import annotations

import gzip
import io
import struct
from pathlib import Path

import numpy as np

from attention_cnn.common import StageError

_IMAGES_MAGIC, _LABELS_MAGIC = 0x00000803, 0x00000801


def encode_idx(array: np.ndarray) -> bytes:
    """IDX bytes (uncompressed) for a uint8 array of images (N, 28, 28) or labels (N,)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    magic = _IMAGES_MAGIC if array.ndim == 3 else _LABELS_MAGIC
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.tobytes()


def decode_idx(data: bytes, name: str = "idx") -> np.ndarray:
    """Parse uncompressed IDX bytes into a uint8 array; a clear error if malformed."""
    if len(data) < 8:
        raise StageError(f"{name}: too short to be an IDX file")
    magic, = struct.unpack(">I", data[:4])
    if magic not in (_IMAGES_MAGIC, _LABELS_MAGIC):
        raise StageError(f"{name}: not an IDX ubyte file (magic {magic:#010x})")
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    body = data[4 + 4 * ndim:]
    if len(body) != int(np.prod(dims)):
        raise StageError(f"{name}: expected {int(np.prod(dims))} data bytes for shape {dims}, found {len(body)}")
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


def gzip_bytes(data: bytes) -> bytes:
    """Deterministic gzip (no file name, mtime 0), so embedded output is byte-stable."""
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=6) as gz:
        gz.write(data)
    return buf.getvalue()


def read_idx_gz(path: Path) -> np.ndarray:
    try:
        with gzip.open(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError) as exc:
        raise StageError(f"{path}: cannot decompress ({exc}); re-download it") from None
    return decode_idx(data, str(path))
