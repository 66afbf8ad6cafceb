"""Model registry and the study's models: parameter counts must equal STUDY.md's table exactly."""
from __future__ import annotations

import pytest

from stages.common import StageError
from stages.models import available, build_model

STUDY_COUNTS = {
    ("cnn", (28, 28, 1)): 173_738,
    ("cnn_attention", (28, 28, 1)): 174_027,
    ("cnn", (391, 257, 1)): 25_229_994,
    ("cnn_attention", (391, 257, 1)): 25_230_283,
}


@pytest.mark.parametrize("variant,shape", list(STUDY_COUNTS))
def test_parameter_counts_match_the_study(variant, shape):
    model = build_model(variant, shape, 10, {"learning_rate": 0.001})
    assert model.count_params() == STUDY_COUNTS[(variant, shape)]
    assert model.output_shape == (None, 10)


def test_attention_is_one_gate_after_the_first_conv():
    model = build_model("cnn_attention", (28, 28, 1), 10)
    names = [layer.name for layer in model.layers]
    assert names.index("conv") < names.index("attention_map") < names.index("attention_apply") < names.index("pool")
    gate = model.get_layer("attention_map")
    assert gate.count_params() == 3 * 3 * 32 + 1 and gate.get_config()["activation"] == "sigmoid"
    assert gate.output.shape[-1] == 1  # one weight per spatial position, broadcast over channels


def test_settings_change_the_model():
    assert build_model("cnn", (28, 28, 1), 10, {"filters": 8}).count_params() < STUDY_COUNTS[("cnn", (28, 28, 1))]


def test_registry_lists_variants_and_rejects_unknown_names_and_settings():
    assert {"cnn", "cnn_attention"} <= set(available())
    with pytest.raises(StageError, match="unknown model variant 'resnet9000'"):
        build_model("resnet9000", (28, 28, 1), 10)
    with pytest.raises(StageError, match=r"models\.cnn\.filterz is not a setting"):
        build_model("cnn", (28, 28, 1), 10, {"filterz": 3})
