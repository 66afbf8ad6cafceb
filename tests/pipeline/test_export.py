"""export + predict: the exported model (raw audio or pixels in) predicts as the pipeline's evaluate does, and the
predict command reads real files of every encoding, reporting bad ones in one line."""
from __future__ import annotations

import copy
import json
import sys

import numpy as np
import pytest
from scipy.io import wavfile

from conftest import TINY_PARAMS, deep_update, make_project, run

# Exported and pipeline probabilities may differ by float rounding only: the model runs on batches of 1 instead
# of evaluate's batches of 64. Measured differences are about 1e-6; a featurizer that drifted (another window,
# no float16 rounding, a different rate) changes the inputs and moves the probabilities far more.
PROB_TOLERANCE = 1e-5
# The study's seed-faithful cnn; a strong resnet with the log-mel frontend and SpecAugment (augment: auto: Keras
# random layers, active in training only, which the export leaves out), one block per stage to keep its graph
# (and the time to trace it) small.
VARIANTS = ("cnn", "resnet")


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A tiny speech project (cnn, and resnet with logmel and augmentation) after `dvc repro evaluate`: export and
    evaluate ran as stages (the report is not needed here); MNIST's features too, for the MNIST model trained in a
    test."""
    params = copy.deepcopy(TINY_PARAMS)
    deep_update(params, {"datasets": ["speech"], "variants": list(VARIANTS),
                         "models": {"resnet": {"frontend": "logmel", "augment": "auto", "blocks_per_stage": 1}}})
    root = make_project(tmp_path_factory.mktemp("export") / "project", params)
    run(["dvc", "repro", "evaluate", "featurize@mnist"], root)
    return root


def _test_files(root):
    from attention_cnn.common import read_csv_dicts

    rows = sorted((r for r in read_csv_dicts(root / "data/raw/speech/manifest.csv") if r["split"] == "test"),
                  key=lambda r: r["file"])  # featurize's order: test example i is rows[i]
    return [root / "data/raw/speech" / r["file"] for r in rows]


@pytest.mark.parametrize("variant", VARIANTS)
def test_exported_model_predicts_as_evaluate_from_the_raw_recordings(project, variant):
    import keras
    import tensorflow as tf

    from attention_cnn.common import read_csv_dicts
    from attention_cnn.data.audio import read_audio
    from attention_cnn.features.featurize import resample_tensor, waveform_to_input
    from attention_cnn.features.tfrecords import FEATURE_KEY, batched, load_split, read_spec
    from attention_cnn.serving.predict import Predictor

    export_dir = project / f"exports/speech/{variant}/seed0"
    info = json.loads((export_dir / "export.json").read_text())
    spec = read_spec(project / "data/features/speech")
    assert info["class_names"] == spec.class_names and (export_dir / "config.json").is_file()
    assert json.loads((export_dir / "spec.json").read_text())["settings"] == spec.settings
    files = _test_files(project)
    predictor = Predictor(export_dir)
    exported = np.stack([predictor.probabilities(f) for f in files])

    # 1. the featurizer in the export computes the stored features bit for bit
    stored = [ex[FEATURE_KEY].numpy() for ex in load_split(project / "data/features/speech", spec, "test")]
    for path, feature in zip(files, stored):
        samples, rate = read_audio(path)
        resampled = resample_tensor(samples, rate, spec.settings["sample_rate_hz"])
        assert waveform_to_input(resampled, spec).numpy().tobytes() == feature.tobytes()

    # 2. evaluate's predictions.csv: the same classes, the same confidence within the tolerance
    rows = read_csv_dicts(project / f"reports/eval/speech/{variant}/seed0/predictions.csv")
    assert [int(r["index"]) for r in rows] == list(range(len(files)))
    assert [spec.class_names[i] for i in exported.argmax(axis=1)] == [r["predicted"] for r in rows]
    confidence = np.array([float(r["confidence"]) for r in rows])
    assert np.abs(exported.max(axis=1) - confidence).max() <= PROB_TOLERANCE + 5e-7  # csv keeps 6 decimals

    # 3. every probability, against the trained model on the stored features (evaluate's computation)
    model = keras.models.load_model(project / f"models/speech/{variant}/seed0/model.keras", compile=False)
    augmented = any(isinstance(layer, keras.layers.RandomZoom) for layer in model.layers)
    assert augmented == (variant == "resnet")   # the trained resnet holds SpecAugment's random layers
    pipeline = model.predict(batched(project / "data/features/speech", spec, "test", 64), verbose=0)
    assert np.abs(exported - pipeline).max() <= PROB_TOLERANCE

    # 4. the serving signature on the files' bytes (16-bit PCM WAV) agrees
    out = predictor.model.serving_default(tf.constant([f.read_bytes() for f in files]))
    assert np.abs(out["probabilities"].numpy() - exported).max() <= PROB_TOLERANCE
    assert [n.decode() for n in out["class_name"].numpy()] == [r["predicted"] for r in rows]

    # 5. TFLite (the featurizer's STFT included where it converted). train.mixed_precision auto trains in
    # bfloat16 on a CPU with AVX512-BF16, and TFLite's built-in ops have no bfloat16: no file, each reason kept
    if any(layer.compute_dtype == "bfloat16" for layer in model.layers):
        assert info["tflite"]["file"] is None and info["tflite"]["not_converted"], info["tflite"]
        return
    assert info["tflite"]["file"] == "model.tflite", info["tflite"]
    runner = tf.lite.Interpreter(model_path=str(export_dir / "model.tflite")).get_signature_runner()
    s = spec.settings
    for path, expected in zip(files, exported):
        samples, rate = read_audio(path)
        clip = np.asarray(resample_tensor(samples, rate, s["sample_rate_hz"]))[:s["clip_samples"]]
        clip = np.pad(clip, (0, s["clip_samples"] - len(clip))).astype(np.float32)
        lite = runner(waveform=clip)["probabilities"][0]
        assert np.abs(lite - expected).max() <= PROB_TOLERANCE


def test_evaluate_reports_the_end_to_end_latency_beside_the_model_only_one(project):
    for variant in VARIANTS:
        metrics = json.loads((project / f"reports/eval/speech/{variant}/seed0/metrics.json").read_text())
        assert 0 < metrics["latency_ms_p50"] <= metrics["latency_ms_p95"]
        assert 0 < metrics["e2e_latency_ms_p50"] <= metrics["e2e_latency_ms_p95"]


def _write_inputs(folder, source):
    """The same recording as 16-bit (as fetched), 32-bit float, stereo at 44.1 kHz, 8-bit; and bad files."""
    from attention_cnn.data.audio import read_audio

    folder.mkdir()
    rate, data = wavfile.read(source)
    assert data.dtype == np.int16
    wavfile.write(folder / "a_int16.wav", rate, data)
    wavfile.write(folder / "b_float32.wav", rate, (data.astype(np.float32) / 32768.0))  # exactly the same samples
    wavfile.write(folder / "c_stereo_same.wav", rate, np.stack([data, data], axis=1))    # mixes back to the same
    samples, _ = read_audio(source)
    from scipy.signal import resample_poly

    up = resample_poly(samples, 44100, rate).astype(np.float32)
    wavfile.write(folder / "d_44k_stereo.wav", 44100, (np.stack([up, 0.5 * up], axis=1) * 32767).astype(np.int16))
    wavfile.write(folder / "e_uint8.wav", rate, np.clip(samples * 128 + 128, 0, 255).astype(np.uint8))
    (folder / "f_text.wav").write_text("not audio at all\n")
    (folder / "g_cut.wav").write_bytes(source.read_bytes()[:200])
    (folder / "h_voice.m4a").write_bytes(b"\0\0\0\x20ftypM4A ")
    (folder / "notes.txt").write_text("ignored: not audio")


def test_predict_command_reads_every_encoding_and_reports_bad_files(project, tmp_path):
    from attention_cnn.common import read_csv_dicts
    from attention_cnn.data.audio import BadFileError, read_audio

    source = _test_files(project)[0]
    folder = tmp_path / "mine"
    _write_inputs(folder, source)
    export_dir = project / "exports/speech/cnn/seed0"
    proc = run([sys.executable, "-m", "stages.predict", "--model", str(export_dir), str(folder),
                "--csv", str(tmp_path / "out.csv")], project, check=False)
    assert proc.returncode == 1, proc.stderr
    lines = [line.split("\t") for line in proc.stdout.splitlines()]
    assert [line[0].rsplit("/", 1)[1] for line in lines] == ["a_int16.wav", "b_float32.wav", "c_stereo_same.wav",
                                                             "d_44k_stereo.wav", "e_uint8.wav"]
    same = {tuple(line[1:]) for line in lines[:3]}
    assert len(same) == 1, lines   # the same samples in three encodings: the same label and probability
    for name in ("f_text.wav", "g_cut.wav", "h_voice.m4a"):
        with pytest.raises(BadFileError) as reason:
            read_audio(folder / name)   # the fetch stage's reader: the same one-line reason
        assert f"error: {reason.value}" in proc.stderr.splitlines()
    assert "Traceback" not in proc.stderr and "notes.txt" not in proc.stdout + proc.stderr
    rows = read_csv_dicts(tmp_path / "out.csv")
    assert len(rows) == 8 and sum(1 for r in rows if r["error"]) == 3
    assert all(0.0 < float(r["probability"]) <= 1.0 for r in rows if not r["error"])

    good = run([sys.executable, "-m", "stages.predict", "--model", str(export_dir), str(folder / "a_int16.wav"),
                str(folder / "d_44k_stereo.wav")], project)
    assert len(good.stdout.splitlines()) == 2
    bad = run([sys.executable, "-m", "stages.predict", "--model", str(tmp_path), str(folder)], project, check=False)
    assert bad.returncode == 1 and bad.stderr.strip().startswith("error:") and "Traceback" not in bad.stderr


def test_mnist_export_takes_pixels_and_png_files(project, tmp_path):
    """An MNIST model (trained here by the stage's command) exported: uint8 pixels and PNG files in. The resnet of
    the fixture's params (augment: auto): on images, digit shifts and rotations, left out of the export."""
    import keras
    import tensorflow as tf
    from PIL import Image

    from attention_cnn.data.idx import read_idx_gz
    from attention_cnn.features.tfrecords import batched, read_spec
    from attention_cnn.serving.export import load_saved_model, read_export

    features = project / "data/features/mnist"
    run([sys.executable, "-m", "stages.train", "--params", "params.yaml", "--dataset", "mnist", "--variant", "resnet",
         "--seed", "0", "--features", str(features), "--out", str(tmp_path / "model"),
         "--history", str(tmp_path / "h.csv"), "--summary", str(tmp_path / "s.json"),
         "--live-dir", str(tmp_path / "live")], project)
    run([sys.executable, "-m", "stages.export", "--model-dir", str(tmp_path / "model"), "--features", str(features),
         "--out", str(tmp_path / "export")], project)
    images = read_idx_gz(project / "data/raw/mnist/t10k-images-idx3-ubyte.gz")[:64]
    model = keras.models.load_model(tmp_path / "model/model.keras", compile=False)
    assert any(isinstance(layer, keras.layers.RandomRotation) for layer in model.layers)
    spec = read_spec(features)
    pipeline = model.predict(batched(features, spec, "test", 64).take(1), verbose=0)
    loaded = load_saved_model(tmp_path / "export", read_export(tmp_path / "export"))  # digests and ops checked
    exported = loaded.serving_default(tf.constant(images))["probabilities"].numpy()
    assert np.abs(exported - pipeline).max() <= PROB_TOLERANCE

    pngs = tmp_path / "pngs"
    pngs.mkdir()
    for i in range(3):
        Image.fromarray(images[i]).save(pngs / f"{i}.png")
    Image.fromarray(images[0]).resize((32, 32)).save(pngs / "wrong_size.png")
    (pngs / "fake.png").write_text("hello")
    proc = run([sys.executable, "-m", "stages.predict", "--model", str(tmp_path / "export"), str(pngs)], project,
               check=False)
    assert proc.returncode == 1
    got = [line.split("\t") for line in proc.stdout.splitlines()]
    assert [g[0].rsplit("/", 1)[1] for g in got] == ["0.png", "1.png", "2.png"]
    assert [g[1] for g in got] == [spec.class_names[i] for i in pipeline[:3].argmax(axis=1)]
    assert [float(g[2]) for g in got] == pytest.approx(pipeline[:3].max(axis=1), abs=1e-4)  # printed 4 decimals
    assert f"error: {pngs / 'fake.png'}: a text file, not a PNG image" in proc.stderr
    assert "wrong_size.png: image is 32x32 pixels; the model takes 28x28" in proc.stderr
    png = loaded.png(tf.constant([(pngs / f"{i}.png").read_bytes() for i in range(3)]))["probabilities"].numpy()
    assert np.abs(png - exported[:3]).max() <= PROB_TOLERANCE


def test_report_tables_show_the_end_to_end_latency_beside_the_model_only_one(project):
    from attention_cnn.report import load, tables

    records = load.load_all_metrics(project / "reports/eval", ["speech"], list(VARIANTS), [0])
    header, rows = tables.comparison_table(load.results_frame(records), "speech", list(VARIANTS))
    model_only, end_to_end = header.index("p50 latency (ms)"), header.index("p50 file to label (ms)")
    for row, record in zip(rows, records):
        assert float(row[model_only]) == pytest.approx(record["latency_ms_p50"], abs=0.006)
        assert float(row[end_to_end]) == pytest.approx(record["e2e_latency_ms_p50"], abs=0.006)


# --------------------------------------------------------------------------- trust: files and ops checked first
FORBIDDEN_OPS = {"ReadFile", "WriteFile", "MatchingFiles", "PyFunc", "EagerPyFunc", "PyFuncStateless", "DeleteFile",
                 "SaveV2", "RestoreV2", "MergeV2Checkpoints", "Save", "Restore", "ImmutableConst"}


def test_allowed_ops_are_exactly_those_of_every_registered_variant(project, tmp_path):
    """Every variant, with the settings that add layers (logmel, augmentation with clip-sized time masks, dropout,
    utterance normalization, channel EQ), exported as the export
    stage writes its SavedModel with the speech featurizer, and two with MNIST's (the variants' ops on images are
    a subset: no frontend, no masks): only allowed ops, and every allowed op used."""
    from attention_cnn.features.tfrecords import read_spec
    from attention_cnn.models import available, build_model, settings_type
    from attention_cnn.models.blocks import portable
    from attention_cnn.serving.export import inference_model, write_saved_model
    from attention_cnn.serving.trust import ALLOWED_OPS, SAVER_OPS, graph_ops, read_saved_model

    option = {"frontend": "logmel", "augment": "auto", "time_pool": 2, "dropout": 0.1, "utterance_norm": True,
              "channel_eq_db": 4.0, "time_mask_span": "clip", "pool_span": "clip"}
    seen, saver = set(), set()
    for dataset in ("speech", "mnist"):
        spec = read_spec(project / f"data/features/{dataset}")
        for name in available() if dataset == "speech" else ("cnn", "resnet"):
            fields = settings_type(name).model_fields
            model = portable(build_model(name, tuple(spec.shape), spec.num_classes,
                                         {k: v for k, v in option.items() if k in fields},
                                         sample_rate_hz=spec.settings.get("sample_rate_hz", 8000)))
            path = tmp_path / f"{dataset}-{name}"
            write_saved_model(inference_model(model), spec, path)
            for _, op, saver_only in graph_ops(read_saved_model(path / "saved_model.pb")):
                (saver if saver_only else seen).add(op)
    assert seen <= ALLOWED_OPS, seen - ALLOWED_OPS
    assert ALLOWED_OPS <= seen, ALLOWED_OPS - seen   # nothing allowed that no export uses
    assert saver - seen <= SAVER_OPS, saver - seen - SAVER_OPS
    assert not FORBIDDEN_OPS & ALLOWED_OPS


def _hostile_export(project, folder, target):
    """An export folder, internally consistent (export.json lists the digests of its files), whose SavedModel's
    ``waveform`` signature writes ``target`` with tf.io.write_file before answering."""
    import shutil

    import tensorflow as tf

    from attention_cnn.serving.trust import file_digests

    class Hostile(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32), tf.TensorSpec([], tf.int64)])
        def waveform(self, waveform, sample_rate_hz):
            with tf.control_dependencies([tf.io.write_file(str(target), "written by a model file")]):
                probabilities = tf.fill([1, 10], 0.1)
            return {"probabilities": probabilities, "class_index": tf.argmax(probabilities, axis=-1)}

    module = Hostile()
    folder.mkdir(parents=True)
    tf.saved_model.save(module, str(folder / "saved_model"), signatures={"waveform": module.waveform})
    info = json.loads((project / "exports/speech/cnn/seed0/export.json").read_text())
    for name in ("config.json", "class_names.json", "spec.json"):
        shutil.copyfile(project / "exports/speech/cnn/seed0" / name, folder / name)
    info["files"] = file_digests(folder, exclude="export.json")
    info.pop("tflite")
    (folder / "export.json").write_text(json.dumps(info))
    return folder


def test_export_whose_graph_writes_a_file_is_refused_before_loading(project, tmp_path):
    import tensorflow as tf

    from attention_cnn.common import StageError
    from attention_cnn.serving.predict import Predictor

    target = tmp_path / "written.txt"
    folder = _hostile_export(project, tmp_path / "exports/speech/cnn/seed0", target)
    # the crafted model does what it says when TensorFlow loads and calls it ...
    tf.saved_model.load(str(folder / "saved_model")).waveform(tf.zeros([8]), tf.constant(8000, tf.int64))
    assert target.read_text() == "written by a model file"
    target.unlink()
    # ... and neither the predict command nor the Predictor (evaluate's end-to-end latency) loads it
    wav = _test_files(project)[0]
    proc = run([sys.executable, "-m", "stages.predict", "--model", str(folder), str(wav)], project, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    line, = proc.stderr.strip().splitlines()
    assert line.startswith(f"error: {folder}: refused: ") and "'WriteFile'" in line, line
    assert "dvc repro -f export@speech-cnn-0" in line
    with pytest.raises(StageError, match="runs op 'WriteFile'"):
        Predictor(folder)
    assert not target.exists()


def test_damaged_or_unlisted_export_files_are_named_in_one_line(project, tmp_path):
    import shutil

    from attention_cnn.common import StageError
    from attention_cnn.serving.predict import Predictor

    folder = tmp_path / "exports/speech/cnn/seed0"
    shutil.copytree(project / "exports/speech/cnn/seed0", folder)
    Predictor(folder)   # the copy as exported: accepted
    data = folder / "saved_model/variables/variables.data-00000-of-00001"
    damaged = bytearray(data.read_bytes())
    damaged[len(damaged) // 2: len(damaged) // 2 + 16] = bytes(16)
    original = data.read_bytes()
    data.write_bytes(bytes(damaged))
    proc = run([sys.executable, "-m", "stages.predict", "--model", str(folder), str(_test_files(project)[0])],
               project, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    line, = proc.stderr.strip().splitlines()
    assert line == (f"error: {data}: damaged (its SHA-256 differs from the one export.json recorded at export); "
                    f"restore it with `dvc checkout --relink {folder}` or `dvc pull {folder}`, or rebuild it "
                    f"(`dvc repro -f export@speech-cnn-0`)"), line
    data.write_bytes(original)
    (folder / "saved_model/assets").mkdir(exist_ok=True)
    (folder / "saved_model/assets/extra.txt").write_text("not exported")
    with pytest.raises(StageError, match=r"assets/extra.txt: refused: a file export.json does not list"):
        Predictor(folder)
    (folder / "saved_model/assets/extra.txt").unlink()
    info = json.loads((folder / "export.json").read_text())
    del info["files"]
    (folder / "export.json").write_text(json.dumps(info))
    with pytest.raises(StageError, match="records no file digests"):
        Predictor(folder)


def test_checkpoint_ops_and_ops_named_by_a_call_are_refused_in_functions_a_signature_reaches(project, tmp_path):
    """saved_model.pb edited as a hostile writer would: a call whose callee is an op instead of a library
    function, or a checkpoint op (allowed in the saver's own functions) in a function the signatures reach."""
    import shutil

    from attention_cnn.common import StageError
    from attention_cnn.serving.trust import check_ops, read_saved_model

    source = project / "exports/speech/cnn/seed0"
    check_ops(source, "saved_model")   # as exported: accepted, SaveV2 and RestoreV2 in the saver's functions
    for edit, op in (("callee", "WriteFile"), ("node", "SaveV2"), ("node", "EagerPyFunc")):
        folder = tmp_path / f"{edit}-{op}"
        shutil.copytree(source / "saved_model", folder / "saved_model")
        message = read_saved_model(folder / "saved_model/saved_model.pb")
        meta = message.meta_graphs[0]
        held = set(meta.object_graph_def.concrete_functions)  # the functions restored objects hold
        function = next(f for f in meta.graph_def.library.function if f.signature.name in held
                        and any(n.op == "StatefulPartitionedCall" for n in f.node_def))
        name = function.signature.name
        if edit == "callee":
            node = next(n for n in function.node_def if n.op == "StatefulPartitionedCall")
            node.attr["f"].func.name = op
        else:
            function.node_def.add(name="hostile", op=op)
        (folder / "saved_model/saved_model.pb").write_bytes(message.SerializeToString())
        with pytest.raises(StageError, match=f"function {name} of the SavedModel runs op '{op}'"):
            check_ops(folder, "saved_model")
