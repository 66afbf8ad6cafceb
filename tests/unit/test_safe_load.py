"""No code runs from a model file: the allow-list of attention_cnn.models.safe_load, crafted and damaged files."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from attention_cnn.common import StageError
from attention_cnn.models.safe_load import ALLOWED, check_config, load_model, object_entries, read_config

# Settings that change which layers a variant builds (each applied where the variant accepts its keys).
OPTIONS = ({}, {"frontend": "logmel", "augment": "auto", "time_pool": 2, "dropout": 0.1},
           {"frontend": "logmel", "augment": "specaugment", "time_pool": 2, "time_mask_span": "clip", "pool_span": "clip"},
           {"frontend": "logmel", "utterance_norm": True, "channel_eq_db": 4.0, "freq_warp": 0.1},
           {"augment": "specaugment"}, {"augment": "digits"})
SHAPES = ((28, 28, 1), (40, 129, 1))  # an image, and a spectrogram (more columns than mel bins)


def saved_entries(path: Path) -> set[tuple]:
    with zipfile.ZipFile(path) as archive:
        config = json.loads(archive.read("config.json"))
    return {(e.get("module"), e.get("class_name"), e.get("registered_name")) for _, e in object_entries(config)}


@pytest.mark.slow  # trains or saves TensorFlow models (make test-fast skips it)
def test_allow_list_covers_every_registered_variant(tmp_path):
    """Every variant, in every layer-changing setting, saves only allowed classes: as the train stage saves it
    (portable) and as a checkpoint (compiled with the project's optimizer and schedule)."""
    import keras

    from attention_cnn.models import available, build_model, settings_type
    from attention_cnn.models.blocks import portable
    from attention_cnn.training.optimizers import FusedAdam

    seen: set[tuple] = set()
    built: set[tuple] = set()
    for name in available():
        fields = settings_type(name).model_fields
        for shape in SHAPES:
            for option in OPTIONS:
                settings = {k: v for k, v in option.items() if k in fields}
                key = (name, shape, repr(sorted(settings.items())))
                if key in built:
                    continue   # options this variant lacks leave a model already checked
                built.add(key)
                model = build_model(name, shape, 10, settings, sample_rate_hz=8000)
                inference = portable(model)
                inference.save(tmp_path / "m.keras")
                seen |= saved_entries(tmp_path / "m.keras")
                check_config(read_config(tmp_path / "m.keras"), tmp_path / "m.keras")
                model.compile(optimizer=FusedAdam(keras.optimizers.schedules.CosineDecay(1e-3, 10)),
                              loss=keras.losses.CategoricalCrossentropy(label_smoothing=0.1), metrics=["accuracy"])
                model.save(tmp_path / "c.keras")
                seen |= saved_entries(tmp_path / "c.keras")
                check_config(read_config(tmp_path / "c.keras"), tmp_path / "c.keras")
    assert seen <= ALLOWED
    # Nothing allowed beyond what the variants use, but the one op Keras 3.8 saved under mixed precision.
    assert ALLOWED - seen <= {("keras.src.ops.core", "Cast", "Cast")}, ALLOWED - seen


def saved_cnn(tmp_path: Path) -> tuple[Path, object, np.ndarray]:
    from attention_cnn.models import build_model
    from attention_cnn.models.blocks import portable

    model = portable(build_model("cnn_attention", (28, 28, 1), 10, {}))
    path = tmp_path / "good" / "model.keras"
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    x = np.random.default_rng(0).random((4, 28, 28, 1), dtype=np.float32)
    return path, model, x


def test_allowed_model_loads_with_identical_predictions(tmp_path):
    path, model, x = saved_cnn(tmp_path)
    loaded = load_model(path)
    assert loaded.predict(x, verbose=0).tobytes() == model.predict(x, verbose=0).tobytes()


def rewrite_config(src: Path, dest: Path, mutate) -> Path:
    """A copy of the .keras zip ``src`` whose config.json is ``mutate(config)`` (other members unchanged)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename == "config.json":
                data = json.dumps(mutate(json.loads(data))).encode()
            zout.writestr(info, data)
    return dest


def layer_named(config: dict, class_name: str) -> dict:
    return next(layer for layer in config["config"]["layers"] if layer["class_name"] == class_name)


def subprocess_layer(marker: Path):
    """CVE-2025-1550's shape: a "layer" whose module and class are ``subprocess.run``, with a command."""
    def mutate(config):
        layer = layer_named(config, "Dropout")
        layer.update(module="subprocess", class_name="run", registered_name=None,
                     config={"args": ["touch", str(marker)]})
        return config
    return mutate


def os_system_activation(marker: Path):
    """A function entry (``os.system``) where Keras resolves an activation."""
    def mutate(config):
        layer_named(config, "Dense")["config"]["activation"] = {
            "module": "os", "class_name": "function", "config": "system", "registered_name": "function"}
        return config
    return mutate


def unsafe_switch(marker: Path):
    """CVE-2025-8747/9906's shape: a Keras function that turns safe mode off, ahead of the layers."""
    def mutate(config):
        config["config"]["layers"].insert(0, {"module": "keras.config", "class_name": "function",
                                              "config": "enable_unsafe_deserialization", "registered_name": "function"})
        return config
    return mutate


def keras_class_other_module(marker: Path):
    """An allowed class name under a module that is not Keras'."""
    def mutate(config):
        layer_named(config, "Dense")["module"] = "attacker.layers"
        return config
    return mutate


@pytest.mark.parametrize("craft, named", [(subprocess_layer, "subprocess.run"), (os_system_activation, "os.system (a function)"),
                                          (unsafe_switch, "keras.config.enable_unsafe_deserialization (a function)"),
                                          (keras_class_other_module, "attacker.layers.Dense")])
def test_crafted_model_is_refused_before_keras_reads_it(tmp_path, craft, named):
    good, _, _ = saved_cnn(tmp_path)
    marker = tmp_path / "marker"
    evil = rewrite_config(good, tmp_path / "evil" / "model.keras", craft(marker))
    with pytest.raises(StageError) as err:
        load_model(evil)
    message = str(err.value)
    assert "\n" not in message and str(evil) in message and named in message and "refused" in message, message
    assert not marker.exists()


def test_lambda_layer_is_refused(tmp_path):
    import keras

    inputs = keras.Input((2,))
    path = tmp_path / "m" / "model.keras"
    path.parent.mkdir()
    keras.Model(inputs, keras.layers.Lambda(lambda t: t * 2)(inputs)).save(path)
    with pytest.raises(StageError, match=r"refused: config.json/config/layers\[1\] names keras.layers.Lambda"):
        load_model(path)


def flip_middle(path: Path, count: int = 16) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + count] = bytes(b ^ 0xFF for b in data[middle:middle + count])
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["flip", "truncate", "zero_head"])
def test_damaged_model_is_one_line_naming_it(tmp_path, damage):
    path, _, _ = saved_cnn(tmp_path)
    if damage == "flip":
        flip_middle(path)
    elif damage == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        data = bytearray(path.read_bytes())
        data[:16] = bytes(16)
        path.write_bytes(bytes(data))
    with pytest.raises(StageError) as err:
        load_model(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message and "dvc checkout --relink" in message, message


def test_legacy_hdf5_model_is_refused(tmp_path):
    """HDF5 models ignore safe_mode (CVE-2025-9905): never loaded, whatever their name."""
    import keras

    path, model, _ = saved_cnn(tmp_path)
    h5 = tmp_path / "h5" / "model.keras"
    h5.parent.mkdir()
    keras.saving.save_model(model, tmp_path / "h5" / "m.h5")
    (tmp_path / "h5" / "m.h5").rename(h5)
    with pytest.raises(StageError, match="not a .keras model archive"):
        load_model(h5)
