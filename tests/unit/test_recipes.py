"""Named recipes (issue 14): every recipes/*.yaml passes the params check, its -S values give DVC the same
config, mistakes are one line naming the recipe file and the key; the CLI's errors."""
from __future__ import annotations

import os
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from attention_cnn import recipes
from attention_cnn.common import StageError
from attention_cnn.config import load_config
from conftest import ROOT

PARAMS = ROOT / "params.yaml"
ARCHIVE = "/data/my archives/free-spoken-digit-dataset-1.0.10.tar.gz"   # a space: -S needs it quoted


def comments(text: str) -> list[str]:
    return [line.split("#", 1)[1].strip() for line in text.splitlines() if "#" in line]


@pytest.mark.parametrize("name", recipes.names(ROOT))
def test_recipe_is_valid_and_dvc_sets_the_same_config(name, tmp_path):
    """The recipe validates on top of params.yaml, and DVC's own -S code (dvc.utils.hydra.apply_overrides, which
    `dvc exp run -S` calls) turns params.yaml into exactly that config, keeping every comment."""
    from dvc.utils.hydra import apply_overrides

    recipe = recipes.load_recipe(name, ROOT)
    assert recipe.description and recipe.shows and "\n" not in recipe.description
    recipes.recipe_config(recipe, params_path=PARAMS)
    for run in recipes.expand(recipe):   # the recipe, or each of its folds
        config = recipes.recipe_config(run, params_path=PARAMS)
        fsdd = ARCHIVE if recipes.needs_fsdd(config) else None
        if fsdd:
            config = recipes.recipe_config(run, fsdd=fsdd, params_path=PARAMS)
            assert config.data.speech.url == ARCHIVE
        target = tmp_path / "params.yaml"
        shutil.copy(PARAMS, target)
        flags = recipes.set_flags(run, fsdd)
        if flags:
            apply_overrides(target, flags)
        assert load_config(target) == config, run.experiment
        assert comments(target.read_text()) == comments(PARAMS.read_text())


def write_recipe(folder: Path, name: str, text: str) -> Path:
    (folder / "recipes").mkdir(exist_ok=True)
    path = folder / "recipes" / f"{name}.yaml"
    path.write_text(text)
    return path


GOOD = "description: a test\nshows: nothing\nset:\n  train.seeds: [0, 1]\n"


@pytest.mark.parametrize("body, message", [
    ("set:\n  train.epoch: 3\n", "recipes/typo.yaml: unknown key 'train.epoch' (did you mean 'train.epochs'?)"),
    ("set:\n  models.resnet.lr_shedule: cosine\n",
     "recipes/typo.yaml: unknown key 'models.resnet.lr_shedule' (did you mean 'models.resnet.lr_schedule'?)"),
    ("set:\n  train.mixed_precision: float16\n",
     "recipes/typo.yaml: train.mixed_precision must be one of auto, float32, bfloat16, got 'float16'"),
    ("set:\n  train.epochs.max: 3\n",
     "recipes/typo.yaml: train.epochs.max: 'train.epochs' is not a section in params.yaml (it holds 15); "
     "set 'train.epochs' itself"),
    ("set:\n  variants: [cnn, cnn_atention]\n", "recipes/typo.yaml: variants[1] is not a variant (did you mean"),
])
def test_a_typo_in_a_recipe_is_one_line_naming_file_and_key(tmp_path, body, message):
    write_recipe(tmp_path, "typo", "description: a test\nshows: nothing\n" + body)
    with pytest.raises(StageError) as err:
        recipes.recipe_config(recipes.load_recipe("typo", tmp_path), params_path=PARAMS)
    text = str(err.value).replace(str(tmp_path) + os.sep, "")
    assert text.startswith(message), text
    assert "\n" not in text


@pytest.mark.parametrize("body, message", [
    ("descripton: x\nshows: y\nset: {}\n", "unknown field 'descripton' (did you mean 'description'?)"),
    ("shows: y\nset: {}\n", "missing field 'description'"),
    ("description: [x]\nshows: y\nset: {}\n", "'description' must be a non-empty string"),
    ("description: x\nshows: y\nset: [train.epochs]\n", "'set' must be a mapping"),
    ("description: x\nshows: y\nset:\n  train epochs: 3\n", "'train epochs' is not a dotted params.yaml key"),
    ("description: x\nshows: y\nset:\n  data.speech.url: \"it's\"\n", "quotes, backslashes"),
    ("description: x\nshows: y\nset: {}\ncompare_with: bad\n", "'compare_with' must name another recipe"),
    ("description: x\nshows: y\nset: {}\ncompare_with: [a]\n", "'compare_with' must name another recipe"),
])
def test_recipe_fields_are_checked(tmp_path, body, message):
    write_recipe(tmp_path, "bad", body)
    with pytest.raises(StageError) as err:
        recipe = recipes.load_recipe("bad", tmp_path)
        recipes.set_flags(recipe)
    assert str(err.value).startswith(f"{tmp_path / 'recipes' / 'bad.yaml'}: "), err.value
    assert message in str(err.value)


def test_a_section_value_merges_like_the_dvc_flags(tmp_path):
    """`set: {train.batch_size: {speech: 8}}` changes one entry, as `-S ++train.batch_size.speech=8` does."""
    from dvc.utils.hydra import apply_overrides

    write_recipe(tmp_path, "merge", "description: x\nshows: y\nset:\n  train.batch_size: {speech: 8}\n"
                                    "  data.mnist.sha256: {}\n  data.speech.sha256: null\n")
    recipe = recipes.load_recipe("merge", tmp_path)
    config = recipes.recipe_config(recipe, params_path=PARAMS)
    assert config.train.batch_size == {"mnist": 128, "speech": 8}
    target = tmp_path / "params.yaml"
    shutil.copy(PARAMS, target)
    apply_overrides(target, recipes.set_flags(recipe))
    assert load_config(target) == config


def cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "stages.recipe", *args], cwd=cwd, capture_output=True, text=True,
                          env=env)


def test_cli_typo_is_one_line_and_nothing_runs(tmp_path):
    shutil.copy(PARAMS, tmp_path / "params.yaml")
    write_recipe(tmp_path, "typo", "description: a test\nshows: nothing\nset:\n  train.epoch: 3\n")
    proc = cli(["run", "typo"], tmp_path)
    assert proc.returncode == 1
    assert proc.stderr == ("error: recipes/typo.yaml: unknown key 'train.epoch' (did you mean 'train.epochs'?)\n")
    assert proc.stdout == ""


def test_cli_list_and_show(tmp_path):
    shutil.copy(PARAMS, tmp_path / "params.yaml")
    write_recipe(tmp_path, "two-seeds", GOOD)
    archive = tmp_path / "fsdd.tar.gz"
    archive.write_bytes(b"not opened by show")
    write_recipe(tmp_path, "on-fsdd", "description: d\nshows: s\nset:\n  data.speech.source: fsdd\n")
    listed = cli(["list"], tmp_path)
    assert listed.returncode == 0 and re.search(r"^two-seeds +a test \(not run yet\)$", listed.stdout, re.M), \
        listed.stdout
    (tmp_path / "results" / "two-seeds").mkdir(parents=True)   # a run make results kept: its measured time
    (tmp_path / "results" / "two-seeds" / "run.json").write_text(json.dumps({"date": "2026-01-01T00:00:00+00:00", "runs": [
        {"mixed_precision": "float32", "machine": {"cpu": "AMD EPYC"}, "train_time_s": t} for t in (60.0, 90.0)]}))
    assert re.search(r"^two-seeds +a test \(trained in 2 models, 2.5 min \(float32, AMD EPYC\)\)$",
                     cli(["list"], tmp_path).stdout, re.M)
    shown = cli(["show", "two-seeds"], tmp_path)
    assert shown.stdout == "dvc exp run -n two-seeds -S '++train.seeds=[0,1]'\n", shown.stderr
    shown = cli(["show", "on-fsdd", "--fsdd", "fsdd.tar.gz"], tmp_path)
    assert shown.stdout.strip().endswith(f"-S ++data.speech.url={archive}"), shown.stdout
    refused = cli(["show", "two-seeds", "--fsdd", "fsdd.tar.gz"], tmp_path)
    assert refused.returncode == 1 and "does not use FSDD" in refused.stderr and refused.stderr.count("\n") == 1
    missing = cli(["show", "on-fsdd", "--fsdd", "nowhere.tar.gz"], tmp_path)
    assert missing.returncode == 1 and missing.stderr.startswith("error: --fsdd nowhere.tar.gz: no such file")
    unknown = cli(["run", "two-seed"], tmp_path)
    assert unknown.returncode == 1 and "did you mean 'two-seeds'?" in unknown.stderr


def commit_with_experiment(root, name: str) -> str:
    """``root`` as one git commit plus an experiment ref ``name`` on it, as DVC names them; the commit's sha."""
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@x.invalid", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@x.invalid")
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "base"]):
        subprocess.run(["git", *cmd], cwd=root, check=True, env=env, capture_output=True)
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()
    subprocess.run(["git", "update-ref", f"refs/exps/{sha[:2]}/{sha[2:]}/{name}", "HEAD"], cwd=root, check=True)
    return sha


def test_cli_refuses_a_name_that_exists(tmp_path):
    """An experiment of that name on this commit: one line with both ways to run it again; DVC is never called."""
    shutil.copy(PARAMS, tmp_path / "params.yaml")
    write_recipe(tmp_path, "two-seeds", GOOD)
    sha = commit_with_experiment(tmp_path, "two-seeds")
    proc = cli(["run", "two-seeds"], tmp_path)
    assert proc.returncode == 1
    assert proc.stderr == (f"error: experiment 'two-seeds' exists for this commit ({sha[:7]}); to run it again: "
                           "dvc exp remove two-seeds && make recipe NAME=two-seeds, or keep both: "
                           "python -m stages.recipe run two-seeds --suffix 2\n")
    assert cli(["run", "two-seeds", "--suffix", "Two"], tmp_path).stderr.startswith("error: --suffix 'Two'")


@pytest.mark.parametrize("value", ["true", "NULL", "010", "1e3", "nan", "a,b", "x=y", "[a]", "a b", "http://h:80/x.gz",
                                   "", 0, 1.5, 1e-05, True, None, [0, 1], ["cnn", "resnet_se"], {}])
def test_a_value_reads_back_as_itself_through_dvc(tmp_path, value):
    from dvc.utils.hydra import apply_overrides
    from ruamel.yaml import YAML

    target = tmp_path / "p.yaml"
    target.write_text("key: old   # a comment\n")
    apply_overrides(target, [f"++key={recipes.hydra_value(value, 'test')}"])
    got = YAML(typ="safe").load(target.read_text())["key"]
    assert got == value and type(got) is type(value)
    assert "# a comment" in target.read_text()


def test_a_recipe_starts_from_the_committed_params(tmp_path):
    """DVC applies -S to the workspace's params.yaml: one left by an earlier experiment is restored from HEAD
    (it is kept in that experiment's commit); a change of the user's is refused in one line."""
    from stages.recipe import start_from_committed_params

    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@x.invalid", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@x.invalid")

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=tmp_path, check=True, env=env, capture_output=True,
                              text=True).stdout.strip()

    params = tmp_path / "params.yaml"
    shutil.copy(PARAMS, params)
    git("init", "-q")
    git("add", "-A")
    git("commit", "-qm", "base")
    base, committed = git("rev-parse", "HEAD"), params.read_bytes()
    git("checkout", "-q", "-b", "exp")
    params.write_text(params.read_text().replace("seeds: [0] ", "seeds: [0, 1]"))
    git("commit", "-qam", "experiment")
    left = params.read_bytes()
    git("update-ref", f"refs/exps/{base[:2]}/{base[2:]}/two-seeds", "HEAD")
    git("checkout", "-q", base)

    params.write_bytes(committed.replace(b"data sets to train", b"the data sets to train"))   # a comment only
    start_from_committed_params(tmp_path)
    assert b"the data sets to train" in params.read_bytes()
    params.write_bytes(left)                    # as `dvc exp run` leaves the workspace
    start_from_committed_params(tmp_path)
    assert params.read_bytes() == committed
    params.write_bytes(left.replace(b"epochs: 15", b"epochs: 3"))
    with pytest.raises(StageError, match=r"^params.yaml differs from the last commit, and a recipe's changes go on "
                                         r"top of it; commit the change or restore it \(git checkout params.yaml\)"):
        start_from_committed_params(tmp_path)
    assert b"epochs: 3" in params.read_bytes()


FOLDED = ("description: a test\nshows: nothing\nset:\n  datasets: [speech]\n  data.speech.source: fsdd\n"
          "  data.speech.split: speakers\n  train.seeds: [0, 1]\n"
          "folds:\n  george: {data.speech.test_speakers: [george]}\n  theo:\n    data.speech.test_speakers: [theo]\n"
          "    train.seeds: [0]\n")


def test_loso_holds_out_each_fsdd_speaker_with_speakers_fsdd_voices_settings():
    """loso-fsdd: one fold per FSDD speaker, each holding out that speaker alone, every other setting as in
    speakers-fsdd-voices (whose held-out speaker is theo)."""
    from attention_cnn.data.fsdd import SPEAKERS

    recipe = recipes.load_recipe("loso-fsdd", ROOT)
    runs = recipes.expand(recipe)
    assert [r.fold for r in runs] == list(SPEAKERS)
    assert [r.experiment for r in runs] == [f"loso-fsdd-{s}" for s in SPEAKERS]
    speakers = recipes.recipe_config(recipes.load_recipe("speakers-fsdd-voices", ROOT),
                                     params_path=PARAMS).model_dump()
    for run, speaker in zip(runs, SPEAKERS):
        config = recipes.recipe_config(run, params_path=PARAMS).model_dump()
        assert config["data"]["speech"]["test_speakers"] == [speaker]
        config["data"]["speech"]["test_speakers"] = speakers["data"]["speech"]["test_speakers"]
        assert config == speakers, speaker
    for run in runs:   # DVC's rule for an experiment name (dvc.repo.experiments.utils.check_ref_format)
        ref = f"refs/exps/ab/{'c' * 38}/{run.experiment}"
        assert subprocess.run(["git", "check-ref-format", ref]).returncode == 0 and "/" not in run.experiment


def test_folds_expand_to_named_runs_with_the_folds_changes_last(tmp_path):
    write_recipe(tmp_path, "folded", FOLDED)
    recipe = recipes.load_recipe("folded", tmp_path)
    george, theo = recipes.expand(recipe)
    assert (george.experiment, theo.experiment, theo.name, theo.fold) == ("folded-george", "folded-theo", "folded",
                                                                           "theo")
    assert recipes.recipe_config(theo, params_path=PARAMS).train.seeds == [0]       # the fold's value wins
    assert recipes.recipe_config(george, params_path=PARAMS).train.seeds == [0, 1]
    assert recipes.set_flags(george)[-1] == "++data.speech.test_speakers=[george]"
    assert recipes.expand(recipes.load_recipe("two", write_recipe(tmp_path, "two", GOOD).parent.parent)) == \
        [recipes.load_recipe("two", tmp_path)]


@pytest.mark.parametrize("fold, message", [
    ("  theo: {data.speech.test_speaker: [theo]}\n",
     "recipes/folded.yaml: fold 'theo': unknown key 'data.speech.test_speaker' "
     "(did you mean 'data.speech.test_speakers'?)"),
    ("  theo: {train.mixed_precision: float16}\n",
     "recipes/folded.yaml: fold 'theo': train.mixed_precision must be one of auto, float32, bfloat16, got 'float16' "
     "(did you mean 'bfloat16'?)"),
])
def test_a_typo_in_a_fold_is_one_line_naming_file_fold_and_key(tmp_path, fold, message):
    write_recipe(tmp_path, "folded", FOLDED.split("folds:")[0] + "folds:\n  george: {}\n" + fold)
    recipe = recipes.load_recipe("folded", tmp_path)
    recipes.recipe_config(recipe, params_path=PARAMS)     # the shared settings are fine
    with pytest.raises(StageError) as err:
        for run in recipes.expand(recipe):
            recipes.recipe_config(run, params_path=PARAMS)
    text = str(err.value).replace(str(tmp_path) + os.sep, "")
    assert text == message


@pytest.mark.parametrize("folds, message", [
    ("folds: [george, theo]\n", "'folds' must be a mapping of fold names to their changes"),
    ("folds: {}\n", "'folds' must be a mapping of fold names to their changes"),
    ("folds:\n  Theo: {}\n", "fold 'Theo': a fold name is lower-case letters, digits and single dashes"),
    ("folds:\n  theo.2: {}\n", "fold 'theo.2': a fold name is lower-case letters"),
    ("folds:\n  theo: [theo]\n", "'folds.theo' must be a mapping of dotted params.yaml keys"),
    ("folds:\n  theo: {test speakers: [theo]}\n", "folds.theo: 'test speakers' is not a dotted params.yaml key"),
    ("folds:\n  theo: {data.speech.url: \"it's\"}\n", "fold 'theo': data.speech.url: \"it's\": quotes, backslashes"),
])
def test_fold_fields_are_checked(tmp_path, folds, message):
    write_recipe(tmp_path, "folded", GOOD + folds)
    with pytest.raises(StageError) as err:
        for run in recipes.expand(recipes.load_recipe("folded", tmp_path)):
            recipes.set_flags(run)
    assert str(err.value).startswith(f"{tmp_path / 'recipes' / 'folded.yaml'}: "), err.value
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_fold_may_not_take_another_recipes_name(tmp_path):
    write_recipe(tmp_path, "folded", FOLDED)
    write_recipe(tmp_path, "folded-theo", GOOD)
    with pytest.raises(StageError, match=r"recipes/folded.yaml: fold 'theo' runs as experiment 'folded-theo', the "
                                         r"name of the recipe .*recipes/folded-theo.yaml; rename"):
        recipes.load_recipe("folded", tmp_path)


def test_cli_folds_show_every_fold_and_run_only_queued(tmp_path):
    shutil.copy(PARAMS, tmp_path / "params.yaml")
    write_recipe(tmp_path, "folded", FOLDED)
    shown = cli(["show", "folded", "--fsdd", "https://example.invalid/fsdd.tar.gz"], tmp_path)
    lines = shown.stdout.splitlines()
    assert [line.split(" -S ")[0] for line in lines] == ["dvc exp run -n folded-george --queue",
                                                         "dvc exp run -n folded-theo --queue"], shown.stderr
    assert lines[0].endswith("-S '++data.speech.test_speakers=[george]' -S ++data.speech.url="
                             "https://example.invalid/fsdd.tar.gz")
    assert "'++train.seeds=[0]' -S '++data.speech.test_speakers=[theo]'" in lines[1]
    one = cli(["show", "folded", "--fold", "theo"], tmp_path)
    assert one.stdout.startswith("dvc exp run -n folded-theo -S ") and one.stdout.count("\n") == 1
    refused = cli(["run", "folded"], tmp_path)
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr == ("error: folded: 2 folds, one experiment each, run only queued: make recipe "
                              "NAME=folded QUEUE=1 (or --queue), then dvc queue start; or one fold in the workspace: "
                              "--fold george (FOLD=george)\n")
    unknown = cli(["run", "folded", "--queue", "--fold", "teo"], tmp_path)
    assert unknown.returncode == 1 and unknown.stderr == (
        "error: --fold teo: not a fold of recipes/folded.yaml (did you mean 'theo'?); folds: george, theo\n")
    write_recipe(tmp_path, "two-seeds", GOOD)
    plain = cli(["show", "two-seeds", "--fold", "theo"], tmp_path)
    assert plain.stderr == "error: --fold theo: recipes/two-seeds.yaml has no folds; drop --fold\n"


def test_cli_refuses_to_queue_folds_whose_experiments_exist(tmp_path):
    """Checked for every fold before any is queued: one line with the folds to remove, or the others alone."""
    shutil.copy(PARAMS, tmp_path / "params.yaml")
    write_recipe(tmp_path, "folded", FOLDED)
    sha = commit_with_experiment(tmp_path, "folded-theo")
    proc = cli(["run", "folded", "--queue"], tmp_path)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.endswith(
        f"error: experiment 'folded-theo' exists for this commit ({sha[:7]}); to run again: dvc exp remove "
        "folded-theo && python -m stages.recipe run folded --queue --fold theo, or keep both: python -m "
        "stages.recipe run folded --queue --fold theo --suffix 2; or only the others: python -m stages.recipe run "
        "folded --queue --fold george\n"), proc.stderr


def test_every_compare_with_names_a_recipe_that_differs_in_params_it_names():
    """A recipe measured against another (compare_with) names an existing recipe, and its config differs from that
    one's: the lever is a real change, not a copy."""
    for name in recipes.names(ROOT):
        recipe = recipes.load_recipe(name, ROOT)
        if recipe.compare_with:
            assert recipe.compare_with in recipes.names(ROOT), name
            other = recipes.load_recipe(recipe.compare_with, ROOT)
            assert recipes.recipe_config(recipe, params_path=PARAMS) != recipes.recipe_config(other, params_path=PARAMS)


BASE = ("description: the base\nshows: nothing\nset:\n  datasets: [speech]\n  data.speech.source: fsdd\n"
        "  data.speech.split: speakers\n  train.seeds: [0, 1]\n  train.epochs: 3\n"
        "folds:\n  george: {data.speech.test_speakers: [george]}\n  theo: {data.speech.test_speakers: [theo]}\n")


def test_based_on_starts_from_the_base_set_and_folds(tmp_path):
    """A lever's file holds the lever alone: the base's set (through its own base), this file's set on top, the
    base's folds unless the file has its own; what runs is what the whole settings written out would run."""
    write_recipe(tmp_path, "base", BASE)
    write_recipe(tmp_path, "lever", "description: x\nshows: y\nbased_on: base\n"
                                    "set:\n  train.epochs: 5\n  models.resnet.mixup_alpha: 0.2\ncompare_with: base\n")
    write_recipe(tmp_path, "lever-one", "description: x\nshows: y\nbased_on: lever\nset:\n  train.seeds: [0]\n"
                                        "folds:\n  theo: {data.speech.test_speakers: [theo]}\n")
    written_out = BASE.replace("  train.epochs: 3\n", "  train.epochs: 5\n  models.resnet.mixup_alpha: 0.2\n")
    write_recipe(tmp_path, "flat", written_out)
    lever, flat = recipes.load_recipe("lever", tmp_path), recipes.load_recipe("flat", tmp_path)
    assert lever.own_changes == {"train.epochs": 5, "models.resnet.mixup_alpha": 0.2}
    assert (lever.based_on, lever.compare_with, lever.own_folds, list(lever.folds)) == ("base", "base", False,
                                                                                        ["george", "theo"])
    assert [recipes.recipe_config(r, params_path=PARAMS) for r in recipes.expand(lever)] == \
        [recipes.recipe_config(r, params_path=PARAMS) for r in recipes.expand(flat)]
    assert [recipes.set_flags(r) for r in recipes.expand(lever)] == [recipes.set_flags(r) for r in recipes.expand(flat)]

    (one,) = recipes.expand(recipes.load_recipe("lever-one", tmp_path))   # two levels; its own folds replace
    config = recipes.recipe_config(one, params_path=PARAMS)
    assert (one.experiment, config.train.seeds, config.train.epochs, config.models["resnet"]["mixup_alpha"],
            config.data.speech.test_speakers) == ("lever-one-theo", [0], 5, 0.2, ["theo"])


@pytest.mark.parametrize("recipe, message", [
    ("based_on: bsae\n", "recipes/lever.yaml: based_on: no recipe 'bsae' ("),
    ("based_on: lever\n", "recipes/lever.yaml: 'based_on' must name another recipe (a file in recipes/), got 'lever'"),
    ("based_on: [base]\n", "recipes/lever.yaml: 'based_on' must name another recipe"),
    ("based_on: loop\n", "recipes/loop.yaml: based_on: lever -> loop -> lever is a cycle"),
])
def test_a_bad_base_is_one_line_naming_the_file(tmp_path, recipe, message):
    write_recipe(tmp_path, "base", BASE)
    write_recipe(tmp_path, "loop", "description: x\nshows: y\nbased_on: lever\nset: {}\n")
    write_recipe(tmp_path, "lever", "description: x\nshows: y\n" + recipe + "set: {}\n")
    with pytest.raises(StageError) as err:
        recipes.load_recipe("lever", tmp_path)
    text = str(err.value).replace(str(tmp_path) + os.sep, "")
    assert text.startswith(message) and "\n" not in text, text
    if "bsae" in message:
        assert "(did you mean 'base'?)" in text and text.endswith("recipes: base, lever, loop")


def test_a_mistake_in_the_base_names_the_base(tmp_path):
    write_recipe(tmp_path, "base", BASE.replace("train.epochs: 3", "train.epoch: 3"))
    write_recipe(tmp_path, "lever", "description: x\nshows: y\nbased_on: base\nset: {}\n")
    with pytest.raises(StageError) as err:
        recipes.recipe_config(recipes.load_recipe("lever", tmp_path), params_path=PARAMS)
    assert "unknown key 'train.epoch'" in str(err.value)
