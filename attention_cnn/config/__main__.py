"""``python -m attention_cnn.config [--params params.yaml]``: ``params.yaml: OK``, or one error line and exit 1."""
from __future__ import annotations

import argparse

from attention_cnn.common import run_main
from attention_cnn.config import PARAMS_FILE, load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m attention_cnn.config", description=__doc__.splitlines()[0])
    parser.add_argument("--params", default=PARAMS_FILE, help="the params file (default: params.yaml)")
    args = parser.parse_args(argv)
    load_config(args.params, all_models=True)
    print(f"{args.params}: OK")
    return 0


if __name__ == "__main__":
    run_main(main)
