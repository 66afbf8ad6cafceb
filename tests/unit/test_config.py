"""The typed config (attention_cnn.config): params.yaml read as DVC reads it, validated once, each mistake one line."""
from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dvc.utils.serialize import parse_yaml as dvc_parse_yaml

from attention_cnn import models as registry
from attention_cnn.common import StageError
from attention_cnn.config import Params, load_config, parse_config, read_yaml
from attention_cnn.config import params as config_params
from attention_cnn.models.settings import VariantSettings

ROOT = Path(__file__).resolve().parents[2]
REAL = read_yaml(ROOT / "params.yaml")
VARIANTS = "cnn, cnn_attention, cnn_cbam, cnn_mhsa, cnn_se, resnet, resnet_cbam, resnet_se"


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


def _set(params: dict, dotted: str, value) -> dict:
    *parents, last = dotted.split(".")
    node = params
    for part in parents:
        node = node[part]
    node[last] = value
    return params


def error_of(params) -> str:
    with pytest.raises(StageError) as info:
        parse_config(params)
    message = str(info.value)
    assert "\n" not in message and "\r" not in message, message
    assert message.startswith("params.yaml: "), message
    return message


def load_error(tmp_path: Path, text: str | bytes) -> str:
    path = tmp_path / "params.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(StageError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}: "), message
    return message[len(f"{path}: "):]


def test_the_real_params_yaml_validates_with_typed_sections():
    config = parse_config(copy.deepcopy(REAL))
    assert isinstance(config, Params)
    assert config.train.epochs == REAL["train"]["epochs"]
    assert config.train.batch_size_for("speech") == REAL["train"]["batch_size"]["speech"]
    assert isinstance(config.model("cnn"), registry.settings_type("cnn"))
    assert config.model("cnn").learning_rate == REAL["models"]["cnn"]["learning_rate"]


def test_loading_does_not_import_keras_tensorflow_or_numpy():
    code = ("import sys; from attention_cnn.config import load_config; load_config('params.yaml'); "
            "bad = [m for m in ('keras', 'tensorflow', 'numpy') if m in sys.modules]; "
            "sys.exit(f'imported {bad}' if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


# (case id, dotted key to change, new value or DELETE, the exact one-line message)
DELETE = object()
EXACT_ERRORS = [
    # unknown keys, with and without a hint
    ("unknown-key", "train.epoch", 15, "unknown key 'train.epoch' (did you mean 'train.epochs'?)"),
    ("unknown-top-key", "varients", ["cnn"], "unknown key 'varients' (did you mean 'variants'?)"),
    ("unknown-nested-key", "features.speech.frame_lenght", 320,
     "unknown key 'features.speech.frame_lenght' (did you mean 'features.speech.frame_length'?)"),
    ("unknown-key-no-hint", "evaluate.zzz", 1,
     "unknown key 'evaluate.zzz'; keys here: batch_size, latency_repeats, latency_warmup, "
     "attention_examples_per_class, attention_max_misclassified"),
    ("unknown-model-section", "models.cnn_atention", {},
     "unknown key 'models.cnn_atention' (did you mean 'models.cnn_attention'?)"),
    ("unknown-idx-file", "data.mnist.sha256", {"train-images.gz": "0" * 64},
     "unknown key 'data.mnist.sha256.train-images.gz' (did you mean 'data.mnist.sha256.train-images-idx3-ubyte.gz'?)"),
    ("retired-key", "models.resnet.sample_rate_hz", 8000,
     "unknown key 'models.resnet.sample_rate_hz'; the logmel frontend takes the rate from the features' spec.json "
     "(features.speech.sample_rate_hz); delete this key"),
    # missing required keys
    ("missing-key", "train.epochs", DELETE, "missing key 'train.epochs'"),
    ("missing-section", "evaluate", DELETE, "missing key 'evaluate'"),
    ("missing-nested", "data.speech.embedded.seed", DELETE, "missing key 'data.speech.embedded.seed'"),
    # wrong types (strict: no text, float or bool taken for an integer)
    ("int-as-text", "train.epochs", "ten", "train.epochs must be an integer, got 'ten'"),
    ("int-as-float", "train.epochs", 2.5, "train.epochs must be an integer, got 2.5"),
    ("int-as-bool", "evaluate.batch_size", True, "evaluate.batch_size must be an integer, got True"),
    ("quoted-int", "train.epochs", "15",
     "train.epochs must be an integer, got '15' (a quoted number is text; remove the quotes)"),
    ("float-as-text", "train.validation_fraction", "a tenth", "train.validation_fraction must be a number, got 'a tenth'"),
    ("bool-as-text", "train.validate_on_test", "yes", "train.validate_on_test must be true or false, got 'yes'"),
    ("str-as-number", "data.mnist.path", 3, "data.mnist.path must be a string, got 3"),
    ("section-as-scalar", "train.early_stopping", 3, "train.early_stopping must be a mapping, got 3"),
    ("list-as-scalar", "train.seeds", 0, "train.seeds must be a list, got 0"),
    ("list-item", "train.seeds", [0, "one"], "train.seeds[1] must be an integer, got 'one'"),
    ("url-wrong-type", "data.mnist.url", 5, "data.mnist.url must be a string, got 5"),
    ("url-list-item", "data.mnist.url", ["https://a.example/", ""],
     "data.mnist.url[1] must be a non-empty string, got ''"),
    ("digest", "data.speech.sha256", "abc", "data.speech.sha256 must be a SHA-256 digest (64 hex digits), got 'abc'"),
    ("mnist-digest", "data.mnist.sha256", {"t10k-images-idx3-ubyte.gz": "xyz"},
     "data.mnist.sha256.t10k-images-idx3-ubyte.gz must be a SHA-256 digest (64 hex digits), got 'xyz'"),
    ("batch-size-wrong-type", "train.batch_size", "big", "train.batch_size must be an integer, got 'big'"),
    ("batch-size-entry", "train.batch_size", {"mnist": 128, "speech": 0}, "train.batch_size.speech must be >= 1, got 0"),
    ("batch-size-unknown-dataset", "train.batch_size", {"mnist": 128, "speech": 16, "spech": 8},
     "unknown key 'train.batch_size.spech' (did you mean 'train.batch_size.speech'?)"),
    ("nan", "data.speech.embedded.noise_snr_db", float("nan"),
     "data.speech.embedded.noise_snr_db must be a number (or .inf), got nan"),
    # impossible values
    ("frame-step-zero", "features.speech.frame_step", 0, "features.speech.frame_step must be > 0, got 0"),
    ("epochs-zero", "train.epochs", 0, "train.epochs must be >= 1, got 0"),
    ("attention-examples", "evaluate.attention_max_misclassified", -1,
     "evaluate.attention_max_misclassified must be >= 0, got -1"),
    ("reverb-negative", "data.speech.embedded.reverb_rt60_s", -0.1,
     "data.speech.embedded.reverb_rt60_s must be >= 0.0, got -0.1"),
    ("reverb-hall", "data.speech.embedded.reverb_rt60_s", 5, "data.speech.embedded.reverb_rt60_s must be <= 2.0, got 5"),
    ("edge-cut-half", "data.speech.embedded.edge_cut_fraction", 0.5,
     "data.speech.embedded.edge_cut_fraction must be < 0.5, got 0.5"),
    ("fraction-one", "train.validation_fraction", 1.0, "train.validation_fraction must be < 1.0, got 1.0"),
    ("fraction-negative", "train.validation_fraction", -0.1, "train.validation_fraction must be >= 0.0, got -0.1"),
    ("dropout", "models.cnn_attention.dropout", 1, "models.cnn_attention.dropout must be < 1.0, got 1"),
    ("learning-rate", "models.cnn.learning_rate", 0, "models.cnn.learning_rate must be > 0.0, got 0"),
    ("test-per-class", "data.mnist.embedded_test_per_class", 500,
     "data.mnist.embedded_test_per_class must be <= 499, got 500"),
    # choices, with hints
    ("mnist-source", "data.mnist.source", "idxx",
     "data.mnist.source must be one of embedded, idx, got 'idxx' (did you mean 'idx'?)"),
    ("speech-source", "data.speech.source", "FSDD",
     "data.speech.source must be one of embedded, fsdd, folder, got 'FSDD'"),
    ("labels", "data.speech.labels", "prefixes",
     "data.speech.labels must be one of subfolder, prefix, cyclic, got 'prefixes' (did you mean 'prefix'?)"),
    ("compression", "features.speech.compression", "gzip",
     "features.speech.compression must be one of '', GZIP, ZLIB, got 'gzip'"),
    ("compression-null", "features.speech.compression", None,
     "features.speech.compression must be one of '', GZIP, ZLIB, got None"),
    ("strategy", "train.strategy", "mirror",
     "train.strategy must be one of auto, default, mirrored, multi_worker, got 'mirror' (did you mean 'mirrored'?)"),
    ("precision", "train.mixed_precision", "float16",
     "train.mixed_precision must be one of auto, float32, bfloat16, got 'float16' (did you mean 'bfloat16'?)"),
    ("monitor", "train.early_stopping.monitor", "val_acc",
     "train.early_stopping.monitor must be one of accuracy, loss, val_accuracy, val_loss, got 'val_acc' "
     "(did you mean 'val_accuracy'?)"),
    ("on-bad-file", "data.on_bad_file", "ignore", "data.on_bad_file must be one of error, skip, got 'ignore'"),
    ("split", "data.speech.split", "speaker",
     "data.speech.split must be one of official, speakers, got 'speaker' (did you mean 'speakers'?)"),
    # datasets and variants
    ("variants-empty", "variants", [], "variants must not be empty"),
    ("datasets-empty", "datasets", [], "datasets must not be empty"),
    ("variants-scalar", "variants", "cnn", "variants must be a list, got 'cnn'"),
    ("unknown-variant", "variants", ["cnn", "cnn_atention"],
     f"variants[1] is not a variant (did you mean 'cnn_attention'?); available: {VARIANTS}"),
    ("unknown-variant-no-hint", "variants", ["vgg"], f"variants[0] is not a variant; available: {VARIANTS}"),
    ("variant-not-a-name", "variants", ["cnn", 1], "variants[1] must be a string, got 1"),
    ("duplicate-variant", "variants", ["cnn", "cnn"], "variants lists 'cnn' twice"),
    ("unknown-dataset", "datasets", ["mnist", "mnsit"],
     "datasets[1] must be one of mnist, speech, got 'mnsit' (did you mean 'mnist'?)"),
    ("duplicate-dataset", "datasets", ["speech", "speech"], "datasets lists 'speech' twice"),
    ("seeds-duplicate", "train.seeds", [0, 1, 0], "train.seeds lists 0 twice"),
    ("test-speakers-empty", "data.speech.test_speakers", [], "data.speech.test_speakers must not be empty"),
    # model settings: the variant module's Settings
    ("model-setting", "models.cnn.filterz", 32, "unknown key 'models.cnn.filterz' (did you mean 'models.cnn.filters'?)"),
    ("model-setting-no-hint", "models.cnn.zzz", 1,
     "unknown key 'models.cnn.zzz'; keys here: learning_rate, lr_schedule, label_smoothing, mixup_alpha, filters, "
     "kernel_size, pool_size, dropout, dense_units"),
    ("model-setting-of-other-variant", "models.cnn.gate_kernel_size", 3,
     "unknown key 'models.cnn.gate_kernel_size' (did you mean 'models.cnn.kernel_size'?)"),
    ("model-setting-type", "models.cnn_attention.gate_kernel_size", "3x3",
     "models.cnn_attention.gate_kernel_size must be an integer, got '3x3'"),
    ("model-section-type", "models.cnn", [32], "models.cnn must be a mapping, got [32]"),
    ("lr-schedule", "models.resnet.lr_schedule", "cos",
     "models.resnet.lr_schedule must be one of constant, cosine, got 'cos' (did you mean 'cosine'?)"),
    ("frontend", "models.resnet_se.frontend", "mel",
     "models.resnet_se.frontend must be one of linear, logmel, got 'mel' (did you mean 'logmel'?)"),
]


@pytest.mark.parametrize("key,value,expected", [c[1:] for c in EXACT_ERRORS], ids=[c[0] for c in EXACT_ERRORS])
def test_each_mistake_is_one_line_naming_the_key(key, value, expected):
    params = mutated(key, delete=True) if value is DELETE else mutated(key, value)
    assert error_of(params) == "params.yaml: " + expected
    assert key in expected  # the exact key is named


CROSS_ERRORS = [
    ("clip-shorter-than-frame", {"features.speech.clip_samples": 100},
     "features.speech.clip_samples (100) must be >= features.speech.frame_length (320)"),
    ("fft-shorter-than-frame", {"features.speech.fft_length": 256},
     "features.speech.fft_length (256) must be >= features.speech.frame_length (320)"),
    ("variant-without-section", {"models": {"cnn": {"filters": 32}}},
     "missing key 'models.cnn_attention' (variant 'cnn_attention' is listed in variants)"),
    ("val-monitor-without-validation", {"train.early_stopping.monitor": "val_loss", "train.validation_fraction": 0},
     "train.early_stopping.monitor is 'val_loss' but there is no validation data: "
     "set train.validation_fraction > 0 or train.validate_on_test: true"),
    ("fraction-below-one-fold", {"train.validation_fraction": 0.001},
     "train.validation_fraction 0.001 rounds to 0 of 100 folds, so no validation data; use 0 or at least 0.01"),
    ("fraction-all-folds", {"train.validation_fraction": 0.999},
     "train.validation_fraction 0.999 rounds to all 100 folds, leaving no training data; use at most 0.99"),
    ("batch-size-missing-dataset", {"train.batch_size": {"mnist": 128}},
     "train.batch_size has no entry for data set 'speech' (listed in datasets); "
     "add train.batch_size.speech or give one number for all"),
    ("shuffle-buffer-missing-dataset", {"train.shuffle_buffer": {"speech": 100}},
     "train.shuffle_buffer has no entry for data set 'mnist' (listed in datasets); "
     "add train.shuffle_buffer.mnist or give one number for all"),
    ("speakers-split-of-synthetic-voices", {"data.speech.split": "speakers"},
     "data.speech.split is 'speakers' but data.speech.source is 'embedded', whose test voices are never in training "
     "anyway; use data.speech.source fsdd or folder, or data.speech.split: official"),
]


def changed(changes: dict) -> dict:
    params = copy.deepcopy(REAL)
    for dotted, value in changes.items():
        _set(params, dotted, value)
    return params


@pytest.mark.parametrize("changes,expected", [c[1:] for c in CROSS_ERRORS], ids=[c[0] for c in CROSS_ERRORS])
def test_rules_across_keys(changes, expected):
    assert error_of(changed(changes)) == "params.yaml: " + expected


@pytest.mark.parametrize("changes", [
    {"train.batch_size": 64},                                           # one number for all data sets
    {"train.batch_size": {"mnist": 128}, "datasets": ["mnist"]},        # only the listed data sets need one
    {"train.shuffle_buffer": {"mnist": 1000, "speech": 0}},
    {"train.early_stopping.monitor": "val_loss"},                       # validation_fraction 0.1
    {"train.early_stopping.monitor": "val_accuracy", "train.validation_fraction": 0, "train.validate_on_test": True},
    {"train.early_stopping.monitor": "val_loss", "train.validation_fraction": 0, "train.early_stopping.patience": None},
    {"train.early_stopping.monitor": "val_loss", "train.validation_fraction": 0, "train.early_stopping.enabled": False},
    {"train.validation_fraction": 0.999, "train.validate_on_test": True},  # the fraction is unused then
    {"train.validation_fraction": 0},
    {"data.on_bad_file": "skip", "train.resume": True},
    {"features.mnist.compression": "GZIP", "features.speech.compression": "ZLIB"},
    {"models.cnn.dropout": 0, "models.cnn.learning_rate": 1, "models.cnn.pool_size": 3},  # ints where floats go
    {"models.cnn": None, "models.cnn_attention": {}},                   # all of the variant's defaults
    {"data.mnist.url": ["https://a.example/mnist/", "https://b.example/mnist/"]},
    {"data.mnist.url": None},
    {"data.mnist.sha256": {"train-images-idx3-ubyte.gz": "A" * 64}},
    {"data.mnist.sha256": None},
    {"data.speech.sha256": "sha256:" + "0" * 64},
    {"data.speech.sha256": ""},
    {"data.speech.embedded.noise_snr_db": float("inf")},
    {"data.speech.source": "fsdd", "data.speech.split": "speakers", "data.speech.test_speakers": ["theo", "george"]},
    {"variants": ["cnn_attention"]},                                    # models.cnn may stay configured
    {"datasets": ["speech"]},
    {"models.resnet.frontend": "logmel", "models.resnet.augment": "auto", "models.resnet.lr_schedule": "cosine"},
])
def test_valid_variations_pass(changes):
    parse_config(changed(changes))


def test_defaults_live_in_the_models_once():
    params = copy.deepcopy(REAL)
    for section, key in (("data", "on_bad_file"), ("train", "resume"), ("train", "mixed_precision")):
        params[section].pop(key)
    params["data"]["speech"].pop("split")
    params["evaluate"].pop("attention_max_misclassified")
    params["models"]["cnn"] = None
    config = parse_config(params)
    assert config.data.on_bad_file == "error" and config.train.resume is False
    assert config.train.mixed_precision == "auto"  # as params.yaml and the README say
    assert config.data.speech.split == "official" and config.data.speech.test_speakers == ["theo"]
    assert config.evaluate.attention_max_misclassified == 8
    assert config.model("cnn") == registry.settings_type("cnn")()
    assert config.model("cnn").learning_rate == 0.001 and config.model("cnn").filters == 32


def test_every_key_in_params_yaml_is_a_field():
    def leaves(node, model, prefix=""):
        for key, value in node.items():
            dotted = f"{prefix}.{key}" if prefix else key
            field = model.model_fields.get(key)
            assert field is not None, dotted
            sub = getattr(model.model_fields[key].annotation, "model_fields", None)
            if isinstance(value, dict) and value and sub is not None:
                yield from leaves(value, field.annotation, dotted)

    list(leaves(REAL, Params))
    for variant, section in REAL["models"].items():
        assert set(section) <= set(registry.settings_type(variant).model_fields), variant


def test_every_variant_module_declares_its_settings():
    for variant in registry.available():
        settings = registry.settings_type(variant)
        assert issubclass(settings, VariantSettings), variant
        assert settings.model_config["extra"] == "forbid"


def test_constants_mirror_the_stages():
    """The few facts the config repeats to stay free of numpy/TensorFlow imports."""
    import typing

    from attention_cnn.data.mnist import IDX_FILES
    from attention_cnn.features.tfrecords import NUM_FOLDS

    assert set(typing.get_args(config_params.IdxFile)) == set(IDX_FILES)
    assert config_params.NUM_FOLDS == NUM_FOLDS


def test_a_new_variant_is_one_module_and_one_params_section(tmp_path):
    """A copy of the package with one more module: the config takes its section, checked against its Settings."""
    shutil.copytree(ROOT / "attention_cnn", tmp_path / "attention_cnn", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "attention_cnn" / "models" / "tiny.py").write_text(
        "from attention_cnn.models.settings import Count, StudySettings\n\n\n"
        "class Settings(StudySettings):\n    width: Count = 8\n\n\n"
        "def build(input_shape, num_classes, s: Settings):\n    raise NotImplementedError\n")
    params = copy.deepcopy(REAL)
    params["variants"] = ["tiny"]
    params["models"]["tiny"] = {"width": 4, "learning_rate": 0.01}
    path = tmp_path / "params.yaml"

    def check(p: dict) -> subprocess.CompletedProcess:
        path.write_text(yaml.safe_dump(p, sort_keys=False))
        return subprocess.run([sys.executable, "-m", "attention_cnn.config", "--params", str(path)], cwd=tmp_path,
                              capture_output=True, text=True)

    assert check(params).stdout == f"{path}: OK\n"
    params["models"]["tiny"]["width"] = 0.5
    assert check(params).stderr == f"error: {path}: models.tiny.width must be an integer, got 0.5\n"
    params["models"]["tiny"] = {"width": 4, "widht": 3}
    assert check(params).stderr == f"error: {path}: unknown key 'models.tiny.widht' (did you mean 'models.tiny.width'?)\n"


# --------------------------------------------------------------------------- YAML 1.2, as DVC reads params.yaml

TRICKY = """\
a: 010
b: 1:30
c: 1e-3
d: 5e-05
e: yes
f: 0o10
g: .inf
h: ~
i: 0x1F
j: '010'
"""


def test_the_loader_reads_values_exactly_as_dvc_does(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(TRICKY)
    ours = read_yaml(path)
    assert ours == dvc_parse_yaml(TRICKY, str(path))
    assert ours == {"a": 10, "b": "1:30", "c": 0.001, "d": 5e-05, "e": "yes", "f": 8, "g": float("inf"), "h": None,
                    "i": 31, "j": "010"}


def test_issue_18_values_reach_the_stage_as_dvc_records_them(tmp_path):
    text = (ROOT / "params.yaml").read_text()
    path = tmp_path / "params.yaml"
    path.write_text(text.replace("  epochs: 15\n", "  epochs: 010\n").replace(
        "    learning_rate: 0.001\n", "    learning_rate: 5e-05\n", 1))
    config = load_config(path)
    assert config.train.epochs == 10  # YAML 1.1 read 8
    assert config.model("cnn").learning_rate == 5e-05  # YAML 1.1 read the text '5e-05'
    assert load_error(tmp_path, text.replace("  epochs: 15\n", "  epochs: 1:30\n")) == \
        "train.epochs must be an integer, got '1:30'"  # YAML 1.1 read 90 (sexagesimal)
    assert load_error(tmp_path, text.replace("  resume: false", "  resume: yes")) == \
        "train.resume must be true or false, got 'yes'"


def test_a_duplicated_key_is_one_line_as_dvc_refuses_it(tmp_path):
    text = (ROOT / "params.yaml").read_text().replace("  epochs: 15\n", "  epochs: 15\n  epochs: 3\n")
    line = text.splitlines().index("  epochs: 3") + 1
    assert load_error(tmp_path, text) == \
        f'line {line}: not valid YAML (found duplicate key "epochs" with value "3" (original value: "15"))'
    with pytest.raises(Exception, match="YAML file structure is corrupted"):
        dvc_parse_yaml(text, "params.yaml")


def test_a_non_utf8_byte_is_one_line_naming_its_line(tmp_path):
    raw = (ROOT / "params.yaml").read_bytes().replace(b"  epochs: 15\n", b"  epochs: 15 # caf\xe9\n")
    line = raw.split(b"\n").index(b"  epochs: 15 # caf\xe9") + 1
    assert load_error(tmp_path, raw) == f"line {line}: byte 0xe9 is not UTF-8; save the file as UTF-8"


@pytest.mark.parametrize("text,expected", [
    ("train: [1, 2\n", "line 2: not valid YAML (expected ',' or ']', but got '<stream end>')"),
    ("- 1\n- 2\n", "expected a mapping of parameters at the top level"),
    ("", "missing key 'datasets'"),
])
def test_unreadable_files_are_one_line(tmp_path, text, expected):
    assert load_error(tmp_path, text) == expected


# --------------------------------------------------------------------------- the CLI

def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "attention_cnn.config", *args], cwd=ROOT, capture_output=True,
                          text=True)


def test_cli_ok_on_the_real_file():
    proc = cli()
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "params.yaml: OK\n"


@pytest.mark.parametrize("old,new,expected", [
    ("  epoch" "s: 15\n", "  epoch: 15\n", "unknown key 'train.epoch' (did you mean 'train.epochs'?)"),
    ("variants: [cnn, cnn_attention]", "variants: [cnn, cnn_atention]",
     f"variants[1] is not a variant (did you mean 'cnn_attention'?); available: {VARIANTS}"),
    ("  validate_on_test: false", "  validate_on_test: yes", "train.validate_on_test must be true or false, got 'yes'"),
])
def test_cli_error_is_one_stderr_line_and_exit_1(tmp_path, old, new, expected):
    path = tmp_path / "params.yaml"
    path.write_text((ROOT / "params.yaml").read_text().replace(old, new))
    proc = cli("--params", str(path))
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.splitlines() == [f"error: {path}: {expected}"], proc.stderr


def test_cli_missing_file_is_one_line(tmp_path):
    proc = cli("--params", str(tmp_path / "nope.yaml"))
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [f"error: {tmp_path / 'nope.yaml'}: params file not found; run from the project root"]


LAZY = """
import sys
from attention_cnn.config import load_config
config = load_config(sys.argv[1])
loaded = lambda: sorted(m.rsplit(".", 1)[1] for m in sys.modules if m.startswith("attention_cnn.models.")
                        and m.rsplit(".", 1)[1] not in ("settings",))
print(loaded())
config.model("cnn", sys.argv[1])
print(loaded())
config.model("resnet", sys.argv[1])
"""


def test_a_stage_loads_and_depends_on_only_the_variant_it_uses(tmp_path):
    """load_config imports no variant module (so fetch and featurize do not depend on model code); a stage
    validates its own variant's section; a mistake in another variant's section is the CLI's and recipes' to find."""
    params = mutated("models.resnet.filters", "many")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    proc = subprocess.run([sys.executable, "-c", LAZY, str(tmp_path / "params.yaml")], cwd=ROOT,
                          capture_output=True, text=True)
    lines = proc.stdout.splitlines()
    assert lines[:2] == ["[]", "['cnn']"], proc.stdout + proc.stderr
    assert proc.returncode == 1 and "models.resnet.filters must be an integer, got 'many'" in proc.stderr
    cli = subprocess.run([sys.executable, "-m", "attention_cnn.config", "--params", str(tmp_path / "params.yaml")],
                         cwd=ROOT, capture_output=True, text=True)
    assert cli.returncode == 1 and cli.stderr.strip().endswith("models.resnet.filters must be an integer, got 'many'")
