"""train: fit one model variant on one data set with one seed; save it with its config.

Reads features written by featurize (``stages.tfrecords``), builds the variant from
the registry (``stages.models``) with ``models.<variant>`` settings, trains with Adam
and categorical cross-entropy, early stopping as configured (the study: on
*training* accuracy, patience 3; a fresh callback per model), and validation from
a stratified slice of the training data (``train.validation_fraction``), or the
test set when ``train.validate_on_test`` is true (the study's choice).

Outputs: ``--out`` (model.keras, config.json, class_names.json, train_summary.json),
``--history`` (per-epoch CSV, a DVC plot) and ``--live-dir`` (dvclive logs).
"""
from __future__ import annotations

import argparse
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from stages.common import (StageError, atomic_dir, atomic_write_json, get_param, load_params, run_main,
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
        "learning_rate": float(model_cfg.get("learning_rate", 0.001)),
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
    return s


def validation_folds(fraction: float) -> int:
    from stages.tfrecords import NUM_FOLDS

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


def fit(features_dir: Path, dataset: str, variant: str, seed: int, s: dict[str, Any], live=None, verbose: int = 2):
    """Train one model. Returns ``(model, spec, history_rows, summary)``."""
    import keras

    from stages.models import build_model
    from stages.runtime import select_strategy
    from stages.tfrecords import NUM_FOLDS, batched, read_spec

    spec = read_spec(features_dir)
    k = validation_folds(s["validation_fraction"])
    if s["validate_on_test"]:
        train_ds = batched(features_dir, spec, "train", s["batch_size"], shuffle_buffer=s["shuffle_buffer"], seed=seed)
        val_ds = batched(features_dir, spec, "test", s["batch_size"])
    else:
        train_ds = batched(features_dir, spec, "train", s["batch_size"], folds=(k, NUM_FOLDS),
                           shuffle_buffer=s["shuffle_buffer"], seed=seed)
        val_ds = batched(features_dir, spec, "train", s["batch_size"], folds=(0, k)) if k > 0 else None

    strategy = select_strategy(s["strategy"])
    with strategy.scope():
        model = build_model(variant, tuple(spec.shape), spec.num_classes, s["model"])
        model.compile(optimizer=keras.optimizers.Adam(learning_rate=s["learning_rate"]),
                      loss="categorical_crossentropy", metrics=["accuracy"])

    callbacks = []
    es = s["early_stopping"]
    if es.get("enabled", True) and es.get("patience", 3) is not None:
        monitor = es.get("monitor", "accuracy")
        if monitor.startswith("val_") and val_ds is None:
            raise StageError(f"params.yaml: train.early_stopping.monitor={monitor} needs validation data "
                             "(train.validation_fraction > 0 or train.validate_on_test: true)")
        callbacks.append(keras.callbacks.EarlyStopping(  # a new object per model (the study shared one)
            monitor=monitor, patience=int(es.get("patience", 3)),
            mode="min" if "loss" in monitor else "max", restore_best_weights=bool(es.get("restore_best_weights", False))))
    logger = HistoryLogger.make(live)
    callbacks.append(logger)

    start = time.perf_counter()
    history = model.fit(train_ds, validation_data=val_ds, epochs=s["epochs"], callbacks=callbacks, verbose=verbose)
    train_time_s = time.perf_counter() - start

    val_acc = [r[4] for r in logger.rows if r[4] != ""]
    summary = {
        "dataset": dataset, "variant": variant, "seed": seed,
        "epochs_run": len(history.history.get("loss", [])),
        "train_time_s": round(train_time_s, 3),
        "final_train_accuracy": logger.rows[-1][2] if logger.rows else None,
        "best_val_accuracy": max(val_acc) if val_acc else None,
        "validation": "test" if s["validate_on_test"] else (f"{k}% of train" if k else "none"),
        "params": model.count_params(),
        "num_replicas": strategy.num_replicas_in_sync,
    }
    if not all(math.isfinite(float(r[1])) for r in logger.rows):
        raise StageError(f"training {dataset}/{variant} diverged (loss is not finite); lower models.{variant}.learning_rate")
    return model, spec, logger.rows, summary


def save_model(out: Path, model, spec, dataset: str, variant: str, seed: int, s: dict[str, Any], summary: dict[str, Any]) -> None:
    """Write model.keras, config.json, class_names.json and train_summary.json into ``out`` atomically."""
    from stages.runtime import versions

    import keras

    # Save an uncompiled copy: Adam's two moment buffers would triple the file (303 MB vs ~100 MB for
    # the speech cnn) and are not needed to evaluate or serve the model.
    inference = keras.models.clone_model(model)
    inference.set_weights(model.get_weights())
    with atomic_dir(out) as tmp:
        inference.save(tmp / "model.keras")
        atomic_write_json(tmp / "class_names.json", spec.class_names)
        atomic_write_json(tmp / "config.json", {
            "dataset": dataset, "variant": variant, "seed": seed, "input_shape": spec.shape,
            "class_names": spec.class_names, "model": s["model"], "train": {k: v for k, v in s.items() if k != "model"},
            "feature_settings": spec.settings, "source": spec.source, "versions": versions(),
        })
        atomic_write_json(tmp / "train_summary.json", summary)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--variant", required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--features", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--history", type=Path, required=True)
    parser.add_argument("--live-dir", type=Path, required=True)
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)

    params = load_params(args.params)
    s = train_settings(params, args.dataset, args.variant)
    from stages.runtime import configure_tensorflow, is_chief

    configure_tensorflow(seed=args.seed)
    chief = is_chief()
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
                                     verbose=1 if sys.stdout.isatty() else 2)
    if chief:
        live.end()
        write_csv_rows(args.history, HISTORY_COLUMNS, rows)
        save_model(args.out, model, spec, args.dataset, args.variant, args.seed, s, summary)
    print(f"trained {args.dataset}/{args.variant} seed={args.seed}: {summary['epochs_run']} epochs in "
          f"{summary['train_time_s']:.1f} s -> {args.out}")
    return 0


if __name__ == "__main__":
    run_main(main)
