"""The suite's own scheduling under pytest-xdist: the files that share the session's ``built_project`` are one
unit, so the project is built once per run, not once per worker; a file with module fixtures is one unit."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import BUILT_PROJECT_FILES, ROOT, xdist_group

TESTS = Path(__file__).resolve().parents[1]


def test_built_project_files_are_exactly_the_files_that_use_it():
    users = {p.name for p in TESTS.glob("*/test_*.py")
             if p != Path(__file__).resolve() and "built_project" in p.read_text(encoding="utf-8")}
    assert users == set(BUILT_PROJECT_FILES)
    assert {xdist_group(TESTS / "pipeline" / name) for name in users} == {"built_project"}


def test_files_with_module_fixtures_are_groups_and_plain_unit_tests_are_not():
    assert xdist_group(TESTS / "pipeline" / "test_export.py") == "test_export.py"
    assert xdist_group(TESTS / "unit" / "test_train.py") == "test_train.py"       # a module-scoped fixture
    assert xdist_group(TESTS / "unit" / "test_variants.py") is None               # test by test


SUITE_CONFTEST = f"""
import importlib.util
spec = importlib.util.spec_from_file_location("project_conftest", {str(ROOT / "tests" / "conftest.py")!r})
project = importlib.util.module_from_spec(spec)
spec.loader.exec_module(project)
pytest_collection_modifyitems = project.pytest_collection_modifyitems
pytest_xdist_make_scheduler = project.pytest_xdist_make_scheduler


def pytest_collection_finish(session):   # each worker's order, as the scheduler receives it
    import os
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker:
        with open(f"order-{{worker}}.txt", "w") as fh:
            fh.write(" ".join(item.nodeid for item in session.items))
"""
SLOW_TESTS = "import time\n" + "".join(f"def test_{i}():\n    time.sleep(0.3)\n" for i in range(6))


@pytest.mark.slow  # starts pytest with two workers
def test_two_workers_run_a_group_in_one_worker(tmp_path):
    """The project's hooks in a small suite run by two real xdist workers: a tests/pipeline file's tests all run in
    one worker (xdist alone would deal them out one by one), while a plain unit file's tests go to either; and the
    group, collected last, is dealt out first."""
    (tmp_path / "tests" / "pipeline").mkdir(parents=True)
    (tmp_path / "tests" / "unit").mkdir()
    (tmp_path / "tests" / "conftest.py").write_text(SUITE_CONFTEST)
    (tmp_path / "tests" / "pipeline" / "test_grouped.py").write_text(SLOW_TESTS)
    (tmp_path / "tests" / "unit" / "test_single.py").write_text(SLOW_TESTS)
    # unit files first, as the project's testpaths collects them
    proc = subprocess.run([sys.executable, "-m", "pytest", "-n", "2", "-v", "-p", "no:cacheprovider", "tests/unit",
                           "tests/pipeline"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    ran = re.findall(r"\[(gw\d)\] .*?PASSED tests/(\w+)/test_\w+\.py::test_(\d)", proc.stdout)
    assert len(ran) == 12, proc.stdout[-3000:]
    assert len({worker for worker, folder, _ in ran if folder == "pipeline"}) == 1, ran
    assert {worker for worker, _, _ in ran} == {"gw0", "gw1"}, ran   # the other worker took the single tests
    for worker in ("gw0", "gw1"):   # each worker's collection puts the group first: it is dealt out first
        order = (tmp_path / f"order-{worker}.txt").read_text().split()
        assert [n.split("/")[1] for n in order] == ["pipeline"] * 6 + ["unit"] * 6, order
