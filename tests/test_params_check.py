"""params.yaml validation: the real file passes; each kind of mistake is one line naming the key."""
from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from attention_cnn.config import schema as params_check
from attention_cnn.common import StageError
from attention_cnn.config.schema import validate

ROOT = Path(__file__).resolve().parents[1]
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
REAL = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))


def mutated(path: str, value=None, *, delete: bool = False) -> dict:
    """A deep copy of the real params with ``path`` (dotted) set to ``value`` or deleted."""
    params = copy.deepcopy(REAL)
    *parents, last = path.split(".")
    node = params
    for part in parents:
        node = node[part]
    if delete:
        del node[last]
    else:
        node[last] = value
    return params


def error_of(params: dict) -> str:
    with pytest.raises(StageError) as info:
        validate(params)
    message = str(info.value)
    assert "\n" not in message and "\r" not in message, message
    assert message.startswith("params.yaml: "), message
    return message


def test_the_real_params_yaml_validates():
    validate(copy.deepcopy(REAL))


def test_validation_does_not_import_keras_or_tensorflow():
    code = ("import sys, yaml; from attention_cnn.config.schema import validate; "
            "validate(yaml.safe_load(open('params.yaml'))); "
            "bad = [m for m in ('keras', 'tensorflow', 'numpy') if m in sys.modules]; "
            "sys.exit(f'imported {bad}' if bad else 0)")
    proc = subprocess.run([str(VENV_PYTHON), "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


# (case id, dotted key to change, new value or DELETE, the exact one-line message)
DELETE = object()
EXACT_ERRORS = [
    # unknown keys, with and without a hint
    ("unknown-key", "train.epoch", 15,
     "params.yaml: unknown key 'train.epoch' (did you mean 'train.epochs'?)"),
    ("unknown-top-key", "varients", ["cnn"],
     "params.yaml: unknown key 'varients' (did you mean 'variants'?)"),
    ("unknown-nested-key", "features.speech.frame_lenght", 320,
     "params.yaml: unknown key 'features.speech.frame_lenght' (did you mean 'features.speech.frame_length'?)"),
    ("unknown-key-no-hint", "evaluate.zzz", 1,
     "params.yaml: unknown key 'evaluate.zzz'; keys here: batch_size, latency_repeats, latency_warmup, "
     "attention_examples_per_class, attention_max_misclassified"),
    ("unknown-model-section", "models.cnn_atention", {},
     "params.yaml: unknown key 'models.cnn_atention' (did you mean 'models.cnn_attention'?)"),
    ("unknown-idx-file", "data.mnist.sha256", {"train-images.gz": "0" * 64},
     "params.yaml: unknown key 'data.mnist.sha256.train-images.gz' "
     "(did you mean 'data.mnist.sha256.train-images-idx3-ubyte.gz'?)"),
    # missing required keys
    ("missing-key", "train.epochs", DELETE, "params.yaml: missing key 'train.epochs'"),
    ("missing-section", "evaluate", DELETE, "params.yaml: missing key 'evaluate'"),
    ("missing-nested", "data.speech.embedded.seed", DELETE, "params.yaml: missing key 'data.speech.embedded.seed'"),
    # wrong types
    ("int-as-text", "train.epochs", "ten", "params.yaml: train.epochs must be an integer >= 1, got 'ten'"),
    ("int-as-float", "train.epochs", 2.5, "params.yaml: train.epochs must be an integer >= 1, got 2.5"),
    ("int-as-bool", "evaluate.batch_size", True, "params.yaml: evaluate.batch_size must be an integer >= 1, got True"),
    ("negative-attention-examples", "evaluate.attention_max_misclassified", -1,
     "params.yaml: evaluate.attention_max_misclassified must be >= 0, got -1"),
    ("quoted-int", "train.epochs", "15",
     "params.yaml: train.epochs must be an integer >= 1, got '15' (a quoted number is text; remove the quotes)"),
    ("float-as-text", "train.validation_fraction", "a tenth",
     "params.yaml: train.validation_fraction must be a number in [0, 1), got 'a tenth'"),
    ("yaml-exponent", "models.cnn.learning_rate", "1e-3",
     "params.yaml: models.cnn.learning_rate must be a number > 0, got '1e-3' (YAML reads 1e-3 as text; write 1.0e-3)"),
    ("bool-as-text", "train.validate_on_test", "yes",
     "params.yaml: train.validate_on_test must be true or false, got 'yes'"),
    ("str-as-number", "data.mnist.path", 3, "params.yaml: data.mnist.path must be a non-empty string, got 3"),
    ("section-as-scalar", "train.early_stopping", 3,
     "params.yaml: train.early_stopping must be a mapping, got 3"),
    ("list-as-scalar", "train.seeds", 0, "params.yaml: train.seeds must be a non-empty list of integers, got 0"),
    ("list-item", "train.seeds", [0, "one"], "params.yaml: train.seeds[1] must be an integer >= 0, got 'one'"),
    ("url-wrong-type", "data.mnist.url", 5,
     "params.yaml: data.mnist.url must be a URL, a non-empty list of URLs, or null, got 5"),
    ("url-list-item", "data.mnist.url", ["https://a.example/", ""],
     "params.yaml: data.mnist.url[1] must be a non-empty string, got ''"),
    ("digest", "data.speech.sha256", "abc",
     "params.yaml: data.speech.sha256 must be a SHA-256 digest (64 hex digits) or null, got 'abc'"),
    ("mnist-digest", "data.mnist.sha256", {"t10k-images-idx3-ubyte.gz": "xyz"},
     "params.yaml: data.mnist.sha256.t10k-images-idx3-ubyte.gz must be a SHA-256 digest (64 hex digits), got 'xyz'"),
    ("batch-size-wrong-type", "train.batch_size", "big",
     "params.yaml: train.batch_size must be an integer >= 1, or a mapping {data set: an integer >= 1}, got 'big'"),
    ("batch-size-entry", "train.batch_size", {"mnist": 128, "speech": 0},
     "params.yaml: train.batch_size.speech must be >= 1, got 0"),
    ("batch-size-unknown-dataset", "train.batch_size", {"mnist": 128, "speech": 16, "spech": 8},
     "params.yaml: unknown key 'train.batch_size.spech' (did you mean 'train.batch_size.speech'?)"),
    ("nan", "data.speech.embedded.noise_snr_db", float("nan"),
     "params.yaml: data.speech.embedded.noise_snr_db must be a number (or .inf), got nan"),
    # impossible values
    ("frame-step-zero", "features.speech.frame_step", 0, "params.yaml: features.speech.frame_step must be > 0, got 0"),
    ("frame-step-negative", "features.speech.frame_step", -32,
     "params.yaml: features.speech.frame_step must be > 0, got -32"),
    ("epochs-zero", "train.epochs", 0, "params.yaml: train.epochs must be >= 1, got 0"),
    ("fraction-one", "train.validation_fraction", 1.0,
     "params.yaml: train.validation_fraction must be in [0, 1), got 1.0"),
    ("fraction-negative", "train.validation_fraction", -0.1,
     "params.yaml: train.validation_fraction must be in [0, 1), got -0.1"),
    ("dropout", "models.cnn_attention.dropout", 1, "params.yaml: models.cnn_attention.dropout must be in [0, 1), got 1"),
    ("learning-rate", "models.cnn.learning_rate", 0, "params.yaml: models.cnn.learning_rate must be > 0, got 0"),
    ("test-per-class", "data.mnist.embedded_test_per_class", 500,
     "params.yaml: data.mnist.embedded_test_per_class must be in [1, 499], got 500"),
    # choices, with hints
    ("mnist-source", "data.mnist.source", "idxx",
     "params.yaml: data.mnist.source must be one of embedded, idx, got 'idxx' (did you mean 'idx'?)"),
    ("speech-source", "data.speech.source", "FSDD",
     "params.yaml: data.speech.source must be one of embedded, fsdd, folder, got 'FSDD'"),
    ("labels", "data.speech.labels", "prefixes",
     "params.yaml: data.speech.labels must be one of subfolder, prefix, cyclic, got 'prefixes' (did you mean 'prefix'?)"),
    ("storage-dtype", "features.speech.storage_dtype", "float64",
     "params.yaml: features.speech.storage_dtype must be one of float16, float32, got 'float64' "
     "(did you mean 'float16'?)"),
    ("compression", "features.speech.compression", "gzip",
     "params.yaml: features.speech.compression must be one of '', GZIP, ZLIB, got 'gzip'"),
    ("compression-null", "features.speech.compression", None,
     "params.yaml: features.speech.compression must be one of '', GZIP, ZLIB, got None"),
    ("strategy", "train.strategy", "mirror",
     "params.yaml: train.strategy must be one of auto, default, mirrored, multi_worker, got 'mirror' "
     "(did you mean 'mirrored'?)"),
    ("monitor", "train.early_stopping.monitor", "val_acc",
     "params.yaml: train.early_stopping.monitor must be one of accuracy, loss, val_accuracy, val_loss, "
     "got 'val_acc' (did you mean 'val_accuracy'?)"),
    ("on-bad-file", "data.on_bad_file", "ignore", "params.yaml: data.on_bad_file must be one of error, skip, got 'ignore'"),
    ("resume", "train.resume", "no", "params.yaml: train.resume must be true or false, got 'no'"),
    # datasets and variants
    ("variants-empty", "variants", [], "params.yaml: variants must not be empty"),
    ("datasets-empty", "datasets", [], "params.yaml: datasets must not be empty"),
    ("variants-scalar", "variants", "cnn", "params.yaml: variants must be a non-empty list of variant names, got 'cnn'"),
    ("unknown-variant", "variants", ["cnn", "cnn_atention"],
     "params.yaml: unknown variant 'cnn_atention' in variants (did you mean 'cnn_attention'?); "
     "available: cnn, cnn_attention, cnn_cbam, cnn_mhsa, cnn_se, resnet, resnet_cbam, resnet_se"),
    ("unknown-variant-no-hint", "variants", ["vgg"],
     "params.yaml: unknown variant 'vgg' in variants; "
     "available: cnn, cnn_attention, cnn_cbam, cnn_mhsa, cnn_se, resnet, resnet_cbam, resnet_se"),
    ("variant-not-a-name", "variants", ["cnn", 1], "params.yaml: variants[1] must be a non-empty string, got 1"),
    ("duplicate-variant", "variants", ["cnn", "cnn"], "params.yaml: variants lists 'cnn' twice"),
    ("unknown-dataset", "datasets", ["mnist", "mnsit"],
     "params.yaml: unknown data set 'mnsit' in datasets (did you mean 'mnist'?); available: mnist, speech"),
    ("duplicate-dataset", "datasets", ["speech", "speech"], "params.yaml: datasets lists 'speech' twice"),
    ("seeds-empty", "train.seeds", [], "params.yaml: train.seeds must not be empty"),
    ("seeds-duplicate", "train.seeds", [0, 1, 0], "params.yaml: train.seeds lists 0 twice"),
    # model settings come from build()'s signature
    ("model-setting", "models.cnn.filterz", 32,
     "params.yaml: models.cnn.filterz is not a setting of 'cnn' (did you mean 'filters'?)"),
    ("model-setting-no-hint", "models.cnn.zzz", 1,
     "params.yaml: models.cnn.zzz is not a setting of 'cnn' "
     "(settings: filters, kernel_size, pool_size, dropout, dense_units, label_smoothing, learning_rate, lr_schedule)"),
    ("model-setting-of-other-variant", "models.cnn.gate_kernel_size", 3,
     "params.yaml: models.cnn.gate_kernel_size is not a setting of 'cnn' (did you mean 'kernel_size'?)"),
    ("model-setting-type", "models.cnn_attention.gate_kernel_size", "3x3",
     "params.yaml: models.cnn_attention.gate_kernel_size must be an integer >= 1, got '3x3'"),
    ("model-section-type", "models.cnn", [32], "params.yaml: models.cnn must be a mapping of 'cnn' settings, got [32]"),
]


@pytest.mark.parametrize("key,value,expected", [c[1:] for c in EXACT_ERRORS], ids=[c[0] for c in EXACT_ERRORS])
def test_each_mistake_is_one_line_naming_the_key(key, value, expected):
    params = mutated(key, delete=True) if value is DELETE else mutated(key, value)
    message = error_of(params)
    assert message == expected
    assert key in message  # the exact key is named


CROSS_ERRORS = [
    ("clip-shorter-than-frame", {"features.speech.clip_samples": 100},
     "params.yaml: features.speech.clip_samples (100) must be >= features.speech.frame_length (320)"),
    ("fft-shorter-than-frame", {"features.speech.fft_length": 256},
     "params.yaml: features.speech.fft_length (256) must be >= features.speech.frame_length (320)"),
    ("variant-without-section", {"models": {"cnn": {"filters": 32}}},
     "params.yaml: missing key 'models.cnn_attention' (variant 'cnn_attention' is listed in variants)"),
    ("val-monitor-without-validation", {"train.early_stopping.monitor": "val_loss", "train.validation_fraction": 0},
     "params.yaml: train.early_stopping.monitor is 'val_loss' but there is no validation data: "
     "set train.validation_fraction > 0 or train.validate_on_test: true"),
    ("fraction-below-one-fold", {"train.validation_fraction": 0.001},
     "params.yaml: train.validation_fraction 0.001 rounds to 0 of 100 folds, so no validation data; "
     "use 0 or at least 0.01"),
    ("fraction-all-folds", {"train.validation_fraction": 0.999},
     "params.yaml: train.validation_fraction 0.999 rounds to all 100 folds, leaving no training data; "
     "use at most 0.99"),
    ("batch-size-missing-dataset", {"train.batch_size": {"mnist": 128}},
     "params.yaml: train.batch_size has no entry for data set 'speech' (listed in datasets); "
     "add train.batch_size.speech or give one number for all"),
    ("shuffle-buffer-missing-dataset", {"train.shuffle_buffer": {"speech": 100}},
     "params.yaml: train.shuffle_buffer has no entry for data set 'mnist' (listed in datasets); "
     "add train.shuffle_buffer.mnist or give one number for all"),
]


def apply(changes: dict) -> dict:
    params = copy.deepcopy(REAL)
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node = params
        for part in parents:
            node = node[part]
        node[last] = value
    return params


@pytest.mark.parametrize("changes,expected", [c[1:] for c in CROSS_ERRORS], ids=[c[0] for c in CROSS_ERRORS])
def test_rules_across_keys(changes, expected):
    assert error_of(apply(changes)) == expected


@pytest.mark.parametrize("changes", [
    {"train.batch_size": 64},                                           # one number for all data sets
    {"train.batch_size": {"mnist": 128, "speech": 16}},                 # one per data set
    {"train.batch_size": {"mnist": 128}, "datasets": ["mnist"]},        # only the listed data sets need one
    {"train.shuffle_buffer": {"mnist": 1000, "speech": 0}},
    {"train.early_stopping.monitor": "val_loss"},                       # validation_fraction 0.1
    {"train.early_stopping.monitor": "val_accuracy", "train.validation_fraction": 0, "train.validate_on_test": True},
    {"train.early_stopping.monitor": "val_loss", "train.validation_fraction": 0, "train.early_stopping.patience": None},
    {"train.early_stopping.monitor": "val_loss", "train.validation_fraction": 0, "train.early_stopping.enabled": False},
    {"train.validation_fraction": 0.999, "train.validate_on_test": True},  # the fraction is unused then
    {"train.validation_fraction": 0},
    {"data.on_bad_file": "skip", "train.resume": True},                 # optional keys, given
    {"features.mnist.compression": "GZIP", "features.speech.compression": "ZLIB"},
    {"features.speech.storage_dtype": "float32"},
    {"models.cnn.dropout": 0, "models.cnn.learning_rate": 1, "models.cnn.pool_size": 3},  # ints where floats go
    {"models.cnn": None, "models.cnn_attention": {}},                   # all builder defaults
    {"data.mnist.url": ["https://a.example/mnist/", "https://b.example/mnist/"]},
    {"data.mnist.url": None},
    {"data.mnist.sha256": {"train-images-idx3-ubyte.gz": "A" * 64}},
    {"data.mnist.sha256": None},
    {"data.speech.sha256": "sha256:" + "0" * 64},
    {"data.speech.embedded.noise_snr_db": float("inf")},
    {"variants": ["cnn_attention"]},                                    # models.cnn may stay configured
    {"datasets": ["speech"]},
])
def test_valid_variations_pass(changes):
    validate(apply(changes))


def test_optional_keys_may_be_absent_and_have_defaults():
    params = copy.deepcopy(REAL)
    params["data"].pop("on_bad_file", None)
    params["train"].pop("resume", None)
    validate(params)
    assert params_check.setting(params, "data.on_bad_file") == "error"
    assert params_check.setting(params, "train.resume") is False
    assert params_check.setting(params, "train.epochs") == REAL["train"]["epochs"]


def test_every_key_in_params_yaml_is_in_the_schema():
    def leaves(node, prefix=""):
        for key, value in node.items():
            dotted = f"{prefix}.{key}" if prefix else key
            if isinstance(value, dict) and value and dotted != "train.batch_size":
                yield from leaves(value, dotted)
            else:
                yield dotted

    static = dict(params_check.iter_specs())
    for key in leaves(REAL):
        if key.startswith("models."):
            variant, setting = key.split(".")[1:]
            assert setting in params_check.ModelSettings(variant).fields, key
        else:
            assert key in static, key


def test_model_settings_match_the_builders_signatures():
    import inspect

    import attention_cnn.models as registry

    for variant in registry.available():
        builder = registry.get_builder(variant)  # imports keras: the slow, authoritative way
        expected = [n for n in inspect.signature(builder).parameters][2:]
        settings, any_keyword = params_check.builder_parameters(variant)
        assert list(settings) == expected
        assert not any_keyword
        assert all(settings[n] == p.default for n, p in list(inspect.signature(builder).parameters.items())[2:])


def test_constants_mirror_the_stages():
    """The few facts copied here to keep validation free of numpy/TensorFlow imports."""
    from attention_cnn.data.mnist import IDX_FILES
    from attention_cnn.data.speech import LABEL_RULES
    from attention_cnn.features.tfrecords import NUM_FOLDS

    assert set(params_check.MNIST_IDX_FILES) == set(IDX_FILES)
    assert params_check.NUM_FOLDS == NUM_FOLDS
    labels = params_check.spec_at("data.speech.labels")
    assert labels.choices == LABEL_RULES


def test_a_new_variant_file_is_picked_up_from_its_signature(tmp_path, monkeypatch):
    import attention_cnn.models as registry

    src = Path(registry.__file__).parent
    pkg = tmp_path / "models"
    pkg.mkdir()
    for f in src.glob("*.py"):
        (pkg / f.name).write_text(f.read_text())
    (pkg / "tiny.py").write_text("import keras\n\ndef build(input_shape, num_classes, width=8, *, act='relu', "
                                 "scale=None, depth):\n    raise NotImplementedError\n")
    monkeypatch.setattr(registry, "__path__", [str(pkg)])
    monkeypatch.setattr(registry, "__file__", str(pkg / "__init__.py"))
    params_check.builder_parameters.cache_clear()
    try:
        params = copy.deepcopy(REAL)
        params["variants"] = ["tiny"]
        params["models"]["tiny"] = {"width": 4, "act": "gelu", "scale": None, "depth": 2, "learning_rate": 0.01}
        validate(params)
        params["models"]["tiny"]["width"] = 0.5
        assert error_of(params) == "params.yaml: models.tiny.width must be an integer, got 0.5"
        params["models"]["tiny"]["width"] = 4
        del params["models"]["tiny"]["depth"]
        assert error_of(params) == ("params.yaml: missing key 'models.tiny.depth' "
                                    "(build() of 'tiny' has no default for it)")
    finally:
        params_check.builder_parameters.cache_clear()


def cli(tmp_path: Path, params: dict | None) -> subprocess.CompletedProcess:
    args = [str(VENV_PYTHON), "-m", "attention_cnn.config.schema"]
    if params is not None:
        path = tmp_path / "params.yaml"
        path.write_text(yaml.safe_dump(params, sort_keys=False))
        args += ["--params", str(path)]
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True)


def test_cli_ok_on_the_real_file(tmp_path):
    proc = cli(tmp_path, None)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "params.yaml: OK\n"


@pytest.mark.parametrize("params,expected", [
    (mutated("train.epoch", 15), "error: params.yaml: unknown key 'train.epoch' (did you mean 'train.epochs'?)"),
    (mutated("variants", ["cnn", "cnn_atention"]),
     "error: params.yaml: unknown variant 'cnn_atention' in variants (did you mean 'cnn_attention'?); "
     "available: cnn, cnn_attention, cnn_cbam, cnn_mhsa, cnn_se, resnet, resnet_cbam, resnet_se"),
])
def test_cli_error_is_one_stderr_line_and_exit_1(tmp_path, params, expected):
    proc = cli(tmp_path, params)
    assert proc.returncode == 1
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert lines == [expected], proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_missing_file_is_one_line(tmp_path):
    proc = subprocess.run([str(VENV_PYTHON), "-m", "attention_cnn.config.schema", "--params", str(tmp_path / "nope.yaml")],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 1
    assert len(proc.stderr.splitlines()) == 1 and proc.stderr.startswith("error:")
