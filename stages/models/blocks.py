"""Reusable Keras blocks shared by the variants."""
from __future__ import annotations

import math

import keras
from keras import layers


def spatial_attention_gate(x, kernel_size: int = 3, name: str = "attention"):
    """The study's gate: ``x * sigmoid(Conv2D(1, k, same)(x))``, one weight per position.

    x: (B, H, W, C) -> (B, H, W, C); the (B, H, W, 1) gate broadcasts over channels.
    Adds ``k*k*C + 1`` parameters (289 for k=3, C=32).
    """
    gate = layers.Conv2D(1, kernel_size, padding="same", activation="sigmoid", name=f"{name}_map")(x)
    return layers.Multiply(name=f"{name}_apply")([x, gate])


def study_head(x, num_classes: int, *, pool_size: int = 2, dropout: float = 0.2, dense_units: int = 32):
    """MaxPool -> Dropout -> Flatten -> Dense(relu) -> Dense(softmax), as in the study.

    x: (B, H, W, C) -> (B, num_classes) probabilities.
    """
    x = layers.MaxPooling2D(pool_size, name="pool")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(dense_units, activation="relu", name="dense")(x)
    return layers.Dense(num_classes, activation="softmax", name="probs")(x)


def study_stem(input_shape, *, filters: int = 32, kernel_size: int = 3):
    """Input -> Conv2D(filters, k, valid, relu); returns (inputs, features (B, H-k+1, W-k+1, filters))."""
    inputs = keras.Input(shape=input_shape, name="input")
    x = layers.Conv2D(filters, kernel_size, padding="valid", activation="relu", name="conv")(inputs)
    return inputs, x


# --------------------------------------------------------------------------- attention blocks (issue #5)
# Each takes a feature map and returns one of the same shape, so a variant adds attention with one call.
# Only built-in Keras layers and keras.ops are used: the saved model.keras loads with safe_mode=True and
# without importing this module (the evaluate stage does not).


def squeeze_excite(x, ratio: int = 8, name: str = "se"):
    """Squeeze-and-excitation (Hu et al. 2018): reweight channels by a gate computed from global context.

    x: (B, H, W, C) -> (B, H, W, C). Squeeze: GlobalAveragePooling -> (B, 1, 1, C); excite:
    Dense(max(1, C // ratio), relu) -> Dense(C, sigmoid) -> (B, 1, 1, C), one weight per channel,
    broadcast over the H x W positions. Adds ``2*C*r + r + C`` parameters with ``r = max(1, C // ratio)``
    (292 for C=32, ratio=8: about the study gate's 289).
    """
    channels = int(x.shape[-1])
    hidden = max(1, channels // int(ratio))
    s = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_squeeze")(x)
    s = layers.Dense(hidden, activation="relu", name=f"{name}_reduce")(s)
    s = layers.Dense(channels, activation="sigmoid", name=f"{name}_expand")(s)
    return layers.Multiply(name=f"{name}_apply")([x, s])


def cbam(x, ratio: int = 8, kernel_size: int = 7, name: str = "cbam"):
    """CBAM (Woo et al. 2018): channel attention, then spatial attention, applied in sequence.

    x: (B, H, W, C) -> (B, H, W, C).

    Channel: a shared MLP Dense(max(1, C // ratio), relu) -> Dense(C) applied to the global average
    and the global max pool (each (B, 1, 1, C)); sigmoid(sum) -> (B, 1, 1, C) multiplies x.
    Spatial: the mean and the max over channels of that result, concatenated -> (B, H, W, 2);
    Conv2D(1, kernel_size, same, sigmoid) -> (B, H, W, 1) multiplies it (one weight per position,
    broadcast over channels, like the study gate). Adds ``2*C*r + r + C + 2*k*k + 1`` parameters
    (391 for C=32, ratio=8, k=7).
    """
    channels = int(x.shape[-1])
    hidden = max(1, channels // int(ratio))
    reduce = layers.Dense(hidden, activation="relu", name=f"{name}_mlp_reduce")
    expand = layers.Dense(channels, name=f"{name}_mlp_expand")
    avg = expand(reduce(layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_avg")(x)))
    mx = expand(reduce(layers.GlobalMaxPooling2D(keepdims=True, name=f"{name}_max")(x)))
    summed = layers.Add(name=f"{name}_mlp_sum")([avg, mx])
    channel_gate = layers.Activation("sigmoid", name=f"{name}_channel_gate")(summed)
    x = layers.Multiply(name=f"{name}_channel_apply")([x, channel_gate])
    pooled = layers.Concatenate(axis=-1, name=f"{name}_channel_pool")(
        [keras.ops.mean(x, axis=-1, keepdims=True), keras.ops.max(x, axis=-1, keepdims=True)])
    spatial_gate = layers.Conv2D(1, kernel_size, padding="same", activation="sigmoid",
                                 name=f"{name}_spatial_map")(pooled)
    return layers.Multiply(name=f"{name}_spatial_apply")([x, spatial_gate])


def token_pool_size(height: int, width: int, max_tokens: int) -> int:
    """The smallest square pool p such that ceil(H/p) * ceil(W/p) <= max_tokens (1: no pooling).

    (26, 26, 256) -> 2 (13 x 13 = 169 tokens); (389, 255, 256) -> 21 (19 x 13 = 247 tokens).
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    pool = 1
    while math.ceil(height / pool) * math.ceil(width / pool) > max_tokens:
        pool += 1
    return pool


def pooled_self_attention(x, heads: int = 4, key_dim: int = 8, max_tokens: int = 256, name: str = "mhsa"):
    """Multi-head self-attention (query, key, value, softmax) over a pooled copy of a feature map, added back.

    x: (B, H, W, C) -> (B, H, W, C).

    1. AveragePooling2D(p, p, same) with p = :func:`token_pool_size` (H, W, max_tokens), chosen from the
       static input size: (B, h, w, C), h = ceil(H/p), w = ceil(W/p), h*w <= max_tokens. The attention
       matrix is (B, heads, h*w, h*w), so it stays small whatever the input (389 x 255 -> 19 x 13).
    2. Reshape -> tokens (B, T = h*w, C); LayerNormalization; MultiHeadAttention(heads, key_dim) with
       the tokens as query, key and value -> (B, T, C).
    3. Reshape -> (B, h, w, C); UpSampling2D(p) (nearest) -> (B, h*p, w*p, C); Cropping2D back to (H, W)
       (the same offsets as the SAME pooling's padding); Add to x (a residual: every position gets the
       context of the token it was pooled into).

    There is no positional encoding: position is kept by adding each token's output back where it came
    from. Adds ``2*C + 4*heads*key_dim*C + 3*heads*key_dim + C`` parameters (4,288 for C=32, 4 heads,
    key_dim 8).
    """
    height, width, channels = int(x.shape[1]), int(x.shape[2]), int(x.shape[3])
    pool = token_pool_size(height, width, int(max_tokens))
    h, w = math.ceil(height / pool), math.ceil(width / pool)
    t = x
    if pool > 1:
        t = layers.AveragePooling2D(pool, padding="same", name=f"{name}_pool")(t)
    t = layers.Reshape((h * w, channels), name=f"{name}_tokens")(t)
    t = layers.LayerNormalization(name=f"{name}_norm")(t)
    t = layers.MultiHeadAttention(int(heads), int(key_dim), name=f"{name}_attention")(t, t)
    t = layers.Reshape((h, w, channels), name=f"{name}_grid")(t)
    if pool > 1:
        t = layers.UpSampling2D(pool, interpolation="nearest", name=f"{name}_upsample")(t)
        pad_h, pad_w = h * pool - height, w * pool - width  # TF SAME pooling pads total//2 before
        t = layers.Cropping2D(((pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2)),
                              name=f"{name}_crop")(t)
    return layers.Add(name=f"{name}_add")([x, t])


# --------------------------------------------------------------------------- a small ResNet (issue #5)


def conv_bn(x, filters: int, kernel_size: int, strides: int = 1, *, relu: bool = True, name: str):
    """Conv2D(same, no bias) -> BatchNormalization [-> ReLU]: (B, H, W, C) -> (B, ceil(H/s), ceil(W/s), filters)."""
    x = layers.Conv2D(filters, kernel_size, strides=strides, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x) if relu else x


def residual_block(x, filters: int, strides: int = 1, attention=None, name: str = "block"):
    """A basic residual block (He et al. 2016), with optional attention on the residual branch.

    x: (B, H, W, C) -> (B, ceil(H/s), ceil(W/s), filters).
    Branch: conv_bn(3x3, strides) -> conv_bn(3x3, no ReLU) -> ``attention(branch, name=...)`` when given
    (where SE-ResNet and CBAM put it: before the addition). Shortcut: identity, or conv_bn(1x1, strides,
    no ReLU) when the shape changes. Output: ReLU(branch + shortcut).
    """
    branch = conv_bn(x, filters, 3, strides, name=f"{name}_a")
    branch = conv_bn(branch, filters, 3, relu=False, name=f"{name}_b")
    if attention is not None:
        branch = attention(branch, name=f"{name}_att")
    shortcut = x
    if strides != 1 or int(x.shape[-1]) != filters:
        shortcut = conv_bn(x, filters, 1, strides, relu=False, name=f"{name}_proj")
    return layers.ReLU(name=f"{name}_out")(layers.Add(name=f"{name}_add")([branch, shortcut]))


def resnet(input_shape, num_classes: int, *, filters: int = 16, blocks_per_stage: int = 2, stem_strides: int = 2,
           dropout: float = 0.0, attention=None, name: str = "resnet"):
    """A small ResNet: stem, 3 residual stages, global average pooling, dense softmax.

    (B, H, W, 1) -> stem conv_bn(3x3, ``stem_strides``) -> (B, H/s, W/s, filters)
    -> stage 1: ``blocks_per_stage`` blocks of ``filters`` channels, stride 1
    -> stage 2: 2*filters, first block stride 2 -> stage 3: 4*filters, first block stride 2
    -> GlobalAveragePooling2D (B, 4*filters) -> Dropout -> Dense(num_classes, softmax).

    ``attention``: ``None``, or a block ``f(x, name=...) -> x`` of the same shape, applied in every
    residual block (e.g. ``functools.partial(squeeze_excite, ratio=8)``). The parameter count does not
    depend on the input size (176,090 for the defaults and 10 classes, BatchNorm moving statistics
    included); a 391 x 257 input is 196 x 129 after the stem and 49 x 33 in the last stage.
    """
    inputs = keras.Input(shape=input_shape, name="input")
    x = conv_bn(inputs, filters, 3, stem_strides, name="stem")
    for stage in range(3):
        width = filters * 2 ** stage
        for block in range(blocks_per_stage):
            strides = 2 if stage > 0 and block == 0 else 1
            x = residual_block(x, width, strides, attention, name=f"stage{stage + 1}_block{block + 1}")
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    if dropout:
        x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probs")(x)
    return keras.Model(inputs, outputs, name=name)
