"""What `dvc repro` reruns after each kind of change (issue #3's table), on a real DVC project.

Every row takes a private copy of ``built_project`` (the tiny project after one full
``dvc repro``), makes one change and works out which stages `dvc repro` would run:

* ``dvc status --json`` names the stages whose *own* declared deps (params keys, code
  files, data) changed: the ``direct`` column below.
* ``dvc repro --dry --force-downstream`` lists those plus everything downstream of them:
  the stages a real ``dvc repro`` runs, because a rerun stage writes new outputs (trained
  weights, timings) and every consumer then sees a changed dep. (It is an upper bound: a
  rerun whose outputs come out byte-identical, like a deterministic fetch, stops the
  cascade; no row of the table has one.) Plain ``--dry`` is *not*
  enough: it does not run anything, so downstream deps still hash as before and DVC
  reports them "didn't change" (checked in ``test_plain_dry_run_lists_only_direct_stages``).
* Rows with ``real=True`` also run ``dvc repro`` for real and parse its
  ``Running stage '...'`` lines: they must equal the dry-run plan (this proves the method),
  and afterwards the project must be up to date. Set ``DVC_INCREMENTAL_REAL=all`` to run
  every row for real (about 5 minutes more on 2 CPU cores).
"""
from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import pytest
import yaml

from conftest import copy_project, run

pytestmark = pytest.mark.slow
ATTENTION = "cnn_attention"   # the variant the table's rows change
RUNNING = re.compile(r"^Running stage '([^']+)'", re.MULTILINE)


class Layout:
    """The stage names of a built project, from its params.yaml (data sets x variants x seeds)."""

    def __init__(self, root: Path):
        params = yaml.safe_load((root / "params.yaml").read_text())
        self.datasets, self.variants = list(params["datasets"]), list(params["variants"])
        self.seeds = list(params["train"]["seeds"])
        self.fetch = {"fetch-mnist", "fetch-speech"}
        self.featurize = {f"featurize@{d}" for d in self.datasets}
        self.report = {"report"}
        self.all = self.fetch | self.featurize | self.train() | self.evaluate() | self.report

    def train(self, dataset: str | None = None, variant: str | None = None, exclude: str | None = None) -> set[str]:
        return {f"train@{d}-{v}-{k}" for d in self.datasets for v in self.variants for k in self.seeds
                if dataset in (None, d) and variant in (None, v) and v != exclude}

    def evaluate(self, **kw) -> set[str]:
        """The stages that read a trained model: evaluate and export."""
        return {s.replace("train@", f"{stage}@") for s in self.train(**kw) for stage in ("evaluate", "export")}

    def chain(self, dataset: str) -> set[str]:
        return ({f"featurize@{dataset}"} & self.featurize) | self.train(dataset) | self.evaluate(dataset=dataset)


def set_param(dotted: str, value) -> Callable[[Path], None]:
    def change(root: Path) -> None:
        params = yaml.safe_load((root / "params.yaml").read_text())
        *parents, key = dotted.split(".")
        node = params
        for name in parents:
            node = node[name]
        assert key in node and node[key] != value, f"{dotted} must exist and differ from {value!r}"
        node[key] = value
        (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return change


def append_comment(rel: str) -> Callable[[Path], None]:
    """A harmless edit: a trailing comment changes the file's hash, which is what DVC tracks."""
    def change(root: Path) -> None:
        path = root / rel
        path.write_text(path.read_text() + "\n# harmless edit by tests/pipeline/test_incremental.py\n")
    return change


Sets = Callable[[Layout], set[str]]


@dataclass(frozen=True)
class Row:
    id: str
    change: Optional[Callable[[Path], None]]
    must: Sets                    # must rerun
    must_not: Sets                # must not rerun
    direct: Sets                  # what `dvc status` reports changed (the stage's own deps changed)
    real: bool = False            # also run `dvc repro` for real


ROWS = [
    Row("nothing", None, lambda L: set(), lambda L: L.all, lambda L: set(), real=True),
    Row("features.speech.frame_step", set_param("features.speech.frame_step", 64),
        lambda L: L.chain("speech") | L.report,
        lambda L: L.fetch | L.chain("mnist"),
        lambda L: {"featurize@speech"}),
    Row("models.cnn_attention.dense_units", set_param(f"models.{ATTENTION}.dense_units", 16),
        lambda L: L.train(variant=ATTENTION) | L.evaluate(variant=ATTENTION) | L.report,
        lambda L: L.train(exclude=ATTENTION) | L.evaluate(exclude=ATTENTION) | L.featurize | L.fetch,
        # dry run only: test_experiments.py reruns this class of change for real (an `exp run` that changes one
        # cnn_attention param) and checks the stages that ran are exactly these
        lambda L: L.train(variant=ATTENTION)),
    Row("train.epochs", set_param("train.epochs", 2),
        lambda L: L.train() | L.evaluate() | L.report,
        lambda L: L.fetch | L.featurize,
        lambda L: L.train()),
    Row("report code", append_comment("attention_cnn/report/report.py"),
        lambda L: L.report, lambda L: L.all - L.report, lambda L: L.report, real=True),
    Row("cnn_attention model code", append_comment(f"attention_cnn/models/{ATTENTION}.py"),
        lambda L: L.train(variant=ATTENTION) | L.evaluate(variant=ATTENTION) | L.report,
        lambda L: L.train(exclude=ATTENTION) | L.evaluate(exclude=ATTENTION) | L.featurize | L.fetch,
        # the report reads the module's BASELINE and NOTE, so it depends on the file too
        lambda L: L.train(variant=ATTENTION) | L.report),
]


@pytest.fixture(scope="module")
def layout(built_project) -> Layout:
    L = Layout(built_project)
    if not {"mnist", "speech"} <= set(L.datasets) or ATTENTION not in L.variants or len(L.variants) < 2:
        pytest.skip(f"the table needs data sets mnist+speech and {ATTENTION} plus another variant: {vars(L)}")
    listed = set(run(["dvc", "stage", "list", "--name-only"], built_project).stdout.split())
    assert listed == L.all, f"dvc.yaml's stages {sorted(listed)} != expected {sorted(L.all)}"
    return L


def stages_in(stdout: str) -> set[str]:
    return set(RUNNING.findall(stdout))


def status(root: Path) -> dict:
    return json.loads(run(["dvc", "status", "--json"], root).stdout or "{}")


def planned(root: Path) -> set[str]:
    return stages_in(run(["dvc", "repro", "--dry", "--force-downstream"], root).stdout)


def check_sets(ran: set[str], r: Row, L: Layout, how: str) -> None:
    assert ran <= L.all, f"unknown stages {sorted(ran - L.all)} ({how})"
    missing, extra = r.must(L) - ran, r.must_not(L) & ran
    assert not missing, f"{r.id}: must rerun but {how} does not: {sorted(missing)}"
    assert not extra, f"{r.id}: must NOT rerun but {how} does: {sorted(extra)}"


def test_rows_cover_every_stage(layout):
    L = layout
    for r in ROWS:  # each row classifies every stage, so the expected set is exact
        must, must_not = r.must(L), r.must_not(L)
        assert must | must_not == L.all and not must & must_not, r.id
        assert r.direct(L) <= must, r.id


@pytest.mark.parametrize("r", ROWS, ids=[r.id for r in ROWS])
def test_what_reruns(built_project, layout, tmp_path, r, record_property):
    L = layout
    root = copy_project(built_project, tmp_path / "project")
    if r.change is not None:
        r.change(root)

    changed = status(root)
    assert set(changed) == r.direct(L), f"{r.id}: dvc status reports {json.dumps(changed, indent=1)}"
    plan = planned(root)
    check_sets(plan, r, L, "`dvc repro --dry --force-downstream`")

    if r.real or os.environ.get("DVC_INCREMENTAL_REAL") == "all":
        start = time.perf_counter()
        proc = run(["dvc", "repro"], root)
        seconds = time.perf_counter() - start
        ran = stages_in(proc.stdout)
        record_property("repro_seconds", round(seconds, 2))
        print(f"\n{r.id}: dvc repro took {seconds:.1f} s and ran {sorted(ran)}")
        check_sets(ran, r, L, "`dvc repro`")
        assert ran == plan, f"{r.id}: real run {sorted(ran)} != dry-run plan {sorted(plan)}"
        if r.change is None:
            assert "Running stage" not in proc.stdout
            assert "Data and pipelines are up to date" in proc.stdout, proc.stdout
        after = status(root)
        assert after == {}, f"{r.id}: not up to date after dvc repro: {after}"


def test_plain_dry_run_lists_only_direct_stages(built_project, layout, tmp_path):
    """Why the tests use --force-downstream: a plain dry run stops at the directly changed stage."""
    root = copy_project(built_project, tmp_path / "project")
    set_param("features.speech.frame_step", 64)(root)
    out = run(["dvc", "repro", "--dry"], root).stdout
    assert stages_in(out) == {"featurize@speech"}, out
    downstream = sorted(layout.train("speech"))[0]
    assert f"Stage '{downstream}' didn't change, skipping" in out
