"""Tests for the report (attention_cnn/report/, run through stages/report.py) on a small hand-made tree of eval
and train outputs."""
from __future__ import annotations

import csv
import json
import math
import re
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

# Make `stages` importable when pytest is run as `.venv/bin/pytest` from the project root.
ROOT = Path(__file__).resolve().parents[2]

from attention_cnn.report import compare, document, figures, load, render, tables
from stages.report import main as report_main
from attention_cnn.common import StageError, run_main

DATASETS = ["speech", "mnist"]  # deliberately unsorted: outputs must come out sorted
VARIANTS = ["cnn_attention", "cnn"]
SEEDS = [1, 0]
CLASSES = ["0", "1", "2"]

# (dataset, variant, seed) -> (test_accuracy, test_loss, train_time_s, latency_ms_p50, epochs_run, source)
RUNS = {
    ("mnist", "cnn", 0): (0.98, 0.06, 80.0, 1.0, 3, "idx"),
    ("mnist", "cnn", 1): (0.96, 0.08, 84.0, 3.0, 3, "idx"),
    ("mnist", "cnn_attention", 0): (0.99, 0.05, 50.0, 2.0, 3, "idx"),
    ("mnist", "cnn_attention", 1): (0.97, 0.07, 54.0, 4.0, 2, "idx"),
    ("speech", "cnn", 0): (0.80, 2.90, 70.0, 10.0, 3, "fsdd"),
    ("speech", "cnn", 1): (0.82, 2.70, 72.0, 12.0, 3, "fsdd"),
    ("speech", "cnn_attention", 0): (0.85, 0.70, 54.0, 20.0, 2, "fsdd"),
    ("speech", "cnn_attention", 1): (0.83, 0.90, 52.0, 22.0, 3, "fsdd"),
}
PARAMS = {"mnist": {"cnn": 173738, "cnn_attention": 174027},
          "speech": {"cnn": 25229994, "cnn_attention": 25230283}}

# actual, predicted for the predictions.csv of every run (6 examples, 5 right)
PREDICTIONS = [("0", "0"), ("0", "0"), ("1", "1"), ("1", "2"), ("2", "2"), ("2", "2")]


def metrics_for(d: str, v: str, s: int) -> dict:
    acc, loss, train, p50, epochs, source = RUNS[(d, v, s)]
    return {
        "dataset": d, "variant": v, "seed": s, "source": source,
        "params": PARAMS[d][v], "model_size_bytes": PARAMS[d][v] * 4 + 1000,
        "epochs_run": epochs, "train_time_s": train, "test_time_ms": 900.0 + s,
        "latency_ms_p50": p50, "latency_ms_p95": p50 * 2, "test_loss": loss,
        "test_accuracy": acc, "best_val_accuracy": acc + 0.005, "num_test": len(PREDICTIONS),
        "class_names": CLASSES,
        "per_class": {c: {"precision": 0.9 if c != "2" else 0.5 + s / 10, "recall": 1.0, "support": 2}
                      for c in CLASSES},
    }


def write_run(eval_dir: Path, train_dir: Path, d: str, v: str, s: int, seed_dir: int | None = None) -> None:
    """Write one run's metrics.json, predictions.csv and history.csv (seed_dir: a copy under another seed)."""
    seed = s if seed_dir is None else seed_dir
    m = metrics_for(d, v, s)
    if seed_dir is not None:
        m["seed"] = seed
        m["test_accuracy"] = 0.0  # would spoil every mean if it were (wrongly) reported
    e = eval_dir / d / v / f"seed{seed}"
    e.mkdir(parents=True, exist_ok=True)
    (e / "metrics.json").write_text(json.dumps(m), encoding="utf-8")
    lines = ["index,actual,predicted,confidence"]
    lines += [f"{i},{a},{p},0.{90 - i}" for i, (a, p) in enumerate(PREDICTIONS)]
    (e / "predictions.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    write_attention_index(e / "attention", d, v, seed)
    t = train_dir / d / v / f"seed{seed}"
    t.mkdir(parents=True, exist_ok=True)
    hist = ["epoch,loss,accuracy,val_loss,val_accuracy"]
    hist += [f"{ep},{1.0 / ep:.4f},{0.5 + ep / 10 + s / 100:.4f},{1.2 / ep:.4f},{0.45 + ep / 10:.4f}"
             for ep in range(1, RUNS[(d, v, s)][4] + 1)]
    (t / "history.csv").write_text("\n".join(hist) + "\n", encoding="utf-8")


def write_attention_index(folder: Path, d: str, v: str, s: int, blocks=(), images=None, fixed=(), wrong=(),
                          wrong_total: int = 1) -> None:
    """An attention folder as evaluate writes it (default: a model without attention blocks)."""
    folder.mkdir(parents=True, exist_ok=True)
    index = {"dataset": d, "variant": v, "seed": s, "display": "image", "input_shape": [28, 28, 1],
             "examples_per_class": 1, "max_misclassified": 8, "misclassified_total": wrong_total,
             "blocks": list(blocks), "fixed": list(fixed), "misclassified": list(wrong), "images": images or {}}
    (folder / "index.json").write_text(json.dumps(index), encoding="utf-8")


def write_params(path: Path, datasets, variants, seeds) -> None:
    """The project's params.yaml (the report stage validates the whole file) with the runs to report."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    params.update(datasets=list(datasets), variants=list(variants))
    params["train"]["seeds"] = list(seeds)
    path.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")


def write_tree(root: Path, extra_seed: int | None = None) -> dict[str, Path]:
    """The input tree for DATASETS x VARIANTS x SEEDS (+ an unlisted extra seed) and params.yaml."""
    eval_dir, train_dir = root / "reports" / "eval", root / "reports" / "train"
    for (d, v, s) in RUNS:
        write_run(eval_dir, train_dir, d, v, s)
        if extra_seed is not None and s == 0:
            write_run(eval_dir, train_dir, d, v, s, seed_dir=extra_seed)
    params = root / "params.yaml"
    write_params(params, DATASETS, VARIANTS, SEEDS)
    return {"params": params, "eval": eval_dir, "train": train_dir, "raw": root / "data" / "raw",
            "out": root / "reports"}


def argv_for(paths: dict[str, Path], out: Path | None = None) -> list[str]:
    return ["--params", str(paths["params"]), "--eval-dir", str(paths["eval"]),
            "--train-dir", str(paths["train"]), "--raw-dir", str(paths["raw"]), "--out-dir", str(out or paths["out"])]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    paths = write_tree(root, extra_seed=7)  # seed 7 exists on disk but is not in params
    assert report_main(argv_for(paths)) == 0
    return paths


# ----------------------------------------------------------------------------- results.csv


def test_results_csv_columns_rows_order_and_values(built):
    df = pd.read_csv(built["out"] / "results.csv", dtype={"dataset": str, "variant": str, "source": str})
    assert list(df.columns) == load.RESULT_COLUMNS
    assert len(df) == 8  # 2 datasets x 2 variants x 2 seeds; the extra seed 7 is ignored
    keys = list(zip(df["dataset"], df["variant"], df["seed"]))
    assert keys == sorted(RUNS)
    for row in df.itertuples(index=False):
        acc, loss, train, p50, epochs, source = RUNS[(row.dataset, row.variant, row.seed)]
        assert row.test_accuracy == pytest.approx(acc)
        assert row.test_loss == pytest.approx(loss)
        assert row.train_time_s == pytest.approx(train)
        assert row.latency_ms_p50 == pytest.approx(p50)
        assert row.epochs_run == epochs
        assert row.source == source
        assert row.params == PARAMS[row.dataset][row.variant]
        assert row.num_test == 6


def test_results_csv_mean_and_sd_over_seeds(built):
    df = pd.read_csv(built["out"] / "results.csv", dtype={"dataset": str, "variant": str, "source": str})
    for (d, v), group in df.groupby(["dataset", "variant"]):
        accs = [RUNS[(d, v, s)][0] for s in SEEDS]
        assert group["test_accuracy_mean"].tolist() == pytest.approx([sum(accs) / 2] * 2)
        assert group["test_accuracy_sd"].tolist() == pytest.approx([abs(accs[0] - accs[1]) / 2 ** 0.5] * 2, abs=1e-6)
    one_seed = load.results_frame(load.load_all_metrics(built["eval"], ["mnist"], ["cnn"], [0]))
    assert one_seed["test_accuracy_mean"].tolist() == [0.98] and one_seed["test_accuracy_sd"].isna().all()


def test_collect_results_sorts_and_types(built):
    df = load.collect_results(built["eval"], DATASETS, VARIANTS, SEEDS)
    assert list(df.columns) == load.RESULT_COLUMNS
    assert list(zip(df["dataset"], df["variant"], df["seed"])) == sorted(RUNS)
    assert df["params"].dtype == "int64" and df["test_accuracy"].dtype == "float64"


# ----------------------------------------------------------------------------- metrics.json


def test_metrics_json_structure_and_means(built):
    m = json.loads((built["out"] / "metrics.json").read_text())
    assert sorted(m) == ["mnist", "speech"]
    for d in m:
        assert sorted(m[d]) == ["cnn", "cnn_attention"]
        for v in m[d]:
            assert sorted(m[d][v]) == ["latency_ms_p50", "test_accuracy", "test_loss", "train_time_s"]
    assert m["mnist"]["cnn"] == {"test_accuracy": 0.97, "test_loss": 0.07, "train_time_s": 82.0,
                                 "latency_ms_p50": 2.0}
    assert m["speech"]["cnn_attention"]["test_accuracy"] == pytest.approx(0.84)
    assert m["speech"]["cnn_attention"]["test_loss"] == pytest.approx(0.8)


def test_summary_metrics_rounding():
    df = pd.DataFrame({"dataset": ["a", "a"], "variant": ["v", "v"],
                       "test_accuracy": [0.123456, 0.123457], "test_loss": [1.0, 2.0],
                       "train_time_s": [1.00049, 1.0], "latency_ms_p50": [float("nan"), float("nan")]})
    out = compare.summary_metrics(df)
    assert out == {"a": {"v": {"test_accuracy": 0.1235, "test_loss": 1.5, "train_time_s": 1.0,
                               "latency_ms_p50": None}}}


# ----------------------------------------------------------------------------- plots


def test_learning_curve_and_timing_csvs(built):
    plots = built["out"] / "plots"
    assert sorted(p.name for p in plots.iterdir()) == [
        "learning_curves_mnist.csv", "learning_curves_speech.csv", "timing.csv"]
    lc = pd.read_csv(plots / "learning_curves_mnist.csv", dtype={"variant": str, "split": str})
    assert list(lc.columns) == ["epoch", "variant", "seed", "split", "accuracy", "loss"]
    # 2 variants x 2 seeds x epochs x 2 splits; cnn_attention seed 1 stopped after 2 epochs
    assert len(lc) == 2 * (3 + 3 + 3 + 2)
    assert set(lc["split"]) == {"train", "val"} and set(lc["seed"]) == {0, 1}
    row = lc[(lc.variant == "cnn") & (lc.seed == 1) & (lc.split == "val") & (lc.epoch == 2)].iloc[0]
    assert row.accuracy == pytest.approx(0.65) and row.loss == pytest.approx(0.6)
    timing = pd.read_csv(plots / "timing.csv", dtype={"dataset": str, "variant": str})
    assert list(timing.columns) == ["dataset", "variant", "train_time_s", "latency_ms_p50"]
    assert list(zip(timing.dataset, timing.variant)) == [
        ("mnist", "cnn"), ("mnist", "cnn_attention"), ("speech", "cnn"), ("speech", "cnn_attention")]
    assert timing.train_time_s.tolist() == [82.0, 52.0, 71.0, 53.0]


def test_load_histories_long_format(built):
    h = load.load_histories(built["train"], ["mnist"], ["cnn"], [0])
    assert list(h.columns) == ["dataset", "variant", "seed", "epoch", "split", "accuracy", "loss"]
    assert h["split"].tolist() == ["train"] * 3 + ["val"] * 3
    assert h["epoch"].tolist() == [1, 2, 3, 1, 2, 3]
    assert h["loss"].iloc[0] == pytest.approx(1.0) and h["loss"].iloc[3] == pytest.approx(1.2)


def test_confusion_matrix_counts():
    preds = pd.DataFrame({"actual": [a for a, _ in PREDICTIONS], "predicted": [p for _, p in PREDICTIONS]})
    cm = compare.confusion_matrix(preds, CLASSES)
    assert cm.values.tolist() == [[2, 0, 0], [0, 1, 1], [0, 0, 2]]
    assert list(cm.index) == CLASSES and list(cm.columns) == CLASSES


def test_figures_written(built):
    names = sorted(p.name for p in (built["out"] / "figures").iterdir())
    assert names == sorted([
        "accuracy.png", "timing.png", "learning_curves_mnist.png", "learning_curves_speech.png",
        "confusion_mnist_cnn.png", "confusion_mnist_cnn_attention.png",
        "confusion_speech_cnn.png", "confusion_speech_cnn_attention.png"])
    for name in names:
        data = (built["out"] / "figures" / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert b"tIME" not in data and b"Software" not in data


# ----------------------------------------------------------------------------- report


def test_html_is_self_contained(built):
    page = (built["out"] / "report.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert '<meta charset="utf-8">' in page and "<title>" in page
    assert page.count("data:image/png;base64,") == 8
    assert 'src="figures/' not in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "http://" not in page and "https://" not in page
    # a table per data set (comparison, study, per-class), the paired tests and the all-runs table
    assert page.count("<table>") == 2 * 3 + 2
    assert "<h2>Data set: mnist</h2>" in page and "<h2>Data set: speech</h2>" in page
    for number in ("83.3", "901.9", "0.057", "98.6", "52.4", "921.8", "0.048", "98.5",
                   "70.3", "313.3", "2.938", "81.0", "53.6", "637.8", "0.692", "84.7"):
        assert number in page, number
    assert "test set as validation" in page
    assert "Research question" in page
    # mnist: mean(0.99-0.98, 0.97-0.96) = +1.00 point; no significance claim
    assert "<code>cnn_attention</code> \u2212 <code>cnn</code>: +1.00 points test accuracy over 2 seeds" in page
    assert "not a significance test" in page
    assert "97.00 \u00b1 1.41" in page  # mnist cnn: mean 97 %, sd of (98, 96)
    # every run predicted the same: the paired tests see no difference, and the study's gaps are beside ours
    assert ("cnn_attention vs cnn on mnist: 0.0 points (95% CI 0.0 to 0.0), McNemar p = 1.00: "
            "no significant difference at \u03b1 = 0.05 (verdict from the pooled test, McNemar over the (seed, "
            "example) pairs; the seed-level test needs at least 3 seeds, this comparison has 2). "
            "The study published \u22120.1 points") in page
    assert "cnn_attention vs cnn on speech: 0.0 points" in page and "The study published +3.7 points" in page
    assert "98.00 \u00b1 1.41" in page  # mnist cnn_attention: mean 98 %, sd of (99, 97)


def test_markdown_matches(built):
    md = (built["out"] / "report.md").read_text(encoding="utf-8")
    assert md.startswith("# Does attention help a small CNN?")
    refs = re.findall(r"!\[[^\]]*\]\((figures/[^)]+)\)", md)
    assert len(refs) == 8
    for ref in refs:
        assert (built["out"] / ref).is_file()
    assert "| `cnn` | study (1 run, hosted notebook) | 98.6 | 0.057 | 83.3 | 901.9 | 15 |" in md
    assert "| `cnn_attention` | 2 | 84.00 \u00b1 1.41 |" in md  # speech comparison row
    assert "fsdd" in md and "idx" in md
    assert "data:image" not in md


def test_render_functions_are_pure():
    blocks = [document.Heading(1, "T & <x>"), document.Para("a `b<c>` d"),
              document.Table(("h|1", "h2"), (("1", "2"),), "cap"), document.Figure("figures/f.png", "F")]
    md = render.render_markdown(blocks)
    assert "# T & <x>" in md and "| h\\|1 | h2 |" in md and "![F](figures/f.png)" in md
    page = render.render_html(blocks, {"figures/f.png": b"\x89PNG"}, title="T")
    assert "T &amp; &lt;x&gt;" in page and "<code>b&lt;c&gt;</code>" in page
    assert "data:image/png;base64,iVBORw==" in page


# ----------------------------------------------------------------------------- errors


def test_missing_metrics_is_one_line_error(tmp_path, capsys):
    paths = write_tree(tmp_path)
    missing = paths["eval"] / "speech" / "cnn" / "seed1" / "metrics.json"
    missing.unlink()
    with pytest.raises(SystemExit) as exc:
        run_main(report_main, argv_for(paths))
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert str(missing) in err and "dvc repro" in err
    assert not (paths["out"] / "results.csv").exists()  # nothing written on failure


def test_missing_history_names_file(tmp_path):
    paths = write_tree(tmp_path)
    missing = paths["train"] / "mnist" / "cnn_attention" / "seed0" / "history.csv"
    missing.unlink()
    with pytest.raises(StageError, match=re.escape(str(missing))):
        load.load_histories(paths["train"], DATASETS, VARIANTS, SEEDS)


def test_metrics_bad_content(tmp_path):
    paths = write_tree(tmp_path)
    f = paths["eval"] / "mnist" / "cnn" / "seed0" / "metrics.json"
    m = json.loads(f.read_text())
    del m["test_loss"]
    f.write_text(json.dumps(m))
    with pytest.raises(StageError, match="test_loss"):
        load.collect_results(paths["eval"], ["mnist"], ["cnn"], [0])
    m["test_loss"] = 0.1
    m["variant"] = "cnn_attention"
    f.write_text(json.dumps(m))
    with pytest.raises(StageError, match="variant"):
        load.collect_results(paths["eval"], ["mnist"], ["cnn"], [0])
    f.write_text("{not json")
    with pytest.raises(StageError, match="not valid JSON"):
        load.collect_results(paths["eval"], ["mnist"], ["cnn"], [0])


def test_bad_params(tmp_path):
    """The selection is the config's datasets, variants and train.seeds; bad ones are one line naming the key."""
    from attention_cnn.config import load_config

    with pytest.raises(StageError, match="train.seeds"):
        load_config(ROOT / "params.yaml", {"train.seeds": None})
    with pytest.raises(StageError, match="integer"):
        load_config(ROOT / "params.yaml", {"train.seeds": ["a"]})
    with pytest.raises(StageError, match="datasets"):
        load_config(ROOT / "params.yaml", {"datasets": ["../x"]})
    sel = load.selection_from_params(load_config(ROOT / "params.yaml", {"train.seeds": [3, 1]}))
    assert sel.seeds == (3, 1)  # params.yaml order; the tables sort


# ----------------------------------------------------------------------------- determinism


def test_output_is_byte_identical_when_run_twice(built, tmp_path):
    out2 = tmp_path / "again"
    assert report_main(argv_for(built, out2)) == 0
    first = {p.relative_to(built["out"]): p.read_bytes() for p in built["out"].rglob("*")
             if p.is_file() and "eval" not in p.parts and "train" not in p.parts}
    second = {p.relative_to(out2): p.read_bytes() for p in out2.rglob("*") if p.is_file()}
    assert sorted(first) == sorted(second)
    for rel in first:
        assert first[rel] == second[rel], f"{rel} differs between runs"


def test_missing_first_seed_predictions_is_an_error(tmp_path):
    paths = write_tree(tmp_path)
    first = paths["eval"] / "mnist" / "cnn" / f"seed{SEEDS[0]}" / "predictions.csv"
    first.unlink()
    with pytest.raises(StageError, match=re.escape(str(first)) + ".*dvc repro"):
        report_main(argv_for(paths))


def test_single_seed_and_mixed_sources_wording(built):
    records = load.load_all_metrics(built["eval"], ["speech"], VARIANTS, [0])
    records[0]["source"] = "embedded"  # speech cnn from another source than cnn_attention
    df = load.results_frame(records)
    sel = load.Selection(("speech",), tuple(VARIANTS), (0,))
    blocks = document.build_report(df, load.per_class_frame(records), records, sel, document.figure_paths(sel))
    md = render.render_markdown(blocks)
    assert "over 1 seed (a single run)" in md and "+5.00 points test accuracy" in md
    assert "\u00b1" not in md.split("## Data set: speech")[1].split("### Compared")[0]  # no sd for one seed
    assert "Warning: the speech rows came from different data sources" in md


def test_skipped_input_files_are_counted_per_dataset(tmp_path):
    paths = write_tree(tmp_path)
    speech = paths["raw"] / "speech"
    speech.mkdir(parents=True)
    (speech / "source.json").write_text(json.dumps({"source": "folder", "skipped": 3, "duplicates_across_splits": 2}))
    # no data/raw/mnist/source.json at all: counts as 0
    assert report_main(argv_for(paths)) == 0
    md = (paths["out"] / "report.md").read_text(encoding="utf-8")
    mnist_part, speech_part = md.split("## Data set: speech")
    assert f"Skipped input files: 3 (see {(speech / 'skipped.csv').as_posix()})." in speech_part
    assert "2 test recording(s) are byte-identical to train recordings" in speech_part
    assert "Skipped input files: 0." in mnist_part.split("## Data set: mnist")[1]
    assert "Skipped input files: 3" in (paths["out"] / "report.html").read_text(encoding="utf-8")
    (speech / "source.json").write_text("{broken")
    with pytest.raises(StageError, match=re.escape(str(speech / "source.json")) + ".*not valid JSON"):
        report_main(argv_for(paths))


# ----------------------------------------------------------------------------- paired comparisons

# A second tree where the variants really differ, example by example. Test examples have indices 100, 103, ...
# (not row numbers) and cnn_attention's predictions.csv is written in reverse order: the join is on `index`.
PAIRED_VARIANTS = ["resnet_se", "cnn", "resnet", "cnn_attention"]
PAIRED_SEEDS = [0, 1]
N_TEST = 40
INDICES = [100 + 3 * i for i in range(N_TEST)]


def paired_correct(variant: str) -> list[bool]:
    """Which of the N_TEST examples each variant gets right (the same for both seeds)."""
    if variant == "cnn":            # 30 of 40
        return [i < 30 for i in range(N_TEST)]
    if variant == "cnn_attention":  # wrong on 0, 1 (cnn right); right on 30..37 (cnn wrong): 36 of 40
        return [(i < 30 and i not in (0, 1)) or 30 <= i < 38 for i in range(N_TEST)]
    return [i < 36 for i in range(N_TEST)]  # resnet and resnet_se predict exactly alike


def write_paired_tree(root: Path, datasets=("speech",), variants=PAIRED_VARIANTS, seeds=PAIRED_SEEDS,
                      correct_of=lambda v, s: paired_correct(v)):
    eval_dir, train_dir = root / "reports" / "eval", root / "reports" / "train"
    for d in datasets:
        for v in variants:
            for s in seeds:
                correct = correct_of(v, s)
                m = metrics_for(d, "cnn", 0)
                m.update(variant=v, seed=s, test_accuracy=sum(correct) / N_TEST, num_test=N_TEST)
                e = eval_dir / d / v / f"seed{s}"
                e.mkdir(parents=True, exist_ok=True)
                (e / "metrics.json").write_text(json.dumps(m), encoding="utf-8")
                rows = [f"{idx},{i % 3},{i % 3 if ok else (i + 1) % 3},0.5"
                        for i, (idx, ok) in enumerate(zip(INDICES, correct))]
                if v == "cnn_attention":
                    rows.reverse()
                (e / "predictions.csv").write_text("\n".join(["index,actual,predicted,confidence", *rows]) + "\n")
                write_attention_index(e / "attention", d, v, s)
                t = train_dir / d / v / f"seed{s}"
                t.mkdir(parents=True, exist_ok=True)
                (t / "history.csv").write_text("epoch,loss,accuracy,val_loss,val_accuracy\n1,1.0,0.5,1.1,0.4\n"
                                               "2,0.5,0.7,0.9,0.6\n", encoding="utf-8")
    write_params(root / "params.yaml", datasets, variants, seeds)
    return {"params": root / "params.yaml", "eval": eval_dir, "train": train_dir, "raw": root / "data" / "raw",
            "out": root / "reports"}


@pytest.fixture(scope="module")
def paired(tmp_path_factory):
    paths = write_paired_tree(tmp_path_factory.mktemp("paired"))
    assert report_main(argv_for(paths)) == 0
    return paths


def test_comparisons_csv_columns_and_values(paired):
    from attention_cnn.report import stats

    df = pd.read_csv(paired["out"] / "comparisons.csv", dtype={"seeds": str})
    assert list(df.columns)[:7] == ["dataset", "variant", "baseline", "delta_accuracy", "ci_low", "ci_high",
                                    "mcnemar_p"]
    assert list(df.columns) == compare.COMPARISON_COLUMNS
    # each attention variant against the baseline of its own backbone; never resnet vs cnn
    assert list(zip(df.dataset, df.variant, df.baseline)) == [("speech", "cnn_attention", "cnn"),
                                                              ("speech", "resnet_se", "resnet")]
    att, se = df.iloc[0], df.iloc[1]
    # pooled over 2 seeds: 80 pairs, 4 only cnn got right, 16 only cnn_attention got right
    assert (att.n_pairs, att.baseline_only_correct, att.variant_only_correct, att.seeds) == (80, 4, 16, "0 1")
    assert att.delta_accuracy == pytest.approx(0.15)
    assert att.mcnemar_p == pytest.approx(2 * sum(math.comb(20, k) for k in range(5)) / 2 ** 20, rel=1e-5)
    assert 0 < att.ci_low < 0.15 < att.ci_high
    base = [i < 30 for i in range(N_TEST)] * 2
    variant = paired_correct("cnn_attention") * 2
    assert (att.delta_accuracy, att.ci_low, att.ci_high) == pytest.approx(
        stats.paired_bootstrap_delta(base, variant, n_boot=compare.N_BOOT, seed=compare.BOOTSTRAP_SEED), abs=1e-6)
    assert (se.delta_accuracy, se.ci_low, se.ci_high, se.mcnemar_p) == (0.0, 0.0, 0.0, 1.0)
    assert (se.baseline_only_correct, se.variant_only_correct) == (0, 0)


POOLED_2 = (" (verdict from the pooled test, McNemar over the (seed, example) pairs; the seed-level test needs at "
            "least 3 seeds, this comparison has 2)")


def test_verdict_sentences_in_markdown_and_html(paired):
    from attention_cnn.report import stats

    base = [i < 30 for i in range(N_TEST)] * 2
    _, low, high = stats.paired_bootstrap_delta(base, paired_correct("cnn_attention") * 2)
    expected = (f"cnn_attention vs cnn on speech: +15.0 points (95% CI +{low * 100:.1f} to +{high * 100:.1f}), "
                "McNemar p = 0.012: significantly better at \u03b1 = 0.05" + POOLED_2
                + ". The study published +3.7 points "
                "(one run each, no test).")
    no = ("resnet_se vs resnet on speech: 0.0 points (95% CI 0.0 to 0.0), McNemar p = 1.00: "
          "no significant difference at \u03b1 = 0.05" + POOLED_2 + ".")
    md = (paired["out"] / "report.md").read_text(encoding="utf-8")
    page = (paired["out"] / "report.html").read_text(encoding="utf-8")
    for text in (md, page):
        assert expected in text and no in text
        assert "Is the difference real? Paired tests" in text
        assert "resnet_se vs resnet on speech: 0.0 points (95% CI 0.0 to 0.0), McNemar p = 1.00: " \
               "no significant difference at \u03b1 = 0.05" + POOLED_2 + ". The study" not in text  # no resnet
    table = md.split("## Is the difference real? Paired tests")[1].split("\n## ")[0]
    assert "| speech | `cnn_attention` | `cnn` | 0, 1 | +15.00 |" in table
    assert ("| +15.00 \u00b1 0.00 | needs \u2265 3 seeds | \u2014 | significantly better at \u03b1 = 0.05 "
            "| pooled test (McNemar) | +3.7 points |") in table
    assert "| no significant difference at \u03b1 = 0.05 | pooled test (McNemar) | \u2014 |" in table
    # the per-backbone difference lines no longer measure resnet_se against cnn
    assert "`resnet_se` \u2212 `resnet`: 0.00 points" in md and "`resnet_se` \u2212 `cnn`" not in md


def test_study_gaps_are_the_published_ones():
    assert tables.STUDY_GAPS == {("mnist", "cnn_attention", "cnn"): -0.1, ("speech", "cnn_attention", "cnn"): 3.7}


def test_baseline_mapping():
    assert compare.baseline_of("cnn_attention") == "cnn" and compare.baseline_of("cnn_mhsa") == "cnn"
    assert compare.baseline_of("resnet_cbam") == "resnet" and compare.baseline_of("resnet_se") == "resnet"
    assert compare.baseline_of("cnn") is None and compare.baseline_of("resnet") is None
    assert compare.baseline_of("vgg_se") == "vgg"  # the naming rule for variants that are not registered
    assert compare.comparison_pairs(["cnn_se", "resnet_se", "cnn"]) == [("cnn_se", "cnn")]  # resnet not run
    from attention_cnn.models import available

    for variant in available():  # every registered attention variant has a registered baseline
        if compare.baseline_of(variant) is not None:
            assert compare.baseline_of(variant) in available(), variant


def test_variant_modules_declare_baseline_and_note(tmp_path, monkeypatch):
    """The report's baselines and notes come from the variant modules (BASELINE, NOTE), through the registry."""
    from attention_cnn import models

    for variant in models.available():
        info = models.variant_info(variant)
        assert info.baseline is None or info.baseline in models.available(), variant
        assert isinstance(info.note, str) and "\n" not in info.note, variant
    assert models.variant_info("cnn_se").note.startswith("a squeeze-and-excitation block")
    assert document.variant_notes(["cnn", "cnn_attention", "resnet_se"]) == [
        "`resnet_se` adds " + models.variant_info("resnet_se").note]
    # a module's declaration is what the report uses: change it and the report's baseline changes
    import attention_cnn.models.cnn_se as cnn_se

    monkeypatch.setattr(cnn_se, "BASELINE", "resnet")
    assert compare.comparison_pairs(["cnn", "cnn_se", "resnet"]) == [("cnn_se", "resnet")]
    monkeypatch.delattr(cnn_se, "NOTE")  # a module that does not say what it is: one line naming the file
    with pytest.raises(StageError, match="attention_cnn/models/cnn_se.py: declare BASELINE .* and NOTE"):
        models.variant_info("cnn_se")


def test_report_stage_depends_on_every_variant_module():
    """The report reads each variant module's BASELINE and NOTE: dvc.yaml must rerun it when one changes."""
    from attention_cnn.models import available

    deps = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["report"]["deps"]
    missing = [v for v in available() if f"attention_cnn/models/{v}.py" not in deps]
    assert not missing, f"add attention_cnn/models/<v>.py to the report stage's deps in dvc.yaml for {missing}"


def test_paired_tests_need_the_same_test_examples(tmp_path):
    paths = write_paired_tree(tmp_path, variants=["cnn", "cnn_attention"], seeds=[0])
    f = paths["eval"] / "speech" / "cnn_attention" / "seed0" / "predictions.csv"
    lines = f.read_text().splitlines()
    lines[1] = "99999," + lines[1].split(",", 1)[1]
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(StageError, match="not on the same test examples"):
        report_main(argv_for(paths))
    assert not (paths["out"] / "comparisons.csv").exists()


def test_cli_bootstrap_options(tmp_path):
    paths = write_paired_tree(tmp_path, variants=["cnn", "cnn_attention"], seeds=[0])
    assert report_main(argv_for(paths) + ["--n-boot", "200", "--bootstrap-seed", "3", "--alpha", "0.01"]) == 0
    df = pd.read_csv(paths["out"] / "comparisons.csv")
    assert len(df) == 1 and df.delta_accuracy.iloc[0] == pytest.approx(0.15)
    md = (paths["out"] / "report.md").read_text(encoding="utf-8")
    assert "200 resamples" in md and "p < 0.01" in md
    # 1 seed: 40 pairs, b=2, c=8: p = 0.109 > 0.01
    assert "McNemar p = 0.11: no significant difference at \u03b1 = 0.01" in md


def seed_split_correct(variant: str, seed: int) -> list[bool]:
    """cnn: 30 of 40 on every seed. cnn_attention: +10 examples on seeds 0 and 2 (+25 points), 2 lost on seed 1
    (−5 points): pooled 20 vs 2 discordant pairs (McNemar p < 0.001), but the per-seed gaps disagree."""
    if variant == "cnn" or seed == 1:
        return [i < 30 and not (variant != "cnn" and i < 2) for i in range(N_TEST)]
    return [True] * N_TEST


def test_three_seeds_verdict_rests_on_the_seed_level_test(tmp_path):
    from attention_cnn.report import stats

    paths = write_paired_tree(tmp_path, variants=["cnn", "cnn_attention"], seeds=[0, 1, 2],
                              correct_of=seed_split_correct)
    assert report_main(argv_for(paths) + ["--n-boot", "2000"]) == 0
    df = pd.read_csv(paths["out"] / "comparisons.csv", dtype={"seeds": str, "seed_deltas": str})
    row = df.iloc[0]
    assert (row.n_seeds, row.seed_deltas, row.verdict_basis) == (3, "0.25 -0.05 0.25", "seed-level")
    assert (row.baseline_only_correct, row.variant_only_correct) == (2, 20) and row.mcnemar_p < 0.001
    assert row.seed_delta_mean == pytest.approx(0.15) and row.seed_delta_sd == pytest.approx(math.sqrt(0.03))
    # t = 0.15 / (sd / sqrt 3) = 1.5 with 2 df: p = 1 - 1.5 / sqrt(1.5^2 + 2)
    assert row.seed_t_p == pytest.approx(1 - 1.5 / math.sqrt(4.25), rel=1e-5)
    per_seed = [([i < 30 for i in range(N_TEST)], seed_split_correct("cnn_attention", s)) for s in range(3)]
    assert (row.seed_ci_low, row.seed_ci_high) == pytest.approx(
        stats.hierarchical_bootstrap(per_seed, n_boot=2000, seed=compare.BOOTSTRAP_SEED), abs=1e-6)
    assert row.seed_ci_low < 0 < row.seed_ci_high
    md = (paths["out"] / "report.md").read_text(encoding="utf-8")
    line = next(x for x in md.splitlines() if x.startswith("cnn_attention vs cnn on speech"))
    assert line.startswith("cnn_attention vs cnn on speech: +15.0 points mean over 3 seeds (per seed +25.0, "
                           "\u22125.0, +25.0; hierarchical bootstrap 95% CI \u2212")
    assert ("paired t-test over seeds p = 0.27: no significant difference at \u03b1 = 0.05 (verdict from the "
            "seed-level test, 3 seeds as the unit: paired t-test and hierarchical bootstrap CI); pooled over "
            "seeds for comparison: +15.0 points (95% CI +") in line
    assert "McNemar p < 0.001: significantly better at \u03b1 = 0.05. The study published +3.7 points" in line
    table = md.split("## Is the difference real? Paired tests")[1].split("\n## ")[0]
    assert "| +15.00 \u00b1 17.32 | \u2212" in table
    assert "| 0.27 | no significant difference at \u03b1 = 0.05 | seed-level test | +3.7 points |" in table


# ----------------------------------------------------------------------------- attention maps


def tiny_png(shade: float) -> bytes:
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(0.5, 0.5))
    fig.patch.set_facecolor((shade, shade, shade))
    return figures.figure_png(fig)


ATTENTION_BLOCK = {"name": "attention", "kind": "spatial", "layer": "attention_map", "map_shape": [26, 26],
                   "units": "gate", "shows": "the sigmoid gate"}


def write_attention_tree(root: Path) -> dict[str, Path]:
    """The standard tree, with maps for cnn_attention at the report's first seed: mnist with 2 of 3 misclassified
    examples drawn, speech with every test example right (no misclassified image)."""
    paths = write_tree(root)
    s = SEEDS[0]
    entry = {"index": 3, "actual": "1", "predicted": "2", "confidence": 0.6, "maps": {}}
    for d, wrong_total in (("mnist", 3), ("speech", 0)):
        folder = paths["eval"] / d / "cnn_attention" / f"seed{s}" / "attention"
        images = {"fixed": "fixed.png"} | ({"misclassified": "misclassified.png"} if wrong_total else {})
        for i, (name, file) in enumerate(sorted(images.items())):
            (folder / file).parent.mkdir(parents=True, exist_ok=True)
            (folder / file).write_bytes(tiny_png(0.2 + 0.3 * i + (0.1 if d == "speech" else 0)))
        write_attention_index(folder, d, "cnn_attention", s, blocks=[ATTENTION_BLOCK], images=images,
                              fixed=[entry] * 3, wrong=[entry] * 2 if wrong_total else [], wrong_total=wrong_total)
    return paths


def test_attention_maps_beside_the_misclassified_examples(tmp_path):
    paths = write_attention_tree(tmp_path)
    assert report_main(argv_for(paths)) == 0
    out, s = paths["out"], SEEDS[0]
    for d, names in (("mnist", ("fixed", "misclassified")), ("speech", ("fixed",))):
        for name in names:
            copied = out / "figures" / f"attention_{d}_cnn_attention_{name}.png"
            source = paths["eval"] / d / "cnn_attention" / f"seed{s}" / "attention" / f"{name}.png"
            assert copied.read_bytes() == source.read_bytes()
    assert not (out / "figures" / "attention_speech_cnn_attention_misclassified.png").exists()
    assert not any("_cnn_fixed" in p.name for p in (out / "figures").iterdir())  # cnn has no attention

    md = (out / "report.md").read_text(encoding="utf-8")
    page = (out / "report.html").read_text(encoding="utf-8")
    assert md.index("## Attention maps") < md.index("## Across data sets")
    assert f"### mnist / cnn_attention (seed {s})" in md and f"### speech / cnn_attention (seed {s})" in md
    assert "### mnist / cnn (seed" not in md
    assert ("![mnist / cnn_attention: the examples the model got wrong (the first 2 of 3 in test order), each beside "
            "its attention maps](figures/attention_mnist_cnn_attention_misclassified.png)") in md
    assert "(figures/attention_speech_cnn_attention_fixed.png)" in md
    assert "`cnn_attention` got every speech test example right" in md
    assert "Spatial attention (`attention`): the map is the sigmoid gate the block multiplies" in md
    assert page.count("data:image/png;base64,") == 8 + 3 and 'src="figures/' not in page
    assert "<h2>Attention maps</h2>" in page and "no attention block was found" not in page


def test_attention_variant_without_blocks_is_flagged(built):
    md = (built["out"] / "report.md").read_text(encoding="utf-8")
    assert "## Attention maps" in md
    assert "no attention block was found in the model of mnist / `cnn_attention` and speech / `cnn_attention`" in md


def test_attention_folder_problems_are_one_line_errors(tmp_path):
    paths = write_attention_tree(tmp_path)
    folder = paths["eval"] / "mnist" / "cnn_attention" / f"seed{SEEDS[0]}" / "attention"
    index = json.loads((folder / "index.json").read_text())
    (folder / "index.json").write_text(json.dumps(dict(index, variant="cnn")))
    with pytest.raises(StageError, match="'variant' is 'cnn' but the file's location says 'cnn_attention'"):
        report_main(argv_for(paths))
    (folder / "index.json").write_text(json.dumps(index))
    (folder / "misclassified.png").unlink()
    with pytest.raises(StageError, match="misclassified.png: listed in .* but missing"):
        report_main(argv_for(paths))
    (folder / "index.json").unlink()
    with pytest.raises(StageError, match=re.escape(str(folder / "index.json")) + ": not found.*dvc repro"):
        report_main(argv_for(paths))
    assert not (paths["out"] / "report.html").exists()  # nothing written on failure


def test_runs_without_validation_data_report_an_empty_best_val_accuracy(tmp_path):
    """train.validation_fraction: 0 leaves best_val_accuracy null; the report runs and leaves the cell empty."""
    paths = write_tree(tmp_path)
    for f in paths["eval"].rglob("metrics.json"):
        m = json.loads(f.read_text())
        m["best_val_accuracy"] = None
        f.write_text(json.dumps(m))
    assert report_main(argv_for(paths)) in (0, None)
    rows = list(csv.DictReader((paths["out"] / "results.csv").open()))
    assert rows and all(r["best_val_accuracy"] == "" for r in rows)
    assert all(r["test_accuracy"] != "" for r in rows)
    f = next(paths["eval"].rglob("metrics.json"))
    m = json.loads(f.read_text())
    m["test_loss"] = None   # other numbers stay required
    f.write_text(json.dumps(m))
    with pytest.raises(StageError, match="'test_loss' must be a number"):
        load.collect_results(paths["eval"], DATASETS, VARIANTS, SEEDS)


# ----------------------------------------------------------------------------- ensembles of the seeds

# per seed: p(class 0) of test examples 0..3 (true classes 0, 0, 1, 1); each seed alone gets 3 of 4 right
ENSEMBLE_P0 = {0: [0.9, 0.4, 0.2, 0.3], 1: [0.45, 0.8, 0.3, 0.4], 2: [0.8, 0.7, 0.6, 0.2]}


def test_ensemble_averages_the_seeds_probabilities_and_is_a_row_of_its_own(tmp_path):
    """The ensemble of three seeds that each get 3 of 4 right gets 4 of 4 (averaged probabilities, examples joined
    on their index whatever the row order); a variant whose files carry no probabilities gets no ensemble."""
    paths = write_paired_tree(tmp_path, variants=["cnn", "cnn_attention"], seeds=[0, 1, 2])
    actual = ["0", "0", "1", "1"]
    for s, p0 in ENSEMBLE_P0.items():
        rows = [f"{10 + i},{a},{0 if p >= 0.5 else 1},{max(p, 1 - p)},{p},{round(1 - p, 6)}"
                for i, (a, p) in enumerate(zip(actual, p0))]
        if s == 1:
            rows.reverse()
        (paths["eval"] / "speech" / "cnn" / f"seed{s}" / "predictions.csv").write_text(
            "\n".join(["index,actual,predicted,confidence,p_0,p_1", *rows]) + "\n")
        (paths["eval"] / "speech" / "cnn_attention" / f"seed{s}" / "predictions.csv").write_text(
            "\n".join(["index,actual,predicted,confidence", *(r.rsplit(",", 2)[0] for r in rows)]) + "\n")
    assert report_main(argv_for(paths) + ["--n-boot", "200"]) == 0
    df = pd.read_csv(paths["out"] / "ensembles.csv", dtype={"seeds": str})
    assert list(df.columns) == compare.ENSEMBLE_COLUMNS
    assert df.to_dict("records") == [{"dataset": "speech", "variant": "cnn", "n_seeds": 3, "seeds": "0 1 2",
                                      "num_test": 4, "accuracy": 1.0, "seed_accuracy_mean": 0.75, "gain": 0.25}]
    md = (paths["out"] / "report.md").read_text(encoding="utf-8")
    section = md.split("## Ensembles of the seeds")[1].split("\n## ")[0]
    assert "| speech | `cnn` ensemble | 0, 1, 2 | 100.00 | 75.00 | +25.00 |" in section
    assert "`cnn_attention` ensemble" not in md


def test_one_seed_has_no_ensemble(tmp_path):
    paths = write_paired_tree(tmp_path, variants=["cnn"], seeds=[0])
    assert report_main(argv_for(paths) + ["--n-boot", "200"]) == 0
    assert pd.read_csv(paths["out"] / "ensembles.csv").empty
    assert "Ensembles of the seeds" not in (paths["out"] / "report.md").read_text(encoding="utf-8")
