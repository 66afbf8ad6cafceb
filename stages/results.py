"""``make results``: finished recipe runs -> ``results/<recipe>/`` (kept in git) -> ``docs/results.md`` and the
README's recipes table; ``reports/bench.json`` -> the generated table of ``docs/speed.md`` (:mod:`attention_cnn.results`).

    python -m stages.results                 # collect, then write both pages
    python -m stages.results --no-collect    # pages only, from results/ as committed (a fresh clone)
"""
from __future__ import annotations

import argparse
from pathlib import Path

from attention_cnn.common import atomic_write_text, run_main
from attention_cnn.results.collect import RESULTS_DIR, collect
from attention_cnn.results.page import has_results, readme_table, render, replace_readme_table
from attention_cnn.results.speed import write_speed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m stages.results", description=__doc__.splitlines()[0])
    ap.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    ap.add_argument("--page", type=Path, default=Path("docs/results.md"))
    ap.add_argument("--readme", type=Path, default=Path("README.md"), help="its recipes table is regenerated")
    ap.add_argument("--bench", type=Path, default=Path("reports/bench.json"))
    ap.add_argument("--speed-page", type=Path, default=Path("docs/speed.md"))
    ap.add_argument("--no-collect", action="store_true", help="do not look at experiments or the workspace")
    args = ap.parse_args(argv)
    root = Path.cwd()
    if not args.no_collect:
        for line in collect(root, args.results_dir):
            print(line)
    atomic_write_text(args.page, render(args.results_dir, root))
    print(f"{args.page}: {sum(1 for p in args.results_dir.glob('*') if has_results(p))} recipe(s) with results")
    if args.readme.is_file():
        text = args.readme.read_text(encoding="utf-8")
        new = replace_readme_table(text, readme_table(args.results_dir, root))
        if new != text:
            atomic_write_text(args.readme, new)
        print(f"{args.readme}: recipes table " + ("regenerated" if new != text else "unchanged"))
    print(write_speed(args.bench, args.speed_page))
    return 0


if __name__ == "__main__":
    run_main(main)
