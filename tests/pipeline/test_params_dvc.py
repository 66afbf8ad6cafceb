"""Issue 18 item 3 on a real DVC project: the stage and DVC read the same numbers from params.yaml (YAML 1.2).

The loader's unit tests (tests/unit/test_config.py) cover each case fast; these two run DVC itself.
"""
from __future__ import annotations

import copy
import json
import re

import pytest

from attention_cnn.config import read_yaml
from conftest import TINY_PARAMS, deep_update, make_project, run

TRAIN = "train@mnist-cnn-0"


def project(tmp_path):
    params = deep_update(copy.deepcopy(TINY_PARAMS), {"datasets": ["mnist"], "variants": ["cnn"],
                                                      "train": {"mixed_precision": "float32"}})
    root = make_project(tmp_path / "project", params)
    text = (root / "params.yaml").read_text()
    (root / "params.yaml").write_text(re.sub(r"(?m)^  epochs: \d+$", "  epochs: 010", text))  # YAML 1.1: 8
    run(["git", "commit", "-qam", "epochs: 010"], root)
    return root


@pytest.mark.slow
def test_leading_zero_and_a_small_learning_rate_set_with_dash_s_reach_the_stage_as_dvc_records_them(tmp_path):
    root = project(tmp_path)
    run(["dvc", "exp", "run", "-S", "models.cnn.learning_rate=0.00005", TRAIN], root)
    assert "learning_rate: 5e-05" in (root / "params.yaml").read_text()  # how DVC writes it
    lock = read_yaml(root / "dvc.lock")["stages"][TRAIN]["params"]["params.yaml"]  # YAML 1.2, as DVC reads it
    assert lock["train.epochs"] == 10 and lock["models.cnn"]["learning_rate"] == 5e-05
    trained = json.loads((root / "models/mnist/cnn/seed0/config.json").read_text())  # what the stage used
    assert trained["train"]["epochs"] == 10 and trained["train"]["learning_rate"] == 5e-05


@pytest.mark.slow
def test_a_sexagesimal_looking_value_is_a_string_to_both_and_one_line_from_the_stage(tmp_path):
    root = project(tmp_path)
    text = (root / "params.yaml").read_text().replace("  epochs: 010", "  epochs: 1:30")  # YAML 1.1: 90
    (root / "params.yaml").write_text(text)
    diff = json.loads(run(["dvc", "params", "diff", "--json"], root).stdout)
    assert diff["params.yaml"]["train.epochs"] == {"old": 10, "new": "1:30"}
    proc = run(["dvc", "repro", TRAIN], root, check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stdout + proc.stderr
    assert "error: params.yaml: train.epochs must be an integer, got '1:30'" in (proc.stdout + proc.stderr).splitlines()
    assert not (root / "models/mnist/cnn/seed0").exists()
