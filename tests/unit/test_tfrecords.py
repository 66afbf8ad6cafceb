"""The TFRecord feature format: writer and reader agree, folds are stratified, counts are exact."""
from __future__ import annotations

import numpy as np
import pytest

from attention_cnn.common import StageError
from attention_cnn.features.tfrecords import (NUM_FOLDS, FeatureSpec, ShardedWriter, assign_folds, batched, count_in_folds,
                              load_split, read_spec, serialize_example, write_spec)


def write_examples(folder, spec, split, features, labels, per_shard):
    folds = assign_folds(labels)
    with ShardedWriter(folder, spec, split, per_shard) as writer:
        for i, (feat, lab) in enumerate(zip(features, labels)):
            writer.write(serialize_example(feat, lab, i, folds[i], spec))
    spec.counts[split] = {str(c): int(np.sum(labels == c)) for c in range(spec.num_classes)}
    return folds


@pytest.mark.parametrize("storage,compression,atol", [("float32", "", 0.0), ("float16", "GZIP", 1e-2),
                                                      ("uint8", "ZLIB", 0.0)])
def test_round_trip_values_labels_order_and_folds(tmp_path, storage, compression, atol):
    rng = np.random.default_rng(0)
    shape = [5, 7, 1]
    n = 23
    if storage == "uint8":
        features = rng.integers(0, 256, size=(n, *shape)).astype(np.uint8)
    else:
        features = rng.random((n, *shape), dtype=np.float32) * 4
    labels = np.arange(n) % 3
    spec = FeatureSpec(dataset="t", shape=shape, storage_dtype=storage, compression=compression,
                       class_names=["a", "b", "c"])
    folds = write_examples(tmp_path, spec, "train", features, labels, per_shard=5)
    assert len(spec.shards["train"]) == 5  # 23 examples, 5 per shard
    write_spec(tmp_path, spec)

    spec2 = read_spec(tmp_path)
    assert spec2 == spec
    got = list(load_split(tmp_path, spec2, "train").as_numpy_iterator())
    assert [int(ex["index"]) for ex in got] == list(range(n))
    assert [int(ex["label"]) for ex in got] == labels.tolist()
    assert [int(ex["fold"]) for ex in got] == folds.tolist()
    stacked = np.stack([ex["feature"] for ex in got])
    assert stacked.dtype == np.float32 and stacked.shape == (n, *shape)
    np.testing.assert_allclose(stacked, features.astype(np.float32), atol=atol, rtol=1e-3)


def test_scale_applies_on_parse(tmp_path):
    spec = FeatureSpec(dataset="m", shape=[2, 2, 1], storage_dtype="uint8", scale=1 / 255, class_names=["0", "1"])
    write_examples(tmp_path, spec, "test", np.full((2, 2, 2, 1), 255, np.uint8), np.array([0, 1]), per_shard=10)
    feats = [ex["feature"] for ex in load_split(tmp_path, spec, "test").as_numpy_iterator()]
    np.testing.assert_allclose(feats[0], 1.0)


@pytest.mark.parametrize("per_class", [3, 16, 400, 1001])
def test_folds_give_a_stratified_fraction_of_every_class(per_class):
    labels = np.repeat(np.arange(10), per_class)
    folds = assign_folds(labels)
    assert folds.min() >= 0 and folds.max() < NUM_FOLDS
    for k in (10, 25):
        expected = -(-k * per_class // NUM_FOLDS)  # ceil
        for c in range(10):
            assert int(np.sum(folds[labels == c] < k)) == expected
    assert np.array_equal(folds, assign_folds(labels))  # deterministic


def test_count_in_folds_matches_filtered_dataset(tmp_path):
    labels = np.repeat(np.arange(3), [7, 11, 20])
    spec = FeatureSpec(dataset="t", shape=[1], storage_dtype="float32", class_names=["a", "b", "c"])
    write_examples(tmp_path, spec, "train", np.zeros((len(labels), 1), np.float32), labels, per_shard=100)
    for folds in [(0, 10), (10, NUM_FOLDS), (0, NUM_FOLDS), (40, 60)]:
        actual = sum(1 for _ in load_split(tmp_path, spec, "train", folds=folds))
        assert actual == count_in_folds(spec, "train", folds)
    assert count_in_folds(spec, "train", (0, 10)) + count_in_folds(spec, "train", (10, NUM_FOLDS)) == len(labels)


def test_batched_gives_one_hot_labels(tmp_path):
    spec = FeatureSpec(dataset="t", shape=[3], storage_dtype="float32", class_names=["a", "b"])
    write_examples(tmp_path, spec, "train", np.ones((5, 3), np.float32), np.array([0, 1, 0, 1, 1]), per_shard=2)
    x, y = next(iter(batched(tmp_path, spec, "train", 4)))
    assert x.shape == (4, 3) and y.shape == (4, 2)
    assert y.numpy().tolist()[:2] == [[1, 0], [0, 1]]


def test_missing_spec_and_missing_shard_are_one_line_errors(tmp_path):
    with pytest.raises(StageError, match="feature spec not found"):
        read_spec(tmp_path)
    spec = FeatureSpec(dataset="t", shape=[1], storage_dtype="float32", class_names=["a"],
                       shards={"train": ["train-00000.tfrecord"]}, counts={"train": {"a": 1}})
    with pytest.raises(StageError, match="shard listed in spec.json is missing"):
        load_split(tmp_path, spec, "train")


def test_wrong_feature_size_and_bad_dtype_are_rejected():
    spec = FeatureSpec(dataset="t", shape=[2, 2], storage_dtype="float32", class_names=["a"])
    with pytest.raises(StageError, match="does not fit"):
        serialize_example(np.zeros(3), 0, 0, 0, spec)
    with pytest.raises(StageError, match="storage dtype"):
        FeatureSpec(dataset="t", shape=[1], storage_dtype="int7")


@pytest.mark.parametrize("storage", ["float16", "float32"])
def test_trailing_zero_rows_are_left_out_and_parsed_back_exactly(tmp_path, storage):
    """Float features are stored without trailing all-zero rows (padding frames); parsing restores them."""
    rng = np.random.default_rng(1)
    shape = [9, 4, 1]
    full = rng.random((4, *shape), dtype=np.float32) + 0.5
    full[0, 5:] = 0.0                  # padded: 4 zero rows at the end
    full[1, 3] = -0.0                  # a row of -0.0 before the zero tail is data, kept bit for bit
    full[1, 4:] = 0.0
    full[2, 2] = 0.0                   # an inner zero row stays
    full[3] = 0.0                      # all padding
    spec = FeatureSpec(dataset="t", shape=shape, storage_dtype=storage, class_names=["a"])
    given = [full[0, :5], full[1], full[2], full[3, :0]]   # fewer rows than the shape: the rest are zeros
    itemsize = np.dtype(storage).itemsize
    sizes = [len(serialize_example(f, 0, i, 0, spec)) for i, f in enumerate(given)]
    untrimmed = len(serialize_example(full[2], 0, 2, 0, spec))
    assert untrimmed - sizes[0] >= 4 * 4 * itemsize and untrimmed - sizes[1] >= 5 * 4 * itemsize
    assert untrimmed - sizes[3] >= 9 * 4 * itemsize
    write_examples(tmp_path, spec, "train", given, np.zeros(4, dtype=int), per_shard=10)
    got = np.stack([ex["feature"] for ex in load_split(tmp_path, spec, "train").as_numpy_iterator()])
    expected = full.astype(storage).astype(np.float32)
    assert got.shape == (4, *shape)
    assert got.tobytes() == expected.tobytes()          # exact, including the sign of -0.0
    assert np.signbit(got[1, 3]).all() and not np.signbit(got[1, 4:]).any()


def test_uint8_features_with_fewer_rows_are_zero_padded(tmp_path):
    spec = FeatureSpec(dataset="t", shape=[3, 2], storage_dtype="uint8", class_names=["a"])
    write_examples(tmp_path, spec, "train", [np.array([[7, 8]], np.uint8)], np.zeros(1, dtype=int), per_shard=1)
    got = next(load_split(tmp_path, spec, "train").as_numpy_iterator())["feature"]
    np.testing.assert_array_equal(got, [[7, 8], [0, 0], [0, 0]])
    with pytest.raises(StageError, match="does not fit"):
        serialize_example(np.zeros((4, 2)), 0, 0, 0, spec)   # more rows than the shape


def test_running_stats_count_implicit_zeros_like_padded_arrays():
    from attention_cnn.features.tfrecords import RunningStats

    rng = np.random.default_rng(2)
    rows = rng.random((7, 5), dtype=np.float32) + 1.0
    padded = np.concatenate([rows, np.zeros((3, 5), np.float32)])
    a, b = RunningStats(), RunningStats()
    a.update(padded)
    b.update(rows, zeros=15)
    for key, value in a.as_dict().items():
        assert b.as_dict()[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
    assert b.as_dict()["min"] == 0.0


def test_repeated_batches_keep_epochs_whole_and_reshuffle_each_pass(tmp_path):
    labels = np.arange(10) % 2
    spec = FeatureSpec(dataset="t", shape=[1], storage_dtype="float32", class_names=["a", "b"])
    write_examples(tmp_path, spec, "train", np.arange(10, dtype=np.float32)[:, None], labels, per_shard=4)
    steps = 3  # 10 examples in batches of 4: 4, 4, 2 per epoch
    ds = batched(tmp_path, spec, "train", 4, shuffle_buffer=100, seed=0, repeat=True)
    batches = [x.numpy()[:, 0].tolist() for x, _ in ds.take(3 * steps)]
    epochs = [sum(batches[e * steps:(e + 1) * steps], []) for e in range(3)]
    assert [len(b) for b in batches] == [4, 4, 2] * 3  # no batch straddles two epochs
    assert all(sorted(e) == list(range(10)) for e in epochs)  # every example once per epoch
    assert len({tuple(e) for e in epochs}) == 3  # a new order every pass
    # the same orders as iterating the finite pipeline once per epoch (what Keras did before)
    finite = batched(tmp_path, spec, "train", 4, shuffle_buffer=100, seed=0)
    assert epochs == [[v for x, _ in finite for v in x.numpy()[:, 0].tolist()] for _ in range(3)]
