"""Benchmark of issue #4: ``python -m bench.run [--archive PATH] [--out reports/bench.json] [--quick]``.

Writes ``reports/bench.json`` and ``reports/bench.md`` and prints the JSON. Every headline
figure is a ratio of two things measured in this run, on the real Free Spoken Digit Dataset
(prepared from the release archive with :func:`attention_cnn.data.fsdd.prepare_fsdd` into a temporary
folder; nothing is written into the project except the two reports). Each measurement runs in
its own process (:mod:`bench.workers`). ``met`` says per key whether its goal is met; a goal that
is not met is reported as such, never adjusted.

- ``featurize_speedup_vs_study`` (reported, no goal): clips/s of our featurize stage (decode, batched |STFT|,
  float16, TFRecords written) / clips/s of the study's per-file ``tf.data`` map over the same WAV files.
- ``featurize_resampled_vs_native``: clips/s of the same featurize on the same clips written as 44.1 kHz stereo
  16-bit WAVs (outside the timing) / on the 8 kHz originals, in one process, ABBA.
- ``input_pipeline_overhead``: time of the training epoch of the seed speech cnn that reads our
  TFRecords (a fresh ``attention_cnn.features.tfrecords.batched`` pipeline) / the same epoch fed from the same
  arrays in memory (``from_tensor_slices``); later, cached epochs are in the details.
- ``stored_bytes_ratio``: bytes on disk per speech example (our TFRecords as configured in
  params.yaml) / raw float32 bytes (391*257*4); GZIP and ZLIB are measured beside it (size and
  read speed), and the seed cnn's test accuracy on float16 vs float32 features (met only when
  both the ratio and "accuracy unchanged within noise" hold).
- ``epoch_time_ratio_vs_study``: epoch time of the seed speech cnn through ``attention_cnn.training.train.fit``
  in float32 / the study's notebook code (per-file map every epoch, no cache, TensorFlow defaults), same
  clips, batch 16, validation on the test clips on both sides. ``epoch_time_ratio_vs_study_bf16``: ours in
  bfloat16, only on a CPU that computes it natively (AVX512-BF16/AMX), met only with the bfloat16 accuracy
  check within noise; elsewhere not measurable (``not_measurable`` says why) and a bfloat16 epoch is a lever.
- ``attention_epoch_ratio_vs_study``: the same for ``cnn_attention`` in float32 (the study's gate: Keras' Conv2D).
- ``gate_cost_ratio`` (float32) and ``gate_cost_ratio_bf16`` (native bfloat16 only): median train step time
  of ``cnn_attention`` / ``cnn``, same batches; Keras' Conv2D as the gate and a GateConv-vs-Conv2D check beside.
- ``cnn_step_vs_memory_floor`` (reported, no goal): cnn's float32 step / (bytes it must move, counted by
  :mod:`bench.memory_floor` from the built model, / numpy's copy bandwidth measured in the same process).
- ``feature_rss_growth_4x_data``: peak RSS of featurize on the recordings repeated 4 times / on 1x.
- ``noop_repro_s``: ``dvc repro`` with nothing to do; ``default_repro_s``: ``dvc repro`` of the
  default pipeline in a fresh copy of the project with an empty cache (full mode only).

Plus single-example latency and batch-64 throughput per variant on both input shapes, and
candidate levers (batched STFT, float16, compression, oneDNN, XLA, bfloat16) measured beside.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from attention_cnn.training.runtime import cpu_features  # TensorFlow-free: the flags `auto` and oneDNN follow

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ARCHIVE = ROOT.parent / "shared" / "data" / "fsdd" / "free-spoken-digit-dataset-1.0.10.tar.gz"
RESULT_TAG = "BENCH_RESULT "

GOALS = {  # key: (comparison, target, what)
    # retired as a goal (issue 16): the FFTs of the frames that hold sound take about the whole budget on 2 cores
    "featurize_speedup_vs_study": (None, None, "featurize clips/s vs the study's per-file tf.data map"),
    "input_pipeline_overhead": ("<=", 1.05, "epoch time, TFRecords via batched() vs arrays in memory"),
    "stored_bytes_ratio": ("<=", 0.5, "bytes per speech example on disk vs raw float32"),
    "epoch_time_ratio_vs_study": ("<=", 0.5, "speech cnn epoch time in float32, our train path vs the study's code"),
    "epoch_time_ratio_vs_study_bf16": ("<=", 0.35, "the same in bfloat16, where the CPU computes it natively"),
    "attention_epoch_ratio_vs_study": ("<=", 0.4, "speech cnn_attention epoch time in float32, ours vs the study's code"),
    "gate_cost_ratio": ("<=", 1.6, "train step time cnn_attention / cnn, float32 (about their ratio of multiply-adds)"),
    "gate_cost_ratio_bf16": ("<=", 1.6, "the same in bfloat16, where the CPU computes it natively"),
    "featurize_resampled_vs_native": (">=", 0.5, "featurize clips/s, 44.1 kHz stereo copies vs the 8 kHz originals"),
    "cnn_step_vs_memory_floor": (None, None, "cnn float32 step time / (bytes it must move / copy bandwidth)"),
    "feature_rss_growth_4x_data": ("<=", 1.25, "featurize peak RSS, 4x data vs 1x"),
    "noop_repro_s": (None, None, "`dvc repro` with nothing to do (s)"),
    "default_repro_s": (None, None, "`dvc repro` of the default pipeline from an empty cache (s)"),
}

# Sizes. FSDD names are <digit>_<speaker>_<index>; choosing by index keeps every digit and speaker.
# full: featurize on all 3,000 recordings; training measurements on 480 train / 120 test clips.
SIZES = {
    "full": {"feature_index": None, "train_index": range(5, 13), "test_index": range(0, 2), "pipeline_rounds": 4,
             "pipeline_epochs": 1,
             "accuracy_epochs": 3, "epochs": 5, "latency_repeats": 30, "batch_calls": {"mnist": 20, "speech": 3},
             "lever_steps": 8, "gate_rounds": 4, "gate_steps": 5, "copy_mb": 512, "default_repro": True},
    "quick": {"feature_index": range(0, 50, 5), "train_index": range(5, 9), "test_index": range(0, 1),
              "pipeline_rounds": 2, "pipeline_epochs": 2, "accuracy_epochs": 2, "epochs": 3, "latency_repeats": 20,
              "batch_calls": {"mnist": 10, "speech": 2}, "lever_steps": 5, "gate_rounds": 2, "gate_steps": 4,
              "copy_mb": 256, "default_repro": False},
    # development smoke test only (--tiny): a few minutes, numbers meaningless
    "tiny": {"feature_index": range(0, 50, 25), "train_index": range(5, 6), "test_index": range(0, 1),
             "pipeline_rounds": 1, "pipeline_epochs": 2, "accuracy_epochs": 1, "epochs": 2, "latency_repeats": 3,
             "batch_calls": {"mnist": 1, "speech": 1}, "lever_steps": 2, "gate_rounds": 2, "gate_steps": 1,
             "copy_mb": 64, "default_repro": False},
}
RESAMPLED_RATE_HZ, RESAMPLED_CHANNELS = 44100, 2  # what most people's recordings are (issue 16)
LEVER_CONFIGS = ["baseline", "keras_adam", "keras_dropout", "no_dropout", "jit", "bf16", "bf16_jit"]


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- subprocesses

def worker_env(side: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    if side == "study":
        env.pop("TF_ENABLE_ONEDNN_OPTS", None)  # the study's environment: TensorFlow's default
    elif side == "ours-onednn-off":
        env["TF_ENABLE_ONEDNN_OPTS"] = "0"
    elif side == "ours-interop1":  # thread settings lever: one inter-op thread (TensorFlow's default: one per core)
        env["TF_NUM_INTEROP_THREADS"] = "1"
    return env


def run_worker(name: str, args: dict[str, Any], side: str = "ours") -> tuple[dict[str, Any], float, float]:
    """Run ``bench.workers.<name>`` in a fresh process; return (result, its peak RSS in MB, wall seconds)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "bench.workers", name, json.dumps(args)], cwd=ROOT,
                                stdout=out, stderr=err, env=worker_env(side))
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    lines = [line for line in stdout.splitlines() if line.startswith(RESULT_TAG)]
    if proc.returncode != 0 or not lines:
        tail = "\n".join((stdout + "\n" + stderr).strip().splitlines()[-15:])
        raise RuntimeError(f"worker {name} failed (exit {proc.returncode}):\n{tail}")
    return json.loads(lines[-1][len(RESULT_TAG):]), usage.ru_maxrss / 1024.0, wall


# --------------------------------------------------------------------------- data

def fsdd_index(name: str) -> int:
    return int(Path(name).stem.rsplit("_", 1)[1])


def write_manifest(folder: Path, rows: list[dict[str, Any]]) -> None:
    from attention_cnn.common import write_csv_rows

    keys = ["file", "label", "split", "speaker"]
    write_csv_rows(folder / "manifest.csv", keys, [[r[k] for k in keys] for r in rows])


def subset(raw: Path, rows: list[dict[str, Any]], folder: Path, keep, copies: int = 1) -> list[dict[str, Any]]:
    """A raw folder (hard links to ``raw``'s recordings + manifest) with the rows ``keep`` accepts, ``copies`` times."""
    (folder / "recordings").mkdir(parents=True, exist_ok=True)
    out = []
    for k in range(copies):
        for row in rows:
            if not keep(row):
                continue
            name = Path(row["file"]).name if copies == 1 else f"copy{k}-{Path(row['file']).name}"
            os.link(raw / row["file"], folder / "recordings" / name)
            out.append({**row, "file": f"recordings/{name}"})
    write_manifest(folder, out)
    return out


def write_resampled_copy(raw: Path, rows: list[dict[str, Any]], dest: Path, rate_hz: int = RESAMPLED_RATE_HZ,
                         channels: int = RESAMPLED_CHANNELS) -> list[dict[str, Any]]:
    """``rows``' recordings as ``rate_hz``, ``channels``-channel 16-bit WAVs under ``dest`` (same names, manifest).

    Decoded as featurize decodes them, resampled with ``scipy.signal.resample_poly`` (polyphase, band-limited),
    the same samples in every channel.
    """
    from fractions import Fraction

    import numpy as np
    from scipy.io import wavfile
    from scipy.signal import resample_poly

    from attention_cnn.data.audio import read_audio

    for row in rows:
        samples, rate_in = read_audio(raw / row["file"])
        ratio = Fraction(rate_hz, int(rate_in))
        wave = resample_poly(samples.astype(np.float64), ratio.numerator, ratio.denominator)
        pcm = np.clip(np.rint(wave * 32767.0), -32768, 32767).astype(np.int16)
        (dest / row["file"]).parent.mkdir(parents=True, exist_ok=True)
        wavfile.write(dest / row["file"], rate_hz, np.repeat(pcm[:, None], channels, axis=1))
    write_manifest(dest, rows)
    return rows


def bf16_not_measurable(features: dict[str, Any]) -> str | None:
    """None where the CPU of ``cpu_features()`` computes bfloat16 natively, else the note a bfloat16 key gets."""
    if features.get("avx512_bf16") or features.get("amx_bf16"):
        return None
    flags = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in features.items() if k != "cpu")
    return f"not measurable here: {features.get('cpu', 'this CPU')} does not compute bfloat16 natively ({flags})"


# --------------------------------------------------------------------------- dvc repro

def git_files(root: Path) -> list[str]:
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=root,
                         check=True, capture_output=True).stdout.decode()
    skip = ("models/", "reports/", "data/features/", "data/raw/", "checkpoints/", "bench/__pycache__")
    return sorted(f for f in out.split("\0") if f and (root / f).is_file() and not f.startswith(skip)
                  and f != "dvc.lock")


def dvc_env() -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    return dict(os.environ, PATH=bin_dir + os.pathsep + os.environ.get("PATH", ""), DVC_NO_ANALYTICS="1",
                PYTHONUNBUFFERED="1", GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="bench@example.invalid",
                GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="bench@example.invalid")


def timed(cmd: list[str], cwd: Path) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=dvc_env())
    return time.perf_counter() - start, proc


def tiny_params(params: dict[str, Any]) -> dict[str, Any]:
    """The test suite's tiny settings (tests/conftest.py TINY_PARAMS) on offline embedded data."""
    params["data"]["mnist"]["source"] = "embedded"
    speech = params["data"]["speech"]
    speech["source"] = "embedded"
    speech["embedded"].update({"train_voices": 2, "test_voices": 1})
    params["features"]["speech"].update({"clip_samples": 4000, "frame_step": 128, "examples_per_shard": 8})
    params["train"].update({"epochs": 1, "batch_size": {"mnist": 256, "speech": 8}})
    params["evaluate"].update({"latency_repeats": 3, "latency_warmup": 1})
    return params


def project_copy(dest: Path, tiny: bool) -> Path:
    """This project's files (as a clean clone would have them, plus work in progress) in a new git repo.

    No DVC cache, no run cache, no outputs: ``dvc repro`` there starts from an empty cache. ``tiny``
    swaps in the test suite's tiny settings; otherwise params.yaml is the project's default.
    """
    import yaml

    from attention_cnn.config import read_yaml

    for rel in git_files(ROOT):
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dest / rel)
    if tiny:
        params = read_yaml(dest / "params.yaml")  # YAML 1.2, as the stages and DVC read it
        (dest / "params.yaml").write_text(yaml.safe_dump(tiny_params(params), sort_keys=False))
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "bench"]):
        subprocess.run(cmd, cwd=dest, check=True, capture_output=True, env=dvc_env())
    return dest


def repro_times(tmp: Path, default: bool, repeats: int = 3) -> dict[str, Any]:
    """``dvc repro`` of a copy of the project from an empty cache, then the median of ``repeats`` no-op runs.

    ``default``: the default pipeline (params.yaml as it is: embedded data, every stage); the build
    time is ``default_repro_s``. Otherwise the copy has the test suite's tiny settings, and only the
    no-op time is a headline figure (the same 13 stages, so the same bookkeeping).
    """
    dvc = str(Path(sys.executable).parent / "dvc")
    cwd = project_copy(tmp / "project", tiny=not default)
    build_s, proc = timed([dvc, "repro"], cwd)
    if proc.returncode != 0:
        raise RuntimeError(f"dvc repro in the copy failed:\n{(proc.stdout + proc.stderr)[-2000:]}")
    stages_run = proc.stdout.count("Running stage")
    times = []
    for _ in range(repeats):
        seconds, proc = timed([dvc, "repro"], cwd)
        if proc.returncode != 0:
            raise RuntimeError(f"dvc repro (no-op) failed:\n{(proc.stdout + proc.stderr)[-2000:]}")
        if "Running stage" in proc.stdout or "up to date" not in proc.stdout.lower():
            raise RuntimeError(f"dvc repro was expected to do nothing but said:\n{proc.stdout[-2000:]}")
        times.append(seconds)
    return {"build_s": build_s, "stages_run": stages_run, "noop_s": statistics.median(times),
            "noop_runs_s": [round(t, 3) for t in times],
            "where": "copy of the project, empty cache, " + ("default params.yaml" if default else
                                                           "tiny settings as in tests/conftest.py, embedded data")}


# --------------------------------------------------------------------------- the benchmark

class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.mode = "tiny" if args.tiny else ("quick" if args.quick else "full")
        self.size = SIZES[self.mode]
        self.results: dict[str, Any] = {}
        self.details: dict[str, Any] = {}
        self.errors: dict[str, str] = {}
        self.step_s: dict[str, float] = {}
        self.load_at_start = [round(x, 2) for x in os.getloadavg()]
        self.bf16_note = bf16_not_measurable(cpu_features())  # None: bfloat16 is native here

    def step(self, name: str, fn) -> Any:
        if self.args.only and name not in self.args.only:
            return None
        log(f"{name} ...")
        start = time.perf_counter()
        try:
            value = fn()
        except Exception as exc:  # one failed measurement must not lose the others
            self.errors[name] = str(exc)
            log(f"{name} FAILED: {exc}")
            value = None
        self.step_s[name] = round(time.perf_counter() - start, 1)
        log(f"{name} done in {self.step_s[name]:.1f} s")
        return value

    def run(self) -> dict[str, Any]:
        from attention_cnn.data.fsdd import CHECKSUM_FILE, prepare_fsdd

        started = time.perf_counter()
        tmp = Path(tempfile.mkdtemp(prefix="bench-", dir=self.args.tmp))
        try:
            log(f"mode {self.mode}; scratch folder {tmp}")
            self.rows = prepare_fsdd(Path(self.args.archive), tmp / "fsdd", ROOT / CHECKSUM_FILE)
            self.raw_all = tmp / "fsdd"
            write_manifest(self.raw_all, self.rows)
            fi, tri, tei = self.size["feature_index"], self.size["train_index"], self.size["test_index"]
            self.raw_feat = self.raw_all if fi is None else tmp / "raw-feat"
            if fi is not None:
                subset(self.raw_all, self.rows, self.raw_feat, lambda r: fsdd_index(r["file"]) in fi)
            self.feat_rows = [r for r in self.rows if fi is None or fsdd_index(r["file"]) in fi]
            self.raw_train = tmp / "raw-train"
            subset(self.raw_all, self.rows, self.raw_train,
                   lambda r: fsdd_index(r["file"]) in (tri if r["split"] == "train" else tei))
            self.tmp = tmp
            from attention_cnn.config import load_config

            self.speech_cfg = load_config(self.args.params).features.speech
            self.step("featurize", self.featurize)
            self.step("featurize_resampled", self.featurize_resampled)
            self.step("storage", self.storage)
            self.step("rss", self.rss)
            self.step("train_features", self.train_features)
            self.step("accuracy", self.accuracy)
            self.step("pipeline", self.pipeline)
            self.step("epoch", self.epoch)
            self.step("attention_epoch", self.attention_epoch)
            self.step("train_levers", self.train_levers)
            self.step("gate_cost", self.gate_cost)
            self.step("inference", self.inference)
            self.step("repro", lambda: self.repro(tmp))
        finally:
            if not self.args.keep:
                shutil.rmtree(tmp, ignore_errors=True)
        return self.report(time.perf_counter() - started)

    # ---- steps

    def stft_args(self) -> dict[str, int]:
        return {k: getattr(self.speech_cfg, k) for k in ("clip_samples", "frame_length", "frame_step", "fft_length")}

    def featurize(self) -> None:
        # ours, study, study, ours (ABBA, each in its own process, files in the page cache): the better of our two
        # runs against the best of the study's four passes (two per process, the second with TensorFlow warm).
        # This machine's speed has two modes minutes apart; the order keeps one slow spell from hitting one side only.
        ours, rss, _ = run_worker("featurize_ours", {"params": self.args.params, "jobs": [
            {"raw": str(self.raw_feat), "out": str(self.tmp / "feat-main")}]})
        study_args = {"raw": str(self.raw_feat), "passes": 2, **self.stft_args()}
        study, _, _ = run_worker("study_featurize", study_args, "study")
        study2, _, _ = run_worker("study_featurize", study_args, "study")
        passes = study["passes_clips_per_s"] + study2["passes_clips_per_s"]  # in the order they ran
        study = max(study, study2, key=lambda r: r["clips_per_s"])
        study["passes_clips_per_s"] = passes
        again, _, _ = run_worker("featurize_ours", {"params": self.args.params, "jobs": [
            {"raw": str(self.raw_feat), "out": str(self.tmp / "feat-again")}]})
        shutil.rmtree(self.tmp / "feat-again", ignore_errors=True)
        run = ours["runs"][0]
        if run["shape"][:2] != study["shape"][:2] or run["clips"] != study["clips"]:
            raise RuntimeError(f"not the same work: ours {run['clips']} x {run['shape']}, "
                               f"study {study['clips']} x {study['shape']}")
        self.rss_1x, self.rss_import_1x = rss, ours["rss_after_import_mb"]
        self.main_features, self.main_bytes = self.tmp / "feat-main", run["bytes"]
        ours_cps = max(run["clips_per_s"], again["runs"][0]["clips_per_s"])
        self.results["featurize_speedup_vs_study"] = ours_cps / study["clips_per_s"]
        self.details["featurize_speedup_vs_study"] = {
            "clips": run["clips"], "ours_clips_per_s": round(ours_cps, 1),
            "ours_runs_clips_per_s": [round(run["clips_per_s"], 1), round(again["runs"][0]["clips_per_s"], 1)],
            "study_clips_per_s": round(study["clips_per_s"], 1),
            "study_passes_clips_per_s": [round(x, 1) for x in study["passes_clips_per_s"]],
            "read_files_only_clips_per_s": round(study["read_only_clips_per_s"], 1),
            "speedup_upper_bound_reading_only": round(study["read_only_clips_per_s"] / study["clips_per_s"], 2),
            "upper_bound_note": "a featurize that only opened and read each file (Python, one thread, page cache "
                                "warm) and did nothing else would be this many times faster than the study's pass",
            "ours_includes": "attention_cnn.features.featurize.featurize: decode (scipy) and |STFT| of the frames that overlap each "
                             "recording (one compiled call per chunk_clips clips, 2 worker threads), float16, "
                             "tf.train.Example, TFRecord write, statistics",
            "study_includes": "tf.data per-file map (AUTOTUNE): read_file, decode_wav, pad/cut, stft, abs, "
                              "expand dims; batches of 16 summed, nothing written",
            "ours_onednn": ours["onednn"], "study_onednn": study["onednn"],
            "amortized_note": "per pass; the study recomputes the spectrograms in every epoch of every model "
                              "(no cache), featurize runs once per feature setting",
        }

    def featurize_resampled(self) -> None:
        # The featurize clips as 44.1 kHz stereo 16-bit WAVs (written before any timing), then one featurize_ours
        # process: a warm-up job on a few clips of each kind (tracing the STFT and the resampler), then native,
        # resampled, resampled, native (ABBA); the better run of each side.
        native = self.raw_feat
        write_resampled_copy(self.raw_feat, self.feat_rows, self.tmp / "raw-44k")
        warm = [r for split in ("train", "test") for r in [r for r in self.feat_rows if r["split"] == split][:4]]
        subset(native, warm, self.tmp / "warm-8k", lambda r: True)
        write_resampled_copy(self.tmp / "warm-8k", warm, self.tmp / "warm-44k")
        folders = {"native": native, "resampled": self.tmp / "raw-44k"}
        jobs = [{"raw": str(self.tmp / "warm-8k"), "out": str(self.tmp / "rs-warm-8k")},
                {"raw": str(self.tmp / "warm-44k"), "out": str(self.tmp / "rs-warm-44k")}]
        order = ["native", "resampled", "resampled", "native"]
        jobs += [{"raw": str(folders[side]), "out": str(self.tmp / f"rs-{i}-{side}")} for i, side in enumerate(order)]
        res, _, _ = run_worker("featurize_ours", {"params": self.args.params, "jobs": jobs})
        for job in jobs:
            shutil.rmtree(job["out"], ignore_errors=True)
        # the resampler levers: the FFT resampler against tensorflow-io's, and a chunk per call against a clip
        rs, _, _ = run_worker("resamplers", {"raw": str(self.tmp / "raw-44k"), "clips": 100, "rounds": 3,
                                             "chunk": self.speech_cfg.chunk_clips,
                                             "rate_hz": self.speech_cfg.sample_rate_hz})
        ms = rs["ms_per_clip"]
        self.details.setdefault("levers", {})["resampler"] = {
            **rs, "speedup_vs_tensorflow_io": round(ms["tensorflow_io"] / ms["featurize_chunked"], 2),
            "speedup_chunk_vs_clip_per_call": round(ms["clip_per_call"] / ms["featurize_chunked"], 2),
            "note": "ms per 44.1 kHz clip (decoded beforehand) resampled to features.speech.sample_rate_hz: "
                    "featurize's FFT resampler over a chunk per call, the same a clip per call (as exports run "
                    "it; the same bits) and tensorflow-io's"}
        shutil.rmtree(self.tmp / "raw-44k", ignore_errors=True)
        runs = res["runs"][2:]
        cps = {side: [r["clips_per_s"] for r, o in zip(runs, order) if o == side] for side in folders}
        shapes = {tuple(r["shape"]) for r in runs}
        if len(shapes) != 1 or len({r["clips"] for r in runs}) != 1:
            raise RuntimeError(f"not the same work: shapes {shapes}, clips {[r['clips'] for r in runs]}")
        self.results["featurize_resampled_vs_native"] = max(cps["resampled"]) / max(cps["native"])
        self.details["featurize_resampled_vs_native"] = {
            "clips": runs[0]["clips"], "shape": runs[0]["shape"],
            "resampled_clips_per_s": round(max(cps["resampled"]), 1), "native_clips_per_s": round(max(cps["native"]), 1),
            "runs_clips_per_s": {side: [round(x, 1) for x in v] for side, v in cps.items()},
            "resampled_input": f"the same clips written as {RESAMPLED_RATE_HZ} Hz, {RESAMPLED_CHANNELS}-channel 16-bit "
                               "WAVs (scipy.signal.resample_poly, before the timing); featurize mixes them to mono "
                               "and resamples them to features.speech.sample_rate_hz",
            "how": "one featurize_ours process: a warm-up job of each kind on 8 clips, then native, resampled, "
                   "resampled, native; the better run of each side"}

    def storage(self) -> None:
        res, _, _ = run_worker("storage", {"features": str(self.main_features), "out": str(self.tmp / "storage"),
                                           "compressions": ["", "GZIP", "ZLIB", "ZLIB:1"]})
        configured = self.speech_cfg.compression or "none"
        # The headline: the bytes our featurize stage wrote (feat-main), per example, against raw float32.
        self.results["stored_bytes_ratio"] = (self.main_bytes / res["examples"]) / res["raw_float32_bytes_per_example"]
        opts = res["options"]
        base = opts["none"]["read_examples_per_s"]
        self.details["stored_bytes_ratio"] = {
            "configured": {"storage_dtype": res["storage_dtype"], "compression": configured},
            "examples": res["examples"], "raw_float32_bytes_per_example": res["raw_float32_bytes_per_example"],
            "featurize_output_bytes": self.main_bytes,
            "options": {name: {"ratio_vs_float32": round(o["ratio_vs_float32"], 4),
                               "bytes_per_example": round(o["bytes_per_example"]),
                               "read_examples_per_s": round(o["read_examples_per_s"], 1),
                               "read_speed_vs_uncompressed": round(o["read_examples_per_s"] / base, 3),
                               "rewrite_s": round(o["rewrite_s"], 2),
                               "compress_ms_per_example": round(1000 * (o["rewrite_s"] - opts["none"]["rewrite_s"])
                                                                / res["examples"], 3)}
                        for name, o in opts.items()},
            "read_examples_per_s_per_record_parse": round(res["read_examples_per_s_per_record_parse"], 1),
            "per_record_note": "one record per parse call, counted without re-batching: not like for like with "
                               "read_examples_per_s (load_split then batch(64)), so not a lever figure",
            "note": "every option holds the same records re-written (ZLIB:1 = zlib level 1; the others TensorFlow's "
                    "default level); compress_ms_per_example = extra write time over the uncompressed rewrite, "
                    "what featurize would pay; read = attention_cnn.features.tfrecords.load_split over train+test, best of 2, "
                    "files in page cache",
        }

    def rss(self) -> None:
        raw4 = self.tmp / "raw-4x"
        subset(self.raw_all, self.feat_rows, raw4, lambda r: True, copies=4)
        res, rss4, _ = run_worker("featurize_ours", {"params": self.args.params, "jobs": [
            {"raw": str(raw4), "out": str(self.tmp / "feat-4x")}]})
        shutil.rmtree(self.tmp / "feat-4x", ignore_errors=True)
        self.results["feature_rss_growth_4x_data"] = rss4 / self.rss_1x
        self.details["feature_rss_growth_4x_data"] = {
            "clips_1x": len(self.feat_rows), "clips_4x": res["runs"][0]["clips"], "peak_rss_mb_1x": round(self.rss_1x, 1),
            "peak_rss_mb_4x": round(rss4, 1), "clips_per_s_4x": round(res["runs"][0]["clips_per_s"], 1),
            "rss_after_import_mb_1x": round(self.rss_import_1x, 1), "rss_after_import_mb_4x": round(res["rss_after_import_mb"], 1),
            "growth_above_import_4x_vs_1x": round((rss4 - res["rss_after_import_mb"]) / max(1.0, self.rss_1x - self.rss_import_1x), 3),
            "how": "ru_maxrss of each featurize child process (os.wait4); 4x = every recording under 4 names; "
                   "most of the peak is TensorFlow itself (rss_after_import), the rest is the streaming featurize"}

    def train_features(self) -> None:
        """float16 (as configured) and float32 features of the training subset; chunk_clips=1 as a lever."""
        jobs = [{"raw": str(self.raw_train), "out": str(self.tmp / "train-f32"), "overrides": {"storage_dtype": "float32"}},
                {"raw": str(self.raw_train), "out": str(self.tmp / "train-f16"),
                 "overrides": {"storage_dtype": "float16"}},
                {"raw": str(self.raw_train), "out": str(self.tmp / "train-f16-chunk1"),
                 "overrides": {"storage_dtype": "float16", "chunk_clips": 1}}]
        res, _, _ = run_worker("featurize_ours", {"params": self.args.params, "jobs": jobs})
        runs = {Path(r["out"]).name: r for r in res["runs"]}
        self.train_f16, self.train_f32 = self.tmp / "train-f16", self.tmp / "train-f32"
        self.details.setdefault("levers", {}).update({
            "featurize_batched_stft": {
                "chunk_clips_64_clips_per_s": round(runs["train-f16"]["clips_per_s"], 1),
                "chunk_clips_1_clips_per_s": round(runs["train-f16-chunk1"]["clips_per_s"], 1),
                "clips": runs["train-f16"]["clips"]},
            "float16_storage": {"float16_bytes": runs["train-f16"]["bytes"], "float32_bytes": runs["train-f32"]["bytes"]},
        })  # update: featurize_resampled's lever is already there

    def accuracy(self) -> None:
        res, _, _ = run_worker("accuracy", {"params": self.args.params, "seed": 0, "epochs": self.size["accuracy_epochs"],
                                            "folders": {"float32": str(self.train_f32), "float16": str(self.train_f16),
                                                        "float16@bfloat16": str(self.train_f16)}})
        r = res["runs"]
        b = r["float16@bfloat16"]
        self.details.setdefault("levers", {})["bfloat16_training_accuracy"] = {
            "test_accuracy_bfloat16": b["test_accuracy"], "test_accuracy_float32": r["float16"]["test_accuracy"],
            "per_epoch_bfloat16": b["test_accuracy_per_epoch"], "train_time_s_bfloat16": b["train_time_s"],
            "train_time_s_float32": r["float16"]["train_time_s"],
            "within_noise": abs(b["test_accuracy"] - r["float16"]["test_accuracy"])
                            <= 2 * noise_sd([b["test_accuracy"], r["float16"]["test_accuracy"]], b["test_examples"]),
            "note": "same seed, data and epochs; train.mixed_precision=bfloat16 (Keras mixed_bfloat16) vs float32"}
        self.details.setdefault("stored_bytes_ratio", {})["accuracy"] = {
            "float32_test_accuracy": r["float32"]["test_accuracy"], "float16_test_accuracy": r["float16"]["test_accuracy"],
            "float32_per_epoch": r["float32"]["test_accuracy_per_epoch"],
            "float16_per_epoch": r["float16"]["test_accuracy_per_epoch"],
            "train_examples": r["float16"]["train_examples"], "test_examples": r["float16"]["test_examples"],
            "epochs": r["float16"]["epochs"], "model": "seed cnn (attention_cnn.training.train.fit, seed 0, deterministic ops)",
            "noise_1sd": noise_sd([r["float32"]["test_accuracy"], r["float16"]["test_accuracy"]],
                                  r["float16"]["test_examples"]),
            "noise_note": "1 sd of a test accuracy on this many clips, sqrt(p(1-p)/n) at the mean p, at least 1/n; "
                          "unchanged within noise = difference at most 2 sd",
        }

    def pipeline(self) -> None:
        # full: every training clip of the official split (featurize's own output), so the epoch is long enough
        # that the input pipeline's start (filling the shuffle buffer) is measured against a real epoch
        features = self.main_features if self.mode == "full" else self.train_f16
        res, _, _ = run_worker("pipeline", {"params": self.args.params, "features": str(features), "seed": 0,
                                            "batch_size": 16, "shuffle_buffer": 1000, "rounds": self.size["pipeline_rounds"],
                                            "epochs": self.size["pipeline_epochs"]})
        rec, mem = res["epoch_s"]["tfrecords"], res["epoch_s"]["memory"]
        # The first epoch of every fit, summed over rounds in ABBA order: this machine's speed drifts by up to
        # 30 % within minutes (a fixed epoch measured 30.6 s, then 41.0 s), and only pairing each reading epoch
        # with an in-memory epoch run next to it cancels that.
        first = sum(r[0] for r in rec) / sum(m[0] for m in mem)
        self.results["input_pipeline_overhead"] = first
        details = {
            "value_is": "the first epoch of fits that read and parse the TFRecords (a fresh attention_cnn.features.tfrecords.batched "
                        "pipeline each), summed, / the first epoch of the same fits from arrays in memory, summed",
            "fastest_first_epoch_ratio": round(min(r[0] for r in rec) / min(m[0] for m in mem), 4),
            "train_examples": res["train_examples"], "batch_size": 16, "rounds": len(rec),
            "tfrecords_epochs_s": [[round(t, 2) for t in r] for r in rec],
            "memory_epochs_s": [[round(t, 2) for t in m] for m in mem],
            "how": "one model, train step traced first; fits on a fresh input each, in ABBA order (tfrecords, "
                   "memory, memory, tfrecords, ...); shard files in the page cache"}
        if all(len(r) > 1 for r in rec + mem):
            details["cached_epochs_ratio"] = round(sum(sum(r[1:]) for r in rec) / sum(sum(m[1:]) for m in mem), 4)
            details["cached_epochs_note"] = "later epochs of the same fits read batched()'s in-memory cache"
        self.details["input_pipeline_overhead"] = details

    def ours_epochs(self, precision: str, variant: str = "cnn") -> dict[str, Any]:
        return run_worker("epoch_ours", {"params": self.args.params, "seed": 0, "epochs": self.size["epochs"],
                                         "features": str(self.train_f16), "precision": precision,
                                         "variant": variant})[0]

    def study_epochs(self, variant: str = "cnn") -> dict[str, Any]:
        return run_worker("study_epoch", {"params": self.args.params, "seed": 0, "epochs": self.size["epochs"],
                                          "raw": str(self.raw_train), "batch_size": 16, "variant": variant,
                                          **self.stft_args()}, "study")[0]

    def epoch(self) -> None:
        # ABBA around the study's two runs: ours in float32 outside, ours in bfloat16 (where native) next to them.
        native = self.bf16_note is None
        f1 = self.ours_epochs("float32")
        b1 = self.ours_epochs("bfloat16") if native else None
        study, study2 = self.study_epochs(), self.study_epochs()
        b2 = self.ours_epochs("bfloat16") if native else None
        f2 = self.ours_epochs("float32")
        # The first epoch carries one-off work on each side (tracing; our cache fill): time the later ones, by
        # their median (single epochs of identical work here vary by up to 2x as the machine's speed drifts).
        o, s = later_epochs_median([f1, f2]), later_epochs_median([study, study2])
        self.results["epoch_time_ratio_vs_study"] = o / s
        self.details["epoch_time_ratio_vs_study"] = {
            **epoch_details([f1, f2], [study, study2]),
            "ours": "attention_cnn.training.train.fit as params.yaml configures it, train.mixed_precision=float32: "
                    "TFRecords via batched() (parsed once, cached), op determinism on",
            "ours_mixed_precision": f1["mixed_precision"]}
        if native:
            b = later_epochs_median([b1, b2])
            self.results["epoch_time_ratio_vs_study_bf16"] = b / s
            self.details["epoch_time_ratio_vs_study_bf16"] = {
                **epoch_details([b1, b2], [study, study2]),
                "ours": "the same with train.mixed_precision=bfloat16; met only if the bench's accuracy check finds "
                        "bfloat16's test accuracy within noise of float32's (levers.bfloat16_training_accuracy)",
                "ours_mixed_precision": b1["mixed_precision"]}
            bf = [b1, b2]
        else:
            # the lever beside it, once: bfloat16 emulated on this CPU (what `auto` avoids here)
            bf = [self.ours_epochs("bfloat16")]
            b = later_epochs_median(bf)
            self.details["epoch_time_ratio_vs_study_bf16"] = {"not_measurable": self.bf16_note}
        from attention_cnn.config import load_config

        stage = load_config(self.args.params).train.mixed_precision
        self.details.setdefault("levers", {})["precision_epoch"] = {
            "mixed_precision": "bfloat16", "stage_mixed_precision": stage if stage != "auto" else
            f"auto ({'bfloat16' if native else 'float32'} on this CPU)",
            "epoch_s": round(b, 2), "ratio_vs_study": round(b / s, 3), "ratio_vs_ours": round(b / o, 3),
            "all_epochs_s": [[round(t, 2) for t in r["epoch_s"]] for r in bf],
            "note": "our train path with train.mixed_precision=bfloat16 against float32, same clips and settings"
                    + ("" if native else "; this CPU emulates bfloat16")}

    def attention_epoch(self) -> None:
        # ours (GateConv), study (Keras Conv2D gate), study, ours: cnn_attention in float32 on both sides
        a1 = self.ours_epochs("float32", "cnn_attention")
        study, study2 = self.study_epochs("cnn_attention"), self.study_epochs("cnn_attention")
        a2 = self.ours_epochs("float32", "cnn_attention")
        self.results["attention_epoch_ratio_vs_study"] = \
            later_epochs_median([a1, a2]) / later_epochs_median([study, study2])
        self.details["attention_epoch_ratio_vs_study"] = {
            **epoch_details([a1, a2], [study, study2]),
            "ours": "attention_cnn.training.train.fit, cnn_attention (gate: GateConv), float32",
            "study": "the notebook's pipeline and cnn_attention with the study's layers (portable(): Keras Conv2D "
                     "as the gate, Keras Dropout), TensorFlow defaults"}

    def train_levers(self) -> None:
        """Candidate levers on the training step (not used by the train stage unless they pay)."""
        args = {"params": self.args.params, "batch_size": 16, "shape": self.speech_shape(), "warmup": 2,
                "steps": self.size["lever_steps"]}
        on, _, _ = run_worker("train_levers", {**args, "configs": LEVER_CONFIGS})
        off, _, _ = run_worker("train_levers", {**args, "configs": ["baseline"]}, "ours-onednn-off")
        inter1, _, _ = run_worker("train_levers", {**args, "configs": ["baseline"]}, "ours-interop1")
        base = on["configs"]["baseline"]["step_ms_median"]
        levers = {name: {**c, "speedup_vs_baseline": round(base / c["step_ms_median"], 3)}
                  for name, c in on["configs"].items()}
        levers["onednn_off"] = {**off["configs"]["baseline"],
                                "speedup_vs_baseline": round(base / off["configs"]["baseline"]["step_ms_median"], 3),
                                "onednn_off_confirmed": not off["onednn"]}
        levers["interop_threads_1"] = {**inter1["configs"]["baseline"], "speedup_vs_baseline":
                                       round(base / inter1["configs"]["baseline"]["step_ms_median"], 3)}
        self.details.setdefault("levers", {})["training_step"] = {
            "model": "seed speech cnn, batch 16, random inputs in memory", "configs": levers,
            "note": "speedup > 1 is faster than the float32 step (baseline: oneDNN on, float32, no XLA); "
                    "bf16 changes the numerics (accuracy not measured here)"}

    def gate_cost(self) -> None:
        """cnn_attention's train step against cnn's (GateConv, and Keras' Conv2D as the gate), and cnn's step
        against the time its bytes take at this machine's copy bandwidth: one worker, the same batches."""
        from bench.memory_floor import BYTE_MODEL, floor_ratio

        precisions = ["float32"] + (["bfloat16"] if self.bf16_note is None else [])
        res, _, _ = run_worker("gate_cost", {
            "params": self.args.params, "shape": self.speech_shape(), "batch_size": 16, "precisions": precisions,
            "warmup": 2, "rounds": self.size["gate_rounds"], "steps": self.size["gate_steps"],
            "copy_mb": self.size["copy_mb"]})
        for precision, key in (("float32", "gate_cost_ratio"), ("bfloat16", "gate_cost_ratio_bf16")):
            if precision not in res["precisions"]:
                self.details[key] = {"not_measurable": self.bf16_note}
                continue
            t = {name: v["step_s_median"] for name, v in res["precisions"][precision].items()}
            self.results[key] = t["cnn_attention"] / t["cnn"]
            self.details[key] = {
                "value_is": "median train step time of cnn_attention (gate: GateConv) / of cnn, batch 16, the same "
                            "random batch in memory, FusedAdam and FastDropout as the train stage has them",
                "step_ms_median": {name: round(1000 * v, 1) for name, v in t.items()},
                "steps_per_model": res["precisions"][precision]["cnn"]["steps"],
                "conv2d_gate_ratio": round(t["cnn_attention_conv2d"] / t["cnn"], 3),
                "gateconv_speedup_vs_conv2d": round(t["cnn_attention_conv2d"] / t["cnn_attention"], 3),
                "conv2d_note": "cnn_attention_conv2d: the same model with keras.layers.Conv2D as the gate (the study's "
                               "layer, same weights): the lever GateConv measured in this run",
                "multiply_adds_per_example": res["multiply_adds_per_example"],
                "multiply_adds_ratio": round(res["multiply_adds_per_example"]["cnn_attention"]
                                             / res["multiply_adds_per_example"]["cnn"], 3),
                "params": res["params"], "gate_check_float32": res["gate_check"],
                # On a CPU where the step is memory-bound, bytes bound the ratio rather than multiply-adds: the
                # gate reads and writes the 32-channel feature map several times forward and back.
                "bytes_ratio": round(res["cnn_attention_step_bytes"]["total_bytes"]
                                     / res["cnn_step_bytes"]["total_bytes"], 3),
                "bytes_ratio_note": "cnn_attention's / cnn's bytes per float32 step by the byte model of "
                                    "cnn_step_vs_memory_floor: the ratio a step that only moves its bytes would have",
                "how": f"all three models built and traced ({precision}), then {self.size['gate_rounds']} rounds of "
                       f"{self.size['gate_steps']} steps each, the order reversed every round; median per model"}
        f32 = res["precisions"]["float32"]["cnn"]["step_s_median"]
        b, bw = res["cnn_step_bytes"], res["copy_bandwidth"]
        self.results["cnn_step_vs_memory_floor"] = floor_ratio(f32, b["total_bytes"], bw["bytes_per_s"])
        self.details["cnn_step_vs_memory_floor"] = {
            "step_ms_median": round(1000 * f32, 1),
            "floor_ms": round(1000 * b["total_bytes"] / bw["bytes_per_s"], 1),
            "bytes_per_step": {k: b[k] for k in ("weight_bytes", "activation_bytes", "total_bytes")},
            "trainable_weights": b["trainable_weights"], "activation_value_accesses": b["activation_value_accesses"],
            "per_layer": b["layers"], "copy_bandwidth_gb_per_s": round(bw["bytes_per_s"] / 1e9, 2),
            "copy_bandwidth": {k: (round(v / 1e9, 2) if k.endswith("bytes_per_s") else v) for k, v in bw.items()},
            "byte_model": BYTE_MODEL,
            "value_is": "cnn's float32 step (gate_cost's median, batch 16) / (bytes of the byte model / copy bandwidth); "
                        "1.0 would be a step that only moves its bytes once at the speed numpy copies them"}

    def speech_shape(self) -> list[int]:
        c = self.speech_cfg
        return [1 + (c.clip_samples - c.frame_length) // c.frame_step, c.fft_length // 2 + 1, 1]

    def inference(self) -> None:
        from attention_cnn.config import load_config

        variants = load_config(self.args.params).variants
        frames = 1 + (self.speech_cfg.clip_samples - self.speech_cfg.frame_length) // self.speech_cfg.frame_step
        res, _, _ = run_worker("inference", {
            "params": self.args.params, "variants": variants, "batch": 64, "repeats": self.size["latency_repeats"],
            "warmup": 3, "batch_calls": self.size["batch_calls"],
            "shapes": {"mnist": [28, 28, 1], "speech": [frames, self.speech_cfg.fft_length // 2 + 1, 1]}})
        self.details["inference"] = res

    def repro(self, tmp: Path) -> None:
        default = self.size["default_repro"] and not self.args.no_default_repro
        res = repro_times(tmp / "repro", default=default)
        self.results["noop_repro_s"] = res["noop_s"]
        self.details["noop_repro_s"] = {"runs_s": res["noop_runs_s"], "where": res["where"]}
        if default:
            self.results["default_repro_s"] = res["build_s"]
            self.details["default_repro_s"] = {"stages_run": res["stages_run"], "where": res["where"],
                                               "note": "wall time of `dvc repro` from an empty cache (every stage)"}
        else:
            self.details["default_repro_s"] = {"note": "measured by the full run only (`python -m bench.run`)"}

    # ---- output

    def report(self, total_s: float) -> dict[str, Any]:
        return build_result(self.results, self.details, self.errors, {
            "command": "python -m bench.run" + "".join(f" {a}" for a in sys.argv[1:]), "mode": self.mode,
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "total_s": round(total_s, 1), "step_s": self.step_s, "cpus": os.cpu_count(),
            **cpu_features(), "python": platform.python_version(), "tensorflow": _tf_version(),
            "data": "Free Spoken Digit Dataset v1.0.10 (real recordings), prepared with attention_cnn.data.fsdd.prepare_fsdd",
            "load_average_at_start": self.load_at_start,
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()]})


def later_epochs_median(runs: list[dict[str, Any]]) -> float:
    """The median epoch time over runs, each run's first epoch (tracing, cache fill) left out."""
    return statistics.median(t for r in runs for t in r["epoch_s"][1:])


def epoch_details(ours: list[dict[str, Any]], study: list[dict[str, Any]]) -> dict[str, Any]:
    """What the epoch ratios record: medians, fastest and first-epoch ratios, every epoch time."""
    o, s = later_epochs_median(ours), later_epochs_median(study)
    return {
        "variant": ours[0].get("variant", "cnn"), "train_examples": ours[0]["train_examples"],
        "test_examples": ours[0]["test_examples"], "batch_size": ours[0]["batch_size"],
        "timed_epochs": f"median of epochs 2..{len(ours[0]['epoch_s'])} of two runs per side, in ABBA order",
        "ours_epoch_s": round(o, 2), "study_epoch_s": round(s, 2),
        "fastest_ratio": round(min(t for r in ours for t in r["epoch_s"][1:])
                               / min(t for r in study for t in r["epoch_s"][1:]), 3),
        "first_epoch_ratio": round(sum(r["epoch_s"][0] for r in ours) / sum(r["epoch_s"][0] for r in study), 3),
        "ours_all_epochs_s": [[round(t, 2) for t in r["epoch_s"]] for r in ours],
        "study_all_epochs_s": [[round(t, 2) for t in r["epoch_s"]] for r in study],
        "ours_onednn": ours[0]["onednn"], "study_onednn": study[0]["onednn"],
        "validation": "the test clips every epoch on both sides (the study's choice; ours: validate_on_test)",
        "study": "the notebook's pipeline: per-file tf.data map (read, decode, pad, STFT) every epoch, shuffle 1000, "
                 "TensorFlow defaults, float32"}


def noise_sd(accuracies: list[float], n: int) -> float:
    p = sum(accuracies) / len(accuracies)
    n = max(1, n)
    return round(max((p * (1 - p) / n) ** 0.5, 1 / n), 4)


def accuracy_within_noise(details: dict[str, Any]) -> bool | None:
    """float16 (as stored) vs float32 features: test accuracy of the same seeded model within 2 sd of noise."""
    acc = details.get("stored_bytes_ratio", {}).get("accuracy")
    if not acc:
        return None
    return abs(acc["float16_test_accuracy"] - acc["float32_test_accuracy"]) <= 2 * acc["noise_1sd"]


def not_measurable(details: dict[str, Any]) -> dict[str, str]:
    """Keys whose measurement this machine cannot make (bfloat16 where the CPU emulates it), with the reason."""
    return {key: details[key]["not_measurable"] for key in GOALS
            if isinstance(details.get(key), dict) and details[key].get("not_measurable")}


def goals_met(results: dict[str, Any], details: dict[str, Any]) -> dict[str, bool | None]:
    """Per key: True/False against its goal, None where there is no goal or no measurement."""
    met: dict[str, bool | None] = {}
    for key, (op, target, _) in GOALS.items():
        value = results.get(key)
        met[key] = None if (value is None or op is None) else (value >= target if op == ">=" else value <= target)
    if met.get("stored_bytes_ratio") is not None:  # the goal is "<= 0.5 with accuracy unchanged within noise"
        met["stored_bytes_ratio"] = met["stored_bytes_ratio"] and accuracy_within_noise(details) is not False
    for key in ("epoch_time_ratio_vs_study", "epoch_time_ratio_vs_study_bf16"):
        if met.get(key) and (key.endswith("_bf16") or
                             details.get(key, {}).get("ours_mixed_precision") == "bfloat16"):
            # A faster bfloat16 epoch counts only if bfloat16 training keeps float32's accuracy within noise.
            met[key] = details.get("levers", {}).get("bfloat16_training_accuracy", {}).get("within_noise") is True
    return met


def physical_limits(results: dict[str, Any], details: dict[str, Any], met: dict[str, bool | None]) -> dict[str, str]:
    """Unmet keys whose own details show a bound that misses the goal too, with that bound in words.

    ``gate_cost_ratio``: the byte model's ratio of the two models' bytes per step (``bytes_ratio``, see
    ``cnn_step_vs_memory_floor``). The steps are memory-bound, so a gate that did nothing but move its bytes at
    the speed the rest of the step moves them would cost that ratio; above the goal, no arrangement of the same
    arithmetic meets it.
    """
    limits = {}
    for key in ("gate_cost_ratio", "gate_cost_ratio_bf16"):
        op, target, _ = GOALS[key]
        bound = (details.get(key) or {}).get("bytes_ratio")
        value = results.get(key)
        if met.get(key) is False and isinstance(bound, (int, float)) and value is not None and bound > target:
            limits[key] = (f"memory traffic: by the byte model cnn_attention's step moves {bound}x the bytes of "
                           f"cnn's, above the goal {op} {target}, so a step bound by moving its bytes cannot meet "
                           f"it; measured {round(value, 4)}, {round(value / bound, 3)}x that bound")
    return limits


def build_result(results: dict[str, Any], details: dict[str, Any], errors: dict[str, str],
                 meta: dict[str, Any]) -> dict[str, Any]:
    """The JSON of ``reports/bench.json``: every key of GOALS (None when not measured), goals, met flags.

    A key this machine cannot measure (``details[key]["not_measurable"]``) is None, its ``met`` None, and it
    counts neither as met nor as unmet: it is listed under ``not_measurable`` with the reason.
    """
    met = goals_met(results, details)
    skipped = not_measurable(details)
    out: dict[str, Any] = {key: (None if results.get(key) is None else round(results[key], 4)) for key in GOALS}
    with_goal = [k for k, (op, _, _) in GOALS.items() if op and k not in skipped]
    out.update({
        "goals": {k: (f"{op} {t}" if op else None) for k, (op, t, _) in GOALS.items()},
        "met": met,
        "all_goals_met": all(met[k] is True for k in with_goal),
        "unmet": [k for k in with_goal if met[k] is not True],
        "not_measurable": skipped,
        "limits": physical_limits(results, details, met),
        "accuracy_within_noise": accuracy_within_noise(details),
        "details": details,
        "errors": errors,
        "meta": meta,
    })
    return out


def _tf_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("tensorflow-cpu", "tensorflow"):
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    return "unknown"


def fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def markdown(result: dict[str, Any]) -> str:
    meta, d = result["meta"], result["details"]
    lines = [f"# Benchmark ({meta['mode']})", "",
             f"`{meta['command']}` on {meta['date']}, {meta['cpus']} CPUs ({meta['cpu']}), TensorFlow {meta['tensorflow']}, "
             f"{meta['total_s']:.0f} s in all. Data: {meta['data']}. Load average at the start / end: "
             f"{', '.join(str(x) for x in meta.get('load_average_at_start', []))} / "
             f"{', '.join(str(x) for x in meta['load_average_at_end'])}.", "",
             f"All goals met: {'yes' if result['all_goals_met'] else 'no (' + ', '.join(result['unmet']) + ')'}.", "",
             *[f"`{k}` is held by a physical limit: {why}.\n" for k, why in (result.get("limits") or {}).items()],
             "| key | value | goal | met | what |", "|---|---|---|---|---|"]
    skipped = result.get("not_measurable") or {}
    for key, (_, _, what) in GOALS.items():
        met = result["met"][key]
        value = "not measurable here" if key in skipped else fmt(result[key])
        lines.append(f"| `{key}` | {value} | {result['goals'][key] or '-'} | "
                     f"{'-' if met is None else ('yes' if met else 'no')} | {what} |")
    lines.append("")
    notes = []
    if "featurize_speedup_vs_study" in d:
        f = d["featurize_speedup_vs_study"]
        notes.append(f"featurize: {f['clips']} clips; ours {f['ours_clips_per_s']} clips/s (TFRecords written), "
                     f"study {f['study_clips_per_s']} clips/s (tensors consumed). Only reading the files: "
                     f"{f.get('read_files_only_clips_per_s')} clips/s, so no featurize of these files could beat the "
                     f"study's pass by more than {f.get('speedup_upper_bound_reading_only')}x here.")
    if "input_pipeline_overhead" in d:
        p = d["input_pipeline_overhead"]
        cached = f", cached epochs {p['cached_epochs_ratio']}x" if "cached_epochs_ratio" in p else ""
        notes.append(f"input pipeline: {p['train_examples']} examples, batch 16; {p['rounds']} rounds of fits in ABBA "
                     f"order, epoch s TFRecords {p['tfrecords_epochs_s']}, memory {p['memory_epochs_s']}; epochs "
                     f"reading the TFRecords {fmt(result['input_pipeline_overhead'])}x{cached}.")
    if "stored_bytes_ratio" in d:
        s = d["stored_bytes_ratio"]
        if "options" in s:
            opts = "; ".join(f"{k}: {v['ratio_vs_float32']} of float32, read {v['read_examples_per_s']} ex/s "
                             f"({v['read_speed_vs_uncompressed']}x), +{v['compress_ms_per_example']} ms/example to write"
                             for k, v in s["options"].items())
            notes.append(f"storage ({s['configured']['storage_dtype']}, {s['examples']} examples): {opts}.")
        if "accuracy" in s:
            a = s["accuracy"]
            notes.append(f"accuracy float32 vs float16 features: {a['float32_test_accuracy']} vs {a['float16_test_accuracy']} "
                         f"(seed cnn, {a['epochs']} epochs, {a['train_examples']} train / {a['test_examples']} test clips; "
                         f"1 sd of such an accuracy: {a['noise_1sd']}; within noise: "
                         f"{'yes' if result['accuracy_within_noise'] else 'no'}).")
    for key in ("epoch_time_ratio_vs_study", "epoch_time_ratio_vs_study_bf16", "attention_epoch_ratio_vs_study"):
        e = d.get(key) or {}
        if "ours_epoch_s" in e:
            notes.append(f"{key}: {e.get('variant', 'cnn')}, {e['train_examples']} train / {e['test_examples']} "
                         f"validation clips, batch {e['batch_size']}, {e['timed_epochs']}: ours "
                         f"({e.get('ours_mixed_precision', 'float32')}) {e['ours_epoch_s']} s, study (float32) "
                         f"{e['study_epoch_s']} s (all epochs: ours {e['ours_all_epochs_s']}, "
                         f"study {e['study_all_epochs_s']}).")
    for key in ("gate_cost_ratio", "gate_cost_ratio_bf16"):
        g = d.get(key) or {}
        if "step_ms_median" in g:
            c = g["gate_check_float32"]
            notes.append(f"{key}: median step ms {g['step_ms_median']} ({g['steps_per_model']} steps each); with "
                         f"Keras' Conv2D as the gate {g['conv2d_gate_ratio']}x cnn (GateConv's speedup over it "
                         f"{g['gateconv_speedup_vs_conv2d']}x); multiply-adds {g['multiply_adds_ratio']}x, bytes by "
                         f"the byte model {g.get('bytes_ratio', 'n/a')}x; "
                         f"GateConv vs Conv2D at equal weights: max abs difference {c['gate_output_max_abs_diff']:.2g} "
                         f"(gate output), {c['gate_kernel_grad_max_abs_diff']:.2g} (kernel gradient, largest "
                         f"{c['gate_kernel_grad_max_abs']:.3g}).")
    if "featurize_resampled_vs_native" in d:
        r = d["featurize_resampled_vs_native"]
        notes.append(f"featurize_resampled_vs_native: {r['clips']} clips; 44.1 kHz stereo {r['resampled_clips_per_s']} "
                     f"clips/s, 8 kHz originals {r['native_clips_per_s']} clips/s (runs {r['runs_clips_per_s']}).")
    if "step_ms_median" in d.get("cnn_step_vs_memory_floor", {}):
        m = d["cnn_step_vs_memory_floor"]
        notes.append(f"cnn_step_vs_memory_floor: step {m['step_ms_median']} ms, floor {m['floor_ms']} ms = "
                     f"{m['bytes_per_step']['total_bytes'] / 1e9:.3g} GB (weights "
                     f"{m['bytes_per_step']['weight_bytes'] / 1e9:.3g} GB) at {m['copy_bandwidth_gb_per_s']} GB/s; "
                     f"bytes: {m['byte_model']}.")
    for key, why in skipped.items():
        notes.append(f"{key}: {why}.")
    if "feature_rss_growth_4x_data" in d:
        r = d["feature_rss_growth_4x_data"]
        notes.append(f"RSS: {r['clips_1x']} clips {r['peak_rss_mb_1x']} MB, {r['clips_4x']} clips {r['peak_rss_mb_4x']} MB "
                     f"(after importing TensorFlow: {r.get('rss_after_import_mb_1x')} / {r.get('rss_after_import_mb_4x')} MB).")
    if "noop_repro_s" in d:
        notes.append(f"no-op repro: {d['noop_repro_s']['where']}; runs {d['noop_repro_s']['runs_s']} s.")
    notes.append(f"default repro: {d.get('default_repro_s', {}).get('note', '')}.")
    lines += [f"- {n}" for n in notes]
    levers = levers_markdown(d)
    if levers:
        lines += ["", "Levers (speedup > 1 = faster; measured in this run):", "", "| lever | measured |", "|---|---|"]
        lines += [f"| {name} | {text} |" for name, text in levers]
    if "inference" in d:
        inf = d["inference"]
        lines += ["", f"Inference ({inf['weights']} weights; batch-1 latency as the evaluate stage measures it):", "",
                  "| model | params | latency p50 ms | p95 ms | examples/s at batch 64 |", "|---|---|---|---|---|"]
        for name, m in inf["models"].items():
            lines.append(f"| {name} | {m['params']:,} | {m['latency_ms_p50']} | {m['latency_ms_p95']} | "
                         f"{m['throughput_examples_per_s_batch64']} |")
    if result["errors"]:
        lines += ["", "Errors:", ""] + [f"- {k}: {v.splitlines()[0]}" for k, v in result["errors"].items()]
    return "\n".join(lines) + "\n"


def levers_markdown(d: dict[str, Any]) -> list[tuple[str, str]]:
    """One line per lever measured in this run (whatever steps ran)."""
    rows: list[tuple[str, str]] = []
    lev = d.get("levers", {})
    if "featurize_batched_stft" in lev:
        f = lev["featurize_batched_stft"]
        rows.append(("featurize: STFT of 64 clips per call (chunk_clips) vs 1",
                     f"{f['chunk_clips_64_clips_per_s']} vs {f['chunk_clips_1_clips_per_s']} clips/s "
                     f"({f['chunk_clips_64_clips_per_s'] / max(1e-9, f['chunk_clips_1_clips_per_s']):.2f}x)"))
    if "float16_storage" in lev:
        f = lev["float16_storage"]
        rows.append(("storage: float16 vs float32", f"{f['float16_bytes'] / f['float32_bytes']:.3f} of the bytes"))
    if "resampler" in lev:
        r = lev["resampler"]["ms_per_clip"]
        rows.append(("featurize: FFT resampler vs tensorflow-io's, per 44.1 kHz clip",
                     f"{r['featurize_chunked']} vs {r['tensorflow_io']} ms "
                     f"({lev['resampler']['speedup_vs_tensorflow_io']}x)"))
        rows.append(("featurize: the resampler over a chunk per call vs a clip per call",
                     f"{r['featurize_chunked']} vs {r['clip_per_call']} ms "
                     f"({lev['resampler']['speedup_chunk_vs_clip_per_call']}x)"))
    s = d.get("stored_bytes_ratio", {})
    if "options" in s:
        for name, o in s["options"].items():
            if name != "none":
                rows.append((f"storage: {name} compression", f"{o['ratio_vs_float32']} of float32; read "
                             f"{o['read_speed_vs_uncompressed']}x; +{o['compress_ms_per_example']} ms/example to write"))
    p = d.get("input_pipeline_overhead", {})
    if "cached_epochs_ratio" in p:
        rows.append(("input: cache() after the first epoch", f"cached epochs {p['cached_epochs_ratio']}x the in-memory "
                     "epoch (the reading epoch: the headline)"))
    step = lev.get("training_step", {}).get("configs", {})
    names = {"keras_adam": "training: Keras' own Adam instead of FusedAdam (speedup < 1: what FusedAdam buys)",
             "keras_dropout": "training: Keras' own Dropout instead of FastDropout (speedup < 1: what FastDropout buys)",
             "no_dropout": "training: the same step without dropout (not a lever: prices the random masks)",
             "jit": "training: XLA (jit_compile)", "bf16": "training: mixed_bfloat16",
             "bf16_jit": "training: mixed_bfloat16 + XLA", "onednn_off": "training: oneDNN off (TF_ENABLE_ONEDNN_OPTS=0)",
             "interop_threads_1": "training: 1 inter-op thread"}
    for key, label in names.items():
        if key in step:
            rows.append((label, f"step {step[key]['step_ms_median']} ms vs {step['baseline']['step_ms_median']} ms "
                                f"({step[key]['speedup_vs_baseline']}x)"))
    if "precision_epoch" in lev:
        b = lev["precision_epoch"]
        rows.append((f"training: train.mixed_precision={b['mixed_precision']} instead of the stage's "
                     f"{b['stage_mixed_precision']}, whole epoch",
                     f"{b['epoch_s']} s; {b['ratio_vs_study']} of the study's epoch, {b['ratio_vs_ours']} of the stage's"))
    if "bfloat16_training_accuracy" in lev:
        b = lev["bfloat16_training_accuracy"]
        rows.append(("training: bfloat16 test accuracy", f"{b['test_accuracy_bfloat16']} vs {b['test_accuracy_float32']} "
                     f"in float32 (within noise: {'yes' if b['within_noise'] else 'no'})"))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--archive", type=Path, default=DEFAULT_ARCHIVE, help="FSDD v1.0.10 release archive")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "bench.json")
    parser.add_argument("--quick", action="store_true", help="smaller subsets (about 4 minutes on 2 cores)")
    parser.add_argument("--params", default=str(ROOT / "params.yaml"))
    parser.add_argument("--tmp", default=None, help="scratch folder parent (default: the system temp folder)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument("--no-default-repro", action="store_true",
                        help="skip the from-scratch `dvc repro` of the default pipeline (about 5 minutes)")
    parser.add_argument("--only", nargs="*", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # development smoke test
    args = parser.parse_args(argv)
    if not args.archive.is_file():
        print(f"error: FSDD archive {args.archive} not found; pass --archive PATH", file=sys.stderr)
        return 1
    sys.path.insert(0, str(ROOT))
    result = Bench(args).run()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(result))
    print(json.dumps(result, indent=2))
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
