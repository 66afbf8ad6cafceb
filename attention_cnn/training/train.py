"""train: fit one model variant on one data set with one seed; save it with its config.

Reads features written by featurize (``attention_cnn.features.tfrecords``), builds the variant from
the registry (``attention_cnn.models``) with ``models.<variant>`` settings, trains with Adam
and categorical cross-entropy, early stopping as configured (the study: on
*training* accuracy, patience 3; a fresh callback per model), and validation from
a stratified slice of the training data (``train.validation_fraction``), or the
test set when ``train.validate_on_test`` is true (the study's choice).

Outputs: ``--out`` (model.keras, config.json, class_names.json: deterministic bytes),
``--summary`` (epochs run, training time), ``--history`` (per-epoch CSV, a DVC plot) and
``--live-dir`` (dvclive logs). The DVC entry point is ``stages/train.py``.
"""
from __future__ import annotations

import math
import re
import shutil
import time
from pathlib import Path
from typing import Any

from attention_cnn.common import StageError, atomic_dir, atomic_write_json
from attention_cnn.config.params import Train
from attention_cnn.models.settings import VariantSettings
from attention_cnn.runs import HISTORY_COLUMNS


def run_record(train: Train, model: VariantSettings, dataset: str) -> dict[str, Any]:
    """The settings of one run as config.json records them (the keys params.yaml set, per data set resolved)."""
    return {
        "epochs": train.epochs, "batch_size": train.batch_size_for(dataset),
        "shuffle_buffer": train.shuffle_buffer_for(dataset), "validation_fraction": train.validation_fraction,
        "validate_on_test": train.validate_on_test, "early_stopping": train.early_stopping.model_dump(exclude_unset=True),
        "strategy": train.strategy, "mixed_precision": train.mixed_precision, "resume": train.resume,
        "learning_rate": model.learning_rate, "lr_schedule": model.lr_schedule, "label_smoothing": model.label_smoothing,
        "mixup_alpha": model.mixup_alpha, "model": model.model_dump(exclude_unset=True),
    }


def mixup(ds, alpha: float, seed: int):
    """Batches ``(x, y)`` (one-hot ``y``) -> mixup's blends, the same shapes: example ``i`` of a batch of ``n`` becomes
    ``lam_i * x_i + (1 - lam_i) * x_(n-1-i)``, its label likewise, ``lam_i ~ Beta(alpha, alpha)``.

    The partner is the example at the mirrored place in the (shuffled) batch. The weights come from stateless
    draws keyed on ``seed`` and the batch's number, so a run with the same seed sees the same blends; a batch of
    one is left as it is. Why in the input pipeline and not in the model: the labels are blended too.
    """
    import tensorflow as tf

    def blend(step, batch):
        x, y = batch
        n = tf.shape(y)[0]
        key = tf.stack([tf.constant(seed, tf.int64), step])
        g1 = tf.random.stateless_gamma([n], seed=key, alpha=alpha)
        g2 = tf.random.stateless_gamma([n], seed=key + tf.constant([0, 1 << 40], tf.int64), alpha=alpha)
        total = g1 + g2
        lam = tf.where(total > 0, g1 / tf.maximum(total, 1e-30), 0.5)   # both draws 0 (tiny alpha): an even blend
        lam_x = tf.reshape(lam, tf.concat([[n], tf.ones([tf.rank(x) - 1], tf.int32)], 0))
        x = lam_x * x + (1.0 - lam_x) * tf.reverse(x, [0])
        return x, lam[:, None] * y + (1.0 - lam[:, None]) * tf.reverse(y, [0])

    return ds.enumerate().map(blend, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def learning_rate(model: VariantSettings, epochs: int, steps_per_epoch: int):
    """The optimizer's learning rate: a float, or a Keras cosine decay from ``learning_rate`` to 0 over
    ``epochs * steps_per_epoch`` optimizer steps (the step count lives in the optimizer state, so a resumed
    run continues on the same curve)."""
    if model.lr_schedule == "constant":
        return model.learning_rate
    import keras

    return keras.optimizers.schedules.CosineDecay(model.learning_rate, decay_steps=max(1, epochs * steps_per_epoch))


class HistoryLogger:
    """Keras callback factory: per-epoch metrics to dvclive (when given) and to a list of rows."""

    @staticmethod
    def make(live):
        import keras

        class _Logger(keras.callbacks.Callback):
            def __init__(self) -> None:
                super().__init__()
                self.rows: list[list[Any]] = []

            def on_epoch_end(self, epoch, logs=None):
                logs = logs or {}
                row = [epoch + 1] + [_round(logs.get(k)) for k in HISTORY_COLUMNS[1:]]
                self.rows.append(row)
                if live is not None:
                    for key, value in zip(HISTORY_COLUMNS[1:], row[1:]):
                        if value != "":
                            split, name = ("val", key[4:]) if key.startswith("val_") else ("train", key)
                            live.log_metric(f"{split}/{name}", value)
                    live.next_step()

        return _Logger()


def _round(value: Any) -> Any:
    return "" if value is None else round(float(value), 6)


class Checkpoint:
    """Per-epoch training state in ``folder`` (outside DVC outputs, which DVC deletes before a stage runs).

    ``state-<epoch>.keras``: the compiled model with optimizer state; ``state.json``: epochs done, the model
    file of that epoch, history rows, early-stopping counters, the random layers' generator states (a .keras
    file does not keep them), training seconds so far and the settings fingerprint. After every epoch the new
    model file is written first, then ``state.json`` is replaced atomically to name it, then older model files
    go: a kill at any moment leaves a state.json and the model of the same complete epoch.
    """

    def __init__(self, folder: Path, key: str) -> None:
        self.folder, self.key = Path(folder), key

    def load(self):
        """``(model, state)`` of a matching checkpoint, or ``None``."""
        import json

        state_file = self.folder / "state.json"
        try:
            state = json.loads(state_file.read_text()) if state_file.is_file() else None
        except ValueError:
            state = None
        if not isinstance(state, dict):
            return None
        from attention_cnn.training.checkpoints import stale_reason

        reason = stale_reason(state.get("fingerprint"), self.key)  # same params, code files and input data?
        name = state.get("model_file")   # a file of this folder that save() names, never a path elsewhere
        model_file = self.folder / name if isinstance(name, str) and re.fullmatch(r"state-\d+\.keras", name) else None
        if not reason and not (model_file and model_file.is_file()):
            reason = "its model file is missing"
        if reason:
            return self._discard(reason)
        from attention_cnn.models.safe_load import load_model

        try:  # the same allow-list and safe_mode as every model load (docs/model-safety.md)
            model = load_model(model_file, compile=True)
        except StageError as exc:
            print(f"resume: checkpoint discarded: {exc}; starting from scratch", flush=True)
            return None
        rng = random_states(model)
        saved = state.get("random_states", [])
        if len(saved) != len(rng):
            return self._discard(f"it holds {len(saved)} random generator states, the model has {len(rng)}")
        for variable, value in zip(rng, saved):
            variable.assign(value)
        return model, state

    def _discard(self, reason: str) -> None:
        print(f"resume: checkpoint in {self.folder} discarded: {reason}; starting from scratch", flush=True)

    def save(self, model, state: dict[str, Any]) -> None:
        import os

        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"state-{state['epoch']}.keras"
        tmp = self.folder / f".{name}.tmp.keras"
        model.save(tmp)
        os.replace(tmp, self.folder / name)
        atomic_write_json(self.folder / "state.json", {
            **state, "model_file": name, "random_states": [v.numpy().tolist() for v in random_states(model)],
            "fingerprint": self.key})
        for old in self.folder.glob("state-*.keras"):
            if old.name != name:
                old.unlink()

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def random_states(model) -> list:
    """The state variables of the model's random generators (dropout masks, augmentation draws), in model order:
    ``model.variables`` holds them beside the weights, a saved .keras file does not."""
    weights = {id(v) for v in model.weights}
    return [v for v in model.variables if id(v) not in weights]


def fit(features_dir: Path, dataset: str, variant: str, seed: int, train: Train, model_settings: VariantSettings,
        live=None, verbose: int = 2, checkpoint_dir: Path | None = None):
    """Train one model. Returns ``(model, spec, history_rows, summary, record)`` (record: :func:`run_record`).

    With ``train.resume`` and a ``checkpoint_dir``, the state is saved after every epoch and a matching
    checkpoint from an interrupted run is continued from its last complete epoch.
    """
    import keras

    from attention_cnn.models import build_model, feature_set
    from attention_cnn.models.blocks import FastDropout, GateConv  # noqa: F401 - register the classes resumed checkpoints hold
    from attention_cnn.training.optimizers import FusedAdam  # also registers the class that resumed checkpoints hold
    from attention_cnn.training.runtime import (for_replicas, keras_distribution_fixes, machine, select_strategy,
                                                set_precision)
    from attention_cnn.features.tfrecords import NUM_FOLDS, batched, count_in_folds, read_spec

    # First: MultiWorkerMirroredStrategy must exist before anything initializes the TensorFlow runtime.
    strategy = select_strategy(train.strategy)
    replicas = strategy.num_replicas_in_sync
    spec = read_spec(features_dir)
    k = train.validation_folds
    bs = train.batch_size_for(dataset)
    # Several replicas split every batch between them, and oneDNN's CPU kernels fail on an empty part: training
    # drops the last partial batch (a different few shuffled examples each epoch); validation keeps it unless
    # it is smaller than the number of replicas.
    train_folds, val_split, val_folds = (None, "test", None) if train.validate_on_test else ((k, NUM_FOLDS), "train", (0, k))
    n_train = count_in_folds(spec, "train", train_folds)
    steps = n_train // bs if replicas > 1 else -(-n_train // bs)  # batches per epoch, as train_ds makes them
    if steps < 1:
        raise StageError(f"{dataset}: {n_train} training examples make no batch of train.batch_size={bs} over "
                         f"{replicas} replica(s); add data, or lower train.validation_fraction or train.batch_size")
    # One endless, reshuffled-every-pass input and steps_per_epoch: one iterator for the whole fit (see batched).
    train_ds = batched(features_dir, spec, "train", bs, folds=train_folds, shuffle_buffer=train.shuffle_buffer_for(dataset), seed=seed,
                       drop_remainder=replicas > 1, repeat=True)
    if model_settings.mixup_alpha:
        train_ds = mixup(train_ds, model_settings.mixup_alpha, seed)
    val_ds = None
    if train.validate_on_test or k > 0:
        rest = count_in_folds(spec, val_split, val_folds) % bs
        val_ds = batched(features_dir, spec, val_split, bs, folds=val_folds, drop_remainder=0 < rest < replicas)
    if replicas > 1:
        train_ds, val_ds = for_replicas(train_ds), (for_replicas(val_ds) if val_ds is not None else None)

    record = run_record(train, model_settings, dataset)
    from attention_cnn.training.checkpoints import fingerprint  # params, code files, input data
    checkpoint = Checkpoint(checkpoint_dir, fingerprint(dataset, variant, seed, record, features_dir)) \
        if (train.resume and checkpoint_dir) else None
    precision = set_precision(train.mixed_precision)
    with strategy.scope():
        resumed = checkpoint.load() if checkpoint else None
        if resumed:
            model, state = resumed
            print(f"resume: continuing {dataset}/{variant} seed={seed} after epoch {state['epoch']}", flush=True)
            # The endless input picks up where the interrupted run left it (the same shuffles and blends), not
            # at its first pass again: the batches the done epochs drew are read and dropped, not trained on.
            train_ds = train_ds.skip(state["epoch"] * steps)
        else:
            state = {"epoch": 0, "rows": [], "train_time_s": 0.0, "early_stopping": {}}
            model = build_model(variant, tuple(spec.shape), spec.num_classes, model_settings,
                                sample_rate_hz=spec.settings.get("sample_rate_hz"))  # the rate the features were made at
            model.compile(optimizer=FusedAdam(learning_rate=learning_rate(model_settings, train.epochs, steps)),
                          loss=keras.losses.CategoricalCrossentropy(label_smoothing=model_settings.label_smoothing),
                          metrics=["accuracy"])
    keras_distribution_fixes(model, strategy, train_ds)

    callbacks = []
    es = train.early_stopping
    early = None
    if es.active:  # a val_* monitor has validation data: the config checked it
        early = ResumableEarlyStopping(  # a new object per model (the study shared one)
            state["early_stopping"], monitor=es.monitor, patience=es.patience,
            mode="min" if "loss" in es.monitor else "max", restore_best_weights=es.restore_best_weights)
        callbacks.append(early)
    logger = HistoryLogger.make(live)
    logger.rows.extend(state["rows"])
    callbacks.append(logger)
    start = time.perf_counter()
    if checkpoint:
        def save_state(epoch, logs=None):
            checkpoint.save(model, {"epoch": epoch + 1, "rows": logger.rows,
                                    "train_time_s": state["train_time_s"] + time.perf_counter() - start,
                                    "early_stopping": early.state() if early else {}})
        callbacks.append(keras.callbacks.LambdaCallback(on_epoch_end=save_state))

    if early is not None and early.already_stopped():
        history_epochs = 0  # the interrupted run had already met its stopping rule
    else:
        history = model.fit(train_ds, validation_data=val_ds, epochs=train.epochs, initial_epoch=state["epoch"],
                            steps_per_epoch=steps, callbacks=callbacks, verbose=verbose)
        history_epochs = len(history.history.get("loss", []))
    train_time_s = state["train_time_s"] + time.perf_counter() - start

    val_acc = [r[4] for r in logger.rows if r[4] != ""]
    summary = {
        "dataset": dataset, "variant": variant, "seed": seed,
        "epochs_run": state["epoch"] + history_epochs,
        "resumed_from_epoch": state["epoch"],
        "train_time_s": round(train_time_s, 3),
        "final_train_accuracy": logger.rows[-1][2] if logger.rows else None,
        "best_val_accuracy": max(val_acc) if val_acc else None,
        "validation": "test" if train.validate_on_test else (f"{k}% of train" if k else "none"),
        "params": model.count_params(),
        "features": feature_set(dataset, spec.shape, model_settings),
        "num_replicas": strategy.num_replicas_in_sync,
        "mixed_precision": precision,
        "machine": machine(),  # CPU flags and oneDNN: `auto` precision and float rounding depend on them
    }
    if not all(math.isfinite(float(r[1])) for r in logger.rows):
        raise StageError(f"training {dataset}/{variant} diverged (loss is not finite); lower models.{variant}.learning_rate")
    return model, spec, logger.rows, summary, record


def _resumable_early_stopping():
    import keras

    class _ResumableEarlyStopping(keras.callbacks.EarlyStopping):
        """EarlyStopping whose counters survive a resume (Keras resets them in on_train_begin)."""

        def __init__(self, saved: dict[str, Any], **kwargs) -> None:
            super().__init__(**kwargs)
            self._saved = dict(saved or {})

        def on_train_begin(self, logs=None):
            super().on_train_begin(logs)
            if self._saved:
                self.wait, self.best = int(self._saved["wait"]), float(self._saved["best"])

        def already_stopped(self) -> bool:
            return bool(self._saved) and int(self._saved["wait"]) >= self.patience

        def state(self) -> dict[str, Any]:
            best = self.best if self.best is not None else (float("inf") if self.mode == "min" else float("-inf"))
            return {"wait": int(self.wait), "best": float(best)}

    return _ResumableEarlyStopping


def ResumableEarlyStopping(saved, **kwargs):  # noqa: N802 - reads like the Keras class it builds
    return _resumable_early_stopping()(saved, **kwargs)


def deterministic_keras_file(path: Path) -> None:
    """Rewrite a ``.keras`` zip with fixed timestamps and no save date, so equal weights give equal bytes.

    Keras stamps the current time into the zip entries and ``metadata.json``; without this, a rerun after
    an interruption would produce a different file hash for the same model.
    """
    import json
    import zipfile

    tmp = path.with_name(f".{path.name}.norm.tmp")
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as dst:
        for info in sorted(src.infolist(), key=lambda i: i.filename):
            data = src.read(info.filename)
            if info.filename == "metadata.json":
                meta = json.loads(data)
                meta.pop("date_saved", None)
                data = json.dumps(meta, sort_keys=True).encode()
            entry = zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0))
            entry.compress_type = zipfile.ZIP_DEFLATED
            entry.external_attr = 0o644 << 16
            dst.writestr(entry, data)
    import os

    os.replace(tmp, path)


def save_model(out: Path, model, spec, dataset: str, variant: str, seed: int, record: dict[str, Any]) -> None:
    """Write model.keras, config.json and class_names.json into ``out`` atomically.

    Everything here is a deterministic function of data, code and params (no timings), so a rerun
    yields the same bytes and DVC stores one copy.
    """
    from attention_cnn.models.blocks import portable
    from attention_cnn.training.runtime import versions

    # Save an uncompiled copy: Adam's two moment buffers would triple the file (303 MB vs ~100 MB for
    # the speech cnn) and are not needed to evaluate or serve the model.
    inference = portable(model)  # built-in layers only: loads without this package
    with atomic_dir(out) as tmp:
        inference.save(tmp / "model.keras")
        deterministic_keras_file(tmp / "model.keras")
        atomic_write_json(tmp / "class_names.json", spec.class_names)
        atomic_write_json(tmp / "config.json", {
            "dataset": dataset, "variant": variant, "seed": seed, "input_shape": spec.shape,
            "class_names": spec.class_names, "model": record["model"], "train": {k: v for k, v in record.items() if k != "model"},
            "feature_settings": spec.settings, "source": spec.source, "versions": versions(),
        })
