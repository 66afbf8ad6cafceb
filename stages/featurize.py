"""DVC stage `featurize`: one data set's raw files -> sharded TFRecords + spec.json (:mod:`attention_cnn.features.featurize`)."""
from __future__ import annotations

import argparse
from pathlib import Path

from attention_cnn.common import run_main
from attention_cnn.config import load_config
from attention_cnn.provenance import ParamsGuard
from attention_cnn.features.featurize import featurize
from attention_cnn.training.runtime import configure_tensorflow


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, choices=["mnist", "speech"])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--raw", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    config = load_config(args.params)
    params_guard = ParamsGuard(args.params, [f"features.{args.dataset}"])  # see attention_cnn.provenance
    configure_tensorflow()  # before TensorFlow loads
    spec = featurize(args.dataset, args.raw, args.out, config.features, progress=True)
    params_guard.check(f"featurize@{args.dataset}")  # a failed stage: DVC records nothing
    print(f"{args.dataset}: features {spec.shape} ({spec.storage_dtype}) train={spec.num_examples('train')} "
          f"test={spec.num_examples('test')} -> {args.out}")
    return 0


if __name__ == "__main__":
    run_main(main)
