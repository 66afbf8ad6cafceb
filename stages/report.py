"""DVC stage `report`: compare the variants over every run; tables, figures, report.md/html
(:mod:`attention_cnn.report.report`)."""
from __future__ import annotations

import argparse
from pathlib import Path

from attention_cnn.common import run_main
from attention_cnn.config import load_config
from attention_cnn.provenance import check_recorded_params
from attention_cnn.report import stats
from attention_cnn.report.compare import BOOTSTRAP_SEED, N_BOOT
from attention_cnn.report.load import selection_from_params
from attention_cnn.report.report import write_report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m stages.report", description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--eval-dir", default="reports/eval")
    ap.add_argument("--train-dir", default="reports/train")
    ap.add_argument("--raw-dir", default="data/raw", help="fetch outputs: {raw-dir}/{dataset}/source.json")
    ap.add_argument("--out-dir", default="reports")
    ap.add_argument("--n-boot", type=int, default=N_BOOT, help="bootstrap resamples for the paired CIs")
    ap.add_argument("--bootstrap-seed", type=int, default=BOOTSTRAP_SEED, help="seed of the bootstrap draws")
    ap.add_argument("--alpha", type=float, default=stats.ALPHA, help="significance level of the verdicts")
    ap.add_argument("--lock", default=None, help="dvc.lock: refuse runs whose recorded params differ from it")
    args = ap.parse_args(argv)
    sel = selection_from_params(load_config(args.params))
    if args.lock:
        check_recorded_params(args.lock, args.train_dir,
                              [(d, v, s) for d in sel.datasets for v in sel.variants for s in sel.seeds])
    runs, comparisons = write_report(sel, args.eval_dir, args.train_dir, args.raw_dir, args.out_dir, args.n_boot,
                                     args.bootstrap_seed, args.alpha)
    out = Path(args.out_dir)
    print(f"report: {runs} runs, {comparisons} paired comparisons -> {out / 'report.html'}, "
          f"{out / 'report.md'}, {out / 'results.csv'}, {out / 'comparisons.csv'}")
    return 0


if __name__ == "__main__":
    run_main(main)
