"""DVC stage `train`: fit one variant on one data set with one seed (:mod:`attention_cnn.training.train`)."""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from attention_cnn import runs
from attention_cnn.common import run_main
from attention_cnn.config import load_config
from attention_cnn.provenance import ParamsGuard, train_sections, used_params
from attention_cnn.training.runtime import check_multi_worker, configure_tensorflow, is_chief, task_name
from attention_cnn.training.train import Checkpoint, fit, save_model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--variant", required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--features", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--history", type=Path, required=True, help="per-epoch metrics CSV")
    parser.add_argument("--summary", type=Path, required=True, help="epochs run, training time, best validation")
    parser.add_argument("--live-dir", type=Path, required=True)
    parser.add_argument("--checkpoint-dir", type=Path, default=None,
                        help="where per-epoch state goes when train.resume is true (not a DVC output)")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)

    config = load_config(args.params)
    train, model_settings = config.train, config.model(args.variant, args.params)
    params_guard = ParamsGuard(args.params, train_sections(args.variant))  # another exp run must not rewrite them
    check_multi_worker(train.strategy)  # multi_worker without TF_CONFIG: one line, before any work
    chief = is_chief()
    checkpoint_dir = args.checkpoint_dir
    if not chief and checkpoint_dir:
        checkpoint_dir = checkpoint_dir / task_name()  # each worker resumes its own copy of the (synchronous) state
    configure_tensorflow(seed=args.seed)
    # Multi-worker: only the chief logs with dvclive and writes the stage's outputs (model, history, summary);
    # the other workers train their part of every step and write nothing into the workspace.
    live = None
    batch_size = train.batch_size_for(args.dataset)
    if chief:
        from dvclive import Live  # only the chief logs

        shutil.rmtree(args.live_dir, ignore_errors=True)  # no stale steps from an earlier run
        live = Live(str(args.live_dir), dvcyaml=False, save_dvc_exp=False, report=None)
        live.log_params({"dataset": args.dataset, "variant": args.variant, "seed": args.seed, "epochs": train.epochs,
                         "batch_size": batch_size, "learning_rate": model_settings.learning_rate})
    print(f"train {args.dataset}/{args.variant} seed={args.seed}: batch={batch_size} epochs<={train.epochs}",
          flush=True)
    model, spec, rows, summary, record = fit(args.features, args.dataset, args.variant, args.seed, train,
                                             model_settings, live, verbose=1 if sys.stdout.isatty() else 2,
                                             checkpoint_dir=checkpoint_dir)
    if not chief:
        if checkpoint_dir:
            Checkpoint(checkpoint_dir, "").clear()
        print(f"trained {args.dataset}/{args.variant} seed={args.seed} as {task_name()} (not the chief: "
              f"nothing written; the chief logs and saves)")
        return 0
    params_guard.check(f"train@{args.dataset}-{args.variant}-{args.seed}")  # before any output is written
    summary["params_used"] = used_params(config, args.variant)  # the report compares it with dvc.lock
    live.end()
    runs.write_history(args.history, rows)
    runs.write_summary(args.summary, summary)
    save_model(args.out, model, spec, args.dataset, args.variant, args.seed, record)
    if checkpoint_dir:
        Checkpoint(checkpoint_dir, "").clear()  # finished: a later run must not resume from it
    print(f"trained {args.dataset}/{args.variant} seed={args.seed}: {summary['epochs_run']} epochs in "
          f"{summary['train_time_s']:.1f} s -> {args.out}")
    return 0


if __name__ == "__main__":
    run_main(main)
