"""DVC stage `fetch-mnist`: raw MNIST as the four IDX files + manifest (:mod:`attention_cnn.data.mnist`)."""
from __future__ import annotations

import argparse
from pathlib import Path

from attention_cnn.common import run_main
from attention_cnn.config import load_config
from attention_cnn.data.mnist import fetch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", type=Path, default=Path("data/raw/mnist"))
    args = parser.parse_args(argv)
    info = fetch(load_config(args.params).data.mnist, args.out)
    print(f"mnist: {info['counts']['train']} train / {info['counts']['test']} test digits from {info['origin']} "
          f"-> {args.out}")
    return 0


if __name__ == "__main__":
    run_main(main)
