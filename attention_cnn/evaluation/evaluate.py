"""evaluate: test-set metrics, per-class precision/recall, predictions and timing of one trained model.

Outputs (formats: :mod:`attention_cnn.runs`): ``--metrics`` (``metrics.json``),
``--predictions`` (``predictions.csv``: ``index,actual,predicted,confidence,p_<class>...``; DVC
renders it as a confusion matrix) and ``--attention-dir``: attention maps of a fixed
set of test examples and of the misclassified ones, overlaid on the input, with an
``index.json`` (always written; no blocks and no images for a model without
attention). What each kind of block's map shows: :mod:`attention_cnn.evaluation.attention_maps`.
``evaluate.attention_examples_per_class`` (first k test examples of each class) and
``evaluate.attention_max_misclassified`` (first m misclassified, in test order)
choose the examples.

Timing: ``test_time_ms`` is the wall time of ``model.evaluate`` over the whole
test set (the study's "testing time"); single-example latency is measured on a
compiled ``tf.function`` forward pass of batch 1, ``latency_repeats`` calls after
``latency_warmup`` untimed ones, reported as median and 95th percentile. The DVC entry point is ``stages/evaluate.py``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from attention_cnn.common import StageError
from attention_cnn.config.params import Evaluate
from attention_cnn.runs import read_summary


def per_class_scores(actual: np.ndarray, predicted: np.ndarray, class_names: list[str]) -> dict[str, dict[str, float]]:
    """Precision, recall and support per class (0.0 where undefined)."""
    scores = {}
    for i, name in enumerate(class_names):
        tp = int(np.sum((predicted == i) & (actual == i)))
        n_pred = int(np.sum(predicted == i))
        n_true = int(np.sum(actual == i))
        scores[name] = {"precision": round(tp / n_pred, 4) if n_pred else 0.0,
                        "recall": round(tp / n_true, 4) if n_true else 0.0, "support": n_true}
    return scores


def confusion_matrix(actual: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """(num_classes, num_classes) counts, rows = actual, columns = predicted."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (actual, predicted), 1)
    return matrix


def measure_latency_ms(model, example: np.ndarray, repeats: int, warmup: int) -> tuple[float, float]:
    """Median and p95 wall time (ms) of one forward pass on a single example (B=1)."""
    import tensorflow as tf

    x = tf.convert_to_tensor(example[None, ...], tf.float32)
    forward = tf.function(lambda t: model(t, training=False))
    for _ in range(max(1, warmup)):
        forward(x).numpy()
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        forward(x).numpy()
        times.append((time.perf_counter() - start) * 1000.0)
    return float(np.median(times)), float(np.percentile(times, 95))


def gather_test_inputs(features_dir: Path, spec, positions: Sequence[int]) -> np.ndarray:
    """The test inputs at these positions of the ordered test split: (len(positions), *spec.shape) float32,
    in the order asked."""
    from attention_cnn.features.tfrecords import FEATURE_KEY, load_split

    wanted = {int(p) for p in positions}
    found: dict[int, np.ndarray] = {}
    for position, ex in enumerate(load_split(features_dir, spec, "test")):
        if position in wanted:
            found[position] = ex[FEATURE_KEY].numpy()
            if len(found) == len(wanted):
                break
    missing = sorted(wanted - set(found))
    if missing:
        raise StageError(f"{features_dir}: test split has no example at position {missing[0]}; rerun featurize")
    return np.stack([found[int(p)] for p in positions]).astype(np.float32) if positions else \
        np.zeros((0, *spec.shape), np.float32)


@dataclass
class Evaluation:
    """What one evaluation produces: metrics.json, predictions.csv rows and the attention folder's
    ``index.json`` and PNGs (:func:`attention_cnn.evaluation.attention_maps.attention_outputs`)."""

    metrics: dict[str, Any]
    rows: list[list[Any]]
    attention_index: dict[str, Any] = field(default_factory=dict)
    attention_images: dict[str, bytes] = field(default_factory=dict)


def run_evaluation(model_dir: Path, features_dir: Path, summary_file: Path, settings: Evaluate,
                   attention: bool = True) -> Evaluation:
    """Evaluate ``model_dir/model.keras`` on the test split, and draw its attention maps (unless ``attention`` is
    false) of the examples ``settings`` chooses."""
    from attention_cnn.features.tfrecords import FEATURE_KEY, INDEX_KEY, LABEL_KEY, batched, load_split, read_spec

    model_path = model_dir / "model.keras"
    if not model_path.is_file():
        raise StageError(f"{model_path}: model not found; run the train stage first (dvc repro)")
    summary = read_summary(summary_file)
    spec = read_spec(features_dir)
    from attention_cnn.models.safe_load import load_model

    model = load_model(model_path)  # allow-listed classes only, then safe_mode (docs/model-safety.md)
    model.compile(loss="categorical_crossentropy", metrics=["accuracy"])

    test_ds = batched(features_dir, spec, "test", settings.batch_size, cache=True)
    for _ in test_ds:  # one untimed pass fills the cache, so the timing below measures the model
        pass
    start = time.perf_counter()
    test_loss, test_accuracy = model.evaluate(test_ds, verbose=0)
    test_time_ms = (time.perf_counter() - start) * 1000.0

    probs = model.predict(test_ds, verbose=0)
    predicted = probs.argmax(axis=1)
    actual_list, index_list = [], []
    first_example = None
    for ex in load_split(features_dir, spec, "test"):
        actual_list.append(int(ex[LABEL_KEY]))
        index_list.append(int(ex[INDEX_KEY]))
        if first_example is None:
            first_example = ex[FEATURE_KEY].numpy()
    actual = np.asarray(actual_list)
    if len(actual) != len(predicted):
        raise StageError(f"{features_dir}: test split changed while evaluating; rerun featurize")
    p50, p95 = measure_latency_ms(model, first_example, settings.latency_repeats, settings.latency_warmup)

    names = spec.class_names
    metrics = {
        "dataset": summary["dataset"], "variant": summary["variant"], "seed": summary["seed"], "source": spec.source,
        "features": summary.get("features", ""),
        "params": int(model.count_params()), "model_size_bytes": model_path.stat().st_size,
        "epochs_run": summary["epochs_run"], "train_time_s": summary["train_time_s"],
        "best_val_accuracy": summary.get("best_val_accuracy"),
        "test_loss": round(float(test_loss), 6), "test_accuracy": round(float(test_accuracy), 6),
        "test_accuracy_check": round(float(np.mean(predicted == actual)), 6),
        "test_time_ms": round(test_time_ms, 3), "latency_ms_p50": round(p50, 4), "latency_ms_p95": round(p95, 4),
        "num_test": int(len(actual)), "class_names": names,
        "per_class": per_class_scores(actual, predicted, names),
        "confusion": confusion_matrix(actual, predicted, len(names)).tolist(),
    }
    rows = [[int(i), names[a], names[p], round(float(probs[j, p]), 6), *(round(float(q), 6) for q in probs[j])]
            for j, (i, a, p) in enumerate(zip(index_list, actual, predicted))]
    result = Evaluation(metrics, rows)
    if attention:
        from attention_cnn.evaluation.attention_maps import attention_outputs, display_for

        per_class, max_wrong = settings.attention_examples_per_class, settings.attention_max_misclassified
        result.attention_index, result.attention_images = attention_outputs(
            model, lambda positions: gather_test_inputs(features_dir, spec, positions),
            dataset=summary["dataset"], variant=summary["variant"], seed=summary["seed"],
            display=display_for(spec.dataset), input_shape=spec.shape, class_names=names,
            indices=np.asarray(index_list), actual=actual, predicted=predicted,
            confidence=probs[np.arange(len(predicted)), predicted], per_class=per_class,
            max_misclassified=max_wrong)
    return result
