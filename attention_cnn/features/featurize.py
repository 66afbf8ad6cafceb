"""featurize: precompute model inputs once into sharded TFRecords plus ``spec.json``.

- speech: decode -> mono -> resample (band-limited, by FFT) to ``sample_rate_hz`` -> cut or
  zero-pad at the end to ``clip_samples`` -> ``|STFT|`` (``frame_length``,
  ``frame_step``, ``fft_length``) -> (frames, fft_length // 2 + 1, 1). Defaults
  reproduce the study: 8 kHz, 12,800 samples, 320/32/512 -> 391 x 257 x 1.
  Audio is read with :func:`attention_cnn.data.audio.read_audio` (WAV of any PCM/float
  encoding, FLAC, Ogg Vorbis, MP3; stereo mixed to mono). ``spec.json``'s
  ``stats`` count the clips that were cut (``clips_cut``, also a warning line)
  and zero-padded (``clips_padded``).
- mnist: uint8 pixels (28, 28, 1) stored as bytes, parsed to float32 in [0, 1].

Clips are processed in fixed-size chunks (streaming, bounded memory) and the
STFT runs on a whole chunk at once.
"""
from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from tqdm import tqdm

from attention_cnn.common import StageError, atomic_dir, read_csv_dicts
from attention_cnn.config.params import Features, MnistFeatures, SpeechFeatures
from attention_cnn.features.tfrecords import (FeatureSpec, RunningStats, ShardedWriter, assign_folds, count_by_class,
                              serialize_example, write_spec)

SPLITS = ("train", "test")
WORKERS = 2   # chunks decoded and transformed side by side while the caller writes


def sort_class_names(labels: set[str]) -> list[str]:
    """Class names in a stable order: numeric when all labels are integers ("2" < "10"), else lexical."""
    if all(label.lstrip("-").isdigit() for label in labels):
        return sorted(labels, key=int)
    return sorted(labels)


def num_frames(clip_samples: int, frame_length: int, frame_step: int) -> int:
    return 1 + (clip_samples - frame_length) // frame_step


def fit_length(samples: np.ndarray, clip_samples: int) -> np.ndarray:
    """Cut to the first ``clip_samples`` samples or zero-pad at the end."""
    if len(samples) >= clip_samples:
        return samples[:clip_samples]
    return np.pad(samples, (0, clip_samples - len(samples)))


def _fast_lengths(limit: int = 2 ** 31 - 1) -> np.ndarray:
    """Every 2**a * 3**b * 5**c up to ``limit``, sorted: FFT lengths with small factors only (about 1,400 numbers; the
    limit keeps every one an int32, the type tf.signal.rfft takes)."""
    out, p2 = [], 1
    while p2 <= limit:
        p3 = p2
        while p3 <= limit:
            p5 = p3
            while p5 <= limit:
                out.append(p5)
                p5 *= 5
            p3 *= 3
        p2 *= 2
    return np.array(sorted(out), dtype=np.int64)


FAST_LENGTHS = _fast_lengths()


def resample(samples: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """:func:`resample_tensor` for featurize, a clip at a time (traced once); a no-op when rates match.

    The very ops an exported model runs, so stored features and an export's agree bit for bit. (The same
    formula in numpy would be faster clip by clip, but its FFT rounds differently.)
    """
    if rate_in == rate_out:
        return samples
    return _resample_fn()(np.asarray(samples, np.float32), np.int64(rate_in), np.int64(rate_out)).numpy()


def resample_many(clips: list[tuple[np.ndarray, int]], rate_out: int) -> list[np.ndarray]:
    """:func:`resample` of every ``(samples, rate_in)`` clip; those that need it in one call.

    The call loops over the clips inside one traced graph, each through the very ops :func:`resample` runs on it
    alone, so every clip's output is the same bits as a clip-at-a-time call (and an export's); it saves the
    per-call dispatch, which costs about as much as a short clip's FFTs.
    """
    todo = [i for i, (_, rate_in) in enumerate(clips) if rate_in != rate_out]
    out = [samples for samples, _ in clips]
    if not todo:
        return out
    values = np.concatenate([np.asarray(clips[i][0], np.float32) for i in todo])
    lengths = np.array([len(clips[i][0]) for i in todo], np.int64)
    rates = np.array([clips[i][1] for i in todo], np.int64)
    flat, out_lengths = _resample_many_fn()(values, lengths, rates, np.int64(rate_out))
    pieces = np.split(flat.numpy(), np.cumsum(out_lengths.numpy())[:-1])
    for i, piece in zip(todo, pieces):
        out[i] = piece
    return out


@functools.lru_cache(maxsize=1)
def _resample_many_fn():
    import tensorflow as tf

    spec = [tf.TensorSpec([None], tf.float32), tf.TensorSpec([None], tf.int64), tf.TensorSpec([None], tf.int64),
            tf.TensorSpec([], tf.int64)]

    @tf.function(input_signature=spec)
    def many(values, lengths, rates_in, rate_out):
        starts = tf.concat([tf.zeros([1], tf.int64), tf.cumsum(lengths)[:-1]], 0)
        count = tf.size(lengths)
        parts = tf.TensorArray(tf.float32, size=count, infer_shape=False)
        sizes = tf.TensorArray(tf.int64, size=count)

        def body(i, parts, sizes):
            one = resample_tensor(values[starts[i]:starts[i] + lengths[i]], rates_in[i], rate_out)
            return i + 1, parts.write(i, one), sizes.write(i, tf.shape(one, out_type=tf.int64)[0])

        _, parts, sizes = tf.while_loop(lambda i, *_: i < count, body, [tf.constant(0), parts, sizes],
                                        parallel_iterations=1)
        return parts.concat(), sizes.stack()

    return many


@functools.lru_cache(maxsize=1)
def _resample_fn():
    import tensorflow as tf

    return tf.function(resample_tensor, input_signature=[tf.TensorSpec([None], tf.float32),
                                                         tf.TensorSpec([], tf.int64), tf.TensorSpec([], tf.int64)])


def resample_tensor(samples, rate_in, rate_out):
    """float32 (n,) tensor at ``rate_in`` -> (ceil(n * rate_out / rate_in),) at ``rate_out``.

    Band-limited resampling in the frequency domain, as ``scipy.signal.resample`` computes it (its one-sided
    FFT branch, unpaired Nyquist bin included): the clip is zero-padded at the end to the next length in
    :data:`FAST_LENGTHS` (the FFT of a length with a large prime factor is many times slower), transformed,
    cut (or zero-extended) to the new band, transformed back, and cut to the output length. The output's
    rate is ``rate_out`` to within half a sample over the padded clip. Eager or in a graph (rates may be
    tensors); plain TensorFlow ops, so an exported model (:mod:`attention_cnn.serving.export`) needs no op
    library. Featurize calls it through :func:`resample`.
    """
    import tensorflow as tf

    x = tf.convert_to_tensor(samples, tf.float32)
    rate_in, rate_out = tf.cast(rate_in, tf.int64), tf.cast(rate_out, tf.int64)
    n = tf.shape(x, out_type=tf.int64)[0]
    table = tf.constant(FAST_LENGTHS)
    at = tf.searchsorted(table, tf.reshape(n, [1]))[0]
    n_pad = tf.where(at < len(FAST_LENGTHS), tf.gather(table, tf.minimum(at, len(FAST_LENGTHS) - 1)), n)
    n_out = (n * rate_out + rate_in - 1) // rate_in
    num = tf.maximum((n_pad * rate_out + rate_in // 2) // rate_in, n_out)  # samples of the padded clip, resampled
    m = tf.minimum(num, n_pad)                                              # frequency bins both sides keep
    spectrum = tf.signal.rfft(tf.pad(x, [[0, n_pad - n]]), tf.cast(tf.reshape(n_pad, [1]), tf.int32))
    kept = spectrum[: m // 2 + 1]
    unpaired = tf.where(num < n_pad, 2.0, 0.5)                              # bin m/2 of an even m
    nyquist = tf.where(tf.logical_and(m % 2 == 0, num != n_pad), unpaired, 1.0)
    scale = tf.concat([tf.ones(m // 2, tf.float32), tf.reshape(nyquist, [1])], 0)
    scale *= tf.cast(num, tf.float32) / tf.cast(n_pad, tf.float32)
    out = tf.signal.irfft(kept * tf.complex(scale, 0.0), tf.cast(tf.reshape(num, [1]), tf.int32))
    return out[:n_out]


def stft_magnitudes(framed, frame_length: int, fft_length: int):
    """``|rfft(frame * periodic Hann)|``: float32 frames (..., frame_length) -> (..., fft_length // 2 + 1).

    The one transform of featurize and of the exported model (:func:`waveform_to_input`), so they cannot drift.
    """
    import tensorflow as tf

    window = tf.signal.hann_window(frame_length, dtype=tf.float32)
    return tf.abs(tf.signal.rfft(framed * window, [fft_length]))


def waveform_to_input(waveform, spec):
    """float32 (samples,) tensor at the features' rate -> the model input ``spec.shape`` (float32), in a graph.

    What featurize stores and training parses, with the settings of the feature folder's ``spec.json``
    (``spec``): cut or zero-pad at the end to ``clip_samples``, :func:`stft_magnitudes` of every frame (frames
    of padding alone give exactly 0, as the stored zero rows), rounded to ``storage_dtype``, then
    :func:`~attention_cnn.features.tfrecords.to_model_input`.
    """
    import tensorflow as tf

    from attention_cnn.features.tfrecords import to_model_input

    s = spec.settings
    clip = s["clip_samples"]
    waveform = tf.convert_to_tensor(waveform, tf.float32)[:clip]
    waveform = tf.pad(waveform, [[0, clip - tf.shape(waveform)[0]]])
    framed = tf.signal.frame(waveform, s["frame_length"], s["frame_step"])
    stored = tf.cast(stft_magnitudes(framed, s["frame_length"], s["fft_length"]), spec.storage_dtype)
    return to_model_input(stored, spec)[..., None]


def spectrogram_batch(clips: np.ndarray, frame_length: int, frame_step: int, fft_length: int) -> np.ndarray:
    """``|STFT|`` of a batch: float32 (B, clip_samples) -> float32 (B, frames, fft_length // 2 + 1)."""
    import tensorflow as tf

    stft = tf.signal.stft(tf.convert_to_tensor(clips, tf.float32), frame_length=frame_length,
                          frame_step=frame_step, fft_length=fft_length)
    return tf.abs(stft).numpy()


def active_frames(num_samples: int, frames: int, frame_step: int) -> int:
    """How many leading frames overlap the first ``num_samples`` samples of a clip.

    Frame ``f`` starts at ``f * frame_step``; every later frame holds zero padding only, and its
    |STFT| is exactly 0.
    """
    return min(frames, -(-max(0, num_samples) // frame_step))


def active_spectrograms(waves: list[np.ndarray], s: dict[str, Any], dtype: str = "float32",
                        stats: RunningStats | None = None) -> list[np.ndarray]:
    """|STFT| of only the frames that overlap each recording: ``dtype`` (frames_i, fft_length // 2 + 1) per clip.

    Clip ``i`` cut or zero-padded to ``clip_samples`` has these rows, then frames of padding alone, which
    are exactly 0. The numbers are those of :func:`spectrogram_batch` bit for bit (same periodic Hann
    window, same float32 product, TensorFlow's rfft row by row), rounded to ``dtype`` (float16: to
    nearest even, as numpy). Spoken digits are short (FSDD: 3,500 of 12,800 samples on average), so this
    skips about three quarters of the FFT work, and the stored records leave those zero rows out. All
    frames of the chunk go through one compiled call (window, rfft, magnitude, rounding and the statistics
    in C++, the GIL released); the arrays returned are views into its result. ``stats``, when given, gets
    the statistics of the padded float32 spectrograms: the active frames' values, and the zero frames
    counted without being made.
    """
    fl, step = s["frame_length"], s["frame_step"]
    frames = num_frames(s["clip_samples"], fl, step)
    bins = s["fft_length"] // 2 + 1
    counts = [active_frames(min(len(w), s["clip_samples"]), frames, step) for w in waves]
    if stats is not None:
        stats.add_zeros((len(waves) * frames - sum(counts)) * bins)
    if not sum(counts):
        return [np.zeros((0, bins), dtype) for _ in waves]
    # One signal of the clips' spans end to end, each span zero-padded to a whole number of hops: then every
    # frame of every clip starts on the same hop grid, and one framing of the signal holds them all (plus a
    # few frames straddling two clips, which are dropped after the transform).
    segments = [-(-((k - 1) * step + fl) // step) * step if k else 0 for k in counts]
    signal = np.zeros(max(sum(segments), fl), dtype=np.float32)
    starts, offset = [], 0
    for wave, k, seg in zip(waves, counts, segments):
        if k:
            n = min(seg, len(wave), s["clip_samples"])
            signal[offset:offset + n] = wave[:n]
            starts.append(np.arange(k) + offset // step)
            offset += seg
    rows = np.concatenate(starts).astype(np.int32)
    mags, total, total_sq, low, high = _magnitudes_fn(fl, step, s["fft_length"], str(dtype))(signal, rows)
    if stats is not None:
        stats.add_partial(len(rows) * bins, float(total), float(total_sq), float(low), float(high))
    return np.split(np.asarray(mags), np.cumsum(counts)[:-1])  # a read-only view, no copy


@functools.lru_cache(maxsize=None)
def _magnitudes_fn(frame_length: int, frame_step: int, fft_length: int, dtype: str):
    """A compiled ``(signal float32 (T,), rows int32 (N,)) -> (dtype (N, bins), sum, sum_sq, min, max)``.

    Frames the signal on the hop grid, keeps frames ``rows`` and returns ``|rfft(frame * hann)|`` of each
    (window, transform, magnitude, rounding and statistics in C++ with the GIL released). The statistics
    are always computed (a few percent of the call): one trace serves both splits.
    """
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32), tf.TensorSpec([None], tf.int32)])
    def magnitudes(signal, rows):
        framed = tf.signal.frame(signal, frame_length, frame_step)
        mags = tf.gather(stft_magnitudes(framed, frame_length, fft_length), rows)
        wide = tf.cast(mags, tf.float64)  # float64 accumulators, as RunningStats.update
        return tf.cast(mags, dtype), tf.reduce_sum(wide), tf.reduce_sum(tf.square(wide)), tf.reduce_min(mags), \
            tf.reduce_max(mags)

    return magnitudes


def iter_speech_chunks(raw_dir: Path, rows: list[dict[str, str]], s: dict[str, Any],
                       lengths: list[int] | None = None, stats: RunningStats | None = None
                       ) -> Iterator[tuple[list[dict[str, str]], list[np.ndarray]]]:
    """Yield (rows, active spectrograms: ``storage_dtype`` (frames_i, bins) per clip) chunk by chunk, in order.

    The next :data:`WORKERS` chunks are decoded and transformed in background threads while the caller
    serializes and writes this one (file reads and the compiled transform release the GIL), so a few
    chunks are in memory at most.
    ``lengths``, when given, gets each clip's length in samples after resampling (before cut/pad);
    ``stats`` the statistics of the padded spectrograms (see :func:`active_spectrograms`).
    """
    from concurrent.futures import ThreadPoolExecutor

    from attention_cnn.data.audio import read_audio

    def work(chunk: list[dict[str, str]]) -> tuple[list[int], list[np.ndarray], RunningStats | None]:
        resampled = resample_many([read_audio(raw_dir / row["file"]) for row in chunk], s["sample_rate_hz"])
        part = RunningStats() if stats is not None else None  # merged by the caller's thread, in order
        return [len(x) for x in resampled], active_spectrograms(resampled, s, s["storage_dtype"], part), part

    step = max(1, s["chunk_clips"])
    chunks = [rows[start:start + step] for start in range(0, len(rows), step)]
    with ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="featurize") as pool:
        pending = [pool.submit(work, chunk) for chunk in chunks[:WORKERS]]
        for i, chunk in enumerate(chunks):
            done = pending.pop(0).result()  # re-raises the worker's error (a one-line StageError naming the file)
            if i + WORKERS < len(chunks):
                pending.append(pool.submit(work, chunks[i + WORKERS]))
            if lengths is not None:
                lengths.extend(done[0])
            if stats is not None:
                stats.merge(done[2])
            yield chunk, done[1]


def featurize_speech(raw_dir: Path, out_dir: Path, cfg: SpeechFeatures, progress: bool = True) -> FeatureSpec:
    s = cfg.model_dump()  # also spec.json's settings, which training and serving read back
    manifest = read_csv_dicts(raw_dir / "manifest.csv")
    class_names = sort_class_names({row["label"] for row in manifest})
    label_of = {name: i for i, name in enumerate(class_names)}
    frames = num_frames(s["clip_samples"], s["frame_length"], s["frame_step"])
    spec = FeatureSpec(dataset="speech", shape=[frames, s["fft_length"] // 2 + 1, 1], storage_dtype=s["storage_dtype"],
                       compression=s["compression"], class_names=class_names, source=_source(raw_dir), settings=s)
    stats = RunningStats()
    lengths: list[int] = []
    bar = tqdm(total=len(manifest), desc="featurize speech", unit="clip", disable=not progress)
    for split in SPLITS:
        rows = sorted((r for r in manifest if r["split"] == split), key=lambda r: r["file"])
        labels = [label_of[r["label"]] for r in rows]
        folds = assign_folds(labels)
        spec.counts[split] = count_by_class(labels, class_names)
        index = 0
        with ShardedWriter(out_dir, spec, split, s["examples_per_shard"]) as writer:
            for chunk, specs in iter_speech_chunks(raw_dir, rows, s, lengths, stats if split == "train" else None):
                for spectrogram in specs:
                    writer.write(serialize_example(spectrogram, labels[index], index, folds[index], spec))
                    index += 1
                bar.update(len(chunk))
    bar.close()
    spec.stats = stats.as_dict()
    # Clips of every split longer than clip_samples (cut at the end) and shorter (zero-padded).
    cut = sum(1 for n in lengths if n > s["clip_samples"])
    spec.stats["clips_cut"] = cut
    spec.stats["clips_padded"] = sum(1 for n in lengths if n < s["clip_samples"])
    if cut:
        print(f"warning: featurize speech: {cut} of {len(lengths)} clips are longer than features.speech.clip_samples "
              f"({s['clip_samples']} samples = {s['clip_samples'] / s['sample_rate_hz']:g} s) and were cut",
              file=sys.stderr)
    return spec


def featurize_mnist(raw_dir: Path, out_dir: Path, cfg: MnistFeatures, progress: bool = True) -> FeatureSpec:
    from attention_cnn.data.idx import read_idx_gz

    per_shard = cfg.examples_per_shard
    spec = FeatureSpec(dataset="mnist", shape=[28, 28, 1], storage_dtype="uint8", scale=1.0 / 255.0,
                       compression=cfg.compression, class_names=[str(i) for i in range(10)],
                       source=_source(raw_dir), settings={"examples_per_shard": per_shard})
    stats = RunningStats()
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = read_idx_gz(raw_dir / f"{prefix}-images-idx3-ubyte.gz")
        labels = read_idx_gz(raw_dir / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)
        if labels.size and labels.max() >= 10:
            raise StageError(f"{raw_dir}: MNIST label {labels.max()} out of range 0..9")
        folds = assign_folds(labels)
        spec.counts[split] = count_by_class(labels, spec.class_names)
        if split == "train":
            stats.update(images.astype(np.float32) / 255.0)
        with ShardedWriter(out_dir, spec, split, per_shard) as writer:
            for i in tqdm(range(len(labels)), desc=f"featurize mnist {split}", unit="img", disable=not progress,
                          mininterval=1.0):
                writer.write(serialize_example(images[i], labels[i], i, folds[i], spec))
    spec.stats = stats.as_dict()
    return spec


def _source(raw_dir: Path) -> str:
    import json

    try:
        return json.loads((raw_dir / "source.json").read_text())["source"]
    except (OSError, ValueError, KeyError):
        return "unknown"


def check_raw_files(dataset: str, raw_dir: Path) -> None:
    """Every raw file against the digest its fetch stage recorded: each speech recording against manifest.csv's
    ``sha256``, each MNIST IDX file against source.json's ``files``. A cached raw folder can be damaged (disk,
    copy, remote) while DVC still calls it clean; a mismatch is one line naming the file."""
    import json

    from attention_cnn.common import sha256_file

    if dataset == "speech":
        expected = {row["file"]: row.get("sha256") for row in read_csv_dicts(raw_dir / "manifest.csv")}
        listed = "manifest.csv"
    else:
        try:
            expected = json.loads((raw_dir / "source.json").read_text(encoding="utf-8")).get("files") or {}
        except (OSError, ValueError, AttributeError):
            expected = {}  # no recorded digests to check against
        listed = "source.json"
    for name, digest in sorted(expected.items()):
        path = raw_dir / name
        if not digest:
            continue
        if not path.is_file():
            problem = "is missing"
        elif sha256_file(path) != digest:
            problem = f"does not match the sha256 in {listed}"
        else:
            continue
        raise StageError(f"{path}: raw file {problem}; restore it with `dvc checkout --relink {raw_dir}` or "
                         f"`dvc pull {raw_dir}`, or refetch it with `dvc repro -f fetch-{dataset}`")


def featurize(dataset: str, raw_dir: Path, out_dir: Path, features: Features, progress: bool = True) -> FeatureSpec:
    """Write the feature folder ``out_dir`` atomically; return its spec."""
    if not (raw_dir / "manifest.csv").is_file():
        raise StageError(f"{raw_dir}/manifest.csv not found; run the fetch stage first (dvc repro)")
    check_raw_files(dataset, raw_dir)
    with atomic_dir(out_dir) as tmp:
        if dataset == "speech":
            spec = featurize_speech(raw_dir, tmp, features.speech, progress)
        elif dataset == "mnist":
            spec = featurize_mnist(raw_dir, tmp, features.mnist, progress)
        else:
            raise StageError(f"unknown dataset '{dataset}'; expected 'mnist' or 'speech'")
        write_spec(tmp, spec)
    return spec
