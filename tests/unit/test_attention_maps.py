"""Attention maps (attention_cnn/evaluation/attention_maps.py, evaluate --attention-dir): which examples, which layers, what the
maps hold, where they sit on the input, and that the files are deterministic. Tiny models built in-test."""
from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]

from attention_cnn.evaluation import attention_maps as am
from attention_cnn.common import StageError

SHAPE = (12, 12, 1)
CLASSES = ["0", "1", "2", "3"]
SMALL = {  # small settings: fast to build, the same layers as the real variants
    "cnn": dict(filters=4, dense_units=4),
    "cnn_attention": dict(filters=4, dense_units=4),
    "cnn_se": dict(filters=4, dense_units=4, se_ratio=2),
    "cnn_cbam": dict(filters=4, dense_units=4, cbam_ratio=2, cbam_kernel_size=3),
    "cnn_mhsa": dict(filters=4, dense_units=4, heads=2, key_dim=2, max_tokens=25),
    "resnet": dict(filters=4, blocks_per_stage=1),
    "resnet_se": dict(filters=4, blocks_per_stage=1, se_ratio=2),
    "resnet_cbam": dict(filters=4, blocks_per_stage=1, cbam_ratio=2, cbam_kernel_size=3),
}


def saved_and_loaded(variant: str, tmp_path: Path, shape=SHAPE, change=None):
    """A tiny variant as the train stage saves it and the evaluate stage loads it (safe mode, no model code)."""
    import keras

    from attention_cnn.models import build_model

    keras.utils.set_random_seed(0)
    model = build_model(variant, shape, len(CLASSES), SMALL[variant])
    if change is not None:
        change(model)
    path = tmp_path / f"{variant}.keras"
    model.save(path)
    return keras.models.load_model(path, safe_mode=True, compile=False)


def inputs(n: int, shape=SHAPE, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).random((n, *shape), dtype=np.float32)


def layer_outputs(model, names, x):
    import keras

    probe = keras.Model(model.inputs, {n: model.get_layer(n).output for n in names})
    return {k: np.asarray(v) for k, v in probe([x], training=False).items()}


# ----------------------------------------------------------------------------- which examples


def test_select_examples_first_per_class_in_test_order_and_first_misclassified():
    actual = np.array([2, 0, 1, 0, 2, 0, 1, 1])
    predicted = np.array([2, 1, 1, 0, 0, 0, 2, 1])
    fixed, wrong, total = am.select_examples(actual, predicted, num_classes=4, per_class=2, max_misclassified=2)
    assert fixed == [1, 3, 2, 6, 0, 4]  # class 0, 1, 2 in turn; class 3 has no test example
    assert wrong == [1, 4] and total == 3
    assert am.select_examples(actual, predicted, 4, 0, 0) == ([], [], 3)
    assert am.select_examples(actual, actual, 4, 1, 5)[1:] == ([], 0)
    with pytest.raises(ValueError):
        am.select_examples(actual, predicted[:3], 4, 1, 1)


# ----------------------------------------------------------------------------- geometry


def test_align_valid_conv_map_is_centred_with_a_nan_border():
    maps = np.arange(26 * 26, dtype=np.float32).reshape(1, 26, 26)
    out = am.align_to_input(maps, (28, 28))
    assert out.shape == (1, 28, 28)
    assert np.isnan(out[0, 0]).all() and np.isnan(out[0, -1]).all() and np.isnan(out[0, :, 0]).all()
    np.testing.assert_array_equal(out[0, 1:27, 1:27], maps[0])  # conv output (i, j) is centred on pixel (i+1, j+1)


def test_align_strided_map_repeats_cells_and_cuts_the_end():
    maps = np.arange(49 * 33, dtype=np.float32).reshape(1, 49, 33)  # 391 x 257 after 3 stride-2 stages
    out = am.align_to_input(maps, (391, 257))
    assert out.shape == (1, 391, 257) and not np.isnan(out).any()
    assert out[0, 0, 0] == maps[0, 0, 0] and out[0, 7, 7] == maps[0, 0, 0] and out[0, 8, 8] == maps[0, 1, 1]
    assert out[0, 390, 256] == maps[0, 48, 32]
    half = am.align_to_input(np.array([[[0.0, 1.0], [2.0, 3.0]]], np.float32), (4, 4))
    np.testing.assert_array_equal(half[0], [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]])


def test_tokens_go_back_where_the_block_adds_them():
    received = np.array([[1.0, 2.0, 3.0, 4.0]], np.float32)  # a 2 x 2 token grid, row-major
    grid = am.tokens_to_grid(received, (2, 2), pool=(2, 2), cropping=((0, 1), (1, 0)))
    np.testing.assert_array_equal(grid[0], [[1, 2, 2], [1, 2, 2], [3, 4, 4]])  # last row and first column cut
    with pytest.raises(ValueError):
        am.tokens_to_grid(received, (3, 2))


def test_received_attention_is_one_for_uniform_attention():
    scores = np.full((2, 3, 5, 5), 1 / 5, np.float32)
    np.testing.assert_allclose(am.received_attention(scores), np.ones((2, 5)), rtol=1e-6)
    peaked = np.zeros((1, 1, 4, 4), np.float32)
    peaked[..., 2] = 1.0  # every query looks at token 2 only
    np.testing.assert_allclose(am.received_attention(peaked), [[0, 0, 4, 0]])


def test_display_scale_fixed_for_gates_and_attention_per_example_for_activations():
    gates = np.array([[[0.2, 0.9]], [[0.1, 0.3]]], np.float32)
    np.testing.assert_allclose(am.display_scale(am.SPATIAL, gates), gates)
    np.testing.assert_allclose(am.display_scale(am.CHANNEL, gates), [[[0.2 / 0.9, 1.0]], [[1 / 3, 1.0]]], rtol=1e-6)
    uniform_and_peak = np.array([[[1.0, 3.0, 0.5, np.nan]]], np.float32)
    np.testing.assert_allclose(am.display_scale(am.SELF_ATTENTION, uniform_and_peak), [[[0.5, 1.0, 0.25, np.nan]]])


# ----------------------------------------------------------------------------- blocks of every variant


def test_blocks_found_in_every_variant(tmp_path):
    found = {}
    for variant in SMALL:
        shape = (16, 16, 1) if variant.startswith("resnet") else SHAPE
        blocks = am.find_attention_blocks(saved_and_loaded(variant, tmp_path, shape))
        found[variant] = [(b.name, b.kind) for b in blocks]
    assert found["cnn"] == [] and found["resnet"] == []
    assert found["cnn_attention"] == [("attention", am.SPATIAL)]
    assert found["cnn_se"] == [("se", am.CHANNEL)]
    assert found["cnn_cbam"] == [("cbam", am.SPATIAL)]
    assert found["cnn_mhsa"] == [("mhsa", am.SELF_ATTENTION)]
    residual = [f"stage{s}_block1_att" for s in (1, 2, 3)]
    assert found["resnet_se"] == [(n, am.CHANNEL) for n in residual]
    assert found["resnet_cbam"] == [(n, am.SPATIAL) for n in residual]


def test_spatial_map_is_the_gate_the_model_multiplies_by(tmp_path):
    model = saved_and_loaded("cnn_attention", tmp_path)
    x = inputs(3)
    (bm,) = am.compute_block_maps(model, am.find_attention_blocks(model), x)
    assert bm.maps.shape == (3, 10, 10) and bm.gates is None
    assert 0 < bm.maps.min() and bm.maps.max() < 1
    got = layer_outputs(model, ["conv", "attention_apply"], x)
    np.testing.assert_allclose(got["attention_apply"], got["conv"] * bm.maps[..., None], rtol=1e-5, atol=1e-6)


def test_spatial_map_follows_the_gate_weights(tmp_path):
    """A gate with zero kernel and bias b is sigmoid(b) everywhere: the map is read from that layer."""
    def constant_gate(model):
        layer = model.get_layer("attention_map")
        kernel, bias = layer.get_weights()
        layer.set_weights([np.zeros_like(kernel), np.full_like(bias, 2.0)])

    model = saved_and_loaded("cnn_attention", tmp_path, change=constant_gate)
    (bm,) = am.compute_block_maps(model, am.find_attention_blocks(model), inputs(2))
    np.testing.assert_allclose(bm.maps, 1 / (1 + np.exp(-2.0)), rtol=1e-6)


def test_cbam_map_is_its_spatial_gate_and_lists_its_channel_gates(tmp_path):
    model = saved_and_loaded("cnn_cbam", tmp_path)
    x = inputs(2)
    (bm,) = am.compute_block_maps(model, am.find_attention_blocks(model), x)
    got = layer_outputs(model, ["cbam_channel_apply", "cbam_spatial_apply", "cbam_channel_gate"], x)
    np.testing.assert_allclose(got["cbam_spatial_apply"], got["cbam_channel_apply"] * bm.maps[..., None],
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bm.gates, got["cbam_channel_gate"].reshape(2, -1), rtol=1e-6)


def test_se_map_is_the_gate_weighted_activation(tmp_path):
    model = saved_and_loaded("cnn_se", tmp_path)
    x = inputs(2)
    (bm,) = am.compute_block_maps(model, am.find_attention_blocks(model), x)
    got = layer_outputs(model, ["conv", "se_apply"], x)
    assert bm.gates.shape == (2, 4) and ((0 < bm.gates) & (bm.gates < 1)).all()
    np.testing.assert_allclose(got["se_apply"], got["conv"] * bm.gates[:, None, None, :], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bm.maps, np.abs(got["se_apply"]).mean(axis=-1), rtol=1e-5, atol=1e-7)


def test_self_attention_scores_come_from_the_layer_as_the_model_runs_it(tmp_path):
    model = saved_and_loaded("cnn_mhsa", tmp_path)
    x = inputs(2)
    (block,) = am.find_attention_blocks(model)
    assert block.grid == (5, 5) and block.pool == (2, 2)  # 10 x 10 conv map, at most 25 tokens
    (bm,) = am.compute_block_maps(model, [block], x)
    assert bm.maps.shape == (2, 10, 10)
    # every query's scores sum to 1, so the received attention averages to 1 (uniform) over the tokens
    np.testing.assert_allclose(bm.maps.reshape(2, 5, 2, 5, 2)[:, :, 0, :, 0].mean(axis=(1, 2)), 1.0, rtol=1e-5)
    got = layer_outputs(model, ["mhsa_norm", "mhsa_attention"], x)
    again = model.get_layer("mhsa_attention")(got["mhsa_norm"], got["mhsa_norm"], training=False)
    np.testing.assert_allclose(np.asarray(again), got["mhsa_attention"], rtol=1e-5, atol=1e-6)


def test_self_attention_with_a_blind_query_is_uniform(tmp_path):
    """Zero query weights give every key the same score: the map is 1 (x uniform) everywhere."""
    def blind_query(model):
        mha = model.get_layer("mhsa_attention")
        mha.query_dense.set_weights([np.zeros_like(w) for w in mha.query_dense.get_weights()])

    model = saved_and_loaded("cnn_mhsa", tmp_path, change=blind_query)
    (bm,) = am.compute_block_maps(model, am.find_attention_blocks(model), inputs(2))
    np.testing.assert_allclose(bm.maps, 1.0, rtol=1e-5)


# ----------------------------------------------------------------------------- images and the folder


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_render_grid_is_deterministic_and_sized_by_rows_and_blocks():
    block = am.AttentionBlock("attention", am.SPATIAL, "attention_map")
    maps = np.random.default_rng(0).random((3, 10, 10), dtype=np.float32)
    x = inputs(3)
    labels = ["#0 true 0", "#1 true 1", "#2 true 2 \u2192 0 (0.51)"]
    one = am.render_grid(x, [am.BlockMaps(block, maps)], labels, am.DISPLAY_IMAGE, "t")
    assert one == am.render_grid(x, [am.BlockMaps(block, maps)], labels, am.DISPLAY_IMAGE, "t")
    assert b"tIME" not in one and b"Software" not in one
    other = am.render_grid(x, [am.BlockMaps(block, maps * 0.5)], labels, am.DISPLAY_IMAGE, "t")
    assert other != one and png_size(other) == png_size(one)
    w1, h1 = png_size(one)
    # 3 examples of 2 panels fit one row; 2 examples of 5 panels (4 blocks) wrap into two rows
    assert am.grid_shape(3, 2, am.PANEL_INCHES[am.DISPLAY_IMAGE][0]) == (1, 3)
    assert am.grid_shape(2, 5, am.PANEL_INCHES[am.DISPLAY_IMAGE][0]) == (2, 1)
    assert am.grid_shape(10, 2, am.PANEL_INCHES[am.DISPLAY_IMAGE][0]) == (3, 4)
    w2, h2 = png_size(am.render_grid(x[:2], [am.BlockMaps(block, maps[:2])] * 4, labels[:2], am.DISPLAY_IMAGE, "t"))
    assert h2 > h1
    w3, h3 = png_size(am.render_grid(inputs(8), [am.BlockMaps(block, np.resize(maps, (8, 10, 10)))],
                                     [f"#{i}" for i in range(8)], am.DISPLAY_IMAGE, "t"))
    assert w3 > w1 and h3 > h1 and h3 < 8 / 3 * h1  # 8 examples: a 2 x 4 grid, not a column of 8
    spec = am.render_grid(inputs(1, (40, 20, 1)), [am.BlockMaps(block, maps[:1])], labels[:1],
                          am.DISPLAY_SPECTROGRAM, "t")
    assert png_size(spec)[0] > 0


def test_attention_outputs_for_models_with_and_without_attention(tmp_path):
    x = inputs(8)
    actual = np.array([0, 1, 2, 3, 0, 1, 2, 3])
    predicted = np.array([0, 1, 0, 3, 2, 1, 2, 3])
    kw = dict(dataset="toy", variant="v", seed=3, display=am.DISPLAY_IMAGE, input_shape=SHAPE, class_names=CLASSES,
              indices=np.arange(100, 108), actual=actual, predicted=predicted, confidence=np.full(8, 0.25),
              per_class=1, max_misclassified=5)
    index, images = am.attention_outputs(saved_and_loaded("cnn", tmp_path), lambda p: x[p], **kw)
    assert index["blocks"] == [] and images == {} and index["images"] == {} and index["misclassified_total"] == 2

    asked = []
    def x_of(positions):
        asked.append(list(positions))
        return x[positions]

    index, images = am.attention_outputs(saved_and_loaded("cnn_attention", tmp_path), x_of, **kw)
    assert asked == [[0, 1, 2, 3], [2, 4]]
    assert sorted(images) == ["fixed.png", "misclassified.png"]
    assert index["images"] == {"fixed": "fixed.png", "misclassified": "misclassified.png"}
    assert [b["name"] for b in index["blocks"]] == ["attention"] and index["blocks"][0]["map_shape"] == [10, 10]
    assert [e["index"] for e in index["fixed"]] == [100, 101, 102, 103]
    wrong = index["misclassified"]
    assert [(e["index"], e["actual"], e["predicted"]) for e in wrong] == [(102, "2", "0"), (104, "0", "2")]
    stats = wrong[0]["maps"]["attention"]
    assert 0 < stats["min"] <= stats["mean"] <= stats["max"] < 1

    folder = tmp_path / "attention"
    am.write_attention_dir(folder, index, images)
    assert sorted(p.name for p in folder.iterdir()) == ["fixed.png", "index.json", "misclassified.png"]
    assert am.read_index(folder)["variant"] == "v"
    (folder / "misclassified.png").unlink()
    with pytest.raises(StageError, match="misclassified.png: listed in .*index.json but missing"):
        am.read_index(folder)
    with pytest.raises(StageError, match="index.json: not found"):
        am.read_index(tmp_path / "nowhere")


# ----------------------------------------------------------------------------- the evaluate stage


def write_features(folder: Path, n_test: int = 8) -> Path:
    from attention_cnn.features.tfrecords import FeatureSpec, ShardedWriter, assign_folds, serialize_example, write_spec

    spec = FeatureSpec(dataset="toy", shape=list(SHAPE), storage_dtype="float32", class_names=CLASSES)
    folder.mkdir(parents=True)
    for split, n in (("train", 4), ("test", n_test)):
        labels = np.arange(n) % 4
        x = inputs(n, seed=n)
        folds = assign_folds(labels)
        with ShardedWriter(folder, spec, split, 3) as writer:  # several shards: order must hold across them
            for i in range(n):
                writer.write(serialize_example(x[i], labels[i], i, folds[i], spec))
        spec.counts[split] = {c: int(np.sum(labels == int(c))) for c in CLASSES}
    write_spec(folder, spec)
    return folder


@pytest.mark.slow  # trains or saves TensorFlow models (make test-fast skips it)
@pytest.mark.parametrize("variant", ["cnn_attention", "cnn"])
def test_evaluate_stage_writes_the_attention_folder(variant, tmp_path):
    from stages import evaluate

    model_dir = tmp_path / "model"
    model_dir.mkdir()
    saved_and_loaded(variant, tmp_path).save(model_dir / "model.keras")
    features = write_features(tmp_path / "features")
    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps({"dataset": "toy", "variant": variant, "seed": 0, "epochs_run": 1,
                                   "train_time_s": 1.0}))
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["evaluate"].update(latency_repeats=1, latency_warmup=0, attention_examples_per_class=1,
                              attention_max_misclassified=3)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out = tmp_path / "eval"
    assert evaluate.main(["--params", str(tmp_path / "params.yaml"), "--model-dir", str(model_dir),
                          "--features", str(features), "--train-summary", str(summary),
                          "--metrics", str(out / "metrics.json"), "--predictions", str(out / "predictions.csv"),
                          "--attention-dir", str(out / "attention")]) == 0
    index = am.read_index(out / "attention")
    predictions = (out / "predictions.csv").read_text().splitlines()[1:]
    wrong = [int(r.split(",")[0]) for r in predictions if r.split(",")[1] != r.split(",")[2]]
    assert index["misclassified_total"] == len(wrong) and index["examples_per_class"] == 1
    if variant == "cnn":
        assert index["blocks"] == [] and sorted(p.name for p in (out / "attention").iterdir()) == ["index.json"]
        return
    assert [e["index"] for e in index["fixed"]] == [0, 1, 2, 3]  # the first example of each class
    assert [e["index"] for e in index["misclassified"]] == wrong[:3]
    assert [e["actual"] for e in index["fixed"]] == CLASSES
    for e in index["fixed"]:
        row = predictions[e["index"]].split(",")
        assert (e["predicted"], e["confidence"]) == (row[2], pytest.approx(float(row[3]), abs=1e-6))
    first = (out / "attention" / "fixed.png").read_bytes()
    assert evaluate.main(["--params", str(tmp_path / "params.yaml"), "--model-dir", str(model_dir),
                          "--features", str(features), "--train-summary", str(summary),
                          "--metrics", str(out / "metrics.json"), "--predictions", str(out / "predictions.csv"),
                          "--attention-dir", str(out / "attention")]) == 0
    assert (out / "attention" / "fixed.png").read_bytes() == first  # byte-identical on a rerun
