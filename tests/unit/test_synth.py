"""Tests for attention_cnn/data/synth.py (espeak-ng digit synthesis). Fast: a few hundred short clips at most."""
from __future__ import annotations

import io
import re
import wave
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]

from attention_cnn.data import synth
from attention_cnn.common import StageError, sha256_file
from attention_cnn.data.synth import (
    DIGIT_WORDS,
    Synthesizer,
    Voice,
    add_noise,
    add_reverb,
    cut_edges,
    room_impulse_response,
    split_voices,
    synthesize_digits,
    voice_grid,
    wav_bytes,
)

ROW_KEYS = {"file", "label", "split", "speaker", "duration_s", "sample_rate_hz", "sha256"}
ID_RE = re.compile(r"^[A-Za-z0-9-]+(_[A-Za-z0-9-]+)*$")


@pytest.fixture(scope="module")
def synthesizer() -> Synthesizer:
    return Synthesizer()


def _combo(v: Voice) -> tuple[str, str]:
    return (v.base, v.variant)


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------- voices


def test_voice_id_format():
    assert Voice("en-us+f3", 150, 60).id == "en-us_f3_r150_p60"
    assert Voice("en-gb-x-rp", 120, 40).id == "en-gb-x-rp_r120_p40"
    assert Voice("en+f3", 150, 60).id != Voice("en+f3", 150, 61).id


def test_voice_grid_distinct_and_deterministic():
    grid = voice_grid(60, 0)
    assert len(grid) == 60
    assert len(set(grid)) == 60
    assert len({v.id for v in grid}) == 60
    assert all(ID_RE.match(v.id) and "+" not in v.id for v in grid)
    assert voice_grid(60, 0) == grid
    assert voice_grid(60, 1) != grid
    assert voice_grid(10, 0) == grid[:10]
    # all 60 use different (base, variant) combinations: the grid has more than 60
    assert len({_combo(v) for v in grid}) == 60
    big = voice_grid(synth.max_voices(), 3)
    assert len({v.id for v in big}) == synth.max_voices()
    with pytest.raises(StageError):
        voice_grid(synth.max_voices() + 1, 0)


@pytest.mark.parametrize("n_train,n_test,seed", [(2, 1, 0), (30, 10, 0), (40, 20, 7), (100, 30, 1)])
def test_split_voices_disjoint(n_train, n_test, seed):
    train, test = split_voices(n_train, n_test, seed)
    assert (len(train), len(test)) == (n_train, n_test)
    ids = [v.id for v in train + test]
    assert len(set(ids)) == len(ids), "voice ids must be unique"
    assert not {_combo(v) for v in train} & {_combo(v) for v in test}, "base+variant shared"
    assert not {v.variant for v in train} & {v.variant for v in test}, "variant shared"
    assert split_voices(n_train, n_test, seed) == (train, test)


# --------------------------------------------------------------------------- audio


def test_reports_sample_rate(synthesizer):
    assert synthesizer.sample_rate_hz == 22050  # espeak-ng's native rate


def test_audio_sanity(synthesizer):
    sr = synthesizer.sample_rate_hz
    fastest = Voice("en-gb-scotland", max(synth.RATES_WPM), 50)
    slowest = Voice("en-us+f4", min(synth.RATES_WPM), 50)
    for voice in voice_grid(3, 0) + [fastest, slowest]:
        for word in DIGIT_WORDS:
            a = synthesizer.say(word, voice)
            assert a.dtype == np.int16 and a.ndim == 1 and a.size > 0
            assert 0.2 <= a.size / sr <= 2.0, (word, voice, a.size / sr)
            assert np.any(a != 0)
            # silence at each end trimmed to at most ~50 ms
            loud = np.flatnonzero(np.abs(a.astype(np.int32)) > 0.02 * np.abs(a.astype(np.int32)).max())
            assert loud[0] <= 0.06 * sr and a.size - 1 - loud[-1] <= 0.06 * sr
    v = Voice("en-us", 150, 50)
    one, seven = synthesizer.say("one", v), synthesizer.say("seven", v)
    assert one.size != seven.size or not np.array_equal(one, seven)


def test_say_independent_of_call_order(synthesizer):
    v = Voice("en-gb-x-rp+f2", 150, 60)
    a = synthesizer.say("four", v)
    synthesizer.say("nine", Voice("en+m3", 190, 30))
    assert np.array_equal(synthesizer.say("four", v), a)
    assert np.array_equal(Synthesizer().say("four", v), a)


def test_rate_and_pitch_change_audio(synthesizer):
    base = synthesizer.say("three", Voice("en-us", 150, 50))
    slow = synthesizer.say("three", Voice("en-us", 110, 50))
    high = synthesizer.say("three", Voice("en-us", 150, 80))
    assert slow.size > base.size
    assert high.size != base.size or not np.array_equal(high, base)


def test_wav_bytes_round_trip():
    rng = np.random.default_rng(0)
    samples = rng.integers(-32768, 32767, size=1234, dtype=np.int16)
    data = wav_bytes(samples, 22050)
    assert data == wav_bytes(samples.copy(), 22050)
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    with wave.open(io.BytesIO(data), "rb") as w:
        assert w.getframerate() == 22050
        assert w.getnchannels() == 1
        assert w.getsampwidth() == 2
        assert w.getnframes() == samples.size
        back = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    assert np.array_equal(back, samples)
    with pytest.raises(ValueError):
        wav_bytes(samples.astype(np.float32), 22050)


def test_add_noise():
    t = np.arange(22050) / 22050
    clean = (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    noisy = add_noise(clean, 20.0, np.random.default_rng(5))
    assert noisy.dtype == np.int16 and noisy.shape == clean.shape
    assert np.array_equal(noisy, add_noise(clean, 20.0, np.random.default_rng(5)))
    noise = noisy.astype(float) - clean
    snr = 10 * np.log10(np.mean(clean.astype(float) ** 2) / np.mean(noise**2))
    assert abs(snr - 20.0) < 0.5
    assert np.array_equal(add_noise(clean, float("inf"), np.random.default_rng(0)), clean)
    loud = np.full(1000, 32000, dtype=np.int16)
    clipped = add_noise(loud, -10.0, np.random.default_rng(0))  # heavy noise: must clip, not wrap
    assert clipped.max() == 32767 and clipped.min() == -32768


def test_room_impulse_response_decays_by_60_db_over_rt60_with_the_drawn_direct_to_reverberant_ratio():
    rate = 22050
    h = room_impulse_response(0.4, 6.0, rate, np.random.default_rng(1))
    assert h.shape == (round(0.4 * rate),) and h[0] == 1.0
    assert 10 * np.log10(1.0 / np.sum(h[1:] ** 2)) == pytest.approx(6.0)   # direct over tail energy
    # Schroeder's backward integral: the tail's energy decay, fitted from -5 to -25 dB (T20), extrapolated to -60
    energy = np.cumsum(h[1:][::-1] ** 2)[::-1]
    decay_db = 10 * np.log10(energy / energy[0])
    fit = (decay_db <= -5) & (decay_db >= -25)
    slope_db_per_s = np.polyfit(np.arange(fit.size)[fit] / rate, decay_db[fit], 1)[0]
    assert -60 / slope_db_per_s == pytest.approx(0.4, rel=0.1)
    assert np.array_equal(h, room_impulse_response(0.4, 6.0, rate, np.random.default_rng(1)))
    assert np.array_equal(room_impulse_response(0.0, 6.0, rate, np.random.default_rng(1)), [1.0])
    with pytest.raises(ValueError, match="rt60_s"):
        room_impulse_response(float("nan"), 6.0, rate, np.random.default_rng(1))


def test_add_reverb_keeps_the_peak_adds_the_tail_and_smears_a_click():
    rate = 8000
    t = np.arange(rate // 4) / rate
    tone = (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    wet = add_reverb(tone, 0.3, 3.0, rate, np.random.default_rng(2))
    assert wet.dtype == np.int16 and wet.size == tone.size + round(0.3 * rate) - 1
    assert abs(int(np.abs(wet).max()) - 8000) <= 1
    assert np.array_equal(wet, add_reverb(tone, 0.3, 3.0, rate, np.random.default_rng(2)))
    click = np.zeros(rate // 2, np.int16)
    click[100] = 10000
    smeared = add_reverb(click, 0.3, 3.0, rate, np.random.default_rng(2)).astype(float)
    assert np.sum(smeared[101:] ** 2) > 0.3 * np.sum(smeared[:101] ** 2)   # 3 dB DRR: half the energy in the tail
    assert not smeared[:100].any()                                         # nothing before the sound (causal)
    assert np.array_equal(add_reverb(tone, 0.0, 3.0, rate, np.random.default_rng(2)), tone)   # dry


def test_reverb_in_synthesis_is_per_clip_and_zero_leaves_the_clips_as_they_were(tmp_path):
    voices = voice_grid(2, 0)
    dry = dict(takes_per_voice=1, noise_snr_db=30.0, seed=0, progress=False)
    rows_dry = synthesize_digits(tmp_path / "dry", voices, [], **dry)
    rows_zero = synthesize_digits(tmp_path / "zero", voices, [], reverb_rt60_s=0.0, **dry)
    assert rows_zero == rows_dry and _tree(tmp_path / "zero") == _tree(tmp_path / "dry")
    rows_wet = synthesize_digits(tmp_path / "wet", voices, [], reverb_rt60_s=0.5, **dry)
    assert rows_wet == synthesize_digits(tmp_path / "wet2", voices, [], reverb_rt60_s=0.5, **dry)   # deterministic
    longer = [w["duration_s"] - d["duration_s"] for w, d in zip(rows_wet, rows_dry)]
    assert all(0.0 <= x <= 0.5 for x in longer) and len({round(x, 3) for x in longer}) > 10   # a room per clip
    assert not {r["sha256"] for r in rows_wet} & {r["sha256"] for r in rows_dry}


def test_cut_edges_crops_each_end_by_a_drawn_share_of_the_clip():
    clip = np.arange(-500, 500, dtype=np.int16)
    rng = np.random.default_rng(3)
    head, tail = (int(u * clip.size) for u in np.random.default_rng(3).uniform(0.0, 0.3, 2))
    cut = cut_edges(clip, 0.3, rng)
    assert head > 0 and tail > 0 and np.array_equal(cut, clip[head:clip.size - tail])   # a slice, first draw the start
    shares = []
    for k in range(200):
        c = cut_edges(clip, 0.3, np.random.default_rng(k))
        start = int(c[0]) + 500
        shares += [start / clip.size, (clip.size - start - c.size) / clip.size]
    assert 0.0 <= min(shares) < 0.02 and 0.28 < max(shares) <= 0.3 and abs(np.mean(shares) - 0.15) < 0.02
    assert np.array_equal(cut_edges(clip, 0.0, rng), clip)
    with pytest.raises(ValueError, match="max_fraction"):
        cut_edges(clip, 0.5, rng)


def test_edge_cuts_in_synthesis_crop_into_the_word_and_leave_the_rest_of_each_clip_as_it_was(tmp_path):
    voices = voice_grid(2, 0)
    plain = dict(takes_per_voice=1, noise_snr_db=30.0, seed=0, progress=False)
    rows_plain = synthesize_digits(tmp_path / "plain", voices, [], **plain)
    assert synthesize_digits(tmp_path / "zero", voices, [], edge_cut_fraction=0.0, **plain) == rows_plain
    rows_cut = synthesize_digits(tmp_path / "cut", voices, [], edge_cut_fraction=0.3, **plain)
    assert rows_cut == synthesize_digits(tmp_path / "cut2", voices, [], edge_cut_fraction=0.3, **plain)
    def samples(folder, row):
        with wave.open(str(folder / row["file"]), "rb") as w:
            return np.frombuffer(w.readframes(w.getnframes()), np.int16)
    starts_loud = 0
    for p, c in zip(rows_plain, rows_cut):
        whole, cut = samples(tmp_path / "plain", p), samples(tmp_path / "cut", c)
        assert 0.4 * whole.size <= cut.size < whole.size
        at = [i for i in range(whole.size - cut.size + 1) if np.array_equal(whole[i:i + cut.size], cut)]
        assert len(at) == 1                       # the same noisy clip, cropped (the noise drawn as without cuts)
        peak = np.abs(whole).max()
        starts_loud += int(np.abs(cut[:80]).max() > 0.1 * peak)   # the first 10 ms already in the word
    assert starts_loud >= 3                       # some clips start mid-sound (20 clips, up to 30 % cut per end)


def test_accented_voices_are_distinct_deterministic_and_apart_from_the_english_grid():
    voices = synth.accented_voice_grid(60, 0)
    assert voices == synth.accented_voice_grid(60, 0) and len({v.id for v in voices}) == 60
    assert {v.base for v in voices} == set(synth.ACCENTS)          # every accent within the first few dozen
    assert not {v.id for v in voices} & {v.id for v in voice_grid(400, 0)}
    assert synth.voice_grid(5, 0) == voice_grid(5, 0)              # the English grid is unchanged
    with pytest.raises(StageError, match="accented voices but the grid has only"):
        synth.accented_voice_grid(synth.max_voices(tuple(synth.ACCENTS)) + 1, 0)
    assert synth.spoken_word(Voice("fr+m3", 150, 50), 3) == "sri"
    assert synth.spoken_word(Voice("en-us+m3", 150, 50), 3) == "three"


def test_every_accent_says_ten_different_words_in_its_own_voice(synthesizer):
    """Each accented spelling is spoken (not skipped as unknown text) by its language's voice, and differs from
    the English voice saying the English word."""
    assert all(len(words) == 10 and len(set(words)) == 10 for words in synth.ACCENTS.values())
    for base, words in sorted(synth.ACCENTS.items()):
        for digit in (3, 7):
            accented = synthesizer.say(words[digit], Voice(base, 150, 50))
            english = synthesizer.say(DIGIT_WORDS[digit], Voice("en", 150, 50))
            assert accented.size > 0.15 * synthesizer.sample_rate_hz, (base, digit)
            assert accented.size != english.size or not np.array_equal(accented, english), (base, digit)


# --------------------------------------------------------------------------- errors


def test_unknown_voice_raises(synthesizer):
    for name in ("xx-nosuch", "nosuch+f3", "en+nosuch", "en us"):
        with pytest.raises(StageError) as exc:
            synthesizer.say("one", Voice(name, 150, 50))
        assert name in str(exc.value) and "\n" not in str(exc.value)
    with pytest.raises(StageError):
        synthesizer.say("one", Voice("en", 20, 50))


def test_missing_library_raises(monkeypatch, tmp_path):
    import espeakng_loader

    monkeypatch.setattr(espeakng_loader, "get_library_path", lambda: str(tmp_path / "libespeak-ng.so"))
    with pytest.raises(StageError, match="libespeak-ng"):
        Synthesizer()


def test_duplicate_voices_rejected(tmp_path):
    v = Voice("en-us+f3", 150, 60)
    with pytest.raises(StageError):
        synthesize_digits(tmp_path, [v], [v], takes_per_voice=1, noise_snr_db=30.0, seed=0, progress=False)


# --------------------------------------------------------------------------- dataset


def test_synthesize_digits_deterministic(tmp_path):
    train, test = split_voices(2, 1, seed=0)
    kwargs = dict(takes_per_voice=2, noise_snr_db=25.0, seed=0, progress=False)
    rows_a = synthesize_digits(tmp_path / "a", train, test, **kwargs)
    rows_b = synthesize_digits(tmp_path / "b", train, test, **kwargs)
    assert rows_a == rows_b
    tree_a = _tree(tmp_path / "a")
    assert tree_a == _tree(tmp_path / "b")
    # call order does not matter
    rows_c = synthesize_digits(tmp_path / "c", test[::-1], [], **kwargs)
    rows_c += synthesize_digits(tmp_path / "c", train[::-1], [], **kwargs)
    by_file = {r["file"]: r for r in rows_a}
    for r in rows_c:
        assert {k: v for k, v in r.items() if k != "split"} == {
            k: v for k, v in by_file[r["file"]].items() if k != "split"
        }
    assert _tree(tmp_path / "c") == tree_a

    # manifest
    assert len(rows_a) == 3 * 10 * 2 == len(tree_a)
    assert [r["file"] for r in rows_a] == sorted(r["file"] for r in rows_a)
    for r in rows_a:
        assert set(r) == ROW_KEYS
        path = tmp_path / "a" / r["file"]
        assert r["sha256"] == sha256_file(path)
        assert r["file"] == f"recordings/{r['label']}_{r['speaker']}_{r['file'][-5]}.wav"
        assert isinstance(r["label"], int) and 0 <= r["label"] <= 9
        assert isinstance(r["sample_rate_hz"], int)
        with wave.open(str(path), "rb") as w:
            assert w.getframerate() == r["sample_rate_hz"]
            assert r["duration_s"] == round(w.getnframes() / w.getframerate(), 4)
        assert 0.2 <= r["duration_s"] <= 2.0
    for split, voices in (("train", train), ("test", test)):
        rows = [r for r in rows_a if r["split"] == split]
        assert {r["label"] for r in rows} == set(range(10))
        assert {r["speaker"] for r in rows} == {v.id for v in voices}
    # takes of the same (voice, digit) differ
    take0 = tree_a[f"recordings/3_{train[0].id}_0.wav"]
    take1 = tree_a[f"recordings/3_{train[0].id}_1.wav"]
    assert take0 != take1
    # a different seed gives different noise
    rows_d = synthesize_digits(tmp_path / "d", train[:1], [], **{**kwargs, "takes_per_voice": 1, "seed": 1})
    assert rows_d[0]["sha256"] != by_file[rows_d[0]["file"]]["sha256"]
