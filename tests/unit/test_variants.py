"""The issue #5 variants: every one builds at both study shapes, runs, trains a step, saves and loads.

Shapes are kept tiny for the forward pass and the training step (28x28 and 40x33): the 391x257 builds only
count parameters and check that self-attention never sees more than ``max_tokens`` tokens.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from attention_cnn import models as registry
from attention_cnn.models import available
from conftest import FLOAT32_TOLERANCE, fresh_python
from attention_cnn.models.blocks import token_pool_size

pytestmark = pytest.mark.slow  # builds and trains every variant (make test-fast skips it)

def build_model(variant, shape, num_classes, settings=None, sample_rate_hz=8000):
    """The registry's build_model with the rate of 8 kHz features (what spec.json gives the train stage)."""
    return registry.build_model(variant, shape, num_classes, settings, sample_rate_hz=sample_rate_hz)


NEW_VARIANTS = ["cnn_se", "cnn_cbam", "cnn_mhsa", "resnet", "resnet_se", "resnet_cbam"]
SHAPES = [(28, 28, 1), (391, 257, 1)]
SMALL_SHAPES = [(28, 28, 1), (40, 33, 1)]

# The parameter counts of the defaults (10 classes). The cnn_* variants are the study's cnn plus the block:
# SE 292, CBAM 391 (channel MLP 292 + 7x7x2 spatial conv 99), MHSA 4,288 (LayerNorm 64 + attention 4,224).
EXPECTED_PARAMS = {
    ("cnn_se", (28, 28, 1)): 173_738 + 292,
    ("cnn_se", (391, 257, 1)): 25_229_994 + 292,
    ("cnn_cbam", (28, 28, 1)): 173_738 + 391,
    ("cnn_cbam", (391, 257, 1)): 25_229_994 + 391,
    ("cnn_mhsa", (28, 28, 1)): 173_738 + 4_288,
    ("cnn_mhsa", (391, 257, 1)): 25_229_994 + 4_288,
    ("resnet", (28, 28, 1)): 176_090,
    ("resnet", (391, 257, 1)): 176_090,
    ("resnet_se", (28, 28, 1)): 179_030,
    ("resnet_se", (391, 257, 1)): 179_030,
    ("resnet_cbam", (28, 28, 1)): 179_624,
    ("resnet_cbam", (391, 257, 1)): 179_624,
}


def test_new_variants_are_registered():
    assert set(NEW_VARIANTS) <= set(available())


@pytest.mark.parametrize("variant,shape", list(EXPECTED_PARAMS))
def test_builds_at_both_study_shapes(variant, shape):
    model = build_model(variant, shape, 10, {"learning_rate": 0.001})
    assert model.count_params() == EXPECTED_PARAMS[(variant, shape)]
    assert model.output_shape == (None, 10)
    if variant.startswith("resnet"):
        assert model.count_params() < 1_000_000


@pytest.mark.parametrize("shape,max_tokens", [((28, 28, 1), 256), ((391, 257, 1), 256), ((391, 257, 1), 64),
                                              ((40, 33, 1), 2000)])
def test_self_attention_sees_at_most_max_tokens(shape, max_tokens):
    model = build_model("cnn_mhsa", shape, 10, {"max_tokens": max_tokens})
    tokens = model.get_layer("mhsa_tokens").output.shape
    assert tokens[1] <= max_tokens and tokens[2] == 32
    conv = model.get_layer("conv").output.shape
    assert model.get_layer("mhsa_add").output.shape == conv  # added back at full resolution
    pool = token_pool_size(conv[1], conv[2], max_tokens)
    assert tokens[1] == math.ceil(conv[1] / pool) * math.ceil(conv[2] / pool)
    if conv[1] * conv[2] <= max_tokens:
        assert pool == 1 and "mhsa_pool" not in [layer.name for layer in model.layers]


def test_token_pool_size():
    assert token_pool_size(26, 26, 256) == 2      # 13 x 13 = 169
    assert token_pool_size(389, 255, 256) == 21   # 19 x 13 = 247; 20 would give 20 x 13 = 260
    assert token_pool_size(16, 16, 256) == 1
    for h, w, m in [(389, 255, 64), (38, 31, 100), (7, 5, 1)]:
        p = token_pool_size(h, w, m)
        assert math.ceil(h / p) * math.ceil(w / p) <= m
        assert p == 1 or math.ceil(h / (p - 1)) * math.ceil(w / (p - 1)) > m  # the smallest such pool
    with pytest.raises(ValueError):
        token_pool_size(10, 10, 0)


def test_self_attention_context_is_added_back_where_it_was_pooled():
    """Odd sizes (7x5, pool 3): the added context is constant exactly on the SAME-pooling windows."""
    import keras

    from attention_cnn.models.blocks import pooled_self_attention

    h, w, p = 7, 5, 3
    inputs = keras.Input((h, w, 4))
    model = keras.Model(inputs, pooled_self_attention(inputs, heads=2, key_dim=4, max_tokens=6))
    assert model.get_layer("mhsa_tokens").output.shape[1] == 3 * 2
    x = np.random.default_rng(0).normal(size=(1, h, w, 4)).astype("float32")
    context = model(x).numpy()[0] - x[0]
    pad_h, pad_w = (3 * p - h) // 2, (2 * p - w) // 2  # SAME pooling pads total // 2 before
    window = [[((r + pad_h) // p, (c + pad_w) // p) for c in range(w)] for r in range(h)]
    for r in range(h):
        for c in range(w):
            for r2 in range(h):
                for c2 in range(w):
                    same = np.allclose(context[r, c], context[r2, c2], atol=1e-6)
                    assert same == (window[r][c] == window[r2][c2]), ((r, c), (r2, c2))


def _random_batch(shape, n=4, classes=10, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, *shape), dtype=np.float32)
    y = np.eye(classes, dtype=np.float32)[rng.integers(0, classes, n)]
    return x, y


@pytest.mark.parametrize("shape", SMALL_SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("variant", NEW_VARIANTS)
def test_forward_pass_and_one_training_step(variant, shape):
    import keras

    keras.utils.set_random_seed(0)
    model = build_model(variant, shape, 10)
    x, y = _random_batch(shape)
    probs = model.predict(x, verbose=0)
    assert probs.shape == (4, 10) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    # Graph mode, as training runs, at the image shape; eagerly at the other: tracing a train step takes 10-20 s
    # per variant here, and the traced code is the same at both shapes.
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=0.001), loss="categorical_crossentropy",
                  metrics=["accuracy"], run_eagerly=shape != SMALL_SHAPES[0])
    before = [w.copy() for w in model.get_weights()]
    loss, _ = model.train_on_batch(x, y)
    assert np.isfinite(loss)
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


@pytest.mark.parametrize("variant", NEW_VARIANTS)
def test_saved_model_loads_in_safe_mode_without_the_model_code(variant, tmp_path):
    """As the train stage saves (blocks.portable) and the evaluate stage loads (safe_mode, no attention_cnn.models)."""
    import keras

    from attention_cnn.models.blocks import portable

    model = build_model(variant, (28, 28, 1), 10)
    portable(model).save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras", safe_mode=True, compile=False)
    x, _ = _random_batch((28, 28, 1), n=2)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


def test_each_cnn_block_is_one_call_after_the_first_conv():
    """The cnn_* variants differ from cnn only between the conv and the pooling head."""
    base = [layer.name for layer in build_model("cnn", (28, 28, 1), 10).layers]
    for variant, prefix in [("cnn_se", "se_"), ("cnn_cbam", "cbam_"), ("cnn_mhsa", "mhsa_")]:
        names = [layer.name for layer in build_model(variant, (28, 28, 1), 10).layers]
        extra = [n for n in names if n not in base]
        assert extra and all(n.startswith(prefix) for n in extra), (variant, extra)
        assert [n for n in names if n in base] == base
        assert names.index("conv") < names.index(extra[0]) and names.index(extra[-1]) < names.index("pool")


def test_resnet_attention_in_every_residual_block():
    import keras

    for variant, marker in [("resnet_se", "_att_squeeze"), ("resnet_cbam", "_att_spatial_map")]:
        model = build_model(variant, (28, 28, 1), 10)
        blocks = {n.name.split("_add")[0] for n in model.layers if n.name.endswith("_add")}
        assert len(blocks) == 6  # 3 stages x 2 blocks
        for block in blocks:
            model.get_layer(block + marker)
    assert not any("_att_" in layer.name for layer in build_model("resnet", (28, 28, 1), 10).layers)
    norms = [layer for layer in build_model("resnet", (28, 28, 1), 10).layers
             if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(norms) == 1 + 6 * 2 + 2  # stem, two per block, the two projection shortcuts


# --------------------------------------------------------------------------- resnet family: frontend and augmentation

RESNETS = ["resnet", "resnet_se", "resnet_cbam"]
SPEECH = (391, 257, 1)
SMALL_SPECTROGRAM = (40, 33, 1)   # a spectrogram to the frontend with mel_bins 16 (33 > 16 columns)
FRONTEND_PARAMS = 257 * 64 + 4 * 64  # frozen filterbank + BatchNorm over the 64 mel bins (gamma, beta, mean, var)
LOGMEL = {"frontend": "logmel", "mel_bins": 64, "time_pool": 2}


@pytest.mark.parametrize("variant", RESNETS)
def test_logmel_frontend_parameter_counts(variant):
    """The frontend adds the frozen filterbank and one BatchNorm; augmentation adds nothing; MNIST is unchanged."""
    base = EXPECTED_PARAMS[(variant, SPEECH)]
    speech = build_model(variant, SPEECH, 10, LOGMEL)
    assert speech.count_params() == base + FRONTEND_PARAMS  # 192,794 / 195,734 / 196,328
    frozen = sum(int(np.prod(w.shape)) for w in speech.non_trainable_weights)
    base_frozen = sum(int(np.prod(w.shape)) for w in build_model(variant, SPEECH, 10).non_trainable_weights)
    assert frozen == base_frozen + 257 * 64 + 2 * 64  # the filterbank and the BatchNorm moving statistics
    assert build_model(variant, SPEECH, 10, {**LOGMEL, "augment": "auto"}).count_params() == base + FRONTEND_PARAMS
    digits = build_model(variant, (28, 28, 1), 10, {**LOGMEL, "augment": "auto"})
    assert digits.count_params() == EXPECTED_PARAMS[(variant, (28, 28, 1))]


@pytest.mark.parametrize("time_pool,mel_bins", [(1, 64), (2, 64), (4, 40), (3, 32)])
def test_logmel_frontend_shapes(time_pool, mel_bins):
    """(B, 391, 257, 1) -> (B, ceil(391 / time_pool), mel_bins, 1) before the stem; the rest of the ResNet follows."""
    model = build_model("resnet", SPEECH, 10, {"frontend": "logmel", "mel_bins": mel_bins, "time_pool": time_pool})
    frames = math.ceil(391 / time_pool)
    assert model.get_layer("frontend_mel").output.shape == (None, 391, mel_bins)
    assert model.get_layer("frontend_norm").output.shape == (None, frames, mel_bins, 1)
    assert model.get_layer("stem_conv").output.shape == (None, math.ceil(frames / 2), math.ceil(mel_bins / 2), 16)
    assert ("frontend_pool" in [layer.name for layer in model.layers]) == (time_pool > 1)
    assert model.get_layer("frontend_norm").get_config()["axis"] in (2, [2])  # one mean and variance per mel bin
    assert model.output_shape == (None, 10)


def test_linear_frontend_is_the_default_and_images_pass_unchanged():
    from attention_cnn.models.blocks import is_spectrogram

    default = [layer.name for layer in build_model("resnet", SPEECH, 10).layers]
    assert default == [layer.name for layer in build_model("resnet", SPEECH, 10, {"frontend": "linear"}).layers]
    assert not any(n.startswith(("frontend_", "augment_", "specaugment_")) for n in default)
    assert is_spectrogram(SPEECH, 64) and not is_spectrogram((28, 28, 1), 64)
    digits = [layer.name for layer in build_model("resnet", (28, 28, 1), 10, {"frontend": "logmel"}).layers]
    assert digits == [layer.name for layer in build_model("resnet", (28, 28, 1), 10).layers]


def test_the_mel_filterbank_is_frozen_and_a_weight():
    import tensorflow as tf

    from attention_cnn.models.blocks import mel_matrix

    model = build_model("resnet", SPEECH, 10, LOGMEL)
    mel = model.get_layer("frontend_mel")
    assert not mel.trainable and mel.trainable_weights == [] and not mel.get_config()["use_bias"]
    kernel = mel.get_weights()[0]
    expected = tf.signal.linear_to_mel_weight_matrix(64, 257, 8000.0, 20.0, 4000.0).numpy()
    np.testing.assert_array_equal(kernel, expected)
    np.testing.assert_array_equal(kernel, mel_matrix(257, 64, 8000))
    assert kernel.shape == (257, 64) and (kernel >= 0).all() and (kernel.sum(axis=0) > 0).all()  # no empty filter
    assert not any(w is mel.kernel for w in model.trainable_weights)
    # another sample rate is another filterbank
    other = build_model("resnet", SPEECH, 10, LOGMEL, sample_rate_hz=16000).get_layer("frontend_mel")
    assert not np.array_equal(other.get_weights()[0], kernel)  # the features' rate, from their spec.json
    with pytest.raises(ValueError, match="the logmel frontend needs the spectrogram's sample rate"):
        build_model("resnet", SPEECH, 10, LOGMEL, sample_rate_hz=None)


LOAD_WITHOUT_PROJECT = """
import sys
import numpy as np
import keras
model = keras.models.load_model(sys.argv[1], safe_mode=True, compile=False)
np.save(sys.argv[3], model.predict(np.load(sys.argv[2]), verbose=0))
np.save(sys.argv[4], model.get_layer("frontend_mel").get_weights()[0])
assert not [m for m in sys.modules if m == "attention_cnn" or m.startswith("attention_cnn.")], "attention_cnn was imported"
"""


SPEAKER_LEVERS = {"utterance_norm": True, "channel_eq_db": 4.0, "freq_warp": 0.1, "time_warp": 0.1,
                  "time_mask_span": "clip", "pool_span": "clip"}


@pytest.mark.parametrize("variant,onednn,extra",
                         [(v, "same", {}) for v in RESNETS] + [("resnet", "flipped", {}), ("resnet", "same", SPEAKER_LEVERS)],
                         ids=[*RESNETS, "resnet-onednn-flipped", "resnet-speaker-levers"])
def test_logmel_model_round_trips_through_safe_mode_without_the_project(variant, onednn, extra, tmp_path):
    """A forward pass and a training step with the frontend and augmentation, then saved as the train stage saves
    (blocks.portable) and loaded in a fresh Python that never imports ``attention_cnn``: the same filterbank bit for
    bit, the same predictions to float32 rounding (log1p is a keras.ops node, the masks built-in layers), under
    this process's oneDNN setting and under the other one."""
    import keras

    from attention_cnn.models.blocks import portable

    keras.utils.set_random_seed(0)
    model = build_model(variant, SMALL_SPECTROGRAM, 10, {"frontend": "logmel", "mel_bins": 16, "time_pool": 2,
                                                         "augment": "auto", **extra})
    x, y = _random_batch(SMALL_SPECTROGRAM, n=8)
    probs = model.predict(x, verbose=0)
    assert probs.shape == (8, 10) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    # eagerly: tracing a graph-mode train step costs 10-20 s per variant here, and
    # test_forward_pass_and_one_training_step traces each variant's step once already
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="categorical_crossentropy", run_eagerly=True)
    mel, stem = (model.get_layer(name).get_weights()[0].copy() for name in ("frontend_mel", "stem_conv"))
    # one training step (augmentation on) moves the statistics away from their initial values and
    # trains the convolutions, never the frozen filterbank
    assert np.isfinite(model.train_on_batch(x * 5, y))
    np.testing.assert_array_equal(model.get_layer("frontend_mel").get_weights()[0], mel)
    assert not np.array_equal(model.get_layer("stem_conv").get_weights()[0], stem)
    portable(model).save(tmp_path / "model.keras")
    np.save(tmp_path / "x.npy", x)
    fresh_python(LOAD_WITHOUT_PROJECT, [tmp_path / "model.keras", tmp_path / "x.npy", tmp_path / "p.npy",
                                        tmp_path / "mel.npy"], tmp_path, onednn)
    np.testing.assert_array_equal(np.load(tmp_path / "mel.npy"), model.get_layer("frontend_mel").get_weights()[0])
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), model.predict(x, verbose=0), **FLOAT32_TOLERANCE)


@pytest.mark.parametrize("shape,settings,marker", [
    ((28, 28, 1), {"augment": "digits"}, "augment_rotate"),
    ((28, 28, 1), {"augment": "auto"}, "augment_rotate"),
    (SMALL_SPECTROGRAM, {"augment": "specaugment", "mel_bins": 16}, "specaugment_freq"),
    (SMALL_SPECTROGRAM, {"augment": "auto", "frontend": "logmel", "mel_bins": 16}, "specaugment_freq"),
    (SMALL_SPECTROGRAM, {"augment": "freq_warp", "frontend": "logmel", "mel_bins": 16}, "warp_zoom"),
    (SMALL_SPECTROGRAM, {"augment": "time_warp", "frontend": "logmel", "mel_bins": 16}, "tempo_zoom"),
    (SMALL_SPECTROGRAM, {"augment": "channel_eq_db", "frontend": "logmel", "mel_bins": 16}, "frontend_eq_draw"),
])
def test_augmentation_acts_in_training_only(shape, settings, marker):
    """Same weights with and without augmentation: identical at inference (predict, training=False), different in
    training (a new random transform per call)."""
    import keras

    keras.utils.set_random_seed(0)
    warp = settings["augment"]
    lever = {"freq_warp": 0.1, "time_warp": 0.1, "channel_eq_db": 4.0}   # training-only settings besides augment
    settings = {**settings, **({"augment": "none", warp: lever[warp]} if warp in lever else {})}
    plain = build_model("resnet", shape, 10, {k: v for k, v in settings.items() if k != "augment" and k not in lever})
    augmented = build_model("resnet", shape, 10, settings)
    assert marker in [layer.name for layer in augmented.layers]
    for layer in plain.layers:   # the same weights; augmentation's own (the EQ's frozen curve) stay as built
        augmented.get_layer(layer.name).set_weights(layer.get_weights())
    x, _ = _random_batch(shape, n=4)
    x = x + np.pad(np.ones((4, 4, 4, 1), np.float32), ((0, 0), (12, shape[0] - 16), (12, shape[1] - 16), (0, 0)))
    np.testing.assert_array_equal(augmented.predict(x, verbose=0), plain.predict(x, verbose=0))
    np.testing.assert_array_equal(augmented(x, training=False).numpy(), plain(x, training=False).numpy())
    assert not np.allclose(augmented(x, training=True).numpy(), plain(x, training=True).numpy())


def test_each_augmentation_only_touches_its_own_kind_of_input():
    def names(shape, **settings):
        return {layer.name for layer in build_model("resnet", shape, 10, settings).layers}

    assert not any(n.startswith("augment_") for n in names(SPEECH, augment="digits"))        # no rotated spectrograms
    assert not any(n.startswith("specaugment_") for n in names((28, 28, 1), augment="specaugment"))  # no masked digits
    assert {"augment_shift", "augment_rotate"} <= names((28, 28, 1), augment="digits")
    speech = names(SPEECH, augment="auto", frontend="logmel")
    assert {"specaugment_time", "specaugment_freq"} <= speech and not any(n.startswith("augment_") for n in speech)


def test_specaugment_masks_are_contiguous_bands_of_the_set_widths():
    import keras

    from attention_cnn.models.blocks import FREQ_MASK, TIME_MASK, spec_augment

    keras.utils.set_random_seed(1)
    frames, bins, n = 200, 64, 64
    inputs = keras.Input((frames, bins, 1))
    model = keras.Model(inputs, spec_augment(inputs))
    ones = np.ones((n, frames, bins, 1), np.float32)
    np.testing.assert_array_equal(model(ones, training=False).numpy(), ones)
    np.testing.assert_array_equal(model.predict(ones, verbose=0), ones)
    out = model(ones, training=True).numpy()[..., 0]
    assert set(np.unique(out)) <= {0.0, 1.0}
    widths = {"time": [], "freq": []}
    for example in out:
        time_masked = np.flatnonzero((example == 0).all(axis=1))
        freq_masked = np.flatnonzero((example == 0).all(axis=0))
        for axis, masked in (("time", time_masked), ("freq", freq_masked)):
            if len(masked):
                assert (np.diff(masked) == 1).all(), (axis, masked)  # one contiguous band
            widths[axis].append(len(masked))
        # everything zero lies in one of the two bands
        zero = example == 0
        zero[time_masked, :] = False
        zero[:, freq_masked] = False
        assert not zero.any()
    for axis, fraction, length in (("time", TIME_MASK, frames), ("freq", FREQ_MASK, bins)):
        w = np.array(widths[axis])
        full = round(fraction * length)
        assert w.max() <= full + 1 and np.median(w) >= full / 2 - 1, (axis, w)  # n/2..n, less where cut by an edge
        assert len(set(w.tolist())) > 1
    starts = {int(np.flatnonzero((e == 0).all(axis=1))[0]) for e in out if (e == 0).all(axis=1).any()}
    assert len(starts) > n // 4  # a new place per example


@pytest.mark.parametrize("time_pool", [1, 4])
def test_clip_sized_time_masks_fall_on_the_clip_and_scale_with_it(time_pool):
    """time_mask_span clip: every example's time mask is a band of 10-20 % of its clip's frames with sound, on them,
    and the padding frames are left as they are; outside training the model is the identity. The axis-sized mask,
    on the same short clips, most often misses the clip."""
    import keras

    from attention_cnn.models.blocks import frames_with_sound, spec_augment

    keras.utils.set_random_seed(3)
    frames, bins, n = 391, 64, 256
    lengths = np.random.default_rng(0).integers(40, 200, n)     # 0.16-0.8 s of sound on a 1.6 s axis
    x = np.zeros((n, frames, bins, 1), np.float32)
    for i, length in enumerate(lengths):
        x[i, :length] = 1.0 + np.random.default_rng(i).random((length, bins, 1))
    inputs = keras.Input((frames, bins, 1))
    pooled = keras.layers.AveragePooling2D((time_pool, 1), padding="same")(inputs)
    on_clip = keras.Model(inputs, spec_augment(pooled, clip=frames_with_sound(inputs, time_pool)))
    on_axis = keras.Model(inputs, spec_augment(pooled))
    plain = keras.Model(inputs, pooled)(x).numpy()[..., 0]
    np.testing.assert_array_equal(on_clip(x, training=False).numpy()[..., 0], plain)
    out = on_clip(x, training=True).numpy()[..., 0]
    shares, hits_axis = [], 0
    axis_out = on_axis(x, training=True).numpy()[..., 0]
    for i, length in enumerate(lengths):
        sound = -(-int(length) // time_pool)
        masked = np.flatnonzero((out[i, :sound] == 0).all(axis=1))      # the clip's frames are >= 1 unmasked
        assert masked.size and (np.diff(masked) == 1).all(), (length, masked)
        np.testing.assert_array_equal(out[i, sound:], plain[i, sound:])             # padding untouched
        shares.append(masked.size / sound)
        hits_axis += bool(((axis_out[i, :sound] == 0).all(axis=1)).any())
    shares = np.array(shares)
    assert 0.07 <= np.median(shares) <= 0.2 and shares.max() <= 0.3, np.percentile(shares, [0, 50, 100])
    assert hits_axis < 0.6 * n, hits_axis          # the axis-sized mask lands on these clips far less often


@pytest.mark.parametrize("strides", [(2, 2, 2), (1, 2, 2)])
def test_clip_pooling_averages_the_positions_that_hold_the_clip(strides):
    """pool_over_clip: the mean over the feature map's positions that start from frames with sound (a clip's L
    frames at the start of the axis: its first ceil(L / s1 / s2 / s3) positions, counted as the strided
    convolutions count them) and all columns; the padding's positions do not enter it; no sound gives zeros."""
    import keras

    from attention_cnn.models.blocks import frames_with_sound, pool_over_clip

    def positions(length):                # as a strided convolution with same padding counts its outputs
        for s in strides:
            length = -(-length // s)
        return length

    frames, bins, channels = 98, 16, 5
    reduced = positions(frames)
    spectrogram, features = keras.Input((frames, bins, 1)), keras.Input((reduced, 3, channels))
    model = keras.Model([spectrogram, features], pool_over_clip(features, frames_with_sound(spectrogram), strides))
    lengths = np.array([1, 7, 8, 9, 25, 60, 98, 0])
    x = np.zeros((len(lengths), frames, bins, 1), np.float32)
    for i, length in enumerate(lengths):
        x[i, :length] = np.random.default_rng(i).uniform(0.1, 1.0, (length, bins, 1))
    maps = np.random.default_rng(9).normal(size=(len(lengths), reduced, 3, channels)).astype(np.float32)
    out = model([x, maps]).numpy()
    for i, length in enumerate(lengths):
        held = positions(int(length))
        expected = maps[i, :held].mean(axis=(0, 1)) if held else np.zeros(channels, np.float32)
        np.testing.assert_allclose(out[i], expected, rtol=1e-5, atol=1e-6)
    changed = maps.copy()
    changed[:, -1] += 100.0           # the last position: padding for every clip shorter than the axis' last stride
    np.testing.assert_allclose(model([x, changed]).numpy()[:-2], out[:-2], rtol=1e-5, atol=1e-6)


def test_resnet_with_clip_pooling_reads_only_the_clips_positions():
    """pool_span clip in the real builder: the softmax is the Dense layer on the mean of the last stage's positions
    that hold the clip, computed here from that stage's output (40 frames, time_pool 2 and three strides of 2:
    3 positions; a 9-frame clip holds the first one, a clip over the whole axis all three); with pool_span axis it
    is the mean over every position. A digit image is pooled whole either way."""
    import keras

    x = np.zeros((2, 40, 129, 1), np.float32)
    x[0, :9] = np.random.default_rng(0).uniform(0.1, 1.0, (9, 129, 1))
    x[1] = 0.5
    for span, held in (("clip", (1, 3)), ("axis", (3, 3))):
        model = build_model("resnet", (40, 129, 1), 10, {"frontend": "logmel", "time_pool": 2, "filters": 4,
                                                          "pool_span": span})
        stage = keras.Model(model.input, model.get_layer("stage3_block2_out").output)(x).numpy()
        assert stage.shape[1] == 3
        kernel, bias = model.get_layer("probs").get_weights()
        for i in range(2):
            logits = stage[i, :held[i]].mean(axis=(0, 1)) @ kernel + bias
            expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
            np.testing.assert_allclose(model(x[i:i + 1]).numpy()[0], expected, rtol=1e-4, atol=1e-6)
        assert ("gap" in [layer.name for layer in model.layers]) == (span == "axis")
    image = build_model("resnet", (28, 28, 1), 10, {"pool_span": "clip", "filters": 4})
    assert "gap" in [layer.name for layer in image.layers]


def test_channel_eq_is_one_random_smooth_gain_per_clip_in_training_only():
    """Per example a gain curve over the mel bins, the same in every frame (a recording chain, not noise): its
    level in dB has the set sd, it is smooth (a few cosines, no bin-to-bin jitter), zero frames stay zero, and
    outside training it is exactly 1."""
    import keras

    from attention_cnn.models.blocks import CHANNEL_EQ_TERMS, channel_eq

    keras.utils.set_random_seed(2)
    frames, bins, n, sd_db = 30, 64, 512, 4.0
    inputs = keras.Input((frames, bins))
    model = keras.Model(inputs, channel_eq(inputs, sd_db))
    x = np.random.default_rng(0).uniform(0.5, 2.0, (n, frames, bins)).astype(np.float32)
    x[:, -5:] = 0.0                                                    # padding frames
    np.testing.assert_array_equal(model(x, training=False).numpy(), x)
    np.testing.assert_array_equal(model.predict(x, verbose=0), x)
    out = model(x, training=True).numpy()
    np.testing.assert_array_equal(out[:, -5:], 0.0)
    gain_db = 20 * np.log10(out[:, :-5] / x[:, :-5])                   # (n, frames, bins)
    np.testing.assert_allclose(gain_db, np.broadcast_to(gain_db[:, :1], gain_db.shape), atol=1e-3)
    curve = gain_db[:, 0]                                              # (n, bins)
    level = curve.mean(axis=1)                                         # the constant term's share
    assert 0.85 * sd_db < level.std() < 1.15 * sd_db, level.std()
    assert abs(level.mean()) < 0.15 * sd_db
    # smooth: the step between neighbouring bins is far below the spread across the curve
    assert np.abs(np.diff(curve, axis=1)).max() < sd_db * CHANNEL_EQ_TERMS * np.pi / bins * 4
    assert np.ptp(curve, axis=1).mean() > sd_db


def test_utterance_norm_standardizes_each_bin_over_the_frames_with_sound():
    """Per example and mel bin: mean 0 and variance 1 over the frames that hold sound; padding frames stay 0; the same
    utterance padded differently, or with a constant added to every value (a gain, on log values), gives the same
    output."""
    import keras

    from attention_cnn.models.blocks import UTTERANCE_NORM_EPSILON, normalize_per_utterance

    rng = np.random.default_rng(0)
    frames, bins = 30, 8
    inputs = keras.Input((frames, bins, 1))
    model = keras.Model(inputs, normalize_per_utterance(inputs))
    sound = rng.uniform(1, 5, (3, 20, bins, 1)).astype(np.float32) + np.arange(bins, dtype=np.float32)[:, None]
    x = np.zeros((4, frames, bins, 1), np.float32)
    x[0, :20], x[1, 5:25], x[2, :12] = sound[0], sound[0], sound[1, :12]   # example 1: example 0, shifted
    x[3, :20] = sound[0] + 2.0                                               # example 0, a gain
    y = model(x).numpy()
    active = y[0, :20]
    np.testing.assert_allclose(active.mean(axis=0), 0.0, atol=1e-5)
    variance = sound[0].var(axis=0)
    np.testing.assert_allclose(active.var(axis=0), variance / (variance + UTTERANCE_NORM_EPSILON), rtol=1e-4)
    assert not y[0, 20:].any() and not y[2, 12:].any() and not y[1, :5].any()
    np.testing.assert_allclose(y[1, 5:25], active, atol=1e-5)
    np.testing.assert_allclose(y[3, :20], active, atol=1e-4)
    assert np.abs(y[2, :12] - y[0, :12]).max() > 0.1               # a different utterance, a different output
    assert not np.asarray(model(np.zeros((1, frames, bins, 1), np.float32))).any()   # silence: 0, not NaN


def test_frequency_warp_stretches_about_zero_hertz_per_example():
    """A spectrum that rises linearly with frequency stays linear through 0 Hz, its slope multiplied by each
    example's own factor in [1 - w, 1 + w] (output bin b shows input bin b * factor; checked on the lower half of
    the bins, where nothing fills in from above); the identity outside training."""
    import keras

    from attention_cnn.models.blocks import frequency_warp

    keras.utils.set_random_seed(3)
    frames, bins, n, warp = 5, 65, 16, 0.2
    inputs = keras.Input((frames, bins, 1))
    model = keras.Model(inputs, frequency_warp(inputs, warp))
    ramp = np.broadcast_to(np.arange(bins, dtype=np.float32)[None, None, :, None], (n, frames, bins, 1)).copy()
    np.testing.assert_array_equal(model(ramp, training=False).numpy(), ramp)
    out = model(ramp, training=True).numpy()
    assert out.shape == ramp.shape
    low = out[:, :, : bins // 2, 0]
    slopes = np.array([np.polyfit(np.arange(bins // 2), low[i, 0], 1) for i in range(n)])
    np.testing.assert_allclose(slopes[:, 1], 0.0, atol=0.05)                 # bin 0 stays at 0 Hz
    np.testing.assert_allclose(low, np.broadcast_to(slopes[:, :1, None] * np.arange(bins // 2), low.shape), atol=0.05)
    assert (slopes[:, 0] >= 1 - warp - 1e-3).all() and (slopes[:, 0] <= 1 + warp + 1e-3).all()
    assert np.ptp(slopes[:, 0]) > 0.1                                         # a factor per example


def test_tempo_warp_stretches_time_about_the_first_frame_per_example():
    """A clip whose level rises linearly with time stays linear through frame 0, its slope multiplied by each
    example's own factor in [1 - w, 1 + w]; every frequency bin moves alike (the spectrum of a frame is kept); the
    identity outside training."""
    import keras

    from attention_cnn.models.blocks import tempo_warp

    keras.utils.set_random_seed(3)
    frames, bins, n, warp = 65, 5, 16, 0.2
    inputs = keras.Input((frames, bins, 1))
    model = keras.Model(inputs, tempo_warp(inputs, warp))
    colour = np.linspace(1.0, 2.0, bins, dtype=np.float32)           # a different level per bin
    ramp = (np.arange(frames, dtype=np.float32)[:, None] * colour[None, :])[None, :, :, None]
    ramp = np.broadcast_to(ramp, (n, frames, bins, 1)).copy()
    np.testing.assert_array_equal(model(ramp, training=False).numpy(), ramp)
    out = model(ramp, training=True).numpy()
    assert out.shape == ramp.shape
    early = out[:, : frames // 2, :, 0]                                # nothing fills in from past the end here
    np.testing.assert_allclose(early / colour, np.broadcast_to(early[:, :, :1], early.shape), atol=1e-3)
    slopes = np.array([np.polyfit(np.arange(frames // 2), early[i, :, 0], 1) for i in range(n)])
    np.testing.assert_allclose(slopes[:, 1], 0.0, atol=0.05)           # frame 0 stays the first frame
    assert (slopes[:, 0] >= 1 - warp - 1e-3).all() and (slopes[:, 0] <= 1 + warp + 1e-3).all()
    assert np.ptp(slopes[:, 0]) > 0.1                                  # a factor per example


def test_builder_refuses_unknown_frontend_and_augment():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="frontend"):
        build_model("resnet", SPEECH, 10, {"frontend": "mel"})
    with pytest.raises(ValidationError, match="augment"):
        build_model("resnet_se", SPEECH, 10, {"augment": "mixup"})


@pytest.mark.parametrize("key,value,expected", [
    ("frontend", "mel", "models.{v}.frontend must be one of linear, logmel, got 'mel' (did you mean 'logmel'?)"),
    ("frontend", 1, "models.{v}.frontend must be one of linear, logmel, got 1"),
    ("augment", "spec", "models.{v}.augment must be one of none, digits, specaugment, auto, got 'spec'"),
    ("augment", True, "models.{v}.augment must be one of none, digits, specaugment, auto, got True"),
    ("mel_bins", 0, "models.{v}.mel_bins must be >= 1, got 0"),
    ("mel_bins", 6.4, "models.{v}.mel_bins must be an integer, got 6.4"),
    ("time_pool", 0, "models.{v}.time_pool must be >= 1, got 0"),
    ("time_pool", "2", "models.{v}.time_pool must be an integer, got '2' (a quoted number is text; remove the quotes)"),
    ("freq_warp", 0.6, "models.{v}.freq_warp must be <= 0.5, got 0.6"),
    ("time_warp", -0.1, "models.{v}.time_warp must be >= 0.0, got -0.1"),
    ("utterance_norm", "yes", "models.{v}.utterance_norm must be true or false, got 'yes'"),
    ("channel_eq_db", 25, "models.{v}.channel_eq_db must be <= 20.0, got 25"),
    ("time_mask_span", "word", "models.{v}.time_mask_span must be one of axis, clip, got 'word'"),
    ("pool_span", "mean", "models.{v}.pool_span must be one of axis, clip, got 'mean'"),
])
@pytest.mark.parametrize("variant", RESNETS)
def test_each_new_setting_is_validated_in_one_line(variant, key, value, expected):
    from attention_cnn.common import StageError
    from conftest import config

    settings = config().model(variant)
    assert (settings.frontend, settings.mel_bins, settings.time_pool, settings.augment) == ("linear", 64, 1, "none")
    with pytest.raises(StageError) as info:
        config({f"models.{variant}.{key}": value})
    message = str(info.value)
    params_file = Path(__file__).resolve().parents[2] / "params.yaml"
    assert "\n" not in message and message == f"{params_file}: " + expected.format(v=variant)


@pytest.mark.parametrize("settings", [{"frontend": "logmel", "mel_bins": 40, "time_pool": 4, "augment": "auto",
                                       "utterance_norm": True, "channel_eq_db": 4.0, "freq_warp": 0.1,
                                       "time_warp": 0.1, "time_mask_span": "clip", "pool_span": "clip"},
                                      {"augment": "digits"}, {"augment": "specaugment"}])
def test_valid_frontend_settings_pass_validation(settings):
    from conftest import config

    config({f"models.{v}.{k}": value for v in RESNETS for k, value in settings.items()})


@pytest.mark.slow
@pytest.mark.parametrize("span", ["axis", "clip"])
def test_specaugment_trains_in_mixed_bfloat16(span):
    """train.mixed_precision auto picks bfloat16 on a CPU with AVX512-BF16: SpecAugment's masks (Keras image
    transforms, no bfloat16 gradient) are built in float32, so a bfloat16 fit's gradient exists for every weight.
    The channel equalizer's gain is drawn in float32 too and applied in the compute dtype."""
    import keras
    import tensorflow as tf

    from attention_cnn.models import build_model

    before = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = build_model("resnet", (63, 129, 1), 10, {"frontend": "logmel", "augment": "specaugment",
                                                         "channel_eq_db": 4.0, "filters": 8, "time_mask_span": span,
                                                         "pool_span": span},
                            sample_rate_hz=8000)
        x, y = tf.random.uniform((4, 63, 129, 1), seed=0), tf.one_hot([1, 2, 3, 4], 10)
        with tf.GradientTape() as tape:
            loss = keras.losses.categorical_crossentropy(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_weights)
        assert grads and all(g is not None for g in grads)
        assert model.get_layer("specaugment_tmask_width").compute_dtype == "float32"
        assert model.get_layer("frontend_eq_draw").compute_dtype == "float32"
        assert model.get_layer("frontend_eq_apply").compute_dtype == "bfloat16"
    finally:
        keras.mixed_precision.set_global_policy(before)
