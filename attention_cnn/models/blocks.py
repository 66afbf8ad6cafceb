"""Reusable Keras blocks shared by the variants."""
from __future__ import annotations

import math

import keras
from keras import layers

from attention_cnn.models.settings import is_spectrogram


def spatial_attention_gate(x, kernel_size: int = 3, name: str = "attention"):
    """The study's gate: ``x * sigmoid(Conv2D(1, k, same)(x))``, one weight per position.

    x: (B, H, W, C) -> (B, H, W, C); the (B, H, W, 1) gate broadcasts over channels.
    Adds ``k*k*C + 1`` parameters (289 for k=3, C=32).
    """
    gate = GateConv(1, kernel_size, padding="same", activation="sigmoid", name=f"{name}_map")(x)
    return layers.Multiply(name=f"{name}_apply")([x, gate])


@keras.saving.register_keras_serializable(package="attention_cnn", name="GateConv")
class GateConv(layers.Conv2D):
    """``keras.layers.Conv2D`` with one output channel, computed as a 1x1 convolution to one map per kernel tap
    and a sum of those maps, each shifted by its tap's offset.

    Same config, same weights (kernel ``(k, k, C, 1)``, bias ``(1,)``), same parameter count and the same
    arithmetic: ``sum_ij sum_c x[i, j, c] w[i, j, c]``, only summed in another order (float32 rounding).
    Why: the library kernels handle a convolution to one channel, and above all its two gradients, poorly
    on CPUs. Here the only pass over the C-channel input is a matrix product to ``k*k`` maps (forward, and
    one for each gradient); the shifts and sums, forward and back, touch those ``k*k`` one-channel maps only
    (``make bench``: ``gate_cost_ratio``, docs/speed.md). Training builds this layer; :func:`portable` saves a
    plain ``Conv2D`` with the same config and weights, so model.keras loads without this module. Other shapes
    (several filters, strides, dilation, groups, channels_first) and other backends use Conv2D's own code.
    """

    def convolution_op(self, inputs, kernel):
        if self.filters != 1 or self.groups != 1 or self.data_format != "channels_last" \
                or any(s != 1 for s in self.strides) or any(d != 1 for d in self.dilation_rate) \
                or keras.backend.backend() != "tensorflow":
            return super().convolution_op(inputs, kernel)
        return _one_channel_conv(inputs, kernel, self.padding)


def _one_channel_conv(x, kernel, padding: str):
    """``conv2d(x, kernel)`` for x (B, H, W, C), kernel (kh, kw, C, 1), stride 1, ``same`` or ``valid``."""
    import tensorflow as tf

    kh, kw, channels = int(kernel.shape[0]), int(kernel.shape[1]), int(kernel.shape[2])
    taps = [(i, j) for i in range(kh) for j in range(kw)]
    # TensorFlow's "same": (k - 1) // 2 before, the rest after
    top, left = ((kh - 1) // 2, (kw - 1) // 2) if padding == "same" else (0, 0)
    bottom, right = (kh - 1 - top, kw - 1 - left) if padding == "same" else (0, 0)
    w = tf.reshape(tf.transpose(kernel[..., 0], [2, 0, 1]), [channels, kh * kw])   # (C, taps), tap = i * kw + j
    maps = tf.einsum("bhwc,ct->tbhw", x, w)                                         # one pass over x

    @tf.custom_gradient
    def shifted_sum(y):
        """(taps, B, H, W) -> (B, Ho, Wo): out[b, r, s] = sum over taps (i, j) of padded y[(i, j), b, r + i, s + j]."""
        height, width = tf.shape(y)[2], tf.shape(y)[3]
        out_h, out_w = height + top + bottom - kh + 1, width + left + right - kw + 1
        padded = tf.pad(y, [[0, 0], [0, 0], [top, bottom], [left, right]])
        out = tf.add_n([padded[i * kw + j, :, i:i + out_h, j:j + out_w] for i, j in taps])

        def grad(d):   # each tap's map gets d shifted back by its offset (zeros where it fell off the edge)
            wide = tf.pad(d, [[0, 0], [kh - 1, kh - 1], [kw - 1, kw - 1]])
            return tf.stack([wide[:, top + kh - 1 - i:top + kh - 1 - i + height,
                                  left + kw - 1 - j:left + kw - 1 - j + width] for i, j in taps])

        return out, grad

    return shifted_sum(maps)[..., None]


@keras.saving.register_keras_serializable(package="attention_cnn", name="FastDropout")
class FastDropout(layers.Dropout):
    """``keras.layers.Dropout`` whose random mask costs half the random bits and fewer passes over the tensor.

    Same layer, same config, same expectation: in training each value is kept with probability
    ``1 - rate`` and scaled by ``1 / (1 - rate)``; in inference it passes unchanged. Keras draws one
    float32 uniform per value and then makes about six passes over the tensor (compare, cast, two
    multiplies forward and back); this draws 16 random bits per value (two per 32-bit Philox number),
    keeps a value when its bits are ``>= round(rate * 65536)`` (the drop probability is ``rate`` to
    within 2**-17: 0.2 -> 13107 / 65536 = 0.199997) and multiplies by one precomputed mask forward and
    back. On the study's speech ``cnn`` (12.6 million values a step at batch 16) the layer forward and
    back took 29 ms instead of Keras' 50 ms, alone; the whole step 1.10-1.21x (``make bench``'s
    ``keras_dropout`` lever). The mask is a different random
    draw from Keras' for the same seed, so results match Keras' Dropout in distribution, not bit for bit.

    Training builds this layer; :func:`portable` swaps it for ``keras.layers.Dropout`` (same config)
    in the saved model.keras, which therefore loads without this module. ``noise_shape`` and rates
    the 16-bit threshold cannot represent (0 < rate < 2**-17, or rate >= 1) use Keras' own code.
    """

    def call(self, inputs, training=False):
        threshold = round(float(self.rate) * 65536)
        if not training or self.rate <= 0 or self.noise_shape is not None or not 0 < threshold < 65536 \
                or keras.backend.backend() != "tensorflow":
            return super().call(inputs, training=training)
        import tensorflow as tf

        seed = tf.cast(tf.math.floormod(self.seed_generator.next(), 2 ** 31 - 2), tf.int32)  # as Keras' TF backend
        scale = 1.0 / (1.0 - float(self.rate))

        @tf.custom_gradient
        def masked(x):
            n = tf.size(x)
            bits = tf.random.stateless_uniform([(n + 1) // 2], seed, minval=None, maxval=None, dtype=tf.uint32)
            keep = tf.reshape(tf.reshape(tf.bitcast(bits, tf.uint16), [-1])[:n], tf.shape(x)) >= threshold
            mask = tf.cast(keep, x.dtype) * tf.cast(scale, x.dtype)
            return x * mask, lambda dy: dy * mask

        return masked(inputs)


def portable(model):
    """A copy of ``model`` with the same weights in which every :class:`FastDropout` is ``keras.layers.Dropout``
    and every :class:`GateConv` is ``keras.layers.Conv2D``.

    The copy holds built-in layers only (and no optimizer), so its model.keras loads with
    ``safe_mode=True`` in a process that never imports this package.
    """
    builtin = {FastDropout: layers.Dropout, GateConv: layers.Conv2D}

    def clone(layer):
        return builtin.get(type(layer), layer.__class__).from_config(layer.get_config())

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


def study_head(x, num_classes: int, *, pool_size: int = 2, dropout: float = 0.2, dense_units: int = 32):
    """MaxPool -> Dropout -> Flatten -> Dense(relu) -> Dense(softmax), as in the study.

    x: (B, H, W, C) -> (B, num_classes) probabilities.
    """
    x = layers.MaxPooling2D(pool_size, name="pool")(x)
    x = FastDropout(dropout, name="dropout")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(dense_units, activation="relu", name="dense")(x)
    return layers.Dense(num_classes, activation="softmax", name="probs", dtype="float32")(x)  # float32 under mixed precision


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


# BatchNorm's moving statistics: new = 0.9 * old + 0.1 * batch (PyTorch's default), not Keras' 0.99. The data sets
# here are small (MNIST embedded: 29 steps of 128 per epoch): with 0.99 the moving variance still held 7 % of its
# initial 1.0 after 9 epochs while the stem's true variance was 0.01, so inference used 8x too large variances and
# the model predicted one class (validation 10 %, training 100 %). 0.9 forgets the start within 1-2 epochs.
BN_MOMENTUM = 0.9


def conv_bn(x, filters: int, kernel_size: int, strides: int = 1, *, relu: bool = True, name: str):
    """Conv2D(same, no bias) -> BatchNormalization [-> ReLU]: (B, H, W, C) -> (B, ceil(H/s), ceil(W/s), filters)."""
    x = layers.Conv2D(filters, kernel_size, strides=strides, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
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
           dropout: float = 0.0, attention=None, frontend: str = "linear", mel_bins: int = 64,
           sample_rate_hz: float | None = None, time_pool: int = 1, augment: str = "none",
           utterance_norm: bool = False, channel_eq_db: float = 0.0, freq_warp: float = 0.0, time_warp: float = 0.0,
           time_mask_span: str = "axis", pool_span: str = "axis", name: str = "resnet"):
    """A small ResNet: stem, 3 residual stages, global average pooling, dense softmax.

    (B, H, W, 1) -> stem conv_bn(3x3, ``stem_strides``) -> (B, H/s, W/s, filters)
    -> stage 1: ``blocks_per_stage`` blocks of ``filters`` channels, stride 1
    -> stage 2: 2*filters, first block stride 2 -> stage 3: 4*filters, first block stride 2
    -> GlobalAveragePooling2D (B, 4*filters) -> Dropout -> Dense(num_classes, softmax).

    ``attention``: ``None``, or a block ``f(x, name=...) -> x`` of the same shape, applied in every
    residual block (e.g. ``functools.partial(squeeze_excite, ratio=8)``). The parameter count does not
    depend on the input size (176,090 for the defaults and 10 classes, BatchNorm moving statistics
    included); a 391 x 257 input is 196 x 129 after the stem and 49 x 33 in the last stage.

    In front of the stem, on the input (all built-in layers and keras.ops, inactive where they say so):

    - ``frontend``: ``"linear"`` (default: the input as it is) or ``"logmel"``: :func:`logmel_frontend` with
      ``mel_bins``, ``sample_rate_hz`` (the features' rate, from their spec.json) and ``time_pool`` on a
      spectrogram input (one with more than ``mel_bins`` frequency columns, :func:`is_spectrogram`; an image such as MNIST's 28 x 28 passes
      unchanged). (B, 391, 257, 1) -> (B, ceil(391 / time_pool), mel_bins, 1): with 64 mel bins and
      ``time_pool`` 2 the stem sees 196 x 64 instead of 391 x 257, and the residual stages about 8 times
      fewer positions. Adds ``W*mel_bins`` frozen filterbank weights + ``4*mel_bins`` BatchNorm ones.
      ``utterance_norm``: the frontend also standardizes each mel bin per utterance
      (:func:`normalize_per_utterance`); ``channel_eq_db``: in training, each clip through a random smooth
      equalizer (:func:`channel_eq`), 0: off.
    - ``freq_warp``: :func:`frequency_warp`, ``time_warp``: :func:`tempo_warp`, on a spectrogram input, before the
      frontend (0: off).
    - ``augment``: ``"none"``; ``"digits"``: :func:`digit_augmentation` on image inputs; ``"specaugment"``:
      :func:`spec_augment` on spectrogram inputs (after the frontend); ``"auto"``: each on its own kind of
      input, so one ``models.<variant>`` section serves MNIST and speech. A spectrogram is never rotated and
      a digit never masked. Active in training only (``fit``, or a call with ``training=True``); ``predict``,
      ``evaluate`` and ``model(x, training=False)`` see the input unchanged. Adds no parameters.
      ``time_mask_span``: ``"axis"`` sizes and places SpecAugment's time mask on the whole padded time axis,
      ``"clip"`` on the clip's frames with sound (:func:`frames_with_sound`, :func:`fit_to_clip`).

    ``pool_span``: ``"axis"`` (GlobalAveragePooling2D ``gap``) or ``"clip"``: on a spectrogram input, the average
    over the last stage's positions that hold the clip's frames with sound (:func:`pool_over_clip`), in training
    and at inference; an image is pooled whole either way. Adds no parameters.
    """
    if frontend not in FRONTENDS:
        raise ValueError(f"frontend must be one of {', '.join(FRONTENDS)}, got {frontend!r}")
    if augment not in AUGMENTS:
        raise ValueError(f"augment must be one of {', '.join(AUGMENTS)}, got {augment!r}")
    if time_mask_span not in SPANS:
        raise ValueError(f"time_mask_span must be one of {', '.join(SPANS)}, got {time_mask_span!r}")
    if pool_span not in SPANS:
        raise ValueError(f"pool_span must be one of {', '.join(SPANS)}, got {pool_span!r}")
    inputs = keras.Input(shape=input_shape, name="input")
    x = inputs
    spectrogram = is_spectrogram(input_shape, mel_bins)
    if augment in ("digits", "auto") and not spectrogram:
        x = digit_augmentation(x)
    if freq_warp and spectrogram:
        x = frequency_warp(x, freq_warp)
    if time_warp and spectrogram:
        x = tempo_warp(x, time_warp)
    masking = augment in ("specaugment", "auto") and spectrogram
    clip = None
    if spectrogram and ((masking and time_mask_span == "clip") or pool_span == "clip"):
        clip = frames_with_sound(x, int(time_pool) if frontend == "logmel" else 1)
    if frontend == "logmel" and spectrogram:
        if not sample_rate_hz:
            raise ValueError("the logmel frontend needs the spectrogram's sample rate (sample_rate_hz)")
        x = logmel_frontend(x, mel_bins=mel_bins, sample_rate_hz=sample_rate_hz, time_pool=time_pool,
                            utterance_norm=utterance_norm, channel_eq_db=channel_eq_db)
    if masking:
        x = spec_augment(x, clip=clip if time_mask_span == "clip" else None)
    x = conv_bn(x, filters, 3, stem_strides, name="stem")
    all_strides = [stem_strides]  # what the time axis went through, for pool_over_clip
    for stage in range(3):
        width = filters * 2 ** stage
        for block in range(blocks_per_stage):
            strides = 2 if stage > 0 and block == 0 else 1
            all_strides.append(strides)
            x = residual_block(x, width, strides, attention, name=f"stage{stage + 1}_block{block + 1}")
    if pool_span == "clip" and spectrogram:
        x = pool_over_clip(x, clip, all_strides)
    else:
        x = layers.GlobalAveragePooling2D(name="gap")(x)
    if dropout:
        x = FastDropout(dropout, name="dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probs", dtype="float32")(x)  # as study_head
    return keras.Model(inputs, outputs, name=name)


# --------------------------------------------------------------------------- feature frontend and augmentation
# In the model, so featurize and the stored TFRecords stay as they are; built-in layers and keras.ops only, so the
# saved model.keras loads with safe_mode=True without this module. The frozen mel filterbank is a weight of the
# model file, not code.

FRONTENDS = ("linear", "logmel")
AUGMENTS = ("none", "digits", "specaugment", "auto")
SPANS = ("axis", "clip")             # time_mask_span and pool_span: the padded time axis, or the clip on it
MEL_LOWER_EDGE_HZ = 20.0        # the filterbank spans 20 Hz .. sample_rate_hz / 2
DIGIT_SHIFT = 0.1               # digits: up to +-10 % of the height / width (+-2.8 pixels on 28 x 28)
DIGIT_ROTATION = 10.0 / 360.0   # digits: up to +-10 degrees (a fraction of a full turn, as RandomRotation takes it)
TIME_MASK = 0.10                # specaugment: one time mask of 5-10 % of the frames ...
FREQ_MASK = 0.15                # ... and one frequency mask of 7.5-15 % of the bins, per example
TIME_MASK_CLIP = 0.20           # time_mask_span clip: 10-20 % of the clip's frames with sound (a 0.4 s word: 40-80 ms,
                                #   about a phone; 5-10 % of the 1.6 s axis is 80-160 ms, most often over padding)


def mel_matrix(bins: int, mel_bins: int, sample_rate_hz: float):
    """The (bins, mel_bins) float32 triangular mel filterbank (``tf.signal.linear_to_mel_weight_matrix``).

    ``bins`` linear frequency bins spanning 0 .. sample_rate_hz / 2 (``fft_length // 2 + 1``: 257 for 512 at
    8 kHz) -> ``mel_bins`` filters from 20 Hz to sample_rate_hz / 2, each peaking at 1 (not area-normalized).
    """
    import numpy as np
    import tensorflow as tf

    matrix = tf.signal.linear_to_mel_weight_matrix(
        num_mel_bins=int(mel_bins), num_spectrogram_bins=int(bins), sample_rate=float(sample_rate_hz),
        lower_edge_hertz=MEL_LOWER_EDGE_HZ, upper_edge_hertz=float(sample_rate_hz) / 2.0)
    return np.asarray(matrix, dtype=np.float32)


def logmel_frontend(x, *, mel_bins: int, sample_rate_hz: float, time_pool: int = 1, utterance_norm: bool = False,
                    channel_eq_db: float = 0.0, name: str = "frontend"):
    """Linear |STFT| -> log-mel, pooled over time, normalized per mel bin.

    x: (B, T, W, 1), T frames, W linear frequency bins (391 x 257 for the speech defaults)
    -> ``<name>_flat`` Reshape (B, T, W)
    -> ``<name>_mel``: Dense(mel_bins, use_bias=False, trainable=False), kernel = :func:`mel_matrix` (W, mel_bins),
       set at build time and saved with the weights: (B, T, mel_bins) mel magnitudes (>= 0)
    -> with ``channel_eq_db`` > 0, :func:`channel_eq`: in training, each clip's magnitudes times a random gain curve
    -> ``log(1 + x)`` (``keras.ops.log1p``) -> ``<name>_grid`` Reshape (B, T, mel_bins, 1)
    -> ``<name>_pool``: AveragePooling2D((time_pool, 1), same) when ``time_pool > 1``: (B, ceil(T / time_pool),
       mel_bins, 1) (391 -> 196 for 2, 98 for 4)
    -> with ``utterance_norm``, :func:`normalize_per_utterance`: each mel bin standardized per utterance
    -> ``<name>_norm``: BatchNormalization(axis=2): each mel bin standardized by its mean and variance over the
       training data (batch and frames), then a learned scale and shift per bin.
    Result: (B, ceil(T / time_pool), mel_bins, 1).

    Why BatchNorm over the mel axis and not LayerNormalization: the log-mel levels differ by tens of dB between
    low and high bins, and one fixed standardization per bin (the moving statistics at inference) evens them out
    while keeping what tells digits apart, the loudness and spectral tilt of each utterance. LayerNorm would
    normalize each utterance by its own statistics (and over axis 1 would get scale and shift per frame, not per
    bin). ``utterance_norm`` is the other choice, for voices and microphones the training data never had: it
    gives up the utterance's level and tilt to remove what a recording chain adds to them. Parameters:
    ``W * mel_bins`` frozen (16,448 for 257 x 64) + ``4 * mel_bins`` BatchNorm (half trainable).
    """
    frames, bins = int(x.shape[1]), int(x.shape[2])
    if int(x.shape[3]) != 1:
        raise ValueError(f"the logmel frontend takes one channel (B, frames, bins, 1), got {tuple(x.shape)}")
    if int(time_pool) < 1:
        raise ValueError(f"time_pool must be >= 1, got {time_pool}")
    x = layers.Reshape((frames, bins), name=f"{name}_flat")(x)
    mel = layers.Dense(int(mel_bins), use_bias=False, trainable=False, name=f"{name}_mel")
    x = mel(x)  # builds the layer: its kernel is the filterbank from here on
    mel.set_weights([mel_matrix(bins, mel_bins, sample_rate_hz)])
    if channel_eq_db:
        x = channel_eq(x, channel_eq_db, name=f"{name}_eq")
    x = keras.ops.log1p(x)
    x = layers.Reshape((frames, int(mel_bins), 1), name=f"{name}_grid")(x)
    if int(time_pool) > 1:
        x = layers.AveragePooling2D((int(time_pool), 1), padding="same", name=f"{name}_pool")(x)
    if utterance_norm:
        x = normalize_per_utterance(x)
    return layers.BatchNormalization(axis=2, momentum=BN_MOMENTUM, name=f"{name}_norm")(x)


CHANNEL_EQ_TERMS = 4  # the gain curve's cosines over the mel axis: level, tilt, and two broader bumps and dips


def eq_basis(mel_bins: int, terms: int = CHANNEL_EQ_TERMS):
    """The (terms, mel_bins) float32 matrix that turns ``terms`` coefficients in dB into natural-log gains per mel
    bin: row k is the DCT-II cosine ``cos(pi * k * (m + 1/2) / mel_bins)`` times ln(10) / 20 (dB of magnitude)."""
    import numpy as np

    m = np.arange(int(mel_bins)) + 0.5
    rows = [np.cos(np.pi * k * m / int(mel_bins)) for k in range(int(terms))]
    return (np.stack(rows) * (math.log(10.0) / 20.0)).astype(np.float32)


def channel_eq(x, sd_db: float, name: str = "eq"):
    """A random microphone and room colouring per training clip: (B, T, M) mel magnitudes -> (B, T, M).

    Each clip's magnitudes are multiplied by a gain curve over the mel bins whose level in dB is
    ``sum_k c_k cos(pi k (m + 1/2) / M)``, k < :data:`CHANNEL_EQ_TERMS`, each ``c_k`` drawn from N(0, ``sd_db``^2):
    a louder or quieter clip, a brighter or duller one, broad bumps and dips; constant over time, as a recording
    chain is. Why: a speaker the model never heard also comes through a microphone and room it never heard, and a
    real gain rather than a shift of log values leaves the zero frames that pad a clip at zero.

    Built-in layers only, all float32: ``<name>_seed``: zeros (B, 1, K) made from a slice of x (Reshape,
    Cropping2D, Rescaling(0)), ``<name>_draw`` GaussianNoise(1) (the identity outside training: the zeros stay
    zeros; Keras caps its sd at 1, so ``sd_db`` scales the kernel instead), ``<name>_curve`` Dense(M) with the frozen
    kernel ``sd_db`` x :func:`eq_basis`, ``<name>_gain`` Activation("exponential")
    -> (B, 1, M), ``<name>_apply`` Multiply. Outside training the gain is exp(0) = 1 and the output equals the input
    exactly.
    """
    frames, mel_bins = int(x.shape[1]), int(x.shape[2])
    terms = min(CHANNEL_EQ_TERMS, mel_bins)
    seed = layers.Reshape((frames, mel_bins, 1), name=f"{name}_grid", dtype=MASK_DTYPE)(x)
    seed = layers.Cropping2D(((0, frames - 1), (0, mel_bins - terms)), name=f"{name}_slice", dtype=MASK_DTYPE)(seed)
    seed = layers.Rescaling(0.0, name=f"{name}_zeros", dtype=MASK_DTYPE)(seed)
    seed = layers.Reshape((1, terms), name=f"{name}_seed", dtype=MASK_DTYPE)(seed)
    draw = layers.GaussianNoise(1.0, name=f"{name}_draw", dtype=MASK_DTYPE)(seed)
    curve = layers.Dense(mel_bins, use_bias=False, trainable=False, name=f"{name}_curve", dtype=MASK_DTYPE)
    log_gain = curve(draw)
    curve.set_weights([float(sd_db) * eq_basis(mel_bins, terms)])
    gain = layers.Activation("exponential", name=f"{name}_gain", dtype=MASK_DTYPE)(log_gain)
    return layers.Multiply(name=f"{name}_apply")([x, gain])


UTTERANCE_NORM_EPSILON = 1e-3  # added to each bin's variance: a bin that stays flat over a clip is not blown up


def normalize_per_utterance(x):
    """Each (example, mel bin) standardized over its frames that hold sound: (B, T, M, 1) -> (B, T, M, 1) float32.

    Cepstral mean and variance normalization per utterance, on log-mel values (>= 0). A frame holds sound when any
    of its bins is above 0: featurize pads a clip with frames of exactly 0, which stay 0 here (the bin's mean),
    so a clip's statistics do not depend on how much padding it has. keras.ops only (no weights), so the saved
    model loads without this module; computed in float32 under mixed precision.
    """
    x = keras.ops.cast(x, "float32")
    active = frames_with_sound(x)  # (B,T,1,1)
    centred = keras.ops.multiply(keras.ops.subtract(x, mean_over_frames(x, active)), active)
    variance = mean_over_frames(keras.ops.square(centred), active)
    return keras.ops.multiply(centred, keras.ops.rsqrt(keras.ops.add(variance, UTTERANCE_NORM_EPSILON)))


def mean_over_frames(x, keep):
    """Mean of (B, T, ..., C) over the frames (axis 1) that ``keep`` (B, T, 1, 1) of 0/1 keeps, axis kept:
    (B, 1, ..., C); 0 for an example that keeps no frame."""
    count = keras.ops.maximum(keras.ops.sum(keep, axis=1, keepdims=True), 1.0)
    return keras.ops.divide(keras.ops.sum(keras.ops.multiply(x, keep), axis=1, keepdims=True), count)


def frequency_warp(x, max_warp: float, name: str = "warp"):
    """Vocal-tract-length perturbation in training: (B, T, F, C) -> (B, T, F, C), the identity otherwise.

    Each example's frequency axis is scaled about 0 Hz by its own factor ``a`` in ``[1 - max_warp, 1 + max_warp]``:
    output bin ``b`` is input bin ``a * b`` (bilinear; bins read from above the top are 0). See :func:`_axis_warp`.
    """
    return _axis_warp(x, max_warp, 2, name)


def tempo_warp(x, max_warp: float, name: str = "tempo"):
    """Tempo perturbation in training: (B, T, F, C) -> (B, T, F, C), the identity otherwise.

    Each example's time axis is scaled about its first frame by its own factor ``a`` in
    ``[1 - max_warp, 1 + max_warp]``: output frame ``t`` is input frame ``a * t`` (bilinear; frames read from past
    the end are 0, as featurize pads a clip), so the digit is spoken faster (a > 1) or slower with the same
    spectrum. See :func:`_axis_warp`.
    """
    return _axis_warp(x, max_warp, 1, name)


def _axis_warp(x, max_warp: float, axis: int, name: str):
    """Axis 1 or 2 of (B, T, F, C) scaled about index 0 by a random factor per example, in training only.

    Built from Keras' own layers: ``<name>_pad`` puts L - 1 zeros before index 0 of the axis (length L), so index
    0 is the centre of 2L - 1; ``<name>_zoom`` RandomZoom (that axis only) zooms about that centre;
    ``<name>_crop`` keeps the L entries from index 0 on.
    """
    length = int(x.shape[axis])
    before = ((length - 1, 0), (0, 0)) if axis == 1 else ((0, 0), (length - 1, 0))
    zoom = (-float(max_warp), float(max_warp))
    x = layers.ZeroPadding2D(before, name=f"{name}_pad")(x)
    still = (0.0, 0.0)
    x = layers.RandomZoom(zoom if axis == 1 else still, still if axis == 1 else zoom, fill_mode="constant",
                          interpolation="bilinear", name=f"{name}_zoom")(x)
    return layers.Cropping2D(before, name=f"{name}_crop")(x)


def digit_augmentation(x, name: str = "augment"):
    """Train-time shifts and rotations of a digit: (B, H, W, C) -> (B, H, W, C).

    ``<name>_shift``: RandomTranslation(+-10 % of H and W) and ``<name>_rotate``: RandomRotation(+-10 degrees),
    both filling with 0 (the background) and drawing a new transform per example. Keras' random layers: active in
    ``fit`` (training=True), the identity in ``predict``/``evaluate`` and for ``training=False``.
    """
    x = layers.RandomTranslation(DIGIT_SHIFT, DIGIT_SHIFT, fill_mode="constant", fill_value=0.0,
                                 name=f"{name}_shift")(x)
    return layers.RandomRotation(DIGIT_ROTATION, fill_mode="constant", fill_value=0.0, name=f"{name}_rotate")(x)


# The masks are built in float32 under any precision: TensorFlow's image transform behind RandomZoom and
# RandomTranslation has no bfloat16 gradient, so a mixed_bfloat16 fit (train.mixed_precision auto on a CPU with
# AVX512-BF16) failed in tape.gradient; the Multiply that applies a mask casts it to the compute dtype (0 and 1 exact).
MASK_DTYPE = "float32"


def _band_keep_mask(x, axis: int, fraction: float, name: str):
    """A (B, T, 1, 1) (axis 1) or (B, 1, F, 1) (axis 2) mask: 0 on one contiguous band per example, 1 elsewhere;
    all 1 outside training.

    Built from Keras' own random layers, which are the identity when not training: a box of ones, ``n`` cells
    (``fraction`` of the axis) wide, sits in the middle of a zero strip three times the axis' length (ZeroPadding2D);
    ``<name>_width`` RandomZoom shrinks it to between half and all of ``n`` and ``<name>_place`` RandomTranslation
    moves it by one half to one and a half lengths towards the start (nearest neighbour, zero fill), so its centre
    lands anywhere on the first third; ``<name>_crop`` keeps that first third. Not training, the box stays in the
    middle third and is cropped away. ``1 - box`` (Rescaling(-1, 1)) is the mask.
    """
    length = int(x.shape[axis])
    n = max(1, int(round(fraction * length)))
    # a (B, n, 1, C) or (B, 1, n, C) slice of x turned into ones (Rescaling(0, 1)): a box that follows the batch size
    cut_rows = ((0, length - n), (0, int(x.shape[2]) - 1)) if axis == 1 else ((0, int(x.shape[1]) - 1), (0, length - n))
    box = layers.Cropping2D(cut_rows, name=f"{name}_slice", dtype=MASK_DTYPE)(x)
    box = layers.Rescaling(0.0, offset=1.0, name=f"{name}_ones", dtype=MASK_DTYPE)(box)
    before = length + (length - n) // 2
    pad = (before, 3 * length - n - before)
    box = layers.ZeroPadding2D((pad, (0, 0)) if axis == 1 else ((0, 0), pad), name=f"{name}_strip", dtype=MASK_DTYPE)(box)
    zoom = (0.0, 1.0)  # a zoom out by 1 + u, u in [0, 1]: the box is n / (1 + u) cells wide
    shift = (-0.5, -1.0 / 6.0)  # of the strip's 3 * length: 0.5 .. 1.5 lengths towards the start
    if axis == 1:
        box = layers.RandomZoom(zoom, (0.0, 0.0), fill_mode="constant", interpolation="nearest",
                                name=f"{name}_width", dtype=MASK_DTYPE)(box)
        box = layers.RandomTranslation(shift, (0.0, 0.0), fill_mode="constant", interpolation="nearest",
                                       name=f"{name}_place", dtype=MASK_DTYPE)(box)
        box = layers.Cropping2D(((0, 2 * length), (0, 0)), name=f"{name}_crop", dtype=MASK_DTYPE)(box)
    else:
        box = layers.RandomZoom((0.0, 0.0), zoom, fill_mode="constant", interpolation="nearest",
                                name=f"{name}_width", dtype=MASK_DTYPE)(box)
        box = layers.RandomTranslation((0.0, 0.0), shift, fill_mode="constant", interpolation="nearest",
                                       name=f"{name}_place", dtype=MASK_DTYPE)(box)
        box = layers.Cropping2D(((0, 0), (0, 2 * length)), name=f"{name}_crop", dtype=MASK_DTYPE)(box)
    return layers.Rescaling(-1.0, offset=1.0, name=f"{name}_keep", dtype=MASK_DTYPE)(box)


def frames_with_sound(x, time_pool: int = 1, name: str = "sound"):
    """(B, T, F, 1) spectrogram -> (B, ceil(T / time_pool), 1, 1) float32: 1 where a frame holds sound (any bin
    above 0), 0 on the frames of exact zeros that featurize pads a clip with; ``time_pool`` > 1: per group of
    frames, as the logmel frontend pools them (``<name>_pool`` AveragePooling2D, same padding)."""
    active = keras.ops.cast(keras.ops.greater(keras.ops.max(x, axis=2, keepdims=True), 0.0), MASK_DTYPE)
    if time_pool > 1:
        active = layers.AveragePooling2D((time_pool, 1), padding="same", name=f"{name}_pool", dtype=MASK_DTYPE)(active)
        active = keras.ops.cast(keras.ops.greater(active, 0.0), MASK_DTYPE)
    return active


def fit_to_clip(mask, clip, name: str = "fit"):
    """A (B, T, 1, 1) time mask drawn on the whole axis, squeezed onto each clip's frames with sound.

    ``clip`` (:func:`frames_with_sound`, its L frames with sound at the start of the axis, as featurize places a
    clip): frame ``t < L`` takes the mask's frame ``floor(t * T / L)``, so a band of ``w`` of the T frames becomes
    a band of about ``w / T`` of the clip's L frames, anywhere on the clip; the padding frames keep 1. A mask of
    ones (outside training) stays ones. keras.ops on tensors only: ``<name>_ones`` Rescaling(0, 1) for the frame
    positions (a cumulative sum), ``take_along_axis`` for the lookup.
    """
    frames = int(mask.shape[1])
    ones = layers.Rescaling(0.0, offset=1.0, name=f"{name}_ones", dtype=MASK_DTYPE)(clip)
    position = keras.ops.subtract(keras.ops.cumsum(ones, axis=1), 1.0)                       # 0 .. T - 1
    length = keras.ops.maximum(keras.ops.sum(clip, axis=1, keepdims=True), 1.0)             # L (B, 1, 1, 1)
    source = keras.ops.minimum(keras.ops.divide(keras.ops.multiply(position, float(frames)), length), frames - 1.0)
    fitted = keras.ops.take_along_axis(mask, keras.ops.cast(source, "int32"), axis=1)
    return keras.ops.subtract(1.0, keras.ops.multiply(clip, keras.ops.subtract(1.0, fitted)))


def pool_over_clip(x, clip, strides, name: str = "clip_pool"):
    """Global average pooling over the clip: (B, T', F', C) feature map -> (B, C) float32.

    ``clip`` (:func:`frames_with_sound` of the T frames the stem saw) is brought to the map's T' positions by
    MaxPooling2D with each of ``strides`` (the stem's and the stages', same padding, as the convolutions count
    their outputs: a position holds sound when any frame it starts from does); the result is the mean of the map
    over the positions with sound and all F' columns. A clip without sound gives zeros. keras.ops and built-in
    layers only (no weights), computed in float32 under mixed precision.
    """
    mask = clip
    for i, stride in enumerate(int(s) for s in strides if int(s) > 1):
        mask = layers.MaxPooling2D((stride, 1), strides=(stride, 1), padding="same", name=f"{name}_down{i}",
                                   dtype=MASK_DTYPE)(mask)
    if int(mask.shape[1]) != int(x.shape[1]):
        raise ValueError(f"the clip's mask has {mask.shape[1]} positions and the feature map {x.shape[1]}")
    columns = keras.ops.mean(keras.ops.cast(x, "float32"), axis=2, keepdims=True)             # (B, T', 1, C)
    return layers.Reshape((int(x.shape[-1]),), name=f"{name}_flat", dtype=MASK_DTYPE)(mean_over_frames(columns, mask))


def spec_augment(x, clip=None, name: str = "specaugment"):
    """SpecAugment's masks (Park et al. 2019), train time only: (B, T, F, C) -> (B, T, F, C).

    Per example, one time mask (a band of 5-10 % of the T frames) and one frequency mask (7.5-15 % of the F bins)
    at random places, set to 0: the per-bin mean after the logmel frontend's normalization, silence on a linear
    spectrogram. With ``clip`` (:func:`frames_with_sound` of the same T frames), the time mask is a band of
    10-20 % of the clip's frames with sound, placed on them (:func:`fit_to_clip`), never on the padding.
    Multiply layers ``<name>_time`` / ``<name>_freq`` with the masks of :func:`_band_keep_mask`;
    outside training the masks are all 1 and the output equals the input exactly. No time warping.
    """
    if clip is None:
        time_mask = _band_keep_mask(x, 1, TIME_MASK, f"{name}_tmask")
    else:
        time_mask = fit_to_clip(_band_keep_mask(x, 1, TIME_MASK_CLIP, f"{name}_tmask"), clip, f"{name}_fit")
    x = layers.Multiply(name=f"{name}_time")([x, time_mask])
    return layers.Multiply(name=f"{name}_freq")([x, _band_keep_mask(x, 2, FREQ_MASK, f"{name}_fmask")])
