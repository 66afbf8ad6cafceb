"""docs/results.md's comparison table: the seed-level columns where comparisons.csv has them, older files
(pooled test only) still rendered."""
from __future__ import annotations

import csv
import io

from attention_cnn.report import compare
from attention_cnn.results.page import comparison_table

OLD = ("dataset,variant,baseline,delta_accuracy,ci_low,ci_high,mcnemar_p,seeds,n_pairs,baseline_only_correct,"
       "variant_only_correct\nmnist,cnn_attention,cnn,-0.001,-0.01,0.008,1.0,0 1,2000,10,9\n")


def rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_an_older_comparisons_csv_renders_the_pooled_test_only():
    page = comparison_table(rows(OLD))
    assert page.splitlines()[0] == ("| data set | attention vs none | seeds | Δ accuracy (points) | 95 % CI (points) "
                                    "| McNemar | pairs |")
    assert page.splitlines()[2] == ("| mnist | `cnn_attention` vs `cnn` | 0, 1 | −0.1 | −1.0 to +0.8 | p = 1.00 "
                                    "| 2000 |")


def test_seed_level_columns_and_the_verdict_basis():
    header = ",".join(compare.COMPARISON_COLUMNS)
    # 3 seeds: per-seed gaps +25, -5, +25 points; pooled McNemar significant, the seed-level test not
    three = ("speech,cnn_attention,cnn,0.15,0.0917,0.2083,0.000121,0 1 2,120,2,20,3,0.25 -0.05 0.25,0.15,"
             "0.173205,0.272393,-0.05,0.25,seed-level")
    # 2 seeds: the seed-level test is not run, the verdict rests on McNemar
    two = "mnist,cnn_attention,cnn,0.15,0.075,0.225,0.0118,0 1,80,4,16,2,0.15 0.15,0.15,0,,,,pooled"
    lines = comparison_table(rows(f"{header}\n{three}\n{two}\n")).splitlines()
    assert lines[0].endswith("| pairs | seed-level Δ (points, mean ± sd) | seed-level 95 % CI (points) "
                             "| t-test over seeds | verdict | verdict rests on |")
    assert lines[2].endswith("| p < 0.001 | 120 | +15.0 ± 17.3 | −5.0 to +25.0 | p = 0.27 "
                             "| no significant difference at α = 0.05 | seed-level test |")
    assert lines[3].endswith("| p = 0.012 | 80 | +15.0 ± 0.0 | needs ≥ 3 seeds | — "
                             "| significantly better at α = 0.05 | pooled test (McNemar) |")
