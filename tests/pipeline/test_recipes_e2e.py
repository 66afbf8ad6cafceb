"""A recipe end to end on tiny data (issue 14): `python -m stages.recipe run` makes the DVC experiment of its name
(params.yaml's comments kept in the experiment's commit), a second run of the name is refused in one line, and
`python -m stages.results` keeps the run in results/<recipe>/ and shows it in docs/results.md."""
from __future__ import annotations

import json

import pytest
import yaml

from attention_cnn import recipes
from attention_cnn.config import parse_config
from attention_cnn.results.experiments import experiments, read_at
from conftest import ROOT, TINY_PARAMS, make_project, run
from test_recipes import comments

pytestmark = pytest.mark.slow


def test_a_recipe_runs_as_a_named_experiment_and_reaches_the_results_page(tmp_path):
    root = make_project(tmp_path / "project", TINY_PARAMS)
    # strong-mnist (resnet vs resnet_se and resnet_cbam, cosine schedule, label smoothing, no validation slice, early stopping off:
    # a key params.yaml lacks), shrunk to seconds
    recipe = yaml.safe_load((ROOT / "recipes" / "strong-mnist.yaml").read_text())
    # (two of its three variants: one comparison is all the page needs, and each variant is three more stages)
    recipe["set"].update({"variants": ["resnet", "resnet_se"], "train.epochs": 1, "train.seeds": [0],
                          "train.batch_size": 256,
                          **{f"models.{v}.{k}": x for v in ("resnet", "resnet_se", "resnet_cbam")
                             for k, x in (("filters", 8), ("blocks_per_stage", 1), ("augment", "none"))}})
    (root / "recipes" / "tiny-strong.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "tiny recipe"], root)

    proc = run(["python", "-m", "stages.recipe", "run", "tiny-strong"], root)
    assert proc.stdout.startswith("dvc exp run -n tiny-strong -S '++datasets=[mnist]'"), proc.stdout[:300]
    (exp,) = [e for e in experiments(root) if e.name == "tiny-strong"]
    params_text = read_at(root, exp.commit, "params.yaml").decode()
    assert comments(params_text) == comments((root / "params.yaml").read_text())   # DVC's -S kept every comment
    expected = recipes.recipe_config(recipes.load_recipe("tiny-strong", root), params_path=root / "params.yaml")
    assert parse_config(yaml.safe_load(params_text)) == expected
    shown = json.loads(run(["dvc", "exp", "show", "--json"], root).stdout)
    assert "tiny-strong" in json.dumps(shown)

    again = run(["python", "-m", "stages.recipe", "run", "tiny-strong"], root, check=False)
    assert again.returncode == 1 and again.stderr.count("\n") == 1
    assert again.stderr.startswith("error: experiment 'tiny-strong' exists for this commit") and \
        "dvc exp remove tiny-strong" in again.stderr and "--suffix 2" in again.stderr

    out = run(["python", "-m", "stages.results"], root).stdout
    assert f"tiny-strong: results/tiny-strong <- experiment 'tiny-strong' ({exp.date})" in out, out
    kept = root / "results" / "tiny-strong"
    for name in ("results.csv", "comparisons.csv"):
        assert (kept / name).read_bytes() == read_at(root, exp.commit, f"reports/{name}")
    page = (root / "docs" / "results.md").read_text()
    section = page.split("## tiny-strong", 1)[1].split("\n## ", 1)[0]
    assert f"experiment `tiny-strong`, commit `{exp.baseline[:10]}` (experiment commit `{exp.commit[:10]}`)" in section
    assert "- Precision: float32 (`train.mixed_precision: float32`)." in section
    assert "oneDNN" in section and "Machine: not recorded" not in section
    assert "| mnist (embedded) | `resnet_se` | 0 |" in section and "`resnet_se` vs `resnet` | 0 |" in section
    assert "- `strong-mnist`: `make recipe NAME=strong-mnist`" in page.split("## Not run yet", 1)[1]

    # a fresh clone has results/ but no experiments: the same page
    (root / "docs" / "results.md").unlink()
    run(["python", "-m", "stages.results", "--no-collect"], root)
    assert (root / "docs" / "results.md").read_text() == page
