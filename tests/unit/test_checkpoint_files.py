"""The resume checkpoint's files: state.json names the model file of its own epoch, the random layers'
generator states come back, and a state.json naming anything else is discarded with one line."""
from __future__ import annotations

import json

import keras
import numpy as np

from attention_cnn.training.optimizers import FusedAdam
from attention_cnn.training.train import Checkpoint, random_states

KEY = {"params": {"epochs": 3}, "code": {"a.py": "1"}, "data": {"spec.json": "2"}}


def small_model() -> keras.Model:
    inputs = keras.Input((4,))
    x = keras.layers.Dropout(0.5, seed=1)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(x))
    model.compile(optimizer=FusedAdam(), loss=keras.losses.CategoricalCrossentropy())   # as training compiles
    model.train_on_batch(np.ones((2, 4), "float32"), np.eye(2, dtype="float32"))   # builds the optimizer state
    return model


def test_each_epoch_names_its_model_file_and_keeps_the_generator_states(tmp_path):
    model = small_model()
    ckpt = Checkpoint(tmp_path / "ckpt", KEY)
    ckpt.save(model, {"epoch": 1})
    for _ in range(3):   # three dropout draws move the generator on
        model(np.ones((1, 4), "float32"), training=True)
    moved = [v.numpy().tolist() for v in random_states(model)]
    assert moved and moved != [[1, 0]]
    ckpt.save(model, {"epoch": 2})
    assert sorted(p.name for p in ckpt.folder.iterdir()) == ["state-2.keras", "state.json"]
    state = json.loads((ckpt.folder / "state.json").read_text())
    assert state["model_file"] == "state-2.keras" and state["epoch"] == 2

    loaded, state = ckpt.load()
    assert [v.numpy().tolist() for v in random_states(loaded)] == moved   # a .keras file alone would give [1, 0]


def test_a_state_json_naming_a_missing_or_foreign_file_is_discarded(tmp_path, capsys):
    ckpt = Checkpoint(tmp_path / "ckpt", KEY)
    ckpt.save(small_model(), {"epoch": 1})
    state_file = ckpt.folder / "state.json"
    state = json.loads(state_file.read_text())
    (tmp_path / "elsewhere.keras").write_bytes((ckpt.folder / "state-1.keras").read_bytes())
    for name in ("state-2.keras", "../elsewhere.keras", None):   # a kill mid-save never leaves these
        state_file.write_text(json.dumps({**state, "model_file": name}))
        assert ckpt.load() is None
        out = capsys.readouterr().out.strip().splitlines()
        assert out == [f"resume: checkpoint in {ckpt.folder} discarded: its model file is missing; "
                       "starting from scratch"]
