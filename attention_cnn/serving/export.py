"""export: one trained model with its featurizer, as a TensorFlow SavedModel that takes raw input (and TFLite).

The output folder (``--out``, a DVC output) holds:

- ``saved_model/``: a SavedModel. Every signature returns ``probabilities`` (B, classes) float32,
  ``class_index`` (B,) int64 and ``class_name`` (B,) string.

  - speech: ``serving_default(wav)``: a batch of WAV files' bytes (string (B,); 16-bit PCM, the encoding
    ``tf.audio.decode_wav`` reads; channels mixed to mono); ``waveform(waveform, sample_rate_hz)``: one clip,
    float32 (samples,) in [-1, 1] at any rate (int64). Audio is resampled to the features' rate, cut or
    zero-padded and transformed by the functions featurize uses (:func:`~attention_cnn.features.featurize.
    resample_tensor`, :func:`~attention_cnn.features.featurize.waveform_to_input`), with the settings of the
    features' ``spec.json``. Every op is TensorFlow's own (the resampler is an FFT), so TF Serving and a
    plain ``tf.saved_model.load`` need no op library.
  - mnist: ``serving_default(pixels)``: uint8 (B, 28, 28), white digit on black as MNIST;
    ``png(png)``: a batch of PNG files' bytes (grey, or colour converted by ``tf.io.decode_png``).
- ``model.tflite``: the same computation where TFLite has the ops (see ``export.json``'s ``tflite``: what
  it takes, and why the featurizer is left out when it is).
- ``config.json``, ``class_names.json`` (from train), ``spec.json`` (the features'), ``export.json``
  (signatures, TFLite scope, the packages the SavedModel needs, and ``files``: the SHA-256 of every other file).

Predict with ``python -m stages.predict --model <this folder> FILES`` (:mod:`attention_cnn.serving.predict`).
Load an export with :func:`load_saved_model`, which checks its files and ops first
(:mod:`attention_cnn.serving.trust`). The model is exported without its training-only augmentation layers
(:func:`inference_model`).
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

from attention_cnn.common import StageError, atomic_dir, atomic_write_json
from attention_cnn.serving.trust import DIGESTS_KEY, check_export, file_digests

SAVED_MODEL_DIR = "saved_model"
TFLITE_FILE = "model.tflite"
EXPORT_FILE = "export.json"
COPIED_FROM_MODEL = ("config.json", "class_names.json")


def load_keras_model(path: Path):
    """The trained Keras model, checked against the project's allow-list before Keras reads it
    (:mod:`attention_cnn.models.safe_load`: no code from the file runs)."""
    from attention_cnn.models.safe_load import load_model

    if not path.is_file():
        raise StageError(f"{path}: model not found; run the train stage first (dvc repro)")
    return load_model(path, compile=False)


def inference_model(model):
    """``model`` without its training-only layers: each Keras random augmentation layer (the identity outside
    training) becomes ``keras.layers.Identity``; every other layer is shared, weights and all.

    The random layers hold a seed generator whose state a traced ``model(x, training=False)`` still captures,
    and ``tf.saved_model.save`` refuses a capture its module does not track ("not reachable from root").
    """
    import keras

    training_only = (keras.layers.RandomRotation, keras.layers.RandomTranslation, keras.layers.RandomZoom)

    def clone(layer):
        return keras.layers.Identity(name=layer.name) if isinstance(layer, training_only) else layer

    if not any(isinstance(layer, training_only) for layer in model.layers):
        return model
    return keras.models.clone_model(model, clone_function=clone)


def _outputs(model, inputs, class_names):
    import tensorflow as tf

    probabilities = tf.cast(model(inputs, training=False), tf.float32)
    index = tf.argmax(probabilities, axis=-1)
    return {"probabilities": probabilities, "class_index": index,
            "class_name": tf.gather(tf.constant(class_names), index)}


def speech_functions(model, spec) -> dict[str, tuple[Any, list]]:
    """Signature name -> (function, input signature) of a speech model taking raw audio."""
    import tensorflow as tf

    from attention_cnn.features.featurize import resample_tensor, waveform_to_input

    rate = int(spec.settings["sample_rate_hz"])
    names = list(spec.class_names)

    def to_input(waveform, sample_rate_hz):
        waveform = tf.cond(tf.equal(tf.cast(sample_rate_hz, tf.int64), rate), lambda: waveform,
                           lambda: resample_tensor(waveform, sample_rate_hz, rate))
        return waveform_to_input(waveform, spec)

    def from_wav(wav):
        audio, sample_rate = tf.audio.decode_wav(wav)  # float32 (samples, channels) = int16 / 32768, as read_audio
        return to_input(tf.reduce_mean(audio, axis=1), tf.cast(sample_rate, tf.int64))

    def wav_bytes(wav):
        batch = tf.map_fn(from_wav, wav, fn_output_signature=tf.TensorSpec(spec.shape, tf.float32))
        return _outputs(model, batch, names)

    def waveform(waveform, sample_rate_hz):
        return _outputs(model, to_input(waveform, sample_rate_hz)[None], names)

    return {"serving_default": (wav_bytes, [tf.TensorSpec([None], tf.string, name="wav")]),
            "waveform": (waveform, [tf.TensorSpec([None], tf.float32, name="waveform"),
                                    tf.TensorSpec([], tf.int64, name="sample_rate_hz")])}


def mnist_functions(model, spec) -> dict[str, tuple[Any, list]]:
    """Signature name -> (function, input signature) of an MNIST model taking uint8 pixels or PNG bytes."""
    import tensorflow as tf

    from attention_cnn.features.tfrecords import to_model_input

    height, width = spec.shape[:2]
    names = list(spec.class_names)

    def pixels(pixels):
        return _outputs(model, to_model_input(pixels[..., None], spec), names)  # as parse_fn: uint8 * scale

    def png(png):
        def decode(data):
            image = tf.io.decode_png(data, channels=1)
            tf.debugging.assert_equal(tf.shape(image)[:2], [height, width],
                                      message=f"the model takes {height}x{width} images")
            return image[..., 0]

        return pixels(tf.map_fn(decode, png, fn_output_signature=tf.TensorSpec([height, width], tf.uint8)))

    return {"serving_default": (pixels, [tf.TensorSpec([None, height, width], tf.uint8, name="pixels")]),
            "png": (png, [tf.TensorSpec([None], tf.string, name="png")])}


def tflite_candidates(model, spec) -> list[tuple[str, Any, list]]:
    """(what it takes, function, input signature), tried in order: with the featurizer first, then the model only."""
    import tensorflow as tf

    names = list(spec.class_names)
    if spec.dataset == "speech":
        from attention_cnn.features.featurize import waveform_to_input

        s = spec.settings
        with_featurizer = (f"waveform: float32 ({s['clip_samples']},) at {s['sample_rate_hz']} Hz, already "
                           f"resampled, cut or zero-padded (the featurizer's STFT inside)",
                           lambda clip: {"probabilities": _outputs(model, waveform_to_input(clip, spec)[None],
                                                                   names)["probabilities"]},
                           [tf.TensorSpec([s["clip_samples"]], tf.float32, name="waveform")])
    else:
        from attention_cnn.features.tfrecords import to_model_input

        with_featurizer = (f"pixels: uint8 (1, {spec.shape[0]}, {spec.shape[1]})",
                           lambda pixels: {"probabilities": _outputs(model, to_model_input(pixels[..., None], spec),
                                                                     names)["probabilities"]},
                           [tf.TensorSpec([1, *spec.shape[:2]], tf.uint8, name="pixels")])
    model_only = (f"model input: float32 (1, {', '.join(map(str, spec.shape))}) as the feature folder's "
                  f"parsed records (no featurizer)",
                  lambda x: {"probabilities": tf.cast(model(x, training=False), tf.float32)},
                  [tf.TensorSpec([1, *spec.shape], tf.float32, name="features")])
    return [with_featurizer, model_only]


def convert_tflite(model, spec, workdir: Path) -> tuple[bytes | None, dict[str, Any]]:
    """The TFLite flatbuffer of the first candidate that converts with TFLite's built-in ops, and what it is.

    The candidates are written as a SavedModel by Keras' ``ExportArchive`` in ``workdir`` first: it turns the
    Keras variables into plain TensorFlow ones. Converting a concrete function of the model, or a SavedModel
    of it saved by :func:`save_functions`, aborts the process inside the converter ("missing attribute
    'value'", "LLVM ERROR: Failed to infer result type(s)").
    """
    import keras
    import tensorflow as tf

    if any(layer.compute_dtype == "bfloat16" for layer in model.layers):
        # the converter would fail on every op and print its own "error:" lines; say why once instead
        return None, {"file": None, "not_converted": [
            "bfloat16 model: TFLite's built-in ops have no bfloat16 (train.mixed_precision: float32 gives a TFLite file)"]}
    candidates = tflite_candidates(model, spec)
    archive = keras.export.ExportArchive()
    archive.track(model)
    for i, (_, fn, signature) in enumerate(candidates):
        archive.add_endpoint(f"candidate{i}", tf.function(fn, input_signature=signature))
    archive.write_out(str(workdir), verbose=False)
    failures = []
    for i, (takes, _, _) in enumerate(candidates):
        converter = tf.lite.TFLiteConverter.from_saved_model(str(workdir), signature_keys=[f"candidate{i}"])
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]  # no Flex: plain TFLite runtimes
        try:
            flatbuffer = converter.convert()
        except Exception as exc:  # noqa: BLE001 - the converter raises ConverterError and others; the reason is kept
            failures.append(f"{takes.split(':')[0]}: {_converter_reason(exc)}")
            continue
        return flatbuffer, {"file": TFLITE_FILE, "input": takes, "output": "probabilities (1, classes) float32",
                            "not_converted": failures}
    return None, {"file": None, "not_converted": failures}


def save_functions(model, functions: dict[str, tuple[Any, list]], path: Path) -> None:
    """A SavedModel whose signatures are ``functions`` (name -> (function of the Keras model, input signature)).

    A plain ``tf.Module`` holding the model: Keras' ``ExportArchive`` stores every weight twice (Keras 3.15:
    a second list of variable copies), 200 MB instead of 100 MB for the default speech cnn.
    """
    import tensorflow as tf

    module = tf.Module()
    module.model = model  # tracks its variables once
    signatures = {}
    for name, (fn, signature) in functions.items():
        function = tf.function(fn, input_signature=signature)
        setattr(module, name, function)
        signatures[name] = function.get_concrete_function()
    tf.saved_model.save(module, str(path), signatures=signatures)


def write_saved_model(model, spec, path: Path) -> dict[str, tuple[Any, list]]:
    """The SavedModel of an inference ``model`` (:func:`inference_model`) with the featurizer of ``spec``'s
    dataset; returns its functions (signature name -> (function, input signature))."""
    functions = speech_functions(model, spec) if spec.dataset == "speech" else mnist_functions(model, spec)
    save_functions(model, functions, path)
    return functions


def _converter_reason(exc: Exception) -> str:
    """The converter's first line naming the ops it lacks (its message is many lines of MLIR)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in lines:
        if "not supported" in line or "failed to legalize" in line or "ops are not" in line.lower():
            return line[:300]
    return (lines[0] if lines else type(exc).__name__)[:300]


def export(model_dir: Path, features_dir: Path, out: Path) -> dict[str, Any]:
    """Write the export folder ``out`` atomically; return its ``export.json``."""
    from attention_cnn.features.tfrecords import SPEC_FILE, read_spec

    spec = read_spec(features_dir)
    model = load_keras_model(model_dir / "model.keras")
    if list(model.input_shape[1:]) != list(spec.shape):
        raise StageError(f"{model_dir}: the model takes {list(model.input_shape[1:])}, the features in "
                         f"{features_dir} are {spec.shape}; rerun train (dvc repro)")
    if spec.dataset == "speech" and spec.storage_dtype not in ("float16", "float32"):
        raise StageError(f"{features_dir}/{SPEC_FILE}: speech storage_dtype {spec.storage_dtype!r} unexpected")
    model = inference_model(model)
    with atomic_dir(out) as tmp:
        functions = write_saved_model(model, spec, tmp / SAVED_MODEL_DIR)
        flatbuffer, tflite = convert_tflite(model, spec, tmp / ".tflite-source")
        if (tmp / ".tflite-source").exists():  # absent when the model was not sent to the converter
            shutil.rmtree(tmp / ".tflite-source")
        if flatbuffer is not None:
            (tmp / TFLITE_FILE).write_bytes(flatbuffer)
        for name in COPIED_FROM_MODEL:
            if not (model_dir / name).is_file():
                raise StageError(f"{model_dir / name}: not found; rerun the train stage (dvc repro)")
            shutil.copyfile(model_dir / name, tmp / name)
        shutil.copyfile(features_dir / SPEC_FILE, tmp / SPEC_FILE)
        info = {"dataset": spec.dataset, "class_names": spec.class_names, "input_shape": spec.shape,
                "saved_model": SAVED_MODEL_DIR,
                "signatures": {name: [t.name for t in sig] for name, (_, sig) in functions.items()},
                "outputs": ["probabilities", "class_index", "class_name"],
                "tflite": tflite,
                DIGESTS_KEY: file_digests(tmp, exclude=EXPORT_FILE)}  # checked before every load (trust.py)
        atomic_write_json(tmp / EXPORT_FILE, info)
    return info


def read_export(folder: Path) -> dict[str, Any]:
    """``export.json`` of an export folder (one-line error when it is not one)."""
    path = Path(folder) / EXPORT_FILE
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StageError(f"{folder}: not an exported model (no {EXPORT_FILE}); give a folder the export stage "
                         f"wrote, e.g. exports/speech/cnn/seed0") from None
    except (OSError, ValueError) as exc:
        raise StageError(f"{path}: unreadable ({exc}); rerun the export stage (dvc repro)") from None
    if not isinstance(info, dict) or info.get("dataset") not in ("speech", "mnist") or not info.get("class_names"):
        raise StageError(f"{path}: not an export description; rerun the export stage (dvc repro)")
    return info


def load_saved_model(folder: Path, info: dict[str, Any]):
    """The export's SavedModel, loaded only after :func:`attention_cnn.serving.trust.check_export` accepted its
    files (the digests in ``info``) and its ops."""
    import tensorflow as tf

    check_export(folder, info, SAVED_MODEL_DIR, exclude=EXPORT_FILE)
    try:
        return tf.saved_model.load(str(folder / SAVED_MODEL_DIR))
    except Exception as exc:  # noqa: BLE001 - a missing, partial or foreign SavedModel
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise StageError(f"{folder / SAVED_MODEL_DIR}: cannot load the SavedModel ({reason}); "
                         f"rerun the export stage (dvc repro)") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True, help="train's output (model.keras, config.json)")
    parser.add_argument("--features", type=Path, required=True, help="the feature folder the model was trained on")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    from attention_cnn.training.runtime import configure_tensorflow

    configure_tensorflow(seed=0)
    info = export(args.model_dir, args.features, args.out)
    tflite = info["tflite"]
    lite = f"TFLite ({tflite['input'].split(':')[0]})" if tflite["file"] else "no TFLite"
    print(f"exported {args.model_dir} -> {args.out} (SavedModel signatures {', '.join(info['signatures'])}; {lite})")
    return 0
