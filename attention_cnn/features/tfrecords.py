"""The one owner of the TFRecord feature format: keys, shapes, serialize and parse.

Writer (featurize) and reader (train, evaluate) both go through this module, so
they cannot drift. A feature folder holds:

- ``{split}-{shard:05d}.tfrecord[.gz]``: shards of serialized ``tf.train.Example``;
- ``spec.json``: shape, dtypes, compression, class names, counts per class and
  split, normalization statistics, the shard list and each shard's SHA-256 and size.

Readers verify every shard against its recorded digest before reading it
(:func:`verify_shards`): TensorFlow's TFRecord reader does not check a record's
payload CRC, so damaged bytes in a cached shard would otherwise be trained on.

Each example has four keys:

- ``feature``: raw bytes of one array of shape ``spec.shape`` in ``spec.storage_dtype``
  (``uint8`` for images, ``float16``/``float32`` for spectrograms). Float arrays are stored
  without their trailing all-zero rows (first axis: the frames of a zero-padded clip, three
  quarters of an FSDD spectrogram), and the parser zero-pads them back: lossless, and
  the parsed tensor always has ``spec.shape``;
- ``label``: int64 class index;
- ``index``: int64 position of the example in its split (sorted manifest order);
- ``fold``: int64 in ``[0, NUM_FOLDS)``, assigned per class so that
  ``fold < k`` selects a stratified ``k / NUM_FOLDS`` slice (validation split).
"""
from __future__ import annotations

import errno
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from attention_cnn.common import StageError, atomic_write_json, sha256_file

SPEC_FILE = "spec.json"
NUM_FOLDS = 100
FEATURE_KEY, LABEL_KEY, INDEX_KEY, FOLD_KEY = "feature", "label", "index", "fold"
SPLITS = ("train", "test")
_COMPRESSION_SUFFIX = {"": ".tfrecord", "GZIP": ".tfrecord.gz", "ZLIB": ".tfrecord.zz"}
_STORAGE_DTYPES = ("uint8", "float16", "float32")
# Storage dtypes kept without trailing zero rows -> the dtype tf.io.decode_raw pads them back with (its
# zero-padding kernel has no float16 or uint8; float16's bytes are read as uint16 and bitcast).
_TRIMMED_DECODE = {"float16": "uint16", "float32": "float32"}


@dataclass
class FeatureSpec:
    """Describes one feature folder; serialized as ``spec.json``."""

    dataset: str
    shape: list[int]                  # model input shape, e.g. [391, 257, 1] or [28, 28, 1]
    storage_dtype: str                # dtype of the stored bytes
    scale: float = 1.0                # parsed float32 = stored * scale (1/255 for MNIST pixels)
    compression: str = ""             # "", "GZIP" or "ZLIB"
    class_names: list[str] = field(default_factory=list)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)   # split -> class name -> n
    shards: dict[str, list[str]] = field(default_factory=dict)        # split -> shard file names
    stats: dict[str, float] = field(default_factory=dict)             # train-split mean / std / min / max of parsed values
    source: str = ""                  # data source of the raw data (embedded, fsdd, idx, folder)
    settings: dict[str, Any] = field(default_factory=dict)            # featurize params used
    checksums: dict[str, dict[str, Any]] = field(default_factory=dict)  # shard file name -> {"sha256", "bytes"}

    def __post_init__(self) -> None:
        if self.storage_dtype not in _STORAGE_DTYPES:
            raise StageError(f"storage dtype '{self.storage_dtype}' not supported; use one of {_STORAGE_DTYPES}")
        if self.compression not in _COMPRESSION_SUFFIX:
            raise StageError(f"compression '{self.compression}' not supported; use '', 'GZIP' or 'ZLIB'")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def num_examples(self, split: str) -> int:
        return sum(self.counts.get(split, {}).values())

    def shard_name(self, split: str, shard: int) -> str:
        return f"{split}-{shard:05d}{_COMPRESSION_SUFFIX[self.compression]}"


def write_spec(folder: str | os.PathLike, spec: FeatureSpec) -> None:
    try:
        atomic_write_json(Path(folder) / SPEC_FILE, asdict(spec))
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        raise StageError(f"{Path(folder) / SPEC_FILE}: disk full writing the feature spec (a few kB needed, "
                         f"{_mb(shutil.disk_usage(folder).free)} free); free space there and rerun") from None


def read_spec(folder: str | os.PathLike) -> FeatureSpec:
    path = Path(folder) / SPEC_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StageError(f"{path}: feature spec not found; run the featurize stage (dvc repro)") from None
    except json.JSONDecodeError as exc:
        raise StageError(f"{path}: corrupt feature spec ({exc}); delete it and rerun featurize") from None
    return FeatureSpec(**data)


def assign_folds(labels: Sequence[int], seed: int = 0) -> np.ndarray:
    """Stratified fold ids in ``[0, NUM_FOLDS)`` for examples with these labels.

    Within each class, examples in a seeded random order get folds spread
    evenly over the range (rank * NUM_FOLDS // n), so ``fold < k`` takes
    ``ceil(k * n / NUM_FOLDS)`` examples of every class of size ``n``: a
    stratified ``k`` percent slice, also for small classes.
    """
    labels = np.asarray(labels)
    folds = np.empty(len(labels), dtype=np.int64)
    rng = np.random.default_rng(seed)
    for label in np.unique(labels):
        where = np.flatnonzero(labels == label)
        order = rng.permutation(len(where))
        folds[where[order]] = fold_of_rank(np.arange(len(where)), len(where))
    return folds


def fold_of_rank(rank, n: int):
    """Fold of the example with this rank (0..n-1) within a class of size n."""
    return rank * NUM_FOLDS // n


def serialize_example(feature: np.ndarray, label: int, index: int, fold: int, spec: FeatureSpec) -> bytes:
    """Serialize one example.

    ``feature`` has shape ``spec.shape`` (or the same size), or fewer rows along the first axis: the
    missing rows are zeros (a spectrogram of only the frames that overlap the recording). Float
    features are stored without trailing all-zero rows (see the module docstring).
    """
    import tensorflow as tf

    array = np.asarray(feature)
    row_size = int(np.prod(spec.shape[1:]))
    if array.size > int(np.prod(spec.shape)) or (array.size % row_size if row_size else array.size):
        raise StageError(f"feature of shape {array.shape} does not fit spec shape {spec.shape}")
    rows = np.ascontiguousarray(array, dtype=spec.storage_dtype).reshape(-1, row_size)
    keep = len(rows)
    if spec.storage_dtype in _TRIMMED_DECODE:
        as_bytes = rows.view(np.uint8)  # bytes, not values: a row of -0.0 is kept, so parsing is exact
        while keep and not as_bytes[keep - 1].any():
            keep -= 1
    elif keep < spec.shape[0]:
        rows = np.concatenate([rows, np.zeros((spec.shape[0] - keep, row_size), rows.dtype)])
        keep = len(rows)
    raw = rows[:keep].tobytes()
    example = tf.train.Example(features=tf.train.Features(feature={
        FEATURE_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[raw])),
        LABEL_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
        INDEX_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[int(index)])),
        FOLD_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[int(fold)])),
    }))
    return example.SerializeToString()


def parse_fn(spec: FeatureSpec, as_stored: bool = False):
    """Return ``parse(serialized) -> dict`` with ``feature`` float32 of ``spec.shape``, ``label``, ``index``, ``fold``.

    Works on a batch of serialized examples too (leading batch axis), which is
    much faster inside ``tf.data`` than parsing one record at a time. ``as_stored``:
    ``feature`` stays in ``spec.storage_dtype``, unscaled (:func:`to_model_input` finishes it).
    """
    import tensorflow as tf

    description = {
        FEATURE_KEY: tf.io.FixedLenFeature([], tf.string),
        LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
        INDEX_KEY: tf.io.FixedLenFeature([], tf.int64),
        FOLD_KEY: tf.io.FixedLenFeature([], tf.int64),
    }
    storage = tf.as_dtype(spec.storage_dtype)
    shape = list(spec.shape)
    trimmed_as = _TRIMMED_DECODE.get(spec.storage_dtype)
    full_bytes = int(np.prod(shape)) * storage.size

    def parse(serialized):
        parsed = tf.io.parse_example(serialized, description)
        if trimmed_as:  # zero-pad the trimmed rows back (also reads untrimmed records)
            raw = tf.io.decode_raw(parsed[FEATURE_KEY], tf.as_dtype(trimmed_as), fixed_length=full_bytes)
            if raw.dtype != storage:
                raw = tf.bitcast(raw, storage)
        else:
            raw = tf.io.decode_raw(parsed[FEATURE_KEY], storage)
        batch_shape = tf.shape(raw)[:-1]
        feature = tf.reshape(raw, tf.concat([batch_shape, shape], axis=0))
        if not as_stored:
            feature = to_model_input(feature, spec)
        return {FEATURE_KEY: feature, LABEL_KEY: parsed[LABEL_KEY], INDEX_KEY: parsed[INDEX_KEY], FOLD_KEY: parsed[FOLD_KEY]}

    return parse


def to_model_input(feature, spec: FeatureSpec):
    """Stored values (``spec.storage_dtype``, any leading axes) -> float32 model input (times ``spec.scale``)."""
    import tensorflow as tf

    feature = tf.cast(feature, tf.float32)
    return feature * float(spec.scale) if float(spec.scale) != 1.0 else feature


class ShardedWriter:
    """Streams serialized examples of one split into numbered shards.

    Usage: ``with ShardedWriter(folder, spec, "train", examples_per_shard) as w: w.write(bytes)``.
    Shard names are recorded in ``spec.shards[split]`` when the writer closes.
    """

    def __init__(self, folder: str | os.PathLike, spec: FeatureSpec, split: str, examples_per_shard: int) -> None:
        if examples_per_shard < 1:
            raise StageError(f"examples_per_shard must be >= 1, got {examples_per_shard}")
        self.folder = Path(folder)
        self.spec = spec
        self.split = split
        self.examples_per_shard = examples_per_shard
        self._writer = None
        self._in_shard = 0
        self._written = 0
        self._names: list[str] = []

    def __enter__(self) -> "ShardedWriter":
        return self

    def write(self, record: bytes) -> None:
        import tensorflow as tf

        try:
            if self._writer is None or self._in_shard >= self.examples_per_shard:
                self._close_shard()
                name = self.spec.shard_name(self.split, len(self._names))
                options = tf.io.TFRecordOptions(compression_type=self.spec.compression)
                self._names.append(name)
                self._writer = tf.io.TFRecordWriter(str(self.folder / name), options)
                self._in_shard = 0
            self._writer.write(record)
        except (OSError, tf.errors.OpError) as exc:
            self._raise_write_error(exc)
        self._in_shard += 1
        self._written += 1

    def _close_shard(self) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            writer.close()  # flushes: a full disk may show only here
            record_checksum(self.spec, self.folder / self._names[-1])

    def _raise_write_error(self, exc: BaseException) -> None:
        """A full disk is one line naming the shard and the space needed; anything else propagates."""
        text = str(exc)
        if not (getattr(exc, "errno", None) == errno.ENOSPC or "No space left" in text or "ENOSPC" in text):
            raise exc
        path = self.folder / (self._names[-1] if self._names else "")
        written = sum((self.folder / n).stat().st_size for n in self._names if (self.folder / n).exists())
        total = self.spec.num_examples(self.split)
        done = max(self._written, 1)
        needed = written * max(total, done) / done
        free = shutil.disk_usage(self.folder).free
        raise StageError(f"{path}: disk full while writing the {self.split} features ({_mb(written)} written for "
                         f"{self._written} of {total} examples, about {_mb(needed)} needed for this split, "
                         f"{_mb(free)} free on the file system of {self.folder.parent}); free space there and rerun") from None

    def __exit__(self, *exc: Any) -> None:
        import tensorflow as tf

        try:
            self._close_shard()
        except (OSError, tf.errors.OpError) as error:
            if exc[0] is None:
                self._raise_write_error(error)
        self.spec.shards[self.split] = list(self._names)


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


def record_checksum(spec: FeatureSpec, path: Path) -> None:
    """Record a finished shard's size and SHA-256 in ``spec.checksums`` (what readers verify it against)."""
    spec.checksums[path.name] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}


# Shards this process has verified: (path, size, mtime_ns, inode) -> sha256. Evaluate reads the test split three
# times; each shard is hashed once.
_VERIFIED: dict[tuple[str, int, int, int], str] = {}


def verify_shards(folder: str | os.PathLike, spec: FeatureSpec, paths: Iterable[str]) -> None:
    """Check each shard's size and SHA-256 against ``spec.checksums``; a mismatch is one line naming the shard.

    A spec without checksums (written before they were recorded) is read unverified.
    """
    if not spec.checksums:
        return
    for path in paths:
        name = Path(path).name
        expected = spec.checksums.get(name)
        st = os.stat(path)
        key = (os.path.abspath(path), st.st_size, st.st_mtime_ns, st.st_ino)
        if expected is None:
            problem = "has no checksum in spec.json"
        elif st.st_size != expected.get("bytes"):
            problem = f"is {st.st_size} bytes, spec.json recorded {expected.get('bytes')}"
        elif _VERIFIED.get(key) == expected.get("sha256"):
            continue
        else:
            actual = sha256_file(Path(path))
            if actual == expected.get("sha256"):
                _VERIFIED[key] = actual
                continue
            problem = f"has SHA-256 {actual[:12]}..., spec.json recorded {str(expected.get('sha256'))[:12]}..."
        raise StageError(f"{path}: damaged feature shard ({problem}); restore it with `dvc checkout --relink "
                         f"{folder}` or `dvc pull {folder}`, or rebuild it with `dvc repro -f featurize@{spec.dataset}`")


def shard_paths(folder: str | os.PathLike, spec: FeatureSpec, split: str) -> list[str]:
    names = spec.shards.get(split, [])
    paths = [str(Path(folder) / name) for name in names]
    for path in paths:
        if not os.path.exists(path):
            raise StageError(f"{path}: shard listed in spec.json is missing; rerun featurize (dvc repro)")
    verify_shards(folder, spec, paths)
    return paths


def load_split(
    folder: str | os.PathLike,
    spec: FeatureSpec,
    split: str,
    *,
    folds: tuple[int, int] | None = None,
    ordered: bool = True,
    as_stored: bool = False,
):
    """A ``tf.data.Dataset`` of parsed example dicts from one split (``as_stored``: see :func:`parse_fn`).

    ``ordered``: examples come in file order (shard by shard); otherwise up to
    four shards are read in parallel and interleaved (deterministically), which
    is faster when the data is shuffled anyway. ``folds=(lo, hi)`` keeps only
    examples with ``lo <= fold < hi``.
    """
    import tensorflow as tf

    paths = shard_paths(folder, spec, split)
    if not paths:
        raise StageError(f"{folder}: split '{split}' has no examples; check the data source")
    autotune = tf.data.AUTOTUNE
    ds = tf.data.TFRecordDataset(
        paths,
        compression_type=spec.compression,
        num_parallel_reads=None if ordered else min(len(paths), 4),
    )
    # Batch before parsing: vectorized parsing is several times faster; then unbatch.
    ds = ds.batch(256).map(parse_fn(spec, as_stored), num_parallel_calls=autotune, deterministic=True).unbatch()
    if folds is not None:
        lo, hi = folds
        ds = ds.filter(lambda ex: tf.logical_and(ex[FOLD_KEY] >= lo, ex[FOLD_KEY] < hi))
    # Known size lets Keras show progress and avoids "ran out of data" warnings.
    return ds.apply(tf.data.experimental.assert_cardinality(count_in_folds(spec, split, folds)))


def count_in_folds(spec: FeatureSpec, split: str, folds: tuple[int, int] | None) -> int:
    """Exact number of examples of ``split`` with ``lo <= fold < hi`` (see :func:`assign_folds`)."""
    counts = spec.counts.get(split, {}).values()
    if folds is None:
        return sum(counts)
    lo, hi = folds
    return sum(sum(1 for rank in range(n) if lo <= fold_of_rank(rank, n) < hi) for n in counts)


class RunningStats:
    """Streaming mean, std, min and max over arrays (float64 accumulators)."""

    def __init__(self) -> None:
        self.n = 0
        self.total = 0.0
        self.total_sq = 0.0
        self.min = float("inf")
        self.max = float("-inf")

    def update(self, values: np.ndarray, zeros: int = 0) -> None:
        """Add ``values`` and ``zeros`` more values of 0 (padding that is not materialized)."""
        self.add_zeros(zeros)
        v = np.asarray(values)
        if v.size:
            # float64 accumulation without a float64 copy of the data (squares in the data's own precision)
            self.add_partial(v.size, float(v.sum(dtype=np.float64)), float(np.square(v).sum(dtype=np.float64)),
                             float(v.min()), float(v.max()))

    def add_zeros(self, count: int) -> None:
        """Add ``count`` values of 0 without making them."""
        if count > 0:
            self.n += int(count)
            self.min, self.max = min(self.min, 0.0), max(self.max, 0.0)

    def add_partial(self, n: int, total: float, total_sq: float, low: float, high: float) -> None:
        """Add ``n`` values summarized elsewhere: their sum, sum of squares, min and max."""
        if n > 0:
            self.n += int(n)
            self.total += total
            self.total_sq += total_sq
            self.min, self.max = min(self.min, low), max(self.max, high)

    def merge(self, other: "RunningStats") -> None:
        """Add everything ``other`` has seen (a worker's partial statistics)."""
        self.add_partial(other.n, other.total, other.total_sq, other.min, other.max)

    def as_dict(self) -> dict[str, float]:
        if self.n == 0:
            return {}
        mean = self.total / self.n
        var = max(self.total_sq / self.n - mean * mean, 0.0)
        return {"mean": mean, "std": var ** 0.5, "min": self.min, "max": self.max}


def count_by_class(labels: Iterable[int], class_names: Sequence[str]) -> dict[str, int]:
    counts = {name: 0 for name in class_names}
    for label in labels:
        counts[class_names[int(label)]] += 1
    return counts


def batched(
    folder: str | os.PathLike,
    spec: FeatureSpec,
    split: str,
    batch_size: int,
    *,
    folds: tuple[int, int] | None = None,
    shuffle_buffer: int = 0,
    seed: int = 0,
    cache: bool = True,
    drop_remainder: bool = False,
    repeat: bool = False,
):
    """Batches of ``(features float32 (B, *spec.shape), one-hot labels float32 (B, classes))`` for Keras.

    Parsed examples are cached in memory after the first pass (``cache``), so
    later epochs do no I/O or decoding; shuffling uses a fixed ``seed`` and a
    new order every epoch. Examples are cached, shuffled and batched as stored
    (float16 spectrograms, uint8 pixels: half or a quarter of float32's memory
    and copying) and turned into float32 a batch at a time.

    ``repeat``: passes without end, each a whole epoch in its own batches (the last one partial unless
    ``drop_remainder``), reshuffled every pass; give Keras ``steps_per_epoch``. One iterator then serves
    the whole fit: Keras 3 otherwise makes a new iterator at every epoch's start and drops the one it
    made at the previous epoch's end, and that stalled 2.5-5 s per epoch here (README, Speed). The
    endless pipeline runs without tf.data's autotuner, whose teardown stalled the end of fit.
    """
    import tensorflow as tf

    num_classes = spec.num_classes
    shuffled = bool(shuffle_buffer and shuffle_buffer > 1)
    ds = load_split(folder, spec, split, folds=folds, ordered=not shuffled, as_stored=True)
    ds = ds.map(lambda ex: (ex[FEATURE_KEY], ex[LABEL_KEY]), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if cache:
        ds = ds.cache()
    if shuffled:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    ds = ds.map(lambda x, y: (to_model_input(x, spec), tf.one_hot(y, num_classes)),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if repeat:
        ds = ds.repeat()  # after batch: no batch straddles two epochs
        # Without the autotuner: dropping an endless iterator at the end of fit waited 17-18 s in 2 of 3 runs
        # with it, in none of 7 without. AUTOTUNE then keeps TensorFlow's starting value: the parallel maps
        # run on min(16, cores) threads (tf.data's GetAutotuneDefaultParallelism).
        options = tf.data.Options()
        options.autotune.enabled = False
        ds = ds.with_options(options)
    return ds.prefetch(1 if repeat else tf.data.AUTOTUNE)
