"""Benchmark workers: ``python -m bench.workers NAME JSON_ARGS``, one measurement per process.

Each worker prints its result as the last stdout line, ``BENCH_RESULT {json}``. Workers named
``study_*`` re-implement the study's notebook code (``../shared/STUDY.md``) with TensorFlow's
defaults: the orchestrator starts them without ``TF_ENABLE_ONEDNN_OPTS``, and they never call
:func:`attention_cnn.training.runtime.configure_tensorflow`. All other workers use the project's own code path
and configure TensorFlow as the stages do (oneDNN on, op determinism on).
"""
from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

RESULT_TAG = "BENCH_RESULT "
NUM_CLASSES = 10


# --------------------------------------------------------------------------- set-up helpers

def _ours(seed: int | None = None):
    from attention_cnn.training.runtime import configure_tensorflow

    configure_tensorflow(seed=seed)
    import tensorflow as tf

    return tf


def _study(seed: int | None = None):
    """TensorFlow as the study's notebook had it: library defaults, nothing configured."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # quieter logs only; no effect on speed
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    if seed is not None:
        tf.random.set_seed(seed)  # shuffle order only; determinism stays off as in the study
    return tf


def onednn_on() -> bool:
    from tensorflow.python.util import _pywrap_util_port

    return bool(_pywrap_util_port.IsMklEnabled())


def maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _manifest(raw: str, split: str | None = None) -> list[dict[str, str]]:
    from attention_cnn.common import read_csv_dicts

    rows = sorted(read_csv_dicts(Path(raw) / "manifest.csv"), key=lambda r: r["file"])
    return [r for r in rows if split is None or r["split"] == split]


def _folder_bytes(folder: str | Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).iterdir() if p.name.startswith(("train-", "test-")))


def _features(params_file: str, overrides: dict[str, Any] | None = None):
    """``features`` of the params file with ``features.speech`` keys changed."""
    from attention_cnn.config import load_config

    return load_config(params_file, {f"features.speech.{k}": v for k, v in (overrides or {}).items()}).features


def _epoch_timer():
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.seconds: list[float] = []
            self._start = 0.0

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self._start)

    return EpochTimer()


class _EpochClock:
    """Stands in for dvclive's ``Live`` in :func:`attention_cnn.training.train.fit`: stamps the time at every epoch end."""

    def __init__(self) -> None:
        self.stamps: list[float] = []

    def log_metric(self, *args, **kwargs) -> None:
        pass

    def next_step(self) -> None:
        self.stamps.append(time.perf_counter())


# --------------------------------------------------------------------------- featurize

def featurize_ours(a: dict[str, Any]) -> dict[str, Any]:
    """Our featurize stage (``attention_cnn.features.featurize.featurize``) on ``raw``; TFRecords written to ``out``."""
    _ours()
    from attention_cnn.features.featurize import featurize

    import tensorflow as tf

    tf.constant(0.0).numpy()  # the TensorFlow runtime up: the RSS every process pays before any clip
    after_import = maxrss_mb()
    runs = []
    for job in a["jobs"]:  # [{"raw", "out", "overrides"}]; the first may be a warm-up
        features = _features(a["params"], job.get("overrides"))
        start = time.perf_counter()
        spec = featurize("speech", Path(job["raw"]), Path(job["out"]), features, progress=False)
        seconds = time.perf_counter() - start
        n = spec.num_examples("train") + spec.num_examples("test")
        runs.append({"out": job["out"], "clips": n, "seconds": seconds, "clips_per_s": n / seconds,
                     "bytes": _folder_bytes(job["out"]), "shape": spec.shape, "storage_dtype": spec.storage_dtype,
                     "compression": spec.compression, "overrides": job.get("overrides") or {}})
    return {"runs": runs, "onednn": onednn_on(), "maxrss_mb": maxrss_mb(), "rss_after_import_mb": after_import}


def study_featurize(a: dict[str, Any]) -> dict[str, Any]:
    """The study's per-file ``tf.data`` map over the same WAV files, consumed fully in batches of 16.

    list files -> tf.io.read_file -> tf.audio.decode_wav -> pad/cut to clip_samples -> tf.signal.stft
    -> abs -> [..., None]; each batch is summed so that every value is computed and used.
    """
    tf = _study()
    rows = _manifest(a["raw"])
    files = [str(Path(a["raw"]) / r["file"]) for r in rows]
    load = _study_loader(tf, a["clip_samples"], a["frame_length"], a["frame_step"], a["fft_length"])
    ds = tf.data.Dataset.from_tensor_slices(files).map(load, num_parallel_calls=tf.data.AUTOTUNE).batch(16)
    passes = []
    for _ in range(a.get("passes", 1)):
        start = time.perf_counter()
        total, n, shape = 0.0, 0, None
        for batch in ds:
            total += float(tf.reduce_sum(batch))
            n += int(batch.shape[0])
            shape = list(batch.shape[1:])
        passes.append(n / (time.perf_counter() - start))
    # A floor for any featurize over these files: only reading their bytes (page cache warm), best of 2.
    reads = []
    for _ in range(2):
        start = time.perf_counter()
        size = sum(len(Path(f).read_bytes()) for f in files)
        reads.append(len(files) / (time.perf_counter() - start))
    return {"clips": n, "clips_per_s": max(passes), "passes_clips_per_s": passes, "shape": shape, "checksum": total,
            "read_only_clips_per_s": max(reads), "read_bytes": size, "onednn": onednn_on(), "maxrss_mb": maxrss_mb()}


def _study_loader(tf, clip_samples: int, frame_length: int, frame_step: int, fft_length: int) -> Callable:
    def load(path):
        audio, _ = tf.audio.decode_wav(tf.io.read_file(path), desired_channels=1)
        wave = tf.squeeze(audio, axis=-1)[:clip_samples]
        wave = tf.pad(wave, [[0, clip_samples - tf.shape(wave)[0]]])
        wave = tf.ensure_shape(wave, [clip_samples])  # static shape, as the study's fixed-length clips had
        spectrogram = tf.abs(tf.signal.stft(wave, frame_length=frame_length, frame_step=frame_step,
                                            fft_length=fft_length))
        return spectrogram[..., tf.newaxis]

    return load


# --------------------------------------------------------------------------- storage

def storage(a: dict[str, Any]) -> dict[str, Any]:
    """Bytes per example and read speed of one feature folder re-written with each compression option.

    The records are copied byte for byte (only the container compression changes), which is exactly
    what featurize writes with ``features.speech.compression`` set, minus the STFT work.
    """
    tf = _ours()
    from dataclasses import replace

    from attention_cnn.features.tfrecords import (load_split, parse_fn, read_spec, record_checksum, shard_paths,
                                                  write_spec)

    src = Path(a["features"])
    spec = read_spec(src)
    raw_bytes = int(np.prod(spec.shape)) * 4
    n = spec.num_examples("train") + spec.num_examples("test")
    out: dict[str, Any] = {"examples": n, "raw_float32_bytes_per_example": raw_bytes, "storage_dtype": spec.storage_dtype,
                           "options": {}}
    warm = Path(a["out"]) / "warm-up.tfrecord"  # first TFRecord reads and writes pay one-off costs: not timed
    Path(a["out"]).mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(warm)) as writer:
        for record in tf.data.TFRecordDataset(shard_paths(src, spec, "train")[0], compression_type=spec.compression):
            writer.write(record.numpy())
    warm.unlink()
    for option in a["compressions"]:  # "", "GZIP", "ZLIB", or "ZLIB:1" (with a zlib level)
        compression, _, level = option.partition(":")
        # Every option is re-written, "" too, so that rewrite_s - rewrite_s[""] is the cost of compressing.
        folder = Path(a["out"]) / f"compression-{option.replace(':', '-') or 'none'}"
        folder.mkdir(parents=True, exist_ok=True)
        cspec = replace(spec, compression=compression, shards={}, checksums={})
        start = time.perf_counter()
        for split in ("train", "test"):
            names = []
            for i, path in enumerate(shard_paths(src, spec, split)):
                name = cspec.shard_name(split, i)
                options = tf.io.TFRecordOptions(compression_type=compression,
                                                compression_level=int(level) if level else None)
                with tf.io.TFRecordWriter(str(folder / name), options) as writer:
                    for record in tf.data.TFRecordDataset(path, compression_type=spec.compression):
                        writer.write(record.numpy())
                names.append(name)
            cspec.shards[split] = names
        write_s = time.perf_counter() - start
        for names in cspec.shards.values():  # after the timing: what the readers verify, not part of writing
            for name in names:
                record_checksum(cspec, folder / name)
        write_spec(folder, cspec)
        nbytes = _folder_bytes(folder)
        reads = []
        for _ in range(a.get("read_repeats", 2)):
            start = time.perf_counter()
            count = 0
            for split in ("train", "test"):
                ds = load_split(folder, cspec, split).batch(64)
                count += int(ds.reduce(np.int64(0), lambda acc, ex: acc + tf.shape(ex["feature"], tf.int64)[0]))
            reads.append(time.perf_counter() - start)
        out["options"][option or "none"] = {
            "bytes": nbytes, "bytes_per_example": nbytes / n, "ratio_vs_float32": nbytes / n / raw_bytes,
            "read_examples_per_s": n / min(reads), "read_s": min(reads), "count_read": count,
            "rewrite_s": write_s}
    # Lever: the vectorized parse in attention_cnn.features.tfrecords.load_split (batch 256, then parse) vs one record at a time.
    parse = parse_fn(spec)
    paths = shard_paths(src, spec, "train") + shard_paths(src, spec, "test")
    start = time.perf_counter()
    ds = tf.data.TFRecordDataset(paths, compression_type=spec.compression).map(parse)
    ds.reduce(np.int64(0), lambda acc, ex: acc + 1)
    out["read_examples_per_s_per_record_parse"] = n / (time.perf_counter() - start)
    return out


# --------------------------------------------------------------------------- training

def _cnn_settings(params_file: str, epochs: int, variant: str = "cnn", **train):
    """``(train, models.<variant>)`` of the params file, ``epochs`` without early stopping, other ``train`` keys
    changed."""
    from attention_cnn.config import load_config

    changes = {"train.epochs": epochs, "train.resume": False,
               "train.early_stopping": {"monitor": "accuracy", "patience": 1000}}
    config = load_config(params_file, {**changes, **{f"train.{k}": v for k, v in train.items()}})
    return config.train, config.model(variant)


def accuracy(a: dict[str, Any]) -> dict[str, Any]:
    """Test accuracy of the seed cnn trained with attention_cnn.training.train.fit on each feature folder (same seed, same data)."""
    _ours(a["seed"])
    import keras

    from attention_cnn.training.train import fit

    out = {}
    for tag, folder in a["folders"].items():  # tag "<name>" or "<name>@bfloat16" (train.mixed_precision)
        keras.backend.clear_session()
        keras.utils.set_random_seed(a["seed"])
        train, cnn = _cnn_settings(a["params"], a["epochs"], validation_fraction=0.0, validate_on_test=True,
                                   mixed_precision=tag.partition("@")[2] or "float32")
        _, spec, rows, summary, _ = fit(Path(folder), "speech", "cnn", a["seed"], train, cnn, live=None, verbose=0)
        out[tag] = {"test_accuracy": rows[-1][4], "test_loss": rows[-1][3], "train_accuracy": rows[-1][2],
                    "test_accuracy_per_epoch": [r[4] for r in rows], "train_examples": spec.num_examples("train"),
                    "test_examples": spec.num_examples("test"), "epochs": len(rows),
                    "train_time_s": summary["train_time_s"]}
    return {"runs": out, "onednn": onednn_on()}


def epoch_ours(a: dict[str, Any]) -> dict[str, Any]:
    """Epoch times of a speech variant (``variant``, default the seed cnn) through our train path
    (attention_cnn.training.train.fit, batched() input)."""
    _ours(a["seed"])
    from attention_cnn.training.train import fit

    clock = _EpochClock()
    variant = a.get("variant", "cnn")
    # The study validated on the test set every epoch; our train stage does the same with validate_on_test.
    # train.mixed_precision as params.yaml sets it (the train stage's own), unless the bench asks for another.
    train, settings = _cnn_settings(a["params"], a["epochs"], variant, validation_fraction=0.0, validate_on_test=True,
                                    **({"mixed_precision": a["precision"]} if a.get("precision") else {}))
    start = time.perf_counter()
    _, spec, rows, summary, _ = fit(Path(a["features"]), "speech", variant, a["seed"], train, settings, live=clock,
                                    verbose=0)
    stamps = [start] + clock.stamps
    epochs = [b - a_ for a_, b in zip(stamps, stamps[1:])]  # the first includes model build and cache fill
    return {"epoch_s": epochs, "train_examples": spec.num_examples("train"), "test_examples": spec.num_examples("test"),
            "variant": variant, "batch_size": train.batch_size_for("speech"), "mixed_precision": summary["mixed_precision"],
            "onednn": onednn_on(), "num_replicas": summary["num_replicas"], "maxrss_mb": maxrss_mb()}


def study_epoch(a: dict[str, Any]) -> dict[str, Any]:
    """Epoch times of the study's notebook code: per-file map pipeline (no cache), shuffle 1000, batch 16, TF defaults.

    ``variant``: ``cnn`` (default) or ``cnn_attention``, built with the study's layers (``portable``: Keras'
    Conv2D as the gate, Keras' Dropout).
    """
    tf = _study(a["seed"])
    import keras

    from attention_cnn.config import load_config
    from attention_cnn.models import build_model

    rows = _manifest(a["raw"], "train")
    files = [str(Path(a["raw"]) / r["file"]) for r in rows]
    labels = [int(r["label"]) for r in rows]
    load = _study_loader(tf, a["clip_samples"], a["frame_length"], a["frame_step"], a["fft_length"])
    ds = (tf.data.Dataset.from_tensor_slices((files, labels))
          .map(lambda f, y: (load(f), tf.one_hot(y, NUM_CLASSES)), num_parallel_calls=tf.data.AUTOTUNE)
          .shuffle(1000).batch(a["batch_size"]))
    test_rows = _manifest(a["raw"], "test")
    val_ds = (tf.data.Dataset.from_tensor_slices(([str(Path(a["raw"]) / r["file"]) for r in test_rows],
                                                  [int(r["label"]) for r in test_rows]))
              .map(lambda f, y: (load(f), tf.one_hot(y, NUM_CLASSES)), num_parallel_calls=tf.data.AUTOTUNE)
              .batch(a["batch_size"]))  # the study validated on the test set every epoch
    from attention_cnn.models.blocks import portable

    variant = a.get("variant", "cnn")
    settings = load_config(a["params"]).model(variant)
    # the study's layers, same param count: Keras' own Dropout and Conv2D gate (portable swaps ours back)
    model = portable(build_model(variant, (*_frames_bins(a), 1), NUM_CLASSES, settings))
    model.compile(optimizer=keras.optimizers.Adam(), loss="categorical_crossentropy", metrics=["accuracy"])
    timer = _epoch_timer()
    stop = keras.callbacks.EarlyStopping(monitor="accuracy", patience=3)
    model.fit(ds, validation_data=val_ds, epochs=a["epochs"], callbacks=[stop, timer], verbose=0)
    return {"epoch_s": timer.seconds, "train_examples": len(files), "test_examples": len(test_rows),
            "batch_size": a["batch_size"], "variant": variant,
            "onednn": onednn_on(), "maxrss_mb": maxrss_mb()}


def _frames_bins(a: dict[str, Any]) -> tuple[int, int]:
    return 1 + (a["clip_samples"] - a["frame_length"]) // a["frame_step"], a["fft_length"] // 2 + 1


def pipeline(a: dict[str, Any]) -> dict[str, Any]:
    """Epoch times of the seed cnn fed by attention_cnn.features.tfrecords.batched vs by the same arrays already in memory.

    One model, its train step traced first on a few in-memory batches. Then, in ABBA order so that drift
    cancels, ``epochs``-epoch fits on a *fresh* input each time: ``tfrecords`` (a new ``batched()`` pipeline:
    its first epoch reads and parses the TFRecords, any later one reads its in-memory cache) and ``memory``
    (``from_tensor_slices`` over the same arrays, same shuffle and batch).
    """
    tf = _ours(a["seed"])
    import keras

    from attention_cnn.config import load_config
    from attention_cnn.models import build_model
    from attention_cnn.features.tfrecords import FEATURE_KEY, LABEL_KEY, batched, load_split, read_spec

    folder = Path(a["features"])
    spec = read_spec(folder)
    bs, buf, seed = a["batch_size"], a["shuffle_buffer"], a["seed"]
    xs, ys = [], []
    for ex in load_split(folder, spec, "train").batch(256):
        xs.append(ex[FEATURE_KEY].numpy())
        ys.append(ex[LABEL_KEY].numpy())
    x = np.concatenate(xs)
    y = tf.one_hot(np.concatenate(ys), spec.num_classes).numpy()

    def in_memory():
        return (tf.data.Dataset.from_tensor_slices((x, y)).shuffle(buf, seed=seed, reshuffle_each_iteration=True)
                .batch(bs).prefetch(tf.data.AUTOTUNE))

    settings = load_config(a["params"]).model("cnn")
    model = build_model("cnn", tuple(spec.shape), spec.num_classes, settings)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=settings.learning_rate),
                  loss="categorical_crossentropy", metrics=["accuracy"])
    model.fit(in_memory().take(3), epochs=1, verbose=0)  # trace the train step once, outside the timings

    def fit_epochs(ds) -> list[float]:
        timer = _epoch_timer()
        model.fit(ds, epochs=a.get("epochs", 2), callbacks=[timer], verbose=0)
        return timer.seconds

    times: dict[str, list[list[float]]] = {"tfrecords": [], "memory": []}
    for r in range(a["rounds"]):
        order = ("tfrecords", "memory") if r % 2 == 0 else ("memory", "tfrecords")
        for name in order:
            ds = batched(folder, spec, "train", bs, shuffle_buffer=buf, seed=seed) if name == "tfrecords" \
                else in_memory()
            times[name].append(fit_epochs(ds))
    return {"epoch_s": times, "train_examples": int(len(x)), "batch_size": bs, "onednn": onednn_on()}


# --------------------------------------------------------------------------- training levers

def train_levers(a: dict[str, Any]) -> dict[str, Any]:
    """Median time of one training step of the seed speech cnn (batch 16, in memory) per configuration.

    ``baseline`` is the train stage as it is (:class:`attention_cnn.training.optimizers.FusedAdam`,
    :class:`attention_cnn.models.blocks.FastDropout`); ``keras_adam`` swaps in Keras' own Adam (the study's
    optimizer, about a dozen element-wise passes per update); ``keras_dropout`` Keras' own Dropout (the
    study's); ``no_dropout`` prices the dropout layer's random mask (12.6 million numbers a step; the
    study's model keeps it); ``jit`` compiles
    the step with XLA (``jit_compile=True``);
    ``bf16`` uses Keras' ``mixed_bfloat16`` policy (oneDNN runs bfloat16 on CPUs with AVX512-BF16 or AMX);
    ``bf16_jit`` both. The process's oneDNN setting is the orchestrator's choice (environment).
    """
    tf = _ours(0)
    import keras

    from attention_cnn.config import load_config
    from attention_cnn.models import build_model
    from attention_cnn.models.blocks import portable
    from attention_cnn.training.optimizers import FusedAdam

    settings = load_config(a["params"]).model("cnn")
    shape = tuple(a["shape"])
    rng = np.random.default_rng(0)
    x = rng.random((a["batch_size"], *shape), dtype=np.float32)
    y = tf.one_hot(np.arange(a["batch_size"]) % NUM_CLASSES, NUM_CLASSES).numpy()
    out = {}
    for name in a["configs"]:
        keras.backend.clear_session()
        keras.utils.set_random_seed(0)
        keras.mixed_precision.set_global_policy("mixed_bfloat16" if "bf16" in name else "float32")
        # no_dropout: not a lever (dropout is the study's), it prices the dropout masks' random numbers
        model = build_model("cnn", shape, NUM_CLASSES,
                            settings.model_copy(update={"dropout": 0.0}) if name == "no_dropout" else settings)
        if name == "keras_dropout":
            model = portable(model)  # the same model with keras.layers.Dropout
        optimizer = keras.optimizers.Adam() if name == "keras_adam" else FusedAdam()
        model.compile(optimizer=optimizer, loss="categorical_crossentropy", metrics=["accuracy"],
                      jit_compile="jit" in name)
        seconds: list[float] = []

        class StepTimer(keras.callbacks.Callback):
            def on_train_batch_begin(self, batch, logs=None):
                self.t = time.perf_counter()

            def on_train_batch_end(self, batch, logs=None):
                seconds.append(time.perf_counter() - self.t)

        ds = tf.data.Dataset.from_tensors((x, y)).repeat(a["warmup"] + a["steps"])
        model.fit(ds, epochs=1, verbose=0, callbacks=[StepTimer()])
        timed = seconds[a["warmup"]:]
        out[name] = {"step_ms_median": round(1000 * statistics.median(timed), 1),
                     "step_ms_min": round(1000 * min(timed), 1), "steps": len(timed)}
    keras.mixed_precision.set_global_policy("float32")
    return {"configs": out, "onednn": onednn_on(), "batch_size": a["batch_size"]}


# --------------------------------------------------------------------------- the attention gate's cost

def _with_conv2d_gate(model):
    """``model`` with every :class:`GateConv` swapped for ``keras.layers.Conv2D`` (same config and weights);
    every other layer (FastDropout too) as it is, so that only the gate's kernels differ."""
    import keras

    from attention_cnn.models.blocks import GateConv

    def clone(layer):
        return (keras.layers.Conv2D if type(layer) is GateConv else layer.__class__).from_config(layer.get_config())

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


def _gate_check(tf, model, conv_model, x) -> dict[str, Any]:
    """GateConv vs Conv2D at equal weights: max abs difference of the gate's output, of its kernel's gradient and
    of the model's probabilities (float32; a different summation order, so rounding only)."""
    from attention_cnn.models.blocks import GateConv

    gate = next(layer for layer in model.layers if isinstance(layer, GateConv))
    conv = conv_model.get_layer(gate.name)
    h = tf.random.stateless_uniform((int(x.shape[0]), *gate.input.shape[1:]), (1, 2))
    r = tf.random.stateless_normal((int(x.shape[0]), *gate.output.shape[1:]), (3, 4))

    def out_and_grad(layer):
        with tf.GradientTape() as tape:
            y = layer(h)
            loss = tf.reduce_sum(y * r)
        return y, tape.gradient(loss, layer.kernel)

    (y1, g1), (y2, g2) = out_and_grad(gate), out_and_grad(conv)
    p1, p2 = model(x, training=False), conv_model(x, training=False)
    return {"gate_output_max_abs_diff": float(tf.reduce_max(tf.abs(y1 - y2))),
            "gate_kernel_grad_max_abs_diff": float(tf.reduce_max(tf.abs(g1 - g2))),
            "gate_kernel_grad_max_abs": float(tf.reduce_max(tf.abs(g2))),
            "probabilities_max_abs_diff": float(tf.reduce_max(tf.abs(p1 - p2))),
            "layer": gate.name, "types": [type(gate).__name__, type(conv).__name__]}


def gate_cost(a: dict[str, Any]) -> dict[str, Any]:
    """Median train-step time (batch ``batch_size``, random inputs in memory, FusedAdam and FastDropout as the train
    stage has them) of ``cnn``, ``cnn_attention`` (GateConv) and ``cnn_attention`` with Keras' Conv2D as the gate,
    per precision in ``precisions``. All three models are built and traced first; then ``rounds`` rounds of
    ``steps`` steps each, the order of the models reversed every round (ABC CBA ...) so drift cancels.

    Beside it, for ``cnn_step_vs_memory_floor``: the bytes the float32 cnn step must move
    (:func:`bench.memory_floor.step_bytes`) and numpy's copy bandwidth, measured in this process.
    """
    tf = _ours(0)
    import keras

    from attention_cnn.config import load_config
    from attention_cnn.models import build_model
    from attention_cnn.training.optimizers import FusedAdam
    from bench.memory_floor import copy_bandwidth, multiply_adds, step_bytes

    config = load_config(a["params"])
    shape, bs = tuple(a["shape"]), a["batch_size"]
    rng = np.random.default_rng(0)
    x = tf.constant(rng.random((bs, *shape), dtype=np.float32))
    y = tf.one_hot(np.arange(bs) % NUM_CLASSES, NUM_CLASSES)
    out: dict[str, Any] = {"precisions": {}, "batch_size": bs, "onednn": onednn_on()}
    for precision in a["precisions"]:
        keras.backend.clear_session()
        keras.mixed_precision.set_global_policy("mixed_bfloat16" if precision == "bfloat16" else "float32")
        models = {}
        for name in ("cnn", "cnn_attention", "cnn_attention_conv2d"):
            keras.utils.set_random_seed(0)
            variant = "cnn" if name == "cnn" else "cnn_attention"
            settings = config.model(variant)
            model = _with_conv2d_gate(models["cnn_attention"]) if name == "cnn_attention_conv2d" \
                else build_model(variant, shape, NUM_CLASSES, settings)
            model.compile(optimizer=FusedAdam(learning_rate=settings.learning_rate), loss="categorical_crossentropy",
                          metrics=["accuracy"])
            models[name] = model
        if precision == "float32":
            out["gate_check"] = _gate_check(tf, models["cnn_attention"], models["cnn_attention_conv2d"], x)
            out["cnn_step_bytes"] = step_bytes(models["cnn"], bs, 4)
            out["cnn_attention_step_bytes"] = step_bytes(models["cnn_attention"], bs, 4)
            out["params"] = {name: m.count_params() for name, m in models.items()}
            out["multiply_adds_per_example"] = {name: multiply_adds(m) for name, m in models.items()}
        for model in models.values():
            for _ in range(a["warmup"]):
                model.train_on_batch(x, y)  # returns the metrics as numbers: every step has finished when it returns
        times: dict[str, list[float]] = {name: [] for name in models}
        names = list(models)
        for r in range(a["rounds"]):
            for name in (names if r % 2 == 0 else names[::-1]):
                for _ in range(a["steps"]):
                    start = time.perf_counter()
                    models[name].train_on_batch(x, y)
                    times[name].append(time.perf_counter() - start)
        out["precisions"][precision] = {name: {"step_s_median": statistics.median(t), "step_s_min": min(t),
                                               "steps": len(t)} for name, t in times.items()}
        del models
    keras.mixed_precision.set_global_policy("float32")
    keras.backend.clear_session()
    out["copy_bandwidth"] = copy_bandwidth(a["copy_mb"], a.get("copy_repeats", 5))
    return out


# --------------------------------------------------------------------------- inference

def inference(a: dict[str, Any]) -> dict[str, Any]:
    """Single-example latency (p50/p95, as the evaluate stage measures it) and batch-64 throughput.

    Models have random (untrained) weights: speed does not depend on the weight values.
    """
    tf = _ours(0)
    from attention_cnn.config import load_config
    from attention_cnn.evaluation.evaluate import measure_latency_ms
    from attention_cnn.models import build_model
    from attention_cnn.training.runtime import set_precision

    config = load_config(a["params"])
    precision = set_precision(config.train.mixed_precision)  # the precision the train stage builds its models in
    rng = np.random.default_rng(0)
    out = {}
    for dataset, shape in a["shapes"].items():
        for variant in a["variants"]:
            model = build_model(variant, tuple(shape), NUM_CLASSES, config.model(variant))
            example = rng.random(shape, dtype=np.float32)
            p50, p95 = measure_latency_ms(model, example, a["repeats"], a["warmup"])
            batch = tf.convert_to_tensor(rng.random((a["batch"], *shape), dtype=np.float32))
            forward = tf.function(lambda t, m=model: m(t, training=False))
            forward(batch).numpy()
            calls = a["batch_calls"][dataset]
            start = time.perf_counter()
            for _ in range(calls):
                forward(batch).numpy()
            seconds = time.perf_counter() - start
            out[f"{dataset}/{variant}"] = {"latency_ms_p50": round(p50, 3), "latency_ms_p95": round(p95, 3),
                                           f"throughput_examples_per_s_batch{a['batch']}": round(a["batch"] * calls / seconds, 1),
                                           "params": model.count_params(), "input_shape": list(shape)}
    return {"models": out, "weights": "random (untrained)", "mixed_precision": precision, "onednn": onednn_on()}


def resamplers(a: dict[str, Any]) -> dict[str, Any]:
    """ms per clip of three resamplers on the same decoded clips (``raw``'s WAVs) to ``rate_hz``: featurize's
    (the FFT resampler over a chunk of ``chunk`` clips per call), the same resampler a clip per call (as an
    export runs it) and tensorflow-io's (the one featurize and exports used before). A warm-up pass, then
    ``rounds`` rounds in alternating order; the median round per side."""
    _ours()
    import tensorflow_io as tfio

    from attention_cnn.data.audio import read_audio
    from attention_cnn.features.featurize import resample, resample_many

    clips = [read_audio(p) for p in sorted(Path(a["raw"]).rglob("*.wav"))[: a["clips"]]]
    rate, step = a["rate_hz"], a["chunk"]
    sides = {
        "featurize_chunked": lambda: [resample_many(clips[i:i + step], rate) for i in range(0, len(clips), step)],
        "clip_per_call": lambda: [resample(x, r, rate) for x, r in clips],
        "tensorflow_io": lambda: [tfio.audio.resample(x[:, None], rate_in=r, rate_out=rate).numpy() for x, r in clips],
    }
    times: dict[str, list[float]] = {k: [] for k in sides}
    for fn in sides.values():
        fn()
    names = list(sides)
    for i in range(a["rounds"]):
        for name in (names if i % 2 == 0 else names[::-1]):
            start = time.perf_counter()
            sides[name]()
            times[name].append((time.perf_counter() - start) / len(clips) * 1000)
    return {"ms_per_clip": {k: round(statistics.median(v), 3) for k, v in times.items()},
            "clips": len(clips), "chunk_clips": step, "input_rates_hz": sorted({r for _, r in clips}), "rate_hz": rate}


WORKERS = {f.__name__: f for f in (resamplers, featurize_ours, study_featurize, storage, accuracy, epoch_ours, study_epoch,
                                   pipeline, train_levers, gate_cost, inference)}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    name, args = argv[0], json.loads(argv[1])
    result = WORKERS[name](args)
    print(RESULT_TAG + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
