"""Attention maps: what each attention block of a trained model weights, on a fixed set of test examples.

Used by the evaluate stage (``--attention-dir``), which writes into
``reports/eval/<dataset>/<variant>/seed<k>/attention/``:

- ``index.json``: the blocks found, the examples shown (test index, true and predicted class,
  confidence, per block the map's min / mean / max in its own units and, where the block has them,
  the channel gates), and the image file names. Always written; a model without attention lists no
  blocks and no images.
- ``fixed.png``: the first ``examples_per_class`` test examples of every class (test-split order, so
  the same examples for every variant and seed), as a grid: each example the grayscale input, then one
  overlay per block, examples wrapped into rows; a colour bar per kind of block on the 0..1 scale drawn.
- ``misclassified.png``: the first ``max_misclassified`` misclassified test examples (test-split order),
  laid out the same way, so each wrong example sits beside its maps.

An image set with no example (the model got every test example right, or a count set to 0) has no PNG.

What a map is, per kind of block (found by the layer types and the names ``attention_cnn/models/blocks.py``
gives; the loaded model is used as is, through a Keras sub-model on its own layers):

- ``spatial``: the study's gate (``<p>_map``) and CBAM's spatial attention (``<p>_spatial_map``): a
  ``Conv2D(1, sigmoid)`` whose output ``(B, h, w, 1)`` multiplies the feature map. The map *is* the
  weight the model applies at each position, shown on a fixed 0..1 colour scale. For CBAM the
  block's channel gates ``<p>_channel_gate`` ``(B, 1, 1, C)`` are listed in index.json too.
- ``channel``: squeeze-and-excitation (``<p>_expand``, Dense(C, sigmoid) -> gates ``(B, 1, 1, C)``).
  SE has no spatial map: one weight per channel, the same at every position. What is drawn is the
  gate-weighted activation the block passes on, ``mean_c |x[b, i, j, c] * gate[b, c]|`` of
  ``<p>_apply`` ``(B, h, w, C)`` -> ``(B, h, w)``, divided by its maximum per example; the gates
  themselves are in index.json.
- ``self_attention``: multi-head self-attention (a ``MultiHeadAttention`` layer ``<p>_attention`` over
  ``T = h*w`` pooled tokens). The layer is called again on its own query input with
  ``return_attention_scores=True`` -> scores ``(B, heads, T, T)`` (each query's row sums to 1). The map
  is the attention each token *receives*, averaged over heads and queries, times ``T`` (1 = uniform
  attention), put back on the feature map the way the block adds its output back (``<p>_grid``,
  ``<p>_upsample``, ``<p>_crop``), drawn on a fixed 0..2 colour scale (uniform in the middle).

Maps live on the feature map (e.g. 26 x 26 after the study's valid 3x3 conv on 28 x 28, or 14 x 14
after a stride-2 stem) and are put on the input grid by :func:`align_to_input`. Spectrograms
``(frames, bins, 1)`` are drawn as ``log(1 + |STFT|)`` with time across and frequency up; digits as
they are. Images are deterministic: fixed figure sizes, no timestamp or software tag in the PNGs.

Only numpy and matplotlib at import time; Keras is imported by the functions that need a model.
"""
from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from attention_cnn.common import StageError, read_json_object

SPATIAL, CHANNEL, SELF_ATTENTION = "spatial", "channel", "self_attention"
INDEX_FILE = "index.json"
IMAGE_FILES = {"fixed": "fixed.png", "misclassified": "misclassified.png"}
DISPLAY_IMAGE, DISPLAY_SPECTROGRAM = "image", "spectrogram"

# What a block's map shows and how it is drawn, for index.json and the report.
SHOWS = {
    SPATIAL: "the sigmoid gate the block multiplies the feature map by, one weight per position "
             "(colour scale fixed at 0..1)",
    CHANNEL: "the gate-weighted activation the block passes on, mean over channels of |activation x gate|, "
             "divided by its maximum per example; squeeze-and-excitation itself has no spatial map (one gate "
             "per channel, the same at every position: the gates are in index.json)",
    SELF_ATTENTION: "the attention each pooled token receives, averaged over heads and queries, times the "
                    "number of tokens (1 = uniform attention; colour scale fixed at 0..2, so uniform is its "
                    "middle and anything above twice uniform is drawn as 2)",
}
UNITS = {SPATIAL: "gate", CHANNEL: "mean |activation x gate|", SELF_ATTENTION: "x uniform"}
KIND_NAMES = {SPATIAL: "Spatial attention", CHANNEL: "Channel attention (squeeze-and-excitation)",
              SELF_ATTENTION: "Self-attention"}

PNG_METADATA = {"Software": None}
DPI = 80
OVERLAY_CMAP = "turbo"
OVERLAY_ALPHA = 0.5
# panel size (inches) by display kind: spectrograms are drawn wide (time across)
PANEL_INCHES = {DISPLAY_IMAGE: (1.45, 1.55), DISPLAY_SPECTROGRAM: (2.3, 1.55)}
MIN_WIDTH_INCHES = 4.2
MAX_WIDTH_INCHES = 12.0  # examples wrap into rows of as many as fit
COLORBAR_INCHES = 1.0    # right margin per colour bar (bar, ticks and label)
RC = {
    "figure.dpi": DPI,
    "savefig.dpi": DPI,
    "font.family": "DejaVu Sans",
    "font.size": 7,
    "axes.titlesize": 7,
    "figure.titlesize": 9,
}


DISPLAY_OF = {"speech": DISPLAY_SPECTROGRAM}  # data set -> how its inputs are drawn (others: image)


def display_for(dataset: str) -> str:
    """How a data set's inputs are drawn: ``spectrogram`` for speech, else ``image``."""
    return DISPLAY_OF.get(dataset, DISPLAY_IMAGE)


# --------------------------------------------------------------------------- which examples


def select_examples(actual: np.ndarray, predicted: np.ndarray, num_classes: int, per_class: int,
                    max_misclassified: int) -> tuple[list[int], list[int], int]:
    """Positions in the test split (its file order) of the examples to draw.

    actual, predicted: (N,) class indices. Returns ``(fixed, misclassified, misclassified_total)``:
    ``fixed`` is the first ``per_class`` positions of each class, class by class (a class with fewer
    test examples gives what it has), the same for every model on the same test split;
    ``misclassified`` the first ``max_misclassified`` positions where ``predicted != actual``, in
    test order, out of ``misclassified_total``.
    """
    actual, predicted = np.asarray(actual), np.asarray(predicted)
    if actual.shape != predicted.shape or actual.ndim != 1:
        raise ValueError(f"actual {actual.shape} and predicted {predicted.shape} must be two (N,) vectors")
    fixed: list[int] = []
    for c in range(num_classes):
        fixed += [int(i) for i in np.flatnonzero(actual == c)[:max(0, per_class)]]
    wrong = np.flatnonzero(predicted != actual)
    return fixed, [int(i) for i in wrong[:max(0, max_misclassified)]], int(len(wrong))


# --------------------------------------------------------------------------- which blocks


@dataclass(frozen=True)
class AttentionBlock:
    """One attention block of a model and the layers its map is read from.

    ``layer``: the spatial gate conv, the SE gate Dense or the MultiHeadAttention layer; ``apply``: the
    SE Multiply (channel blocks); ``gates``: a layer with channel gates ``(B, 1, 1, C)`` (SE, CBAM);
    ``grid``: (h, w) of the tokens, ``pool``: (ph, pw) upsampling and ``cropping`` ((top, bottom),
    (left, right)) that put the tokens back on the feature map (self-attention).
    """

    name: str
    kind: str
    layer: str
    apply: str | None = None
    gates: str | None = None
    grid: tuple[int, int] | None = None
    pool: tuple[int, int] = (1, 1)
    cropping: tuple[tuple[int, int], tuple[int, int]] = ((0, 0), (0, 0))


def _activation(layer) -> str:
    act = layer.get_config().get("activation")
    return act if isinstance(act, str) else str(getattr(act, "__name__", act))


def _strip(name: str, *suffixes: str) -> str:
    for suffix in suffixes:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def _pair(value: Any) -> tuple[int, int]:
    if isinstance(value, (list, tuple)):
        return int(value[0]), int(value[1])
    return int(value), int(value)


def find_attention_blocks(model) -> list[AttentionBlock]:
    """The attention blocks of a (loaded) Keras model, in layer order; [] for a model without attention.

    spatial: a ``Conv2D`` with 1 filter and a sigmoid (output (B, h, w, 1)); channel: a ``Dense`` with a
    sigmoid named ``<p>_expand`` next to a ``<p>_apply`` layer (SE); self_attention: a
    ``MultiHeadAttention`` layer, with ``<p>_grid`` (Reshape to (h, w, C)) telling where its tokens sit.
    """
    import keras

    names = {layer.name for layer in model.layers}
    blocks: list[AttentionBlock] = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D) and layer.filters == 1 and _activation(layer) == "sigmoid":
            prefix = _strip(layer.name, "_spatial_map", "_map")
            gates = f"{prefix}_channel_gate" if f"{prefix}_channel_gate" in names and prefix != layer.name else None
            blocks.append(AttentionBlock(prefix, SPATIAL, layer.name, gates=gates))
        elif (isinstance(layer, keras.layers.Dense) and _activation(layer) == "sigmoid"
              and layer.name.endswith("_expand") and f"{_strip(layer.name, '_expand')}_apply" in names):
            prefix = _strip(layer.name, "_expand")
            blocks.append(AttentionBlock(prefix, CHANNEL, layer.name, apply=f"{prefix}_apply", gates=layer.name))
        elif isinstance(layer, keras.layers.MultiHeadAttention):
            prefix = _strip(layer.name, "_attention")
            if f"{prefix}_grid" not in names:
                raise StageError(f"attention layer '{layer.name}': no '{prefix}_grid' Reshape layer says where its "
                                 "tokens sit on the feature map, so no map can be drawn")
            grid = model.get_layer(f"{prefix}_grid").get_config()["target_shape"]
            pool = _pair(model.get_layer(f"{prefix}_upsample").get_config()["size"]) \
                if f"{prefix}_upsample" in names else (1, 1)
            crop = model.get_layer(f"{prefix}_crop").get_config()["cropping"] if f"{prefix}_crop" in names \
                else ((0, 0), (0, 0))
            blocks.append(AttentionBlock(prefix, SELF_ATTENTION, layer.name, grid=(int(grid[0]), int(grid[1])),
                                         pool=pool, cropping=(_pair(crop[0]), _pair(crop[1]))))
    return blocks


# --------------------------------------------------------------------------- the maps


@dataclass
class BlockMaps:
    """One block's maps for N examples: ``maps`` (N, h, w) float32 on the block's feature map, in
    ``UNITS[kind]``; ``gates`` (N, C) channel gates or None."""

    block: AttentionBlock
    maps: np.ndarray
    gates: np.ndarray | None = None


def tokens_to_grid(received: np.ndarray, grid: tuple[int, int], pool: tuple[int, int] = (1, 1),
                   cropping: tuple[tuple[int, int], tuple[int, int]] = ((0, 0), (0, 0))) -> np.ndarray:
    """Per-token values (N, T = h*w) -> (N, h*ph - crop_h, w*pw - crop_w) on the feature map.

    Row-major tokens (as ``Reshape`` makes them), each repeated over its ``pool`` cell (nearest
    upsampling), then ``cropping`` removed: the same placement the self-attention block uses to add
    its output back.
    """
    received = np.asarray(received)
    h, w = grid
    if received.ndim != 2 or received.shape[1] != h * w:
        raise ValueError(f"expected (N, {h * w}) token values for a {h}x{w} grid, got {received.shape}")
    out = received.reshape(-1, h, w).repeat(pool[0], axis=1).repeat(pool[1], axis=2)
    (top, bottom), (left, right) = cropping
    return out[:, top:out.shape[1] - bottom, left:out.shape[2] - right]


def received_attention(scores: np.ndarray) -> np.ndarray:
    """Scores (N, heads, T_query, T_key) -> attention received per key token (N, T_key), mean over heads
    and queries, times T_key: 1 everywhere when every query attends uniformly."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 4:
        raise ValueError(f"expected attention scores (N, heads, T, T), got {scores.shape}")
    return (scores.mean(axis=(1, 2)) * scores.shape[-1]).astype(np.float32)


def compute_block_maps(model, blocks: Sequence[AttentionBlock], x: np.ndarray) -> list[BlockMaps]:
    """Run ``x`` (N, H, W, C_in) float32 through a sub-model of ``model``'s own layers (inference mode)
    and read every block's map (see the module docstring for what each kind's map is)."""
    import keras

    x = np.asarray(x, dtype=np.float32)
    if not blocks:
        return []
    outputs: dict[str, Any] = {}
    for b in blocks:
        layer = model.get_layer(b.layer)
        if b.kind == SELF_ATTENTION:
            query = layer.input
            outputs[f"{b.layer}:query"] = query[0] if isinstance(query, (list, tuple)) else query
        else:
            outputs[b.layer] = layer.output
        for extra in (b.apply, b.gates):
            if extra is not None:
                outputs[extra] = model.get_layer(extra).output
    probe = keras.Model(model.inputs, outputs, name="attention_probe")
    got = {k: np.asarray(v) for k, v in probe([x], training=False).items()}

    result = []
    for b in blocks:
        gates = got[b.gates].reshape(len(x), -1) if b.gates is not None else None
        if b.kind == SPATIAL:
            maps = got[b.layer][..., 0]
        elif b.kind == CHANNEL:
            maps = np.abs(got[b.apply]).mean(axis=-1)
        else:
            tokens = got[f"{b.layer}:query"]
            _, scores = model.get_layer(b.layer)(tokens, tokens, return_attention_scores=True, training=False)
            maps = tokens_to_grid(received_attention(np.asarray(scores)), b.grid, b.pool, b.cropping)
        result.append(BlockMaps(b, np.asarray(maps, np.float32), None if gates is None else gates.astype(np.float32)))
    return result


def align_to_input(maps: np.ndarray, input_hw: tuple[int, int]) -> np.ndarray:
    """Maps (N, h, w) on a feature map -> (N, H, W) on the input grid; NaN where the map has no value.

    Per axis: a map of about the input's size (``H / h < 1.5``: a VALID convolution, 26 cells on 28
    pixels) is centred, one input cell per map cell, leaving a NaN border of ``(H - h) // 2`` cells
    before and the rest after (1 and 1 for a 3x3 kernel). A smaller map comes from strided SAME
    convolutions (``h = ceil(H / stride)``): each cell covers ``s = ceil(H / h)`` input cells (nearest),
    cell i the cells [i*s, (i+1)*s), and what passes the input's end is cut off (391 frames -> 49 cells
    after 3 stride-2 stages: s = 8).
    """
    maps = np.asarray(maps, dtype=np.float32)
    if maps.ndim != 3:
        raise ValueError(f"expected maps (N, h, w), got {maps.shape}")
    out = np.full((maps.shape[0], *input_hw), np.nan, dtype=np.float32)
    scaled = maps
    offsets = []
    for axis, size in ((1, input_hw[0]), (2, input_hw[1])):
        cells = maps.shape[axis]
        if cells < 1:
            raise ValueError(f"empty map {maps.shape}")
        s = 1 if size / cells < 1.5 else int(np.ceil(size / cells))
        scaled = scaled.repeat(s, axis=axis)
        covered = scaled.shape[axis]
        offsets.append(0 if covered >= size else (size - covered) // 2)
    scaled = scaled[:, :input_hw[0], :input_hw[1]]
    top, left = offsets
    out[:, top:top + scaled.shape[1], left:left + scaled.shape[2]] = scaled
    return out


def display_scale(kind: str, maps: np.ndarray) -> np.ndarray:
    """Maps (N, ...) -> values in 0..1 to colour (NaN kept): spatial gates as they are (already 0..1);
    self-attention (x uniform) on a fixed 0..2 scale, clipped; channel (activation units, no natural
    scale) divided by its maximum per example."""
    maps = np.asarray(maps, dtype=np.float32)
    if kind == SPATIAL:
        return np.clip(maps, 0.0, 1.0)
    if kind == SELF_ATTENTION:
        return np.clip(maps / 2.0, 0.0, 1.0)
    top = np.nanmax(np.abs(maps.reshape(len(maps), -1)), axis=1) if maps.size else np.zeros(len(maps))
    top = np.where(top > 0, top, 1.0).reshape(-1, *([1] * (maps.ndim - 1)))
    return maps / top


# --------------------------------------------------------------------------- drawing


def display_input(x: np.ndarray, display: str) -> np.ndarray:
    """One input (H, W, C) -> the 2-D array drawn: the first channel; a spectrogram (frames, bins) as
    ``log(1 + |value|)`` transposed to (bins, frames), drawn with low frequencies at the bottom."""
    x = np.asarray(x, dtype=np.float32)
    plane = x[..., 0] if x.ndim == 3 else x
    if display == DISPLAY_SPECTROGRAM:
        return np.log1p(np.abs(plane)).T
    return plane


@contextlib.contextmanager
def _style() -> Iterator[None]:
    import matplotlib

    with matplotlib.rc_context(RC):
        yield


def grid_shape(n: int, panels_per_example: int, panel_inches: float) -> tuple[int, int]:
    """``(rows, examples per row)``: examples wrap into rows as wide as MAX_WIDTH_INCHES allows (at least one)."""
    per_row = max(1, min(n, int(MAX_WIDTH_INCHES // (panels_per_example * panel_inches))))
    return -(-n // per_row), per_row


# Colour bar ticks per kind: the drawn 0..1 values and what they mean in the map's own units.
COLORBAR_TICKS = {SPATIAL: ([0, 0.5, 1], ["0", "0.5", "1"]),
                  SELF_ATTENTION: ([0, 0.5, 1], ["0", "1", "\u2265 2"]),
                  CHANNEL: ([0, 1], ["0", "max"])}


def render_grid(inputs: np.ndarray, block_maps: Sequence[BlockMaps], labels: Sequence[str], display: str,
                title: str) -> bytes:
    """A PNG: a grid of examples (inputs (N, H, W, C)), each the input then one overlay per block, wrapped into
    rows (:func:`grid_shape`), with one colour bar per kind of block at the right.

    ``block_maps[k].maps`` hold the same N examples; each is aligned to the input (:func:`align_to_input`),
    scaled (:func:`display_scale`) and drawn over the grayscale input with one colour map on a fixed 0..1
    scale (vmin 0, vmax 1: a spatial gate as it is). ``labels``: one per example (under its input). The figure
    size depends only on N, the number of blocks and ``display``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    inputs = np.asarray(inputs, dtype=np.float32)
    n, per_example = len(inputs), 1 + len(block_maps)
    if n == 0:
        raise ValueError("no examples to draw")
    if len(labels) != n or any(len(bm.maps) != n for bm in block_maps):
        raise ValueError("labels and maps must have one entry per example")
    pw, ph = PANEL_INCHES[display]
    rows, per_row = grid_shape(n, per_example, pw)
    kinds = list(dict.fromkeys(bm.block.kind for bm in block_maps))
    head, bar = 0.5, COLORBAR_INCHES * len(kinds)  # inches above for the title, at the right for the bars
    width, height = max(pw * per_example * per_row, MIN_WIDTH_INCHES) + bar, ph * rows + head
    origin = "lower" if display == DISPLAY_SPECTROGRAM else "upper"
    aspect = "auto" if display == DISPLAY_SPECTROGRAM else "equal"
    aligned = [display_scale(bm.block.kind, align_to_input(bm.maps, inputs.shape[1:3])) for bm in block_maps]
    with _style():
        fig, axes = plt.subplots(rows, per_example * per_row, figsize=(width, height), squeeze=False)
        try:
            for ax in axes.flat:
                ax.set_axis_off()
            for i in range(n):
                r, c0 = divmod(i, per_row)
                base = display_input(inputs[i], display)
                for j in range(per_example):
                    ax = axes[r][c0 * per_example + j]
                    ax.set_axis_on()
                    ax.imshow(base, cmap="gray", origin=origin, aspect=aspect, interpolation="nearest")
                    ax.set_xticks([])
                    ax.set_yticks([])
                    if j == 0:
                        ax.set_xlabel(labels[i])
                        if r == 0:
                            ax.set_title("input")
                        continue
                    bm = block_maps[j - 1]
                    shown = aligned[j - 1][i]
                    if display == DISPLAY_SPECTROGRAM:
                        shown = shown.T
                    ax.imshow(np.ma.masked_invalid(shown), cmap=OVERLAY_CMAP, vmin=0.0, vmax=1.0,
                              alpha=OVERLAY_ALPHA, origin=origin, aspect=aspect, interpolation="nearest")
                    raw = bm.maps[i]
                    ax.set_xlabel(f"{UNITS[bm.block.kind]} {float(raw.min()):.2f}\u2013{float(raw.max()):.2f}")
                    if r == 0:
                        ax.set_title(f"{bm.block.name} ({bm.block.kind.replace('_', '-')})")
            fig.suptitle(title)
            right = 1 - bar / width
            fig.tight_layout(rect=(0, 0, right, 1 - head / height))
            top, bottom = 1 - head / height - 0.15 / height, 0.35 / height
            for k, kind in enumerate(kinds):
                cax = fig.add_axes((right + (k * COLORBAR_INCHES + 0.12) / width, bottom,
                                    0.14 / width, top - bottom))
                cb = fig.colorbar(ScalarMappable(Normalize(0.0, 1.0), OVERLAY_CMAP), cax=cax)
                ticks, names = COLORBAR_TICKS[kind]
                cb.set_ticks(ticks, labels=names)
                cb.set_label(UNITS[kind])
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=DPI, metadata=PNG_METADATA)
        finally:
            plt.close(fig)
    return buf.getvalue()


# --------------------------------------------------------------------------- one run


def example_entry(position: int, index: int, actual: int, predicted: int, confidence: float,
                  block_maps: Sequence[BlockMaps], row: int, class_names: Sequence[str]) -> dict[str, Any]:
    """index.json's record of one drawn example (``row``: its row in ``block_maps``)."""
    maps: dict[str, Any] = {}
    for bm in block_maps:
        m = bm.maps[row]
        entry: dict[str, Any] = {"min": round(float(m.min()), 4), "mean": round(float(m.mean()), 4),
                                 "max": round(float(m.max()), 4)}
        if bm.gates is not None:
            entry["gates"] = [round(float(g), 4) for g in bm.gates[row]]
        maps[bm.block.name] = entry
    return {"position": int(position), "index": int(index), "actual": class_names[int(actual)],
            "predicted": class_names[int(predicted)], "confidence": round(float(confidence), 6), "maps": maps}


def row_label(index: int, actual: str, predicted: str, confidence: float) -> str:
    """``#12 true 3`` for a right prediction, ``#12 true 3 -> 5 (0.62)`` for a wrong one."""
    if actual == predicted:
        return f"#{index} true {actual}"
    return f"#{index} true {actual} \u2192 {predicted} ({confidence:.2f})"


def attention_outputs(model, x_of, *, dataset: str, variant: str, seed: int, display: str,
                      input_shape: Sequence[int], class_names: Sequence[str], indices: np.ndarray,
                      actual: np.ndarray, predicted: np.ndarray, confidence: np.ndarray, per_class: int,
                      max_misclassified: int) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Everything the attention folder holds, computed in memory: ``(index, {file name: PNG bytes})``.

    ``x_of(positions) -> (len(positions), H, W, C)`` float32 gives test inputs by position;
    ``indices``, ``actual``, ``predicted`` (N,) ints and ``confidence`` (N,) float in test order.
    A model without attention blocks gives an index with no blocks and no images.
    """
    blocks = find_attention_blocks(model)
    fixed, wrong, wrong_total = select_examples(actual, predicted, len(class_names), per_class, max_misclassified)
    index: dict[str, Any] = {
        "dataset": dataset, "variant": variant, "seed": int(seed), "display": display,
        "input_shape": [int(s) for s in input_shape], "examples_per_class": int(per_class),
        "max_misclassified": int(max_misclassified), "misclassified_total": wrong_total,
        "blocks": [], "fixed": [], "misclassified": [], "images": {},
    }
    if not blocks:
        return index, {}
    images: dict[str, bytes] = {}
    for set_name, positions in (("fixed", fixed), ("misclassified", wrong)):
        if not positions:
            continue
        x = np.asarray(x_of(positions), dtype=np.float32)
        if x.shape[0] != len(positions):
            raise StageError(f"got {x.shape[0]} test inputs for {len(positions)} positions; rerun featurize")
        bms = compute_block_maps(model, blocks, x)
        entries = [example_entry(p, indices[p], actual[p], predicted[p], confidence[p], bms, r, class_names)
                   for r, p in enumerate(positions)]
        labels = [row_label(e["index"], e["actual"], e["predicted"], e["confidence"]) for e in entries]
        if set_name == "fixed":
            what = f"the first {per_class} test examples of each class" if per_class != 1 \
                else "the first test example of each class"
        else:
            what = f"misclassified: the first {len(positions)} of {wrong_total} in test order"
        images[IMAGE_FILES[set_name]] = render_grid(x, bms, labels, display, f"{dataset} / {variant}, seed {seed}\n{what}")
        index[set_name] = entries
        index["images"][set_name] = IMAGE_FILES[set_name]
        if not index["blocks"]:
            index["blocks"] = [{"name": bm.block.name, "kind": bm.block.kind, "layer": bm.block.layer,
                                "map_shape": [int(s) for s in bm.maps.shape[1:]], "units": UNITS[bm.block.kind],
                                "shows": SHOWS[bm.block.kind]} for bm in bms]
    if not index["blocks"]:  # blocks found but nothing to draw (no examples selected)
        index["blocks"] = [{"name": b.name, "kind": b.kind, "layer": b.layer, "map_shape": None,
                            "units": UNITS[b.kind], "shows": SHOWS[b.kind]} for b in blocks]
    return index, images


def write_attention_dir(folder: Path, index: dict[str, Any], images: dict[str, bytes]) -> None:
    """Write index.json and the PNGs into ``folder`` atomically (built aside, renamed into place)."""
    from attention_cnn.common import atomic_dir, atomic_write_bytes, atomic_write_json

    with atomic_dir(folder) as tmp:
        for name, data in sorted(images.items()):
            atomic_write_bytes(tmp / name, data)
        atomic_write_json(tmp / INDEX_FILE, index)


def read_index(folder: Path) -> dict[str, Any]:
    """Read and check an attention folder's index.json: the keys the report uses and that every listed
    image exists and is a PNG. One-line :class:`StageError` otherwise."""
    path = Path(folder) / INDEX_FILE
    raw = read_json_object(path, "run `dvc repro` to produce it (the evaluate stage writes it)")
    absent = [k for k in ("dataset", "variant", "seed", "blocks", "fixed", "misclassified", "misclassified_total",
                          "images") if k not in raw]
    if absent:
        raise StageError(f"{path}: missing key(s) {', '.join(absent)}; re-run `dvc repro`")
    if not isinstance(raw["images"], dict) or not isinstance(raw["blocks"], list):
        raise StageError(f"{path}: 'images' must be an object and 'blocks' a list")
    for set_name, name in raw["images"].items():
        if set_name not in IMAGE_FILES or name != IMAGE_FILES[set_name]:
            raise StageError(f"{path}: unexpected image entry {set_name!r}: {name!r}")
        image = Path(folder) / name
        try:
            head = image.read_bytes()[:8]
        except FileNotFoundError:
            raise StageError(f"{image}: listed in {path} but missing; re-run `dvc repro`") from None
        if head != b"\x89PNG\r\n\x1a\n":
            raise StageError(f"{image}: not a PNG file")
    return raw
