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


def test_resample_many_is_resample_clip_by_clip_bit_for_bit():
    """featurize resamples a chunk in one call; each clip must come out as the clip-at-a-time resampler (and so an
    export) gives it: same bits, whatever the rates and lengths around it."""
    rng = np.random.default_rng(0)
    clips = [(rng.standard_normal(n).astype(np.float32), rate) for n, rate in
             [(66150, 44100), (8000, 8000), (10342, 22050), (7, 44100), (4001, 48000), (1, 16000), (23000, 44100)]]
    many = featurize.resample_many(clips, 8000)
    assert len(many) == len(clips)
    for (x, rate), got in zip(clips, many):
        want = featurize.resample(x, rate, 8000)
        assert got.dtype == want.dtype and got.shape == want.shape and np.array_equal(got, want), (len(x), rate)
    assert many[1] is clips[1][0]                       # a clip at the output rate is passed through
    assert featurize.resample_many([(clips[1][0], 8000)], 8000)[0] is clips[1][0]


def test_fast_lengths_are_sorted_5_smooth_and_fit_the_int32_fft_length():
    lengths = featurize.FAST_LENGTHS
    assert np.all(np.diff(lengths) > 0) and lengths[0] == 1 and int(lengths[-1]) <= np.iinfo(np.int32).max
    assert 2 ** 30 in lengths and 2 ** 31 not in lengths and 3 ** 19 in lengths
    assert all(set(sympy_free_factors(int(n))) <= {2, 3, 5} for n in lengths[:200])


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
    np.testing.assert_array_equal(graph(x, tf.constant(16000, tf.int64), tf.constant(8000, tf.int64)).numpy(),
                                  featurize.resample(x, 16000, 8000))   # featurize runs the same ops


@pytest.mark.parametrize("dtype", ["int16", "int32", "uint8", "float32"])
@pytest.mark.parametrize("channels", [1, 2, 3, 6])
def test_mono_mix_is_the_channel_mean_bit_for_bit(channels, dtype):
    """Scaled samples averaged over channels, as WAV readers define them, bit for bit."""
    from attention_cnn.data.audio import to_float_mono

    rng = np.random.default_rng(channels)
    if dtype == "float32":
        pcm = rng.uniform(-1, 1, (5001, channels)).astype(np.float32)
        scaled = pcm.copy()
    else:
        info = np.iinfo(dtype)
        pcm = rng.integers(info.min, info.max, (5001, channels), endpoint=True).astype(dtype)
        offset = 128.0 if dtype == "uint8" else 0.0
        scaled = (pcm.astype(np.float32) - np.float32(offset)) / np.float32(info.max + 1 - offset)
    mono = to_float_mono(pcm)
    assert mono.dtype == np.float32 and mono.flags.c_contiguous
    np.testing.assert_array_equal(mono, scaled.mean(axis=1))
    np.testing.assert_array_equal(to_float_mono(pcm[:, 0]), scaled[:, 0])   # one channel, no channel axis
