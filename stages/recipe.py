"""Named recipes (``recipes/<name>.yaml``, docs/results.md): list them, or run one as a DVC experiment named after it.

    python -m stages.recipe list
    python -m stages.recipe show strong-fsdd [--fsdd PATH]      # the dvc exp run command, not run
    python -m stages.recipe run strong-mnist [--queue] [--fsdd PATH] [--suffix 2]

``--fsdd``: where the FSDD archive is (a local .tar.gz or a URL) for a recipe on FSDD; without it the URL in
``params.yaml``. ``--suffix 2`` names the experiment ``<recipe>.2`` beside an earlier run of the recipe.
A run in the workspace goes through :mod:`attention_cnn.team.exp` (refused while another run is at work there).
"""
from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

from attention_cnn import recipes
from attention_cnn.common import StageError, run_main
from attention_cnn.results.experiments import experiments, head


def fsdd_location(value: str | None) -> str | None:
    """A URL as given; a local archive as an absolute path (queued runs work in a temporary copy elsewhere)."""
    if value is None or "://" in value:
        return value
    path = Path(value).expanduser()
    if not path.is_file():
        raise StageError(f"--fsdd {value}: no such file; give the FSDD release archive "
                         f"(free-spoken-digit-dataset-1.0.10.tar.gz) or its URL")
    return str(path.resolve())


def experiment_name(recipe: str, suffix: str | None) -> str:
    if suffix is None:
        return recipe
    if not recipes.NAME.fullmatch(suffix):
        raise StageError(f"--suffix {suffix!r}: use lower-case letters, digits and dashes (e.g. 2)")
    return f"{recipe}.{suffix}"


def check_name_free(root: Path, name: str, recipe: str) -> None:
    """One line when this commit already has an experiment of that name (DVC would refuse it later)."""
    baseline = head(root)
    if any(e.name == name and e.baseline == baseline for e in experiments(root)):
        raise StageError(f"experiment '{name}' exists for this commit ({baseline[:7]}); to run it again: "
                         f"dvc exp remove {name} && make recipe NAME={recipe}, or keep both: "
                         f"python -m stages.recipe run {recipe} --suffix 2")


def start_from_committed_params(root: Path) -> None:
    """DVC applies ``-S`` to the workspace's ``params.yaml``: a recipe must start from the committed one.

    A ``params.yaml`` left by an earlier experiment (byte for byte that experiment's, so kept in its commit) is
    restored from HEAD; any other change is the user's, and refused in one line.
    """
    from attention_cnn.common import atomic_write_bytes
    from attention_cnn.results.collect import yaml_data
    from attention_cnn.results.experiments import read_at

    path = root / recipes.PARAMS_FILE
    committed, now = read_at(root, head(root), recipes.PARAMS_FILE), path.read_bytes()
    if committed is None or yaml_data(committed) == yaml_data(now):
        return
    left_by = next((e.name for e in experiments(root) if read_at(root, e.commit, recipes.PARAMS_FILE) == now), None)
    if left_by is None:
        raise StageError(f"{path.name} differs from the last commit, and a recipe's changes go on top of it; "
                         f"commit the change or restore it (git checkout {path.name}), then run the recipe")
    atomic_write_bytes(path, committed)
    print(f"{path.name}: restored from the last commit (it held experiment '{left_by}''s params, kept in that "
          f"experiment)", file=sys.stderr)


def command(name: str, recipe: recipes.Recipe, fsdd: str | None, queue: bool) -> list[str]:
    args = ["-n", name] + (["--queue"] if queue else [])
    for flag in recipes.set_flags(recipe, fsdd):
        args += ["-S", flag]
    return args


def prepare(args: argparse.Namespace) -> tuple[recipes.Recipe, list[str]]:
    recipe = recipes.load_recipe(args.name)
    recipes.recipe_config(recipe)   # the recipe's own mistakes first
    fsdd = fsdd_location(args.fsdd)
    config = recipes.recipe_config(recipe, fsdd=fsdd)
    name = experiment_name(recipe.name, getattr(args, "suffix", None))
    dvc_args = command(name, recipe, fsdd, getattr(args, "queue", False))
    if recipes.needs_fsdd(config) and fsdd is None:
        print(f"{recipe.name}: FSDD from {config.data.speech.url or 'its release URL'} "
              f"(a local copy: --fsdd PATH, or FSDD=PATH with make)", file=sys.stderr)
    return recipe, dvc_args


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m stages.recipe", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="action", required=True)
    sub.add_parser("list", help="each recipe's name, description and time")
    for action in ("show", "run"):
        p = sub.add_parser(action, help="print its dvc exp run command" if action == "show" else "run it")
        p.add_argument("name", help="a recipe: recipes/<name>.yaml")
        p.add_argument("--fsdd", metavar="PATH", help="the FSDD archive (a .tar.gz or a URL) for a recipe on FSDD")
        if action == "run":
            p.add_argument("--queue", action="store_true", help="queue it (dvc queue start runs the queue)")
            p.add_argument("--suffix", help="name the experiment <recipe>.<suffix> (a second run of a recipe)")
    args = ap.parse_args(argv)

    if args.action == "list":
        for name in recipes.names():
            recipe = recipes.load_recipe(name)
            print(f"{name:20} {recipe.description}" + (f" ({recipe.time})" if recipe.time else ""))
        return 0
    recipe, dvc_args = prepare(args)
    if args.action == "show":
        print(shlex.join(["dvc", "exp", "run", *dvc_args]))
        return 0
    check_name_free(Path.cwd(), dvc_args[1], recipe.name)
    start_from_committed_params(Path.cwd())
    print(shlex.join(["dvc", "exp", "run", *dvc_args]), flush=True)
    return subprocess.run([sys.executable, "-m", "attention_cnn.team.exp", "run", *dvc_args]).returncode


if __name__ == "__main__":
    run_main(main)
