"""Named recipes (``recipes/<name>.yaml``, docs/results.md): list them, or run one as a DVC experiment named after it.

    python -m stages.recipe list
    python -m stages.recipe show strong-fsdd [--fsdd PATH]      # the dvc exp run command, not run
    python -m stages.recipe run strong-mnist [--queue] [--fsdd PATH] [--suffix 2]
    python -m stages.recipe run loso-fsdd --queue [--fold theo ...]   # a recipe with folds: one experiment each

``--fsdd``: where the FSDD archive is (a local .tar.gz or a URL) for a recipe on FSDD; without it the URL in
``params.yaml``. ``--suffix 2`` names the experiment ``<recipe>.2`` beside an earlier run of the recipe.
A recipe with folds queues the experiment ``<recipe>-<fold>`` per fold (``--fold``: only those); one fold may
also run in the workspace, several only queued (each workspace run leaves its params.yaml for the next).
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
from attention_cnn.config.errors import did_you_mean
from attention_cnn.results.collect import RESULTS_DIR
from attention_cnn.results.experiments import experiments, head
from attention_cnn.results.page import measured_time


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


def check_fold_names_free(root: Path, recipe: recipes.Recipe, runs: list[tuple[str, str]]) -> None:
    """The same for the ``(fold, experiment)`` runs of a folded recipe, checked before any is queued."""
    baseline = head(root)
    taken = {e.name for e in experiments(root) if e.baseline == baseline}
    clash = [(fold, name) for fold, name in runs if name in taken]
    if not clash:
        return
    again = shlex.join(["python", "-m", "stages.recipe", "run", recipe.name, "--queue",
                        *(a for fold, _ in clash for a in ("--fold", fold))])
    others = [fold for fold, name in runs if name not in taken]
    rest = (f"; or only the others: python -m stages.recipe run {recipe.name} --queue "
            + " ".join(f"--fold {f}" for f in others)) if others else ""
    which = "experiment {} exists" if len(clash) == 1 else "experiments {} exist"
    raise StageError(f"{which.format(', '.join(repr(n) for _, n in clash))} for this commit ({baseline[:7]}); "
                     f"to run again: dvc exp remove {' '.join(n for _, n in clash)} && {again}, or keep both: "
                     f"{again} --suffix 2{rest}")


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


def selected(recipe: recipes.Recipe, folds: list[str] | None) -> list[recipes.Recipe]:
    """The runs of the recipe: itself, or its folds (those named by ``--fold``, in the file's order)."""
    if not folds:
        return recipes.expand(recipe)
    if not recipe.folds:
        raise StageError(f"--fold {folds[0]}: {recipe.path} has no folds; drop --fold")
    for fold in folds:
        if fold not in recipe.folds:
            raise StageError(f"--fold {fold}: not a fold of {recipe.path}{did_you_mean(fold, list(recipe.folds))}; "
                             f"folds: {', '.join(recipe.folds)}")
    return [run for run in recipes.expand(recipe) if run.fold in folds]


def prepare(args: argparse.Namespace) -> tuple[recipes.Recipe, list[tuple[recipes.Recipe, list[str]]]]:
    """The recipe and per run (one, or one per fold) its ``dvc exp run`` arguments, every config checked first."""
    recipe = recipes.load_recipe(args.name)
    recipes.recipe_config(recipe)   # the recipe's own mistakes first (for folds: the shared `set`)
    runs = selected(recipe, args.fold)
    for run in runs:
        recipes.recipe_config(run)
    if args.action == "run" and len(runs) > 1 and not args.queue:
        raise StageError(f"{recipe.name}: {len(runs)} folds, one experiment each, run only queued: make recipe "
                         f"NAME={recipe.name} QUEUE=1 (or --queue), then dvc queue start; or one fold in the "
                         f"workspace: --fold {runs[0].fold} (FOLD={runs[0].fold})")
    fsdd = fsdd_location(args.fsdd)
    queue = getattr(args, "queue", False) or (args.action == "show" and len(runs) > 1)
    out = []
    for run in runs:
        config = recipes.recipe_config(run, fsdd=fsdd)
        name = experiment_name(run.experiment, getattr(args, "suffix", None))
        out.append((run, command(name, run, fsdd, queue)))
    if recipes.needs_fsdd(config) and fsdd is None:
        print(f"{recipe.name}: FSDD from {config.data.speech.url or 'its release URL'} "
              f"(a local copy: --fsdd PATH, or FSDD=PATH with make)", file=sys.stderr)
    return recipe, out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m stages.recipe", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="action", required=True)
    sub.add_parser("list", help="each recipe's name, description and measured training time")
    for action in ("show", "run"):
        p = sub.add_parser(action, help="print its dvc exp run command" if action == "show" else "run it")
        p.add_argument("name", help="a recipe: recipes/<name>.yaml")
        p.add_argument("--fsdd", metavar="PATH", help="the FSDD archive (a .tar.gz or a URL) for a recipe on FSDD")
        p.add_argument("--fold", action="append", metavar="FOLD", help="only this fold of a recipe with folds "
                                                                      "(repeat for several)")
        if action == "run":
            p.add_argument("--queue", action="store_true", help="queue it (dvc queue start runs the queue)")
            p.add_argument("--suffix", help="name the experiment <recipe>.<suffix> (a second run of a recipe)")
    args = ap.parse_args(argv)

    if args.action == "list":
        for name in recipes.names():
            recipe = recipes.load_recipe(name)
            folds = f" [{len(recipe.folds)} folds: {', '.join(recipe.folds)}]" if recipe.folds else ""
            measured = measured_time(RESULTS_DIR / name)   # from results/<name>/, written by make results
            print(f"{name:20} {recipe.description}" + folds
                  + (f" (trained in {measured})" if measured != "-" else " (not run yet)"))
        return 0
    recipe, runs = prepare(args)
    if args.action == "show":
        for _, dvc_args in runs:
            print(shlex.join(["dvc", "exp", "run", *dvc_args]))
        return 0
    if recipe.folds:
        check_fold_names_free(Path.cwd(), recipe, [(run.fold, dvc_args[1]) for run, dvc_args in runs])
    else:
        check_name_free(Path.cwd(), runs[0][1][1], recipe.name)
    start_from_committed_params(Path.cwd())
    for i, (run, dvc_args) in enumerate(runs):
        print(shlex.join(["dvc", "exp", "run", *dvc_args]), flush=True)
        code = subprocess.run([sys.executable, "-m", "attention_cnn.team.exp", "run", *dvc_args]).returncode
        if code != 0:
            if recipe.folds:
                queued = [r.experiment for r, _ in runs[:i]]
                print(f"error: {run.experiment} failed (exit {code})" + (f"; already queued: {', '.join(queued)}"
                                                                           if queued else ""), file=sys.stderr)
            return code
    if recipe.folds and args.queue:
        print(f"queued {len(runs)} experiment(s); run them: dvc queue start (dvc queue status shows them)",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_main(main)
