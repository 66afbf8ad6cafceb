"""DVC stage `evaluate`: test metrics, predictions and attention maps of one trained model
(:mod:`attention_cnn.evaluation.evaluate`)."""
from __future__ import annotations

import argparse
from pathlib import Path

from attention_cnn import runs
from attention_cnn.common import run_main
from attention_cnn.config import load_config
from attention_cnn.provenance import ParamsGuard
from attention_cnn.evaluation.attention_maps import write_attention_dir
from attention_cnn.evaluation.evaluate import run_evaluation
from attention_cnn.training.runtime import configure_tensorflow


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--features", type=Path, required=True)
    parser.add_argument("--train-summary", type=Path, required=True, help="summary.json written by train")
    parser.add_argument("--metrics", type=Path, required=True, help="metrics.json to write")
    parser.add_argument("--predictions", type=Path, required=True, help="predictions.csv to write")
    parser.add_argument("--attention-dir", type=Path, default=None,
                        help="folder for the attention maps (index.json + PNGs); none written when omitted")
    parser.add_argument("--export-dir", type=Path, default=None,
                        help="the exported model (export stage): adds the end-to-end latency of a test file")
    parser.add_argument("--raw", type=Path, default=None, help="the fetch output holding that test file")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    if args.export_dir is not None and args.raw is None:
        parser.error("--export-dir needs --raw (the fetch output with the test files)")
    config = load_config(args.params)
    params_guard = ParamsGuard(args.params, ["evaluate"])  # see attention_cnn.provenance
    configure_tensorflow(seed=0)
    result = run_evaluation(args.model_dir, args.features, args.train_summary, config.evaluate,
                            attention=args.attention_dir is not None)
    metrics = result.metrics
    if args.export_dir is not None:
        from attention_cnn.serving.predict import end_to_end_latency_ms

        metrics.update(end_to_end_latency_ms(args.export_dir, args.raw, config.evaluate.latency_repeats,
                                             config.evaluate.latency_warmup))
    params_guard.check(f"evaluate of {args.model_dir}")  # before any output is written
    if args.attention_dir is not None:
        write_attention_dir(args.attention_dir, result.attention_index, result.attention_images)
    runs.write_predictions(args.predictions, result.rows, result.metrics["class_names"])
    runs.write_metrics(args.metrics, metrics)
    maps = ""
    if args.attention_dir is not None:
        blocks = len(result.attention_index["blocks"])
        maps = (f", attention maps of {blocks} block{'s' if blocks != 1 else ''} -> {args.attention_dir}" if blocks
                else ", no attention blocks")
    print(f"evaluated {metrics['dataset']}/{metrics['variant']} seed={metrics['seed']}: "
          f"accuracy {metrics['test_accuracy']:.4f}, loss {metrics['test_loss']:.4f}, "
          f"latency p50 {metrics['latency_ms_p50']:.2f} ms"
          + (f" (file to label {metrics['e2e_latency_ms_p50']:.2f} ms)" if args.export_dir is not None else "")
          + f" -> {args.metrics.parent}{maps}")
    return 0


if __name__ == "__main__":
    run_main(main)
