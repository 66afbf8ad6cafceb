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


def _run_json(folder, times, precision="float32", cpu="AMD EPYC"):
    import json

    folder.mkdir(parents=True)
    runs = [{"dataset": "mnist", "variant": "cnn", "seed": i, "mixed_precision": precision,
             "machine": {"cpu": cpu}, "train_time_s": t} for i, t in enumerate(times)]
    (folder / "run.json").write_text(json.dumps({"date": "2026-01-02T03:04:05+00:00", "runs": runs}))


def test_measured_time_sums_the_recorded_train_times_with_precision_and_cpu(tmp_path):
    from attention_cnn.results.page import measured_time

    _run_json(tmp_path / "a", [30.0, 60.0, 90.0])
    assert measured_time(tmp_path / "a") == "3 models, 3.0 min (float32, AMD EPYC)"
    _run_json(tmp_path / "b", [30.0, None])          # a run without its time: no total shown
    assert measured_time(tmp_path / "b") == "-"
    assert measured_time(tmp_path / "missing") == "-"


def test_the_cpu_label_tells_apart_two_cpus_of_one_name_by_their_bfloat16():
    from attention_cnn.results.page import cpu_label

    flags = {"avx2": True, "avx512f": True, "avx512_bf16": True, "amx_bf16": True}
    assert cpu_label({"cpu": "Xeon", **flags}) == "Xeon, AMX-BF16"
    assert cpu_label({"cpu": "EPYC", **flags, "amx_bf16": False}) == "EPYC, AVX512-BF16"
    assert cpu_label({"cpu": "Xeon", **flags, "amx_bf16": False, "avx512_bf16": False}) == "Xeon, AVX-512, no bfloat16"
    assert cpu_label({"cpu": "Core", "avx2": True, "avx512f": False}) == "Core, no AVX-512"
    assert cpu_label({"cpu": "AMD EPYC"}) == "AMD EPYC"           # an older run recorded the name only
    assert cpu_label(None) == "?"


def test_readme_table_lists_every_recipe_and_replaces_only_the_marked_block(tmp_path):
    from attention_cnn.results.page import README_BEGIN, README_END, readme_table, replace_readme_table

    (tmp_path / "recipes").mkdir()
    for name in ("alpha", "beta"):
        (tmp_path / "recipes" / f"{name}.yaml").write_text(
            f"description: the {name} run\nshows: what {name} answers\nset:\n  train.seeds: [0]\n")
    _run_json(tmp_path / "results" / "alpha", [120.0])
    block = readme_table(tmp_path / "results", tmp_path)
    assert "| [`alpha`](docs/results.md#alpha) | what alpha answers | 1 model, 2.0 min (float32, AMD EPYC) |" in block
    assert "| `beta` | what beta answers | not run yet | `make recipe NAME=beta` |" in block
    readme = f"# T\n\nintro\n\n{README_BEGIN}\nold table\n{README_END}\n\nafter\n"
    new = replace_readme_table(readme, block)
    assert new == f"# T\n\nintro\n\n{README_BEGIN}\n{block}\n{README_END}\n\nafter\n"
    assert replace_readme_table("# no markers\n", block) == "# no markers\n"


def test_a_runs_ensembles_get_their_table_and_older_runs_none(tmp_path):
    import json

    from attention_cnn.results.page import section

    folder = tmp_path / "r"
    folder.mkdir()
    (folder / "run.json").write_text(json.dumps({"date": "2026-01-02T03:04:05+00:00", "commit": "a" * 40,
                                                 "runs": [], "requested_precision": "float32"}))
    (folder / "results.csv").write_text("dataset,variant,seed,test_accuracy\nspeech,resnet,0,0.9\n")
    (folder / "comparisons.csv").write_text(",".join(compare.COMPARISON_COLUMNS) + "\n")
    assert "ensemble" not in section("r", folder)
    (folder / "ensembles.csv").write_text(",".join(compare.ENSEMBLE_COLUMNS) + "\n"
                                          "speech,resnet,3,0 1 2,500,0.912,0.8813,0.0307\n")
    lines = section("r", folder).splitlines()
    assert "| data set | ensemble | seeds averaged | ensemble accuracy | mean of the single models | gain (points) |" \
        in lines
    assert "| speech | `resnet` x 3 | 0, 1, 2 | 91.20 | 88.13 | +3.07 |" in lines
