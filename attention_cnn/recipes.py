"""Named recipes: ``recipes/<name>.yaml``, parameter changes on top of ``params.yaml`` that reproduce one result.

A recipe file::

    description: one line, what the recipe runs        # required
    shows: what the result answers                     # required
    set:                                               # dotted params.yaml keys, as `dvc exp run -S` takes them
      datasets: [speech]
      train.seeds: [0, 1, 2]
    folds:                                             # optional: one experiment per fold, '<recipe>-<fold>'
      theo: {data.speech.test_speakers: [theo]}        # the fold's changes on top of `set`
    compare_with: speakers-fsdd                        # optional: the recipe this one changes one thing of
    based_on: speakers-fsdd                            # optional: start from that recipe's set and folds

It is checked by the same typed config as ``params.yaml`` (:func:`attention_cnn.config.parse_config`), so a
misspelt key is one line naming the recipe file and the key. :func:`set_flags` turns it into ``dvc exp run -S``
values (Hydra's override grammar, ``++key=value``: set the key, adding it when ``params.yaml`` lacks it, e.g.
``train.early_stopping.enabled``); DVC writes them into ``params.yaml`` with ruamel's round trip, so the
experiment's ``params.yaml`` keeps every comment.

A recipe with ``folds`` runs once per fold (:func:`expand`): the experiment ``<recipe>-<fold>`` with ``set`` and
then the fold's own changes. ``set`` must validate by itself; a fold's mistake names the file and the fold.

``based_on`` names the recipe this one starts from, so a lever's file holds only the lever: the base's ``set``
(resolved through its own ``based_on``), then this file's ``set`` on top (a key in both takes this file's value);
the base's ``folds`` unless this file has its own. It is only where the settings come from, not what the result
is measured against: say that with ``compare_with`` (usually the same recipe).

``compare_with`` names the recipe a lever is measured against (the same recipe but for the lever):
``docs/results.md`` then sets the two runs' per-seed accuracies side by side with the difference's interval.
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from attention_cnn.common import StageError
from attention_cnn.config import PARAMS_FILE, Params, parse_config, read_yaml
from attention_cnn.config.errors import did_you_mean

RECIPES_DIR = Path("recipes")
FIELDS = ("description", "shows", "based_on", "set", "folds", "compare_with")
REQUIRED = ("description", "shows", "set")
NAME = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")   # a DVC experiment name and a file name; no '.' (see run_suffix)
DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
HYDRA_WORDS = {"true", "false", "null", "nan", "inf"}   # unquoted, Hydra reads these as other types
FSDD_URL_KEY = "data.speech.url"               # the one override that says where the FSDD archive is


@dataclass(frozen=True)
class Recipe:
    name: str
    path: Path
    description: str
    shows: str
    changes: dict[str, Any] = field(default_factory=dict)   # {dotted key: value}, in the file's order
    folds: dict[str, dict[str, Any]] = field(default_factory=dict)   # fold -> its changes on top of `changes`
    fold: str | None = None                                 # set on one fold of a folded recipe (see expand)
    compare_with: str | None = None                         # the recipe this one changes one thing of
    based_on: str | None = None                             # the recipe whose set and folds this one starts from
    own_changes: dict[str, Any] = field(default_factory=dict)   # the file's own `set` (changes: with the base's)
    own_folds: bool = False                                 # folds from the file itself, not from its base

    @property
    def experiment(self) -> str:
        """The DVC experiment it runs as: the recipe's name, or ``<recipe>-<fold>`` for one fold."""
        return f"{self.name}-{self.fold}" if self.fold else self.name

    @property
    def where(self) -> str:
        """Where a mistake is: the file, and the fold when it is one."""
        return f"{self.path}: fold '{self.fold}'" if self.fold else str(self.path)


def recipe_path(name: str, root: Path = Path(".")) -> Path:
    return root / RECIPES_DIR / f"{name}.yaml"


def names(root: Path = Path(".")) -> list[str]:
    return sorted(p.stem for p in (root / RECIPES_DIR).glob("*.yaml"))


def load_recipe(name: str, root: Path = Path(".")) -> Recipe:
    """The recipe ``recipes/<name>.yaml`` (fields checked; its params are checked by :func:`recipe_config`)."""
    path = recipe_path(name, root)
    if not path.is_file():
        known = names(root)
        raise StageError(f"no recipe '{name}' ({path} not found){did_you_mean(name, known)}; "
                         f"recipes: {', '.join(known) or 'none'}")
    recipe = read_recipe(path)
    for fold in recipe.folds:
        if recipe_path(f"{name}-{fold}", root).is_file():
            raise StageError(f"{path}: fold '{fold}' runs as experiment '{name}-{fold}', the name of the recipe "
                             f"{recipe_path(f'{name}-{fold}', root)}; rename the fold or that recipe")
    return recipe


def _changes(path: Path, where: str, value: Any) -> dict[str, Any]:
    """A mapping of dotted ``params.yaml`` keys to values (None: no changes)."""
    changes = value if value is not None else {}
    if not isinstance(changes, dict):
        raise StageError(f"{path}: '{where}' must be a mapping of dotted params.yaml keys to values (or empty)")
    for key in changes:
        if not isinstance(key, str) or not DOTTED.fullmatch(key):
            raise StageError(f"{path}: {where}: {key!r} is not a dotted params.yaml key (like train.epochs)")
    return dict(changes)


def _folds(path: Path, value: Any) -> dict[str, dict[str, Any]]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not value:
        raise StageError(f"{path}: 'folds' must be a mapping of fold names to their changes, "
                         f"e.g. folds: {{theo: {{data.speech.test_speakers: [theo]}}}}")
    folds = {}
    for fold, changes in value.items():
        if not isinstance(fold, str) or not NAME.fullmatch(fold):
            raise StageError(f"{path}: fold {fold!r}: a fold name is lower-case letters, digits and single dashes "
                             f"(it ends the experiment's name)")
        folds[fold] = _changes(path, f"folds.{fold}", changes)
    return folds


def expand(recipe: Recipe) -> list[Recipe]:
    """What runs: the recipe itself, or per fold a recipe named by its experiment ``<recipe>-<fold>``
    (``set``, then the fold's changes; a key in both takes the fold's value)."""
    if not recipe.folds:
        return [recipe]
    return [replace(recipe, changes={**recipe.changes, **changes}, folds={}, fold=fold)
            for fold, changes in recipe.folds.items()]


def _one_line(path: Path, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise StageError(f"{path}: '{key}' must be a non-empty string")
    if "\n" in value.strip():
        raise StageError(f"{path}: '{key}' must be one line")
    return value.strip()


def read_recipe(path: Path, _chain: tuple[str, ...] = ()) -> Recipe:
    """Read one recipe file (and the recipes it is ``based_on``); a problem with its fields is one line naming the
    file and the field."""
    path = Path(path)
    name = path.stem
    if not NAME.fullmatch(name):
        raise StageError(f"{path}: a recipe name is lower-case letters, digits and single dashes "
                         f"(it names a DVC experiment); rename the file")
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise StageError(f"{path}: expected a mapping with {', '.join(FIELDS)}")
    for key in data:
        if key not in FIELDS:
            raise StageError(f"{path}: unknown field '{key}'{did_you_mean(key, FIELDS)}; fields: {', '.join(FIELDS)}")
    for key in REQUIRED:
        if key not in data:
            raise StageError(f"{path}: missing field '{key}'")
    own = _changes(path, "set", data["set"])
    folds = own_folds = _folds(path, data.get("folds"))
    based_on = _other_recipe(path, name, "based_on", data.get("based_on"))
    changes = own
    if based_on is not None:
        base = _base(path, based_on, (*_chain, name))
        changes = {**base.changes, **own}
        folds = folds or base.folds
    return Recipe(name=name, path=path, description=_one_line(path, "description", data["description"]),
                  shows=_one_line(path, "shows", data["shows"]), changes=changes, folds=folds,
                  compare_with=_other_recipe(path, name, "compare_with", data.get("compare_with")),
                  based_on=based_on, own_changes=own, own_folds=bool(own_folds))


def _base(path: Path, base: str, chain: tuple[str, ...]) -> Recipe:
    """The recipe ``path`` is based on, read from the same folder; a missing one or a cycle is one line."""
    if base in chain:
        raise StageError(f"{path}: based_on: {' -> '.join((*chain, base))} is a cycle; base the recipe on one "
                         f"that does not lead back to it")
    base_path = path.parent / f"{base}.yaml"
    if not base_path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise StageError(f"{path}: based_on: no recipe '{base}' ({base_path} not found)"
                         f"{did_you_mean(base, known)}; recipes: {', '.join(known)}")
    return read_recipe(base_path, chain)


def _other_recipe(path: Path, name: str, key: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not NAME.fullmatch(value) or value == name:
        raise StageError(f"{path}: '{key}' must name another recipe (a file in {RECIPES_DIR}/), got {value!r}")
    return value


def apply_changes(params: dict, changes: dict[str, Any], source: Path | str) -> dict:
    """A copy of loaded ``params`` with ``{dotted key: value}`` set, as ``-S ++key=value`` does (adds missing keys)."""
    out = copy.deepcopy(params)
    for dotted, value in leaf_changes(changes):
        *parents, last = dotted.split(".")
        node, seen = out, []
        for part in parents:
            seen.append(part)
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise StageError(f"{source}: {dotted}: '{'.'.join(seen)}' is not a section in params.yaml "
                                 f"(it holds {child!r}); set '{'.'.join(seen)}' itself")
            node = child
        node[last] = copy.deepcopy(value)
    return out


def recipe_config(recipe: Recipe, params: dict | None = None, fsdd: str | None = None,
                  params_path: Path | str = PARAMS_FILE) -> Params:
    """The validated config the recipe runs: ``params`` (``params.yaml`` loaded; read from ``params_path`` when
    not given) with the recipe's changes and, for a recipe on FSDD, the archive location ``fsdd``. For a folded
    recipe this checks ``set`` alone; :func:`expand` gives each fold's."""
    if params is None:
        params = read_yaml(params_path)
        parse_config(params, str(params_path))   # a mistake in params.yaml itself is not the recipe's
    merged = apply_changes(params, recipe.changes, recipe.where)
    config = parse_config(merged, recipe.where)
    if fsdd is not None:
        if not needs_fsdd(config):
            raise StageError(f"{recipe.where}: this recipe does not use FSDD (data.speech.source is "
                             f"'{config.data.speech.source}'); drop the archive location")
        config = parse_config(apply_changes(merged, {FSDD_URL_KEY: fsdd}, recipe.where), recipe.where)
    return config


def needs_fsdd(config: Params) -> bool:
    return "speech" in config.datasets and config.data.speech.source == "fsdd"


def hydra_value(value: Any, where: str) -> str:
    """``value`` in Hydra's override grammar, read back by DVC as the same YAML value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        text = repr(value)
        if text in ("inf", "-inf", "nan"):
            raise StageError(f"{where}: {text} cannot be passed to dvc exp run -S; use a finite number")
        return text
    if isinstance(value, str):
        if "'" in value or "\\" in value or "${" in value:
            raise StageError(f"{where}: {value!r}: quotes, backslashes and ${{...}} cannot be passed through "
                             f"dvc exp run -S; choose a value without them")
        # names, paths and URLs go unquoted (readable commands); anything else in quotes
        plain = re.fullmatch(r"[A-Za-z_/][A-Za-z0-9_/.:@%+-]*", value) and value.lower() not in HYDRA_WORDS
        return value if plain else f"'{value}'"
    if isinstance(value, list):
        return "[" + ",".join(hydra_value(v, where) for v in value) + "]"
    if isinstance(value, dict) and not value:
        return "{}"
    raise StageError(f"{where}: {value!r} is not a value dvc exp run -S can set")


def leaf_changes(changes: dict[str, Any]) -> list[tuple[str, Any]]:
    """Mappings split into their leaves, so a change merges into a section as a dotted YAML key does."""
    out: list[tuple[str, Any]] = []
    for key, value in changes.items():
        if isinstance(value, dict) and value:
            out.extend(leaf_changes({f"{key}.{k}": v for k, v in value.items()}))
        else:
            out.append((key, value))
    return out


def set_flags(recipe: Recipe, fsdd: str | None = None) -> list[str]:
    """The ``-S`` values of ``dvc exp run`` for the recipe (and the FSDD archive location, when given)."""
    changes = dict(recipe.changes)
    if fsdd is not None:
        changes[FSDD_URL_KEY] = fsdd
    return [f"++{key}={hydra_value(value, f'{recipe.where}: {key}')}" for key, value in leaf_changes(changes)]


def run_suffix(experiment: str) -> tuple[str, str]:
    """``("strong-mnist", "2")`` for the experiment ``strong-mnist.2``: a recipe run again beside an earlier one."""
    recipe, _, suffix = experiment.partition(".")
    return recipe, suffix
