"""dvc.yaml tells the truth: each stage's code deps are exactly the project modules its entry point imports.

The import closure is read statically (every ``import`` in a module, top level or inside a function), plus
the one dynamic import: the model registry loads ``attention_cnn/models/<variant>.py`` for ``--variant``.
Package ``__init__.py`` files count when they hold code (importing a submodule runs them), except
``stages/__init__.py``, which only marks scikit-learn absent to shorten TensorFlow's import: it changes no output,
and a test keeps it to exactly that.
"""
from __future__ import annotations

import ast
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("attention_cnn", "stages")


def module_file(name: str) -> Path | None:
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def has_code(init: Path) -> bool:
    body = ast.parse(init.read_text(encoding="utf-8")).body
    return any(not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)) for node in body)


# stages/__init__.py: its docstring, then exactly these statements (an import-time setting, no output changes).
STAGES_INIT = ["import sys", "sys.modules.setdefault('sklearn', None)"]


def is_settings_only(init: Path) -> bool:
    return init == ROOT / "stages" / "__init__.py" and [
        ast.unparse(node) for node in ast.parse(init.read_text(encoding="utf-8")).body[1:]] == STAGES_INIT


def imported_modules(path: Path) -> set[str]:
    """Project modules named by the imports of one file (``from pkg import mod`` resolves to ``pkg.mod``)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {n for n in names if n.split(".")[0] in PACKAGES and module_file(n)}


def closure(roots: list[str]) -> set[str]:
    """Repository-relative paths of every project file that importing ``roots`` runs."""
    seen: set[str] = set()
    todo = list(roots)
    files: set[Path] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        for i in range(1, len(parts)):  # parent packages run first
            todo.append(".".join(parts[:i]))
        path = module_file(name)
        if path is None:
            continue
        if path.name != "__init__.py" or (has_code(path) and not is_settings_only(path)):
            files.add(path)
        todo.extend(imported_modules(path))
    return {str(p.relative_to(ROOT)) for p in files}


def stages() -> list[tuple[str, str, set[str]]]:
    """(stage name, command, code deps) of every stage in dvc.yaml, matrix and foreach items resolved."""
    from dvc.repo import Repo

    with Repo(str(ROOT)) as repo:
        out = []
        for stage in repo.index.stages:
            if not getattr(stage, "cmd", None):
                continue
            deps = {str(Path(d.def_path)) for d in stage.deps if str(d.def_path).endswith(".py")}
            out.append((stage.addressing, stage.cmd, deps))
    return sorted(out)


def expected_code(name: str, cmd: str) -> set[str]:
    args = shlex.split(cmd)
    roots = [args[args.index("-m") + 1]]
    # The registry's importlib.import_module: a stage given --variant loads that variant; the report reads the
    # BASELINE and NOTE of every variant `variants` lists, which may be any of them.
    if "--variant" in args:
        roots.append(f"attention_cnn.models.{args[args.index('--variant') + 1]}")
    if name == "report":
        roots += [f"attention_cnn.models.{p.stem}" for p in (ROOT / "attention_cnn/models").glob("*.py")
                  if has_variant_metadata(p)]
    return closure(roots)


def has_variant_metadata(path: Path) -> bool:
    return "BASELINE" in {t.id for node in ast.parse(path.read_text()).body if isinstance(node, ast.Assign)
                          for t in node.targets if isinstance(t, ast.Name)}


STAGES = stages()


@pytest.mark.parametrize("name,cmd,deps", STAGES, ids=[s[0] for s in STAGES])
def test_code_deps_equal_the_import_closure(name, cmd, deps):
    expected = expected_code(name, cmd)
    assert deps == expected, (f"{name}: missing from dvc.yaml deps: {sorted(expected - deps)}; "
                              f"listed but not imported: {sorted(deps - expected)}")


def test_every_stage_runs_a_thin_entry_point():
    for name, cmd, _ in STAGES:
        assert re.search(r"python -m stages\.\w+", cmd), f"{name}: {cmd}"


def test_the_import_graph_has_no_cycle():
    graph = {}
    for path in sorted(ROOT.glob("attention_cnn/**/*.py")) + sorted(ROOT.glob("stages/*.py")):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        graph[name] = {m for m in imported_modules(path) if m != name and not name.startswith(m + ".")}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph[node]):
            target = target if target in graph else target.rsplit(".", 1)[0]
            if target not in graph:
                continue
            if state.get(target) == 1:
                raise AssertionError("import cycle: " + " -> ".join(trail[trail.index(target):] + [target]))
            if state.get(target) is None:
                visit(target, trail + [target])
        state[node] = 2

    for node in graph:
        if state.get(node) is None:
            visit(node, [node])


def test_stage_processes_import_tensorflow_without_scikit_learn():
    """stages/__init__.py holds only the scikit-learn marker (anything more must be a declared dep), and with it
    Keras still imports and builds a layer."""
    assert is_settings_only(ROOT / "stages" / "__init__.py"), "stages/__init__.py: code beyond the scikit-learn marker"
    code = ("import sys, stages, keras\n"
            "assert sys.modules['sklearn'] is None and not any(m.startswith('sklearn.') for m in sys.modules)\n"
            "print(keras.layers.Dense(2)(keras.ops.ones((1, 3))).shape)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0 and "(1, 2)" in proc.stdout, proc.stderr[-2000:]
