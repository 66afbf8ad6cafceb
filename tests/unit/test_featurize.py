"""featurize: the study's spectrogram geometry, resampling, cut/pad, and TFRecords that parse back."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.io import wavfile

from attention_cnn.features import featurize

from attention_cnn.data import speech as fetch_speech
from attention_cnn.common import StageError, read_csv_dicts
from attention_cnn.features.tfrecords import load_split, read_spec
from conftest import config

STUDY = {"sample_rate_hz": 8000, "clip_samples": 12800, "frame_length": 320, "frame_step": 32, "fft_length": 512}


def test_study_defaults_give_391_by_257():
    assert featurize.num_frames(12800, 320, 32) == 391
    clips = np.random.default_rng(0).standard_normal((2, 12800)).astype(np.float32)
    specs = featurize.spectrogram_batch(clips, 320, 32, 512)
    assert specs.shape == (2, 391, 257) and specs.dtype == np.float32 and (specs >= 0).all()
    # batched transform equals the per-clip transform (the study's per-file map)
    single = featurize.spectrogram_batch(clips[1:2], 320, 32, 512)
    np.testing.assert_allclose(specs[1], single[0], rtol=1e-5, atol=1e-4)


def test_fit_length_cuts_and_zero_pads_at_the_end():
    x = np.arange(10, dtype=np.float32)
    np.testing.assert_array_equal(featurize.fit_length(x, 4), x[:4])
    padded = featurize.fit_length(x, 13)
    assert len(padded) == 13 and padded[:10].tolist() == x.tolist() and not padded[10:].any()


def test_resample_keeps_duration_and_pitch():
    rate_in, rate_out = 22050, 8000
    t = np.arange(rate_in) / rate_in  # 1 s of 440 Hz
    out = featurize.resample(np.sin(2 * np.pi * 440 * t).astype(np.float32), rate_in, rate_out)
    assert len(out) == rate_out and out.dtype == np.float32
    spectrum = np.abs(np.fft.rfft(out))
    assert abs(np.argmax(spectrum) * rate_out / len(out) - 440) < 1.5
    same = np.ones(5, np.float32)
    assert featurize.resample(same, 8000, 8000) is same


@pytest.mark.parametrize("n,rate_in,rate_out", [(66150, 44100, 8000), (66137, 44100, 8000), (10342, 22050, 8000),
                                                (4001, 8000, 16000), (999, 48000, 8000), (7, 44100, 8000)])
def test_resample_is_scipy_signal_resample_of_the_padded_clip(n, rate_in, rate_out):
    """The FFT method of scipy.signal.resample (unpaired Nyquist bin included) on the clip zero-padded to a
    fast FFT length; output length ceil(n * rate_out / rate_in), odd and prime lengths and upsampling too."""
    from scipy.signal import resample as scipy_resample

    x = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    out = featurize.resample(x, rate_in, rate_out)
    n_out = -(-n * rate_out // rate_in)
    n_pad = int(featurize.FAST_LENGTHS[np.searchsorted(featurize.FAST_LENGTHS, n)])
    assert len(out) == n_out and n_pad >= n and set(np.unique(sympy_free_factors(n_pad))) <= {2, 3, 5}
    num = max((n_pad * rate_out + rate_in // 2) // rate_in, n_out)
    expected = scipy_resample(np.pad(x.astype(np.float64), (0, n_pad - n)), num)[:n_out]
    np.testing.assert_allclose(out, expected, atol=2e-6)


def sympy_free_factors(n: int) -> list[int]:
    """Prime factors of n (trial division; n is small)."""
    out, p = [], 2
    while n > 1:
        while n % p == 0:
            out.append(p)
            n //= p
        p += 1
    return out


def test_resample_runs_in_a_graph_with_rates_as_tensors():
    import tensorflow as tf

    x = np.random.default_rng(3).standard_normal(3000).astype(np.float32)
    graph = tf.function(featurize.resample_tensor, input_signature=[
        tf.TensorSpec([None], tf.float32), tf.TensorSpec([], tf.int64), tf.TensorSpec([], tf.int64)])
    np.testing.assert_allclose(graph(x, tf.constant(16000, tf.int64), tf.constant(8000, tf.int64)).numpy(),
                               featurize.resample(x, 16000, 8000), atol=1e-6)


@pytest.mark.parametrize("n,rate_in,rate_out", [(66150, 44100, 8000), (66137, 44100, 8000), (10342, 22050, 8000),
                                                (4001, 8000, 16000), (999, 48000, 8000), (7, 44100, 8000)])
def test_featurize_and_exports_resample_alike(n, rate_in, rate_out):
    """featurize's numpy resampler and the TensorFlow one exported models run: same lengths, same values to
    float32 rounding, in the stored float16 features identical but for rare rounding ties."""
    x = np.random.default_rng(n + 1).uniform(-1, 1, n).astype(np.float32)
    ours, exported = featurize.resample(x, rate_in, rate_out), featurize.resample_tensor(x, rate_in, rate_out).numpy()
    assert ours.dtype == exported.dtype == np.float32 and ours.shape == exported.shape
    np.testing.assert_allclose(ours, exported, rtol=0, atol=1e-6)
    assert np.mean(ours.astype(np.float16) != exported.astype(np.float16)) < 0.01


@pytest.mark.parametrize("key,value,match", [
    ("frame_step", 0, "features.speech.frame_step must be > 0"),
    ("clip_samples", 100, "clip_samples .100. must be >= features.speech.frame_length"),
    ("fft_length", 256, "fft_length .256. must be >="),
    ("sample_rate_hz", "8k", "sample_rate_hz must be an integer"),
])
def test_bad_speech_settings_name_the_key(key, value, match):
    with pytest.raises(StageError, match=match):
        config({f"features.speech.{key}": value})


def test_featurize_speech_end_to_end_from_mixed_rate_stereo_files(tmp_path):
    root = tmp_path / "mine"
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("test", 2)):
        for i in range(n):
            rate = (8000, 16000, 22050)[i % 3]
            samples = (rng.standard_normal((rate // 4, 2)) * 3000).astype(np.int16)  # stereo, 0.25 s
            (root / split / str(i % 2)).mkdir(parents=True, exist_ok=True)
            wavfile.write(root / split / str(i % 2) / f"c{i}.wav", rate, samples)
    fetch_speech.fetch(config({"data.speech.source": "folder", "data.speech.path": str(root),
                               "data.speech.labels": "subfolder"}).data, tmp_path / "raw")
    features = config({**{f"features.speech.{k}": v for k, v in STUDY.items()}, "features.speech.clip_samples": 4000,
                       "features.speech.storage_dtype": "float16", "features.speech.examples_per_shard": 3,
                       "features.speech.chunk_clips": 4}).features
    spec = featurize.featurize("speech", tmp_path / "raw", tmp_path / "feat", features, progress=False)
    assert spec.shape == [featurize.num_frames(4000, 320, 32), 257, 1]
    assert spec.counts == {"train": {"0": 3, "1": 3}, "test": {"0": 1, "1": 1}}
    assert spec.source == "folder" and len(spec.shards["train"]) == 2 and spec.stats["std"] > 0
    assert read_spec(tmp_path / "feat") == spec
    # stored features equal a direct computation (float16 rounding aside)
    rows = sorted((r for r in read_csv_dicts(tmp_path / "raw/manifest.csv")
                   if r["split"] == "test"), key=lambda r: r["file"])
    from attention_cnn.data.audio import read_audio
    samples, rate = read_audio(tmp_path / "raw" / rows[0]["file"])
    direct = featurize.spectrogram_batch(featurize.fit_length(featurize.resample(samples, rate, 8000), 4000)[None],
                                         320, 32, 512)[0]
    stored = next(iter(load_split(tmp_path / "feat", spec, "test")))["feature"].numpy()[..., 0]
    np.testing.assert_allclose(stored, direct, rtol=2e-3, atol=2e-3)


def test_featurize_requires_fetch_output(tmp_path):
    with pytest.raises(StageError, match="run the fetch stage first"):
        featurize.featurize("speech", tmp_path / "nothing", tmp_path / "out", config().features)
    assert not (tmp_path / "out").exists()


def test_spectrograms_of_active_frames_equal_the_padded_stft_bit_for_bit():
    """Only frames that overlap the recording are transformed; the result is the study's STFT exactly."""
    rng = np.random.default_rng(3)
    s = {**STUDY, "clip_samples": 4000}
    waves = [rng.standard_normal(n).astype(np.float32) for n in (0, 1, 31, 33, 320, 1234, 4000, 5000)]
    padded = np.stack([featurize.fit_length(w, 4000) for w in waves])
    expected = featurize.spectrogram_batch(padded, 320, 32, 512)
    active = featurize.active_spectrograms(waves, s)
    got = np.zeros_like(expected)
    for i, rows in enumerate(active):
        got[i, :len(rows)] = rows
    assert got.shape == expected.shape and got.tobytes() == expected.tobytes()
    frames = featurize.num_frames(4000, 320, 32)
    assert [len(a) for a in active] == [0, 1, 1, 2, 10, 39, frames, frames]
    for rows, full in zip(active, expected):
        assert not full[len(rows):].any()   # everything after the active frames is exactly zero


@pytest.mark.parametrize("channels", [2, 3, 6])
def test_mono_mix_is_the_channel_mean_bit_for_bit(channels):
    from attention_cnn.data.audio import to_float_mono

    pcm = np.random.default_rng(channels).integers(-32768, 32767, (5001, channels)).astype(np.int16)
    expected = (pcm.astype(np.float32) / 32768.0).mean(axis=1)
    mono = to_float_mono(pcm)
    assert mono.dtype == np.float32 and mono.flags.c_contiguous
    np.testing.assert_array_equal(mono, expected)
