"""A result is recorded only under the params, code and data it came from (issue 18, items 2 and 5).

On real DVC projects (MNIST only, one variant, tiny): a checkpoint resumes only the run it came from; the report
refuses a run whose params differ from dvc.lock's; two `dvc exp run` at once in one workspace leave no wrong
record.
"""
from __future__ import annotations

import json
import re
import shutil
import zipfile
from pathlib import Path

import pytest
import yaml

from conftest import copy_project, deep_update, run
from test_faults import kill9, start_group, wait_for

from attention_cnn.provenance import check_recorded_params, read_yaml_as_dvc

pytestmark = pytest.mark.slow

STAGE = "train@mnist-cnn-0"
SUMMARY = Path("reports/train/mnist/cnn/seed0/summary.json")
CKPT = Path("checkpoints/mnist/cnn/seed0")


@pytest.fixture(scope="module")
def mnist_project(built_project, tmp_path_factory):
    """The pipeline on MNIST with the cnn only, after one full `dvc repro` (do not modify: copy it): the session's
    built project narrowed to them, so only the report reruns (its other stages come from its cache)."""
    root = copy_project(built_project, tmp_path_factory.mktemp("prov") / "project")
    set_params(root, {"datasets": ["mnist"], "variants": ["cnn"]})
    assert "Running stage 'train" not in run(["dvc", "repro"], root).stdout
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "built"], root)
    return root


def set_params(root: Path, update: dict) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    (root / "params.yaml").write_text(yaml.safe_dump(deep_update(params, update), sort_keys=False))


def lock_params(root: Path, stage: str = STAGE) -> dict:
    return read_yaml_as_dvc(root / "dvc.lock")["stages"][stage]["params"]["params.yaml"]


def dense_units(keras_file: Path) -> list[int]:
    with zipfile.ZipFile(keras_file) as z:
        config = json.loads(z.read("config.json"))
    found = []

    def walk(node):
        if isinstance(node, dict):
            if node.get("class_name") == "Dense":
                found.append(int(node["config"]["units"]))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(config)
    return found


def interrupt_training(root: Path, log: Path) -> int:
    """`dvc repro` of the train stage, SIGKILLed once a checkpoint holds a complete epoch; returns that epoch."""
    state = root / CKPT / "state.json"
    proc = start_group(["dvc", "repro", STAGE], root, log)
    wait_for(lambda: (state.is_file() and json.loads(state.read_text())["epoch"] >= 1) or proc.poll() is not None,
             600, "a checkpointed epoch")
    assert proc.poll() is None, log.read_text()[-3000:]
    kill9(proc)
    return json.loads(state.read_text())["epoch"]


WIDER = '''
# test: the dense layer twice as wide (a code change that keeps every param)
import attention_cnn.models.blocks as _blocks
_study_head = _blocks.study_head


def _wider_head(*args, **kwargs):
    kwargs["dense_units"] = 2 * kwargs["dense_units"]
    return _study_head(*args, **kwargs)


_blocks.study_head = _wider_head
'''


def test_checkpoint_resumes_only_its_own_run(mnist_project, tmp_path):
    root = copy_project(mnist_project, tmp_path / "p")
    set_params(root, {"train": {"resume": True, "epochs": 3, "batch_size": {"mnist": 32},
                                "early_stopping": {"monitor": "accuracy", "patience": 100}}})
    done = interrupt_training(root, tmp_path / "kill1.txt")
    saved = tmp_path / "saved-checkpoint"
    shutil.copytree(root / CKPT, saved)
    old_units = dense_units(saved / json.loads((saved / "state.json").read_text())["model_file"])

    # Nothing changed: it continues (the control).
    out = run(["dvc", "repro", STAGE], root).stdout
    assert f"resume: continuing mnist/cnn seed=0 after epoch {done}" in out, out[-3000:]
    first = json.loads((root / SUMMARY).read_text())
    assert first["resumed_from_epoch"] == done and first["epochs_run"] == 3

    # The model code changed: the same checkpoint is discarded, with the reason, and training starts fresh.
    shutil.copytree(saved, root / CKPT)
    cnn = root / "attention_cnn/models/cnn.py"
    original = cnn.read_text()
    cnn.write_text(original + WIDER)
    out = run(["dvc", "repro", STAGE], root).stdout
    assert re.search(r"resume: checkpoint in \S+ discarded: code changed \(attention_cnn/models/cnn\.py\); "
                     r"starting from scratch", out), out[-3000:]
    assert "resume: continuing" not in out
    summary = json.loads((root / SUMMARY).read_text())
    assert summary["resumed_from_epoch"] == 0 and summary["epochs_run"] == 3
    new_units = dense_units(root / "models/mnist/cnn/seed0/model.keras")
    assert new_units[0] == 2 * old_units[0] and new_units[1:] == old_units[1:], (old_units, new_units)
    assert summary["params"] > first["params"]  # the saved model is the new architecture

    # The data changed (another split of the digits), code back as in the checkpoint: discarded for the data.
    cnn.write_text(original)
    shutil.rmtree(root / CKPT, ignore_errors=True)
    shutil.copytree(saved, root / CKPT)
    set_params(root, {"data": {"mnist": {"split_seed": 1}}})
    out = run(["dvc", "repro", STAGE], root).stdout
    assert "Running stage 'featurize@mnist'" in out
    line = next((ln for ln in out.splitlines() if "discarded:" in ln), "")
    assert "data changed (" in line and "code changed" not in line and "params changed" not in line, out[-3000:]
    assert "resume: continuing" not in out
    summary = json.loads((root / SUMMARY).read_text())
    assert summary["resumed_from_epoch"] == 0 and summary["params"] == first["params"]


def test_summary_records_the_params_dvc_locked(mnist_project):
    used = json.loads((mnist_project / SUMMARY).read_text())["params_used"]
    locked = lock_params(mnist_project)
    assert used["train"]["epochs"] == locked["train.epochs"] == 1
    assert used["models"]["cnn"]["dense_units"] == locked["models.cnn"]["dense_units"]
    check_recorded_params(mnist_project / "dvc.lock", mnist_project / "reports/train", [("mnist", "cnn", 0)])


def test_report_refuses_a_run_whose_params_differ_from_dvc_lock(mnist_project, tmp_path):
    """Trained by hand with other params, then `dvc commit`: dvc.lock says params.yaml's values."""
    root = copy_project(mnist_project, tmp_path / "p")
    alt = yaml.safe_load((root / "params.yaml").read_text())
    alt["train"]["epochs"] = 2
    (root / "alt.yaml").write_text(yaml.safe_dump(alt, sort_keys=False))
    stage = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]["train"]["cmd"]
    cmd = (stage.replace("${item.dataset}", "mnist").replace("${item.variant}", "cnn").replace("${item.seed}", "0")
           .replace("--params params.yaml", "--params alt.yaml"))
    run(["sh", "-c", cmd], root)
    run(["dvc", "commit", "-f", STAGE], root)
    assert lock_params(root)["train.epochs"] == 1
    proc = run(["dvc", "repro"], root, check=False)
    assert proc.returncode != 0
    errors = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in proc.stdout + proc.stderr, proc.stdout[-2000:] + proc.stderr
    assert errors[0].startswith(f"error: {STAGE}: dvc.lock records train.epochs=1 but the run trained with 2"), errors


def test_two_exp_runs_at_once_leave_no_wrong_record(mnist_project, tmp_path):
    """The second `dvc exp run` rewrites params.yaml before DVC finds the workspace busy (DVC's own doing);
    the first run's train stage then refuses to finish, so dvc.lock keeps no value that did not train."""
    root = copy_project(mnist_project, tmp_path / "p")
    before = lock_params(root)
    log_a = tmp_path / "a.txt"
    a = start_group(["dvc", "exp", "run", "-S", "train.epochs=3", "-S", "train.batch_size.mnist=16"], root, log_a)
    wait_for(lambda: f"Running stage '{STAGE}'" in log_a.read_text() or a.poll() is not None, 600, "A training")
    assert a.poll() is None, log_a.read_text()[-3000:]
    b = run(["dvc", "exp", "run", "-S", "train.epochs=5"], root, check=False)
    assert b.returncode != 0 and "is busy" in b.stdout + b.stderr, b.stdout + b.stderr
    assert "epochs: 5" in (root / "params.yaml").read_text()  # what DVC itself did before it noticed
    assert a.wait(timeout=900) != 0
    out = log_a.read_text()
    assert (f"error: params.yaml changed while {STAGE} ran: train.epochs is now 5, this run used 3 "
            "(another dvc exp run in this workspace?); nothing recorded") in out, out[-3000:]
    assert "dvc queue start" in out
    assert lock_params(root) == before  # no record of a training that did not happen
    status = run(["dvc", "status", STAGE], root).stdout
    assert "changed" in status, status  # and DVC knows the stage is to be rerun, not clean


def test_second_run_through_the_entry_point_is_stopped_before_params_yaml(mnist_project, tmp_path):
    """`python -m attention_cnn.team.exp run` (make exp): the second is refused, params.yaml untouched, the
    first finishes and records what it trained."""
    root = copy_project(mnist_project, tmp_path / "p")
    env = {"PYTHONPATH": str(root)}
    log_a = tmp_path / "a.txt"
    # A holds the workspace for its whole run (train, export, evaluate, report), so B meets it however fast A trains
    a = start_group(["python", "-m", "attention_cnn.team.exp", "run", "-S", "train.epochs=2", "-S",
                     "train.batch_size.mnist=64"], root, log_a)
    wait_for(lambda: f"Running stage '{STAGE}'" in log_a.read_text() or a.poll() is not None, 600, "A training")
    assert a.poll() is None, log_a.read_text()[-3000:]
    params_before = (root / "params.yaml").read_bytes()
    b = run(["python", "-m", "attention_cnn.team.exp", "run", "-S", "train.epochs=5"], root, check=False, env=env)
    assert b.returncode == 1 and b.stdout == "", b.stdout
    assert b.stderr.startswith("error: another experiment is running in this workspace (PID ") and \
        b.stderr.count("\n") == 1 and "params.yaml untouched" in b.stderr and "--queue" in b.stderr, b.stderr
    assert (root / "params.yaml").read_bytes() == params_before
    assert a.wait(timeout=900) == 0, log_a.read_text()[-3000:]
    assert lock_params(root)["train.epochs"] == 2
    assert json.loads((root / SUMMARY).read_text())["epochs_run"] == 2
    check_recorded_params(root / "dvc.lock", root / "reports/train", [("mnist", "cnn", 0)])
