"""The suite's own scheduling: the files that share the session's ``built_project`` run in one pytest-xdist
group, so the project is built once per run, not once per worker; a file with module fixtures is one group."""
from __future__ import annotations

from pathlib import Path

from conftest import BUILT_PROJECT_FILES, xdist_group

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
