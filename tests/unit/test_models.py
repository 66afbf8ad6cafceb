"""Model registry and the study's models: parameter counts must equal STUDY.md's table exactly."""
from __future__ import annotations

import pytest

from attention_cnn.common import StageError
from conftest import FLOAT32_TOLERANCE, fresh_python
from attention_cnn.models import available, build_model

STUDY_COUNTS = {
    ("cnn", (28, 28, 1)): 173_738,
    ("cnn_attention", (28, 28, 1)): 174_027,
    ("cnn", (391, 257, 1)): 25_229_994,
    ("cnn_attention", (391, 257, 1)): 25_230_283,
}


@pytest.mark.parametrize("variant,shape", list(STUDY_COUNTS))
def test_parameter_counts_match_the_study(variant, shape):
    model = build_model(variant, shape, 10, {"learning_rate": 0.001})
    assert model.count_params() == STUDY_COUNTS[(variant, shape)]
    assert model.output_shape == (None, 10)


def test_attention_is_one_gate_after_the_first_conv():
    model = build_model("cnn_attention", (28, 28, 1), 10)
    names = [layer.name for layer in model.layers]
    assert names.index("conv") < names.index("attention_map") < names.index("attention_apply") < names.index("pool")
    gate = model.get_layer("attention_map")
    assert gate.count_params() == 3 * 3 * 32 + 1 and gate.get_config()["activation"] == "sigmoid"
    assert gate.output.shape[-1] == 1  # one weight per spatial position, broadcast over channels


def test_settings_change_the_model():
    assert build_model("cnn", (28, 28, 1), 10, {"filters": 8}).count_params() < STUDY_COUNTS[("cnn", (28, 28, 1))]


def test_registry_lists_variants_and_rejects_unknown_names_and_settings():
    assert {"cnn", "cnn_attention"} <= set(available())
    with pytest.raises(StageError, match="unknown model variant 'resnet9000'"):
        build_model("resnet9000", (28, 28, 1), 10)
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="filterz"):  # the variant's Settings; params.yaml: the config says it
        build_model("cnn", (28, 28, 1), 10, {"filterz": 3})


# --------------------------------------------------------------------------- FastDropout (issue #4)

def _fast_dropout(rate, seed=7, **kwargs):
    from attention_cnn.models.blocks import FastDropout

    return FastDropout(rate, seed=seed, **kwargs)


@pytest.mark.parametrize("rate", [0.2, 0.5])
def test_fast_dropout_keeps_values_with_the_keras_probability_and_scale(rate):
    import numpy as np
    import tensorflow as tf

    x = tf.random.uniform((4, 251, 251, 4), 1.0, 2.0, seed=1)  # 1,008,016 values (odd per row), none zero
    layer = _fast_dropout(rate)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=True)
        total = tf.reduce_sum(y)
    grad, y, x = tape.gradient(total, x).numpy(), y.numpy(), x.numpy()
    kept = y != 0
    dropped = 1.0 - kept.mean()
    sd = (rate * (1 - rate) / kept.size) ** 0.5
    assert abs(dropped - rate) < 5 * sd, (dropped, rate)
    scale = np.float32(1.0 / (1.0 - rate))
    np.testing.assert_array_equal(y[kept], x[kept] * scale)           # kept values scaled as Keras does
    np.testing.assert_array_equal(grad, np.where(kept, scale, np.float32(0)))   # gradient: the same mask
    # the mask is spread evenly: every row position and every channel drops at the rate
    assert np.abs((~kept).mean(axis=(0, 1, 2)) - rate).max() < 0.01
    assert np.abs((~kept).mean(axis=(0, 1, 3)) - rate).max() < 0.05


def test_fast_dropout_is_identity_in_inference_and_seeded_in_training():
    import numpy as np
    import tensorflow as tf

    x = tf.random.uniform((3, 5, 7, 2), 1.0, 2.0, seed=2)
    a, b = _fast_dropout(0.2, seed=3), _fast_dropout(0.2, seed=3)
    assert a(x, training=False) is x or np.array_equal(a(x, training=False).numpy(), x.numpy())
    first, again = a(x, training=True).numpy(), b(x, training=True).numpy()
    np.testing.assert_array_equal(first, again)                     # same seed: same masks
    assert not np.array_equal(first, a(x, training=True).numpy())   # every call draws a new mask
    odd = tf.ones((1, 3, 3, 1))                                     # an odd number of values
    assert set(np.unique(a(odd, training=True).numpy())) <= {0.0, np.float32(1.25)}


def test_fast_dropout_runs_in_bfloat16_and_under_tf_function():
    import tensorflow as tf

    layer = _fast_dropout(0.2, dtype="mixed_bfloat16")   # as train.mixed_precision: bfloat16 builds it
    x = tf.cast(tf.random.uniform((2, 64, 64, 8), 1.0, 2.0, seed=4), tf.bfloat16)
    y = tf.function(lambda t: layer(t, training=True))(x)
    assert y.dtype == tf.bfloat16
    dropped = float(tf.reduce_mean(tf.cast(y == 0, tf.float32)))
    assert 0.17 < dropped < 0.23


# --------------------------------------------------------------------------- GateConv (issue #16)

@pytest.mark.parametrize("shape,kernel_size,padding", [((2, 9, 7, 4), 3, "same"), ((1, 12, 10, 32), 3, "same"),
                                                       ((2, 8, 8, 3), 5, "same"), ((2, 9, 6, 5), 4, "same"),
                                                       ((2, 9, 7, 4), 3, "valid"), ((1, 7, 8, 2), 2, "valid")])
def test_gate_conv_computes_what_conv2d_computes_forward_and_backward(shape, kernel_size, padding):
    """Same weights in a GateConv and a Conv2D: outputs and all three gradients agree to float32 rounding."""
    import numpy as np
    import tensorflow as tf
    from keras import layers

    from attention_cnn.models.blocks import GateConv

    x = tf.random.normal(shape, seed=5)
    fast = GateConv(1, kernel_size, padding=padding, activation="sigmoid")
    plain = layers.Conv2D(1, kernel_size, padding=padding, activation="sigmoid")
    fast.build(shape)
    plain.build(shape)
    plain.set_weights([w + 0.1 for w in fast.get_weights()])   # a non-zero bias
    fast.set_weights(plain.get_weights())
    assert fast.count_params() == plain.count_params() == kernel_size ** 2 * shape[-1] + 1
    results = []
    for layer in (fast, plain):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            loss = tf.reduce_sum(tf.sin(3 * y) * x[:, :y.shape[1], :y.shape[2], :1])   # every gradient term matters
        results.append([y, *tape.gradient(loss, [x, *layer.trainable_weights])])
    for a, b in zip(*results):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-5)
    assert float(tf.reduce_max(tf.abs(results[0][1]))) > 0.01   # the gradient checked is not all zeros


def test_gate_conv_keeps_conv2d_code_for_other_shapes_and_portable_saves_conv2d():
    import keras
    import numpy as np

    from attention_cnn.models.blocks import GateConv, portable

    x = np.random.default_rng(1).random((1, 9, 9, 4), dtype=np.float32)
    two = GateConv(2, 3, padding="same")               # two filters: Conv2D's own convolution
    assert two(x).shape == (1, 9, 9, 2)
    strided = GateConv(1, 3, strides=2, padding="same")
    assert strided(x).shape == (1, 5, 5, 1)
    keras.utils.set_random_seed(0)
    model = build_model("cnn_attention", (28, 28, 1), 10)
    assert type(model.get_layer("attention_map")) is GateConv
    copy = portable(model)
    assert type(copy.get_layer("attention_map")) is keras.layers.Conv2D
    assert copy.get_layer("attention_map").get_config() == model.get_layer("attention_map").get_config()
    sample = np.random.default_rng(2).random((4, 28, 28, 1), dtype=np.float32)
    np.testing.assert_allclose(copy.predict(sample, verbose=0), model.predict(sample, verbose=0), rtol=1e-5, atol=1e-6)


@pytest.mark.slow  # trains or saves TensorFlow models (make test-fast skips it)
@pytest.mark.parametrize("onednn", ["same", "flipped"])
def test_study_models_train_with_fast_dropout_and_save_keras_dropout(tmp_path, onednn):
    """The cnn trains with FastDropout; the saved copy has keras.layers.Dropout and loads in a Python that
    never imports ``attention_cnn``, with the same predictions to float32 rounding, under this process's oneDNN
    setting and under the other one (the CPU decides TensorFlow's default)."""
    import keras
    import numpy as np

    from attention_cnn.models.blocks import FastDropout, portable

    keras.utils.set_random_seed(0)
    model = build_model("cnn_attention", (28, 28, 1), 10)
    assert type(model.get_layer("dropout")) is FastDropout
    x = np.random.default_rng(0).random((8, 28, 28, 1), dtype=np.float32)
    y = keras.utils.to_categorical(np.arange(8) % 10, 10)
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    model.train_on_batch(x, y)
    copy = portable(model)
    assert type(copy.get_layer("dropout")) is keras.layers.Dropout
    assert copy.get_layer("dropout").get_config() == model.get_layer("dropout").get_config()
    copy.save(tmp_path / "model.keras")
    np.save(tmp_path / "x.npy", x)
    code = ("import sys, numpy as np, keras\n"
            "m = keras.models.load_model(sys.argv[1], safe_mode=True, compile=False)\n"
            "np.save(sys.argv[3], m.predict(np.load(sys.argv[2]), verbose=0))\n"
            "assert not [k for k in sys.modules if k == 'attention_cnn' or k.startswith('attention_cnn.')]\n")
    fresh_python(code, [tmp_path / "model.keras", tmp_path / "x.npy", tmp_path / "p.npy"], tmp_path, onednn)
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), model.predict(x, verbose=0), **FLOAT32_TOLERANCE)


@pytest.mark.parametrize("variant", ["cnn_attention", "resnet_se"])
def test_mixed_precision_computes_in_bfloat16_and_gives_float32_probabilities(variant):
    """Under train.mixed_precision bfloat16 (or auto on a bf16 CPU) every layer but the output computes in
    bfloat16 with float32 weights; the softmax stays float32, so probabilities sum to 1 to float32 precision."""
    import keras
    import numpy as np

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = build_model(variant, (28, 28, 1), 10, {})
    finally:
        keras.mixed_precision.set_global_policy("float32")
    inner = {layer.compute_dtype for layer in model.layers if layer.weights and layer.name != "probs"}
    assert inner == {"bfloat16"}
    assert {w.dtype for w in model.weights} == {"float32"}
    assert model.get_layer("probs").compute_dtype == "float32"
    probs = model(np.random.default_rng(1).random((4, 28, 28, 1), dtype=np.float32), training=False)
    assert probs.dtype == "float32"
    np.testing.assert_allclose(np.asarray(probs).sum(axis=1), 1.0, atol=1e-6)


FLAGS = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f {}\n"


@pytest.mark.parametrize("extra,native", [("avx512_bf16", True), ("amx_bf16 amx_tile", True), ("avx512vl", False)])
def test_cpu_bf16_detection(extra, native):
    from attention_cnn.training.runtime import cpu_has_bf16

    assert cpu_has_bf16(FLAGS.format(extra)) is native
    assert cpu_has_bf16("") is False


@pytest.mark.parametrize("extra,expected", [("avx512_bf16", "bfloat16"), ("amx_bf16", "bfloat16"), ("", "float32")])
def test_auto_precision_decides_as_on_another_cpu(extra, expected):
    """Both ways on any machine: ``auto`` given another CPU's flags picks what that CPU would."""
    import keras

    from attention_cnn.training.runtime import set_precision

    try:
        assert set_precision("auto", cpuinfo=FLAGS.format(extra)) == expected
        assert keras.mixed_precision.global_policy().name == ("mixed_bfloat16" if expected == "bfloat16" else "float32")
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_machine_records_cpu_flags_and_onednn():
    from attention_cnn.training.runtime import cpu_features, machine, onednn_enabled

    parsed = cpu_features("model name\t: Some CPU\nflags\t\t: fpu avx2 avx512f amx_bf16\n")
    assert parsed == {"cpu": "Some CPU", "avx2": True, "avx512f": True, "avx512_bf16": False, "amx_bf16": True}
    here = machine()
    assert here["onednn"] is onednn_enabled() and set(parsed) <= set(here) and here["gpus"] == []


def test_auto_precision_follows_this_machine_and_sets_the_policy():
    """``auto`` on this GPU-less machine: bfloat16 exactly when the CPU has AVX512-BF16/AMX (as CI's does)."""
    import keras

    from attention_cnn.training.runtime import cpu_has_bf16, set_precision

    try:
        chosen = set_precision("auto")
        assert chosen == ("bfloat16" if cpu_has_bf16() else "float32")
        assert keras.mixed_precision.global_policy().name == ("mixed_bfloat16" if chosen == "bfloat16" else "float32")
        assert set_precision("float32") == "float32"
        assert keras.mixed_precision.global_policy().name == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")
