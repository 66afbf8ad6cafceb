"""DVC stage `fetch-speech`: raw spoken-digit recordings + manifest (:mod:`attention_cnn.data.speech`)."""
from __future__ import annotations

import argparse
from pathlib import Path

from attention_cnn.common import run_main
from attention_cnn.config import load_config
from attention_cnn.data.fsdd import CHECKSUM_FILE
from attention_cnn.data.speech import fetch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--checksums", type=Path, default=CHECKSUM_FILE)
    parser.add_argument("--out", type=Path, default=Path("data/raw/speech"))
    args = parser.parse_args(argv)
    info = fetch(load_config(args.params).data, args.out, args.checksums)
    skipped = f", {info['skipped']} bad file(s) skipped" if info["skipped"] else ""
    held_out = f", held-out speakers: {', '.join(info['test_speakers'])}" if info["split"] == "speakers" else ""
    print(f"speech: {info['counts']['train']} train / {info['counts']['test']} test recordings "
          f"from {info['origin']} -> {args.out} (split: {info['split']}{held_out}){skipped}")
    return 0


if __name__ == "__main__":
    run_main(main)
