"""train: fit one model variant on one data set with one seed; save it with its config.

Reads features written by featurize (``attention_cnn.features.tfrecords``), builds the variant from
the registry (``attention_cnn.models``) with ``models.<variant>`` settings, trains with Adam
and categorical cross-entropy, early stopping as configured (the study: on
*training* accuracy, patience 3; a fresh callback per model), and validation from
a stratified slice of the training data (``train.validation_fraction``), or the
test set when ``train.validate_on_test`` is true (the study's choice).

Outputs: ``--out`` (model.keras, config.json, class_names.json: deterministic bytes),
``--summary`` (epochs run, training time), ``--history`` (per-epoch CSV, a DVC plot) and
``--live-dir`` (dvclive logs).
"""
from __future__ import annotations

import argparse
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from attention_cnn.common import (StageError, atomic_dir, atomic_write_json, get_param, load_params, run_main,
                           write_csv_rows)

HISTORY_COLUMNS = ["epoch", "loss", "accuracy", "val_loss", "val_accuracy"]


def per_dataset(value: Any, dataset: str, key: str) -> Any:
    """A setting given once for all data sets, or as ``{dataset: value}``."""
    if isinstance(value, dict):
        if dataset not in value:
            raise StageError(f"params.yaml: {key} has no entry for data set '{dataset}'")
        return value[dataset]
    return value


def train_settings(params: dict[str, Any], dataset: str, variant: str) -> dict[str, Any]:
    """The training settings for one (dataset, variant), validated, with one-line errors naming the key."""
    t = get_param(params, "train")
    model_cfg = dict(get_param(params, f"models.{variant}") or {})
    s = {
        "epochs": int(get_param(params, "train.epochs")),
        "batch_size": int(per_dataset(get_param(params, "train.batch_size"), dataset, "train.batch_size")),
        "shuffle_buffer": int(per_dataset(t.get("shuffle_buffer", 1000), dataset, "train.shuffle_buffer")),
        "validation_fraction": float(t.get("validation_fraction", 0.1)),
        "validate_on_test": bool(t.get("validate_on_test", False)),
        "early_stopping": dict(t.get("early_stopping") or {}),
        "strategy": str(t.get("strategy", "auto")),
        "mixed_precision": str(t.get("mixed_precision", "float32")),  # float32 | bfloat16 | auto (attention_cnn.training.runtime)
        "resume": bool(t.get("resume", False)),
        "learning_rate": float(model_cfg.get("learning_rate", 0.001)),
        # constant | cosine (decay to 0 over train.epochs, per step: the last epochs polish, seeds agree more)
        "lr_schedule": str(model_cfg.get("lr_schedule", "constant")),
        "label_smoothing": float(model_cfg.get("label_smoothing", 0.0)),
        "model": model_cfg,
    }
    if s["epochs"] < 1:
        raise StageError(f"params.yaml: train.epochs must be >= 1, got {s['epochs']}")
    if s["batch_size"] < 1:
        raise StageError(f"params.yaml: train.batch_size must be >= 1, got {s['batch_size']}")
    if not 0.0 <= s["validation_fraction"] < 1.0:
        raise StageError(f"params.yaml: train.validation_fraction must be in [0, 1), got {s['validation_fraction']}")
    if s["learning_rate"] <= 0:
        raise StageError(f"params.yaml: models.{variant}.learning_rate must be > 0")
    if s["lr_schedule"] not in LR_SCHEDULES:
        raise StageError(f"params.yaml: models.{variant}.lr_schedule must be one of {', '.join(LR_SCHEDULES)}, "
                         f"got {s['lr_schedule']!r}")
    if not 0.0 <= s["label_smoothing"] < 1.0:
        raise StageError(f"params.yaml: models.{variant}.label_smoothing must be in [0, 1), got {s['label_smoothing']}")
    return s


LR_SCHEDULES = ("constant", "cosine")


def learning_rate(s: dict[str, Any], steps_per_epoch: int):
    """The optimizer's learning rate: a float, or a Keras cosine decay from ``learning_rate`` to 0 over
    ``epochs * steps_per_epoch`` optimizer steps (the step count lives in the optimizer state, so a resumed
    run continues on the same curve)."""
    if s.get("lr_schedule", "constant") == "constant":
        return s["learning_rate"]
    import keras

    return keras.optimizers.schedules.CosineDecay(s["learning_rate"], decay_steps=max(1, s["epochs"] * steps_per_epoch))


def validation_folds(fraction: float) -> int:
    from attention_cnn.features.tfrecords import NUM_FOLDS

    return int(round(fraction * NUM_FOLDS))


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

    ``state.keras``: the compiled model with optimizer state; ``state.json``: epochs done, history rows,
    early-stopping counters, training seconds so far and the settings fingerprint. Both are replaced
    atomically after every epoch, so a kill at any moment leaves the last complete epoch.
    """

    def __init__(self, folder: Path, key: str) -> None:
        self.folder, self.key = Path(folder), key

    def load(self):
        """``(model, state)`` of a matching checkpoint, or ``None``."""
        import json

        import keras

        state_file, model_file = self.folder / "state.json", self.folder / "state.keras"
        if not (state_file.is_file() and model_file.is_file()):
            return None
        try:
            state = json.loads(state_file.read_text())
        except ValueError:
            return None
        from attention_cnn.training.checkpoints import stale_reason

        reason = stale_reason(state.get("fingerprint"), self.key)  # same params, code files and input data?
        if reason:
            print(f"resume: checkpoint in {self.folder} discarded: {reason}; starting from scratch", flush=True)
            return None
        from attention_cnn.models.safe_load import load_model

        try:  # the same allow-list and safe_mode as every model load (docs/model-safety.md)
            return load_model(model_file, compile=True), state
        except StageError as exc:
            print(f"resume: checkpoint discarded: {exc}; starting from scratch", flush=True)
            return None

    def save(self, model, state: dict[str, Any]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / ".state.keras.tmp.keras"
        model.save(tmp)
        import os

        os.replace(tmp, self.folder / "state.keras")
        atomic_write_json(self.folder / "state.json", {**state, "fingerprint": self.key})

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def fit(features_dir: Path, dataset: str, variant: str, seed: int, s: dict[str, Any], live=None, verbose: int = 2,
        checkpoint_dir: Path | None = None):
    """Train one model. Returns ``(model, spec, history_rows, summary)``.

    With ``s["resume"]`` and a ``checkpoint_dir``, the state is saved after every epoch and a matching
    checkpoint from an interrupted run is continued from its last complete epoch.
    """
    import keras

    from attention_cnn.models import build_model, feature_set
    from attention_cnn.models.blocks import FastDropout  # noqa: F401 - registers the class that resumed checkpoints hold
    from attention_cnn.training.optimizers import FusedAdam  # also registers the class that resumed checkpoints hold
    from attention_cnn.training.runtime import for_replicas, keras_distribution_fixes, select_strategy, set_precision
    from attention_cnn.features.tfrecords import NUM_FOLDS, batched, count_in_folds, read_spec

    # First: MultiWorkerMirroredStrategy must exist before anything initializes the TensorFlow runtime.
    strategy = select_strategy(s["strategy"])
    replicas = strategy.num_replicas_in_sync
    spec = read_spec(features_dir)
    k = validation_folds(s["validation_fraction"])
    bs = s["batch_size"]
    # Several replicas split every batch between them, and oneDNN's CPU kernels fail on an empty part: training
    # drops the last partial batch (a different few shuffled examples each epoch); validation keeps it unless
    # it is smaller than the number of replicas.
    train_folds, val_split, val_folds = (None, "test", None) if s["validate_on_test"] else ((k, NUM_FOLDS), "train", (0, k))
    n_train = count_in_folds(spec, "train", train_folds)
    steps = n_train // bs if replicas > 1 else -(-n_train // bs)  # batches per epoch, as train_ds makes them
    if steps < 1:
        raise StageError(f"{dataset}: {n_train} training examples make no batch of train.batch_size={bs} over "
                         f"{replicas} replica(s); add data, or lower train.validation_fraction or train.batch_size")
    # One endless, reshuffled-every-pass input and steps_per_epoch: one iterator for the whole fit (see batched).
    train_ds = batched(features_dir, spec, "train", bs, folds=train_folds, shuffle_buffer=s["shuffle_buffer"], seed=seed,
                       drop_remainder=replicas > 1, repeat=True)
    val_ds = None
    if s["validate_on_test"] or k > 0:
        rest = count_in_folds(spec, val_split, val_folds) % bs
        val_ds = batched(features_dir, spec, val_split, bs, folds=val_folds, drop_remainder=0 < rest < replicas)
    if replicas > 1:
        train_ds, val_ds = for_replicas(train_ds), (for_replicas(val_ds) if val_ds is not None else None)

    from attention_cnn.training.checkpoints import fingerprint  # params, code files, input data
    checkpoint = Checkpoint(checkpoint_dir, fingerprint(dataset, variant, seed, s, features_dir)) \
        if (s["resume"] and checkpoint_dir) else None
    # float32 unless train.mixed_precision says otherwise (`make bench` measures the bfloat16 lever beside it).
    precision = set_precision(s.get("mixed_precision", "float32"))
    with strategy.scope():
        resumed = checkpoint.load() if checkpoint else None
        if resumed:
            model, state = resumed
            print(f"resume: continuing {dataset}/{variant} seed={seed} after epoch {state['epoch']}", flush=True)
        else:
            state = {"epoch": 0, "rows": [], "train_time_s": 0.0, "early_stopping": {}}
            model = build_model(variant, tuple(spec.shape), spec.num_classes, s["model"])
            model.compile(optimizer=FusedAdam(learning_rate=learning_rate(s, steps)),
                          loss=keras.losses.CategoricalCrossentropy(label_smoothing=s.get("label_smoothing", 0.0)),
                          metrics=["accuracy"])
    keras_distribution_fixes(model, strategy, train_ds)

    callbacks = []
    es = s["early_stopping"]
    early = None
    if es.get("enabled", True) and es.get("patience", 3) is not None:
        monitor = es.get("monitor", "accuracy")
        if monitor.startswith("val_") and val_ds is None:
            raise StageError(f"params.yaml: train.early_stopping.monitor={monitor} needs validation data "
                             "(train.validation_fraction > 0 or train.validate_on_test: true)")
        early = ResumableEarlyStopping(  # a new object per model (the study shared one)
            state["early_stopping"], monitor=monitor, patience=int(es.get("patience", 3)),
            mode="min" if "loss" in monitor else "max", restore_best_weights=bool(es.get("restore_best_weights", False)))
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
        history = model.fit(train_ds, validation_data=val_ds, epochs=s["epochs"], initial_epoch=state["epoch"],
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
        "validation": "test" if s["validate_on_test"] else (f"{k}% of train" if k else "none"),
        "params": model.count_params(),
        "features": feature_set(dataset, spec.shape, s["model"]),
        "num_replicas": strategy.num_replicas_in_sync,
        "mixed_precision": precision,
    }
    if not all(math.isfinite(float(r[1])) for r in logger.rows):
        raise StageError(f"training {dataset}/{variant} diverged (loss is not finite); lower models.{variant}.learning_rate")
    return model, spec, logger.rows, summary


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


def save_model(out: Path, model, spec, dataset: str, variant: str, seed: int, s: dict[str, Any]) -> None:
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
            "class_names": spec.class_names, "model": s["model"], "train": {k: v for k, v in s.items() if k != "model"},
            "feature_settings": spec.settings, "source": spec.source, "versions": versions(),
        })


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--variant", required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--features", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--history", type=Path, required=True, help="per-epoch metrics CSV")
    parser.add_argument("--summary", type=Path, required=True, help="epochs run, training time, best validation")
    parser.add_argument("--live-dir", type=Path, required=True)
    parser.add_argument("--checkpoint-dir", type=Path, default=None,
                        help="where per-epoch state goes when train.resume is true (not a DVC output)")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)

    params = load_params(args.params)
    s = train_settings(params, args.dataset, args.variant)
    from attention_cnn.training.runtime import check_strategy, configure_tensorflow, is_chief, task_name

    check_strategy(s["strategy"])  # unknown strategy, or multi_worker without TF_CONFIG: one line, before any work
    chief = is_chief()
    checkpoint_dir = args.checkpoint_dir
    if not chief and checkpoint_dir:
        checkpoint_dir = checkpoint_dir / task_name()  # each worker resumes its own copy of the (synchronous) state
    configure_tensorflow(seed=args.seed)
    # Multi-worker: only the chief logs with dvclive and writes the stage's outputs (model, history, summary);
    # the other workers train their part of every step and write nothing into the workspace.
    live = None
    if chief:
        from dvclive import Live

        shutil.rmtree(args.live_dir, ignore_errors=True)  # no stale steps from an earlier run
        live = Live(str(args.live_dir), dvcyaml=False, save_dvc_exp=False, report=None)
        live.log_params({"dataset": args.dataset, "variant": args.variant, "seed": args.seed,
                         "epochs": s["epochs"], "batch_size": s["batch_size"], "learning_rate": s["learning_rate"]})
    print(f"train {args.dataset}/{args.variant} seed={args.seed}: batch={s['batch_size']} epochs<={s['epochs']}",
          flush=True)
    model, spec, rows, summary = fit(args.features, args.dataset, args.variant, args.seed, s, live,
                                     verbose=1 if sys.stdout.isatty() else 2, checkpoint_dir=checkpoint_dir)
    if not chief:
        if checkpoint_dir:
            Checkpoint(checkpoint_dir, "").clear()
        print(f"trained {args.dataset}/{args.variant} seed={args.seed} as {task_name()} (not the chief: "
              f"nothing written; the chief logs and saves)")
        return 0
    live.end()
    write_csv_rows(args.history, HISTORY_COLUMNS, rows)
    atomic_write_json(args.summary, summary)
    save_model(args.out, model, spec, args.dataset, args.variant, args.seed, s)
    if checkpoint_dir:
        Checkpoint(checkpoint_dir, "").clear()  # finished: a later run must not resume from it
    print(f"trained {args.dataset}/{args.variant} seed={args.seed}: {summary['epochs_run']} epochs in "
          f"{summary['train_time_s']:.1f} s -> {args.out}")
    return 0
