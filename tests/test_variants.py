"""The issue #5 variants: every one builds at both study shapes, runs, trains a step, saves and loads.

Shapes are kept tiny for the forward pass and the training step (28x28 and 40x33): the 391x257 builds only
count parameters and check that self-attention never sees more than ``max_tokens`` tokens.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from stages.models import available, build_model
from stages.models.blocks import token_pool_size

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

    from stages.models.blocks import pooled_self_attention

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
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=0.001), loss="categorical_crossentropy",
                  metrics=["accuracy"])
    before = [w.copy() for w in model.get_weights()]
    loss, _ = model.train_on_batch(x, y)
    assert np.isfinite(loss)
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


@pytest.mark.parametrize("variant", NEW_VARIANTS)
def test_saved_model_loads_in_safe_mode_without_the_model_code(variant, tmp_path):
    """As the train stage saves (clone_model) and the evaluate stage loads (safe_mode, no stages.models)."""
    import keras

    model = build_model(variant, (28, 28, 1), 10)
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    clone.save(tmp_path / "model.keras")
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
