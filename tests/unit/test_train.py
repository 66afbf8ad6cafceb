"""Training settings beyond the study: a cosine learning-rate schedule, label smoothing, the features column."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from attention_cnn.common import StageError
from attention_cnn.config import load_config
from attention_cnn.features.tfrecords import FeatureSpec, ShardedWriter, assign_folds, count_by_class, serialize_example, write_spec
from attention_cnn.models import feature_set, settings_type
from attention_cnn.training.train import fit, mixup

PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"


@pytest.fixture(scope="module")
def tiny_features(tmp_path_factory):
    folder = tmp_path_factory.mktemp("features")
    rng = np.random.default_rng(0)
    spec = FeatureSpec(dataset="mnist", shape=[8, 8, 1], storage_dtype="float32", class_names=["0", "1"])
    for split, n in (("train", 40), ("test", 10)):
        labels = np.arange(n) % 2
        x = rng.normal(0.0, 0.3, (n, 8, 8, 1)).astype(np.float32) + labels[:, None, None, None]
        folds = assign_folds(labels)
        spec.counts[split] = count_by_class(labels, spec.class_names)
        with ShardedWriter(folder, spec, split, 64) as writer:
            for i in range(n):
                writer.write(serialize_example(x[i], labels[i], i, folds[i], spec))
    write_spec(folder, spec)
    return folder


def settings(validation_fraction: float = 0.0, **model):
    """``(train, models.cnn)``: params.yaml with a 3-epoch float32 run of a tiny cnn."""
    config = load_config(PARAMS, {
        "train.epochs": 3, "train.batch_size": 8, "train.shuffle_buffer": 64,
        "train.validation_fraction": validation_fraction, "train.mixed_precision": "float32",
        "train.early_stopping": {"monitor": "accuracy", "patience": 3, "enabled": False},
        "models.cnn": {"filters": 2, "kernel_size": 3, "dense_units": 4, "dropout": 0.0, "learning_rate": 0.01, **model}})
    return config.train, config.model("cnn")


def test_cosine_schedule_decays_to_zero_over_the_run_and_constant_stays(tiny_features):
    import keras

    keras.utils.set_random_seed(0)
    model, _, rows, summary, _ = fit(tiny_features, "mnist", "cnn", 0, *settings(), verbose=0)
    assert float(model.optimizer.learning_rate) == pytest.approx(0.01)
    keras.utils.set_random_seed(0)
    model, _, rows, summary, record = fit(tiny_features, "mnist", "cnn", 0,
                                          *settings(lr_schedule="cosine", label_smoothing=0.2), verbose=0)
    assert int(model.optimizer.iterations) == 3 * 5          # 40 examples, batches of 8, 3 epochs
    assert float(model.optimizer.learning_rate) == pytest.approx(0.0, abs=1e-9)   # the end of the cosine
    assert model.loss.get_config()["label_smoothing"] == pytest.approx(0.2)
    assert summary["features"] == "pixels 8x8" and len(rows) == 3
    assert record["lr_schedule"] == "cosine" and record["model"]["label_smoothing"] == 0.2  # config.json's record


def _blended(alpha: float, seed: int, batches: int = 3, n: int = 6):
    """mixup over ``batches`` batches of ``n`` examples: x an example's own number on every pixel, y one-hot of it."""
    import tensorflow as tf

    x = np.arange(batches * n, dtype=np.float32).reshape(batches, n, 1, 1, 1) * np.ones((1, 1, 2, 2, 1), np.float32)
    y = np.eye(batches * n, dtype=np.float32).reshape(batches, n, batches * n)
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    return [(a.numpy(), b.numpy()) for a, b in mixup(ds, alpha, seed)]


def test_mixup_blends_each_example_with_its_mirror_inputs_and_labels_alike():
    n = 6
    for step, (x, y) in enumerate(_blended(0.4, seed=0, n=n)):
        np.testing.assert_allclose(y.sum(axis=1), 1.0, atol=1e-6)
        for i in range(n):
            own, mirror = step * n + i, step * n + n - 1 - i
            lam = y[i, own] if own != mirror else 1.0
            assert 0.0 <= lam <= 1.0
            np.testing.assert_allclose(y[i, mirror], 1.0 - lam if own != mirror else 1.0, atol=1e-6)
            assert np.count_nonzero(y[i]) <= 2                             # only the pair's labels
            np.testing.assert_allclose(x[i], lam * own + (1.0 - lam) * mirror, rtol=1e-5)   # the same weight
    weights = np.concatenate([y[np.arange(n), np.arange(n) + k * n] for k, (_, y) in enumerate(_blended(0.4, 0))])
    assert np.ptp(weights) > 0.2                                          # a weight per example
    same, other = _blended(0.4, 0), _blended(0.4, 1)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(same, _blended(0.4, 0)))   # the seed fixes the blends
    assert not all(np.array_equal(a[1], b[1]) for a, b in zip(same, other))


def test_mixup_trains_and_is_recorded(tiny_features):
    import keras

    keras.utils.set_random_seed(0)
    model, _, rows, _, record = fit(tiny_features, "mnist", "cnn", 0, *settings(mixup_alpha=0.2), verbose=0)
    assert record["mixup_alpha"] == 0.2 and record["model"]["mixup_alpha"] == 0.2
    assert len(rows) == 3 and all(np.isfinite(float(r[1])) for r in rows)


@pytest.mark.parametrize("key,value,match", [
    ("mixup_alpha", -1.0, r"models.cnn.mixup_alpha must be >= 0.0"),
    ("lr_schedule", "linear", "models.cnn.lr_schedule must be one of constant, cosine"),
    ("label_smoothing", 1.0, r"models.cnn.label_smoothing must be < 1.0"),
    ("label_smoothing", -0.1, r"models.cnn.label_smoothing must be >= 0.0"),
])
def test_bad_training_keys_name_the_key(key, value, match):
    with pytest.raises(StageError, match=match):
        settings(**{key: value})


def test_feature_set_names_what_the_model_learns_from():
    resnet, cnn = settings_type("resnet"), settings_type("cnn")
    assert feature_set("mnist", [28, 28, 1], resnet(frontend="logmel")) == "pixels 28x28"   # images pass unchanged
    assert feature_set("speech", [391, 257, 1], cnn()) == "linear |STFT| 391x257"
    assert feature_set("speech", [391, 257, 1], resnet(frontend="logmel", mel_bins=64, time_pool=4)) == "log-mel 98x64"


def test_fused_adam_makes_keras_adams_update():
    """One fused kernel, the same formula: weights match Keras' Adam after several steps."""
    import keras

    from attention_cnn.training.optimizers import FusedAdam

    rng = np.random.default_rng(0)
    x, y = rng.random((32, 6), dtype=np.float32), rng.random((32, 3), dtype=np.float32)
    weights = {}
    for name, opt in (("keras", keras.optimizers.Adam), ("fused", FusedAdam)):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5, activation="relu"), keras.layers.Dense(3)])
        model.compile(opt(learning_rate=0.05), "mse")
        for _ in range(5):
            model.train_on_batch(x, y)
        weights[name] = model.get_weights()
        assert int(model.optimizer.iterations) == 5
    moved = max(float(np.abs(w).max()) for w in weights["keras"])
    assert moved > 0.1
    for a, b in zip(weights["keras"], weights["fused"]):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)   # float rounding order only
    # and the update really is the fused kernel: the graph of one step holds ResourceApplyAdam
    import tensorflow as tf

    opt = FusedAdam(learning_rate=0.1)
    var = keras.Variable(np.ones(4, np.float32))
    opt.build([var])
    graph = tf.function(lambda g: opt.apply([g], [var])).get_concrete_function(tf.TensorSpec([4], tf.float32)).graph
    assert "ResourceApplyAdam" in {op.type for op in graph.get_operations()}


def test_fused_adam_checkpoint_loads_in_safe_mode(tmp_path):
    import keras

    from attention_cnn.training.optimizers import FusedAdam

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(FusedAdam(learning_rate=0.01), "mse")
    model.train_on_batch(np.ones((4, 2), np.float32), np.ones((4, 1), np.float32))
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras", safe_mode=True)
    assert type(loaded.optimizer).__name__ == "FusedAdam" and int(loaded.optimizer.iterations) == 1


def test_no_training_example_left_is_a_one_line_error(tmp_path):
    # one example per class: the stratified 10 % validation slice takes every one of them
    spec = FeatureSpec(dataset="mnist", shape=[8, 8, 1], storage_dtype="float32", class_names=["0", "1"])
    labels = np.array([0, 1])
    spec.counts["train"] = count_by_class(labels, spec.class_names)
    with ShardedWriter(tmp_path, spec, "train", 64) as writer:
        for i, (c, f) in enumerate(zip(labels, assign_folds(labels))):
            writer.write(serialize_example(np.zeros((8, 8, 1), np.float32), c, i, f, spec))
    write_spec(tmp_path, spec)
    with pytest.raises(StageError, match="0 training examples make no batch of train.batch_size=8"):
        fit(tmp_path, "mnist", "cnn", 0, *settings(validation_fraction=0.1), verbose=0)
