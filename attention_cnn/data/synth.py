"""Offline synthesis of spoken digits ("zero".."nine") with espeak-ng via ctypes.

The shared library and its data come from the ``espeakng-loader`` wheel, so no
system package is needed.  Everything here is deterministic: the same
arguments give byte-identical WAV files and manifest rows, whatever the call
order.

Why the library is re-opened for every utterance
------------------------------------------------
libespeak-ng keeps synthesis state in C statics that no API call resets (the
pitch "flutter" index in ``AdvanceParameters``, the wave phase, AGC state...),
and ``espeak_Terminate`` + ``espeak_Initialize`` do not reset them either.  So
the samples for "seven" depend on what was spoken before it.  To make each
clip a pure function of (text, voice), :class:`Synthesizer` opens a fresh
instance of the library for each utterance (``dlopen``, initialise, speak,
terminate, ``dlclose``), which costs a few milliseconds.  At construction it
checks that this really gives a fresh state; if the platform keeps the library
mapped after ``dlclose``, it falls back to opening a private copy of the
``.so`` file per utterance (a distinct file is always a distinct instance).
"""
from __future__ import annotations

import ctypes
import hashlib
import io
import math
import os
import re
import shutil
import tempfile
import threading
import wave
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from attention_cnn.common import StageError, atomic_write_bytes, sha256_bytes

DIGIT_WORDS: tuple[str, ...] = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
)

# English base voices of espeak-ng (names accepted by espeak_SetVoiceByName;
# note that "en-gb" is NOT one of them, the British voice is plain "en").
BASE_VOICES: tuple[str, ...] = (
    "en",              # English (Great Britain)
    "en-us",           # English (America)
    "en-us-nyc",       # English (America, New York City)
    "en-gb-scotland",  # English (Scotland)
    "en-gb-x-rp",      # English (Received Pronunciation)
    "en-gb-x-gbclan",  # English (Lancaster)
    "en-gb-x-gbcwmd",  # English (West Midlands)
    "en-029",          # English (Caribbean)
)

# Non-native accents: an espeak-ng voice of another language says each English digit word the way a native
# speaker of that language tends to, written in that language's spelling so that its own letter-to-sound rules
# give the accent (French "sri" for "three", German "zeːvən" for "seven", Hindi's retroflex "ʈuː" for "two").
# Why: most FSDD speakers are not native English speakers, and the English voices above all are.
# The spellings were checked with espeak_TextToPhonemes (IPA, e.g. fr: zeʁˈo wˈan tˈu sʁˈi fˈɔʁ faˈiv sˈiks sevˈɛn
# ˈɛjt naˈin); a spelling the language's rules would read as another word is avoided.
ACCENTS: dict[str, tuple[str, ...]] = {
    "fr": ("zéro", "ouane", "tou", "sri", "fore", "faïve", "sixe", "sévène", "eïte", "naïne"),   # French
    "de": ("siero", "wan", "tu", "sri", "for", "feif", "sicks", "sewen", "eht", "nein"),         # German
    "es": ("siro", "uan", "tu", "tri", "for", "faif", "siks", "seven", "eit", "nain"),           # Spanish
    "it": ("ziro", "uan", "tu", "tri", "for", "faiv", "sics", "seven", "eit", "nain"),           # Italian
    "nl": ("ziero", "wan", "toe", "trie", "for", "faif", "siks", "seven", "eet", "najn"),        # Dutch
    "pl": ("ziro", "łan", "tu", "tri", "for", "fajw", "syks", "sewen", "ejt", "najn"),           # Polish
    "el": ("ζίρο", "ουάν", "του", "θρι", "φορ", "φάιβ", "σιξ", "σέβεν", "έιτ", "νάιν"),           # Greek
    "ru": ("зироу", "уан", "ту", "сри", "фор", "файв", "сикс", "севен", "эйт", "найн"),           # Russian
    "hi": ("ज़ीरो", "वन", "टू", "थ्री", "फ़ोर", "फ़ाइव", "सिक्स", "सेवन", "एट", "नाइन"),  # Hindi
}

# Voice variants (files in espeak-ng-data/voices/!v), grouped by timbre so that
# train/test splits get a mix of each.  "" is the base voice's own default.
# Whisper and the robotic/novelty variants are left out: they are far from
# speech a digit recogniser should be judged on.
VARIANT_GROUPS: dict[str, tuple[str, ...]] = {
    "male": ("", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "croak", "Andy", "max", "quincy", "robert"),
    "female": ("f1", "f2", "f3", "f4", "f5", "Annie", "linda", "steph", "zac"),
    "klatt": ("klatt", "klatt2", "klatt3"),
}
VARIANTS: tuple[str, ...] = tuple(v for group in VARIANT_GROUPS.values() for v in group)

RATES_WPM: tuple[int, ...] = (100, 120, 140, 160, 180, 200)
PITCHES: tuple[int, ...] = (25, 35, 45, 55, 65, 75)

RATE_MIN, RATE_MAX = 80, 450
TRIM_PAD_S = 0.05          # keep at most this much silence at either end
TRIM_REL_THRESHOLD = 0.02  # |x| above 2 % of the peak counts as sound
TRIM_ABS_THRESHOLD = 32    # ...and never below this (int16 units)
JITTER_RATE_FRAC = 0.05    # takes > 0: rate * (1 +- 5 %)
JITTER_PITCH = 5           # takes > 0: pitch +- 5
# reverb_rt60_s > 0: the direct sound's energy over the reverberant tail's, drawn per clip (dB). A microphone
# a few tens of centimetres from the mouth in a small room (a laptop's, as FSDD's) hears mostly direct sound.
REVERB_DRR_DB = (0.0, 12.0)

_NAME_RE = re.compile(r"^[A-Za-z0-9-]+(\+[A-Za-z0-9-]+)?$")
_ID_BAD = re.compile(r"[^A-Za-z0-9-]")

# espeak-ng API constants (speak_lib.h)
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000   # without it espeak_Initialize calls exit() on error
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM_RATE = 1
_PARAM_VOLUME = 2
_PARAM_PITCH = 3
_PARAM_RANGE = 4
_EE_OK = 0

_SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


# --------------------------------------------------------------------------- voices


@dataclass(frozen=True)
class Voice:
    name: str      # espeak voice spec: "en", "en-us", "en+f3", "en-us+m2"
    rate_wpm: int  # words per minute, espeak range 80..450
    pitch: int     # 0..100

    @property
    def base(self) -> str:
        return self.name.split("+", 1)[0]

    @property
    def variant(self) -> str:
        return self.name.split("+", 1)[1] if "+" in self.name else ""

    @property
    def id(self) -> str:
        """Filesystem-safe id, e.g. ``en-us_f3_r150_p60`` (``en-us_r150_p60`` without variant)."""
        parts = [_ID_BAD.sub("-", self.base)]
        if self.variant:
            parts.append(_ID_BAD.sub("-", self.variant))
        parts += [f"r{int(self.rate_wpm)}", f"p{int(self.pitch)}"]
        return "_".join(parts)


def _voice_name(base: str, variant: str) -> str:
    return f"{base}+{variant}" if variant else base


def _hash_key(*parts: object) -> bytes:
    """Stable (cross-process, cross-version) sort key for deterministic shuffles."""
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()


def _unit(*parts: object) -> float:
    """Stable pseudo-random number in [-1, 1) from ``parts``."""
    return int.from_bytes(_hash_key(*parts)[:8], "big") / 2.0**63 - 1.0


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise StageError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def _interleaved(variants: Iterable[str], seed: int, tag: str) -> list[str]:
    """``variants`` in a seeded order that interleaves the timbre groups, so any
    prefix takes from every group (male, female, klatt) in proportion to its size."""
    wanted = set(variants)
    keyed = []
    for group in VARIANT_GROUPS.values():
        members = sorted((v for v in group if v in wanted), key=lambda v: _hash_key(seed, tag, "var", v))
        keyed += [((k + 0.5) / len(members), _hash_key(seed, tag, "tie", v), v) for k, v in enumerate(members)]
    return [v for _, _, v in sorted(keyed)]


def _draw(variants: Sequence[str], count: int, seed: int, tag: str,
          base_voices: Sequence[str] = BASE_VOICES) -> list[Voice]:
    """``count`` distinct voices from ``base_voices`` x ``variants`` x rates x pitches.

    Voices cycle through the variants (interleaved by timbre group), each
    variant through the base accents in its own seeded order, so all
    (base, variant) combinations are used once before any is used twice and
    small sets are as varied as possible; each reuse of a combination gets a
    different (rate, pitch) from that combination's own seeded order.
    """
    var_order = _interleaved(variants, seed, tag)
    bases = {v: sorted(base_voices, key=lambda b: _hash_key(seed, tag, "base", v, b)) for v in var_order}
    order = [(bases[v][j], v) for j in range(len(base_voices)) for v in var_order]
    grid = [(r, p) for r in RATES_WPM for p in PITCHES]
    rp_orders: dict[tuple[str, str], list[tuple[int, int]]] = {}
    voices: list[Voice] = []
    for i in range(count):
        base, variant = order[i % len(order)]
        rp = rp_orders.get((base, variant))
        if rp is None:
            rp = sorted(grid, key=lambda g: _hash_key(seed, tag, "rp", base, variant, *g))
            rp_orders[(base, variant)] = rp
        rate, pitch = rp[i // len(order)]
        voices.append(Voice(_voice_name(base, variant), rate, pitch))
    return voices


def max_voices(base_voices: Sequence[str] = BASE_VOICES) -> int:
    """How many distinct voices :func:`voice_grid` (or a grid of other ``base_voices``) can give."""
    return len(base_voices) * len(VARIANTS) * len(RATES_WPM) * len(PITCHES)


def _grid(count: int, seed: int, base_voices: Sequence[str], tag: str, what: str) -> list[Voice]:
    seed = _check_seed(seed)
    if not isinstance(count, (int, np.integer)) or count < 0:
        raise StageError(f"voice count must be a non-negative integer, got {count!r}")
    if count > max_voices(base_voices):
        raise StageError(f"asked for {count} {what} but the grid has only {max_voices(base_voices)}")
    return _draw(VARIANTS, int(count), seed, tag, base_voices)


def voice_grid(count: int, seed: int) -> list[Voice]:
    """``count`` distinct voices drawn deterministically from the English voice grid."""
    return _grid(count, seed, BASE_VOICES, "grid", "voices")


def accented_voice_grid(count: int, seed: int) -> list[Voice]:
    """``count`` distinct voices with a non-native accent (:data:`ACCENTS`), drawn as :func:`voice_grid` draws."""
    return _grid(count, seed, tuple(ACCENTS), "accent", "accented voices")


def spoken_word(voice: Voice, digit: int) -> str:
    """The text ``voice`` says for ``digit``: the English word, or its accented spelling (:data:`ACCENTS`)."""
    return ACCENTS[voice.base][digit] if voice.base in ACCENTS else DIGIT_WORDS[digit]


def split_voices(count_train: int, count_test: int, seed: int) -> tuple[list[Voice], list[Voice]]:
    """Disjoint train/test voices whose speakers never overlap.

    Stricter than "different (base, variant)": the *variants* (which set the
    timbre: formants, pitch range, roughness) are partitioned between train and
    test, so no test voice shares its variant with any train voice, whatever the
    base accent, rate or pitch.  Hence also no (base + variant) combination is
    shared.
    """
    seed = _check_seed(seed)
    for what, n in (("count_train", count_train), ("count_test", count_test)):
        if not isinstance(n, (int, np.integer)) or n < 0:
            raise StageError(f"{what} must be a non-negative integer, got {n!r}")
    count_train, count_test = int(count_train), int(count_test)
    n_var = len(VARIANTS)
    per_variant = len(BASE_VOICES) * len(RATES_WPM) * len(PITCHES)
    total = count_train + count_test
    if total == 0:
        return [], []
    # variants for test in proportion to the voice counts, at least one if any
    # test voice is wanted, then moved to whichever side lacks capacity.
    n_test = round(n_var * count_test / total)
    if count_test > 0:
        n_test = max(n_test, 1)
    if count_train > 0:
        n_test = min(n_test, n_var - 1)
    n_test = max(n_test, math.ceil(count_test / per_variant))
    n_test = min(n_test, n_var - math.ceil(count_train / per_variant))
    if n_test * per_variant < count_test or (n_var - n_test) * per_variant < count_train or n_test < 0:
        raise StageError(
            f"cannot draw {count_train} train and {count_test} test voices with disjoint "
            f"speakers from {n_var} variants x {per_variant} voices each; ask for fewer voices"
        )
    variants = _interleaved(VARIANTS, seed, "split")
    test_vars, train_vars = variants[:n_test], variants[n_test:]
    train = _draw(train_vars, count_train, seed, "train")
    test = _draw(test_vars, count_test, seed, "test")
    return train, test


# --------------------------------------------------------------------------- audio helpers


def _check_int16(samples: np.ndarray, what: str = "samples") -> np.ndarray:
    arr = np.asarray(samples)
    if arr.dtype != np.int16 or arr.ndim != 1:
        raise ValueError(f"{what} must be a 1-D int16 array, got {arr.dtype} with shape {arr.shape}")
    return arr


def trim_silence(samples: np.ndarray, sample_rate_hz: int, pad_s: float = TRIM_PAD_S) -> np.ndarray:
    """Trim leading/trailing silence, keeping at most ``pad_s`` seconds of it at each end."""
    arr = _check_int16(samples)
    if arr.size == 0:
        return arr.copy()
    mag = np.abs(arr.astype(np.int32))
    threshold = max(TRIM_ABS_THRESHOLD, int(mag.max() * TRIM_REL_THRESHOLD))
    loud = np.flatnonzero(mag > threshold)
    if loud.size == 0:
        return arr[:0].copy()
    pad = int(round(pad_s * sample_rate_hz))
    start = max(0, int(loud[0]) - pad)
    stop = min(arr.size, int(loud[-1]) + 1 + pad)
    return arr[start:stop].copy()


def add_noise(samples: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """Add white Gaussian noise at ``snr_db`` (relative to the clip's mean power); int16 in/out.

    ``snr_db = inf`` adds nothing (but still returns a copy).  A silent clip
    stays silent: SNR is undefined for it.
    """
    arr = _check_int16(samples)
    snr_db = float(snr_db)
    if math.isnan(snr_db) or snr_db == -math.inf:
        raise ValueError(f"snr_db must be a number or +inf, got {snr_db}")
    x = arr.astype(np.float64)
    power = float(np.mean(x * x)) if x.size else 0.0
    if snr_db == math.inf or power == 0.0:
        return arr.copy()
    noise_std = math.sqrt(power / (10.0 ** (snr_db / 10.0)))
    y = x + rng.standard_normal(x.size) * noise_std
    return np.clip(np.rint(y), -32768, 32767).astype(np.int16)


def room_impulse_response(rt60_s: float, drr_db: float, sample_rate_hz: int,
                          rng: np.random.Generator) -> np.ndarray:
    """A synthetic room: a unit direct impulse, then a diffuse tail of Gaussian noise whose level falls by 60 dB
    over ``rt60_s`` seconds (Sabine's exponential decay), scaled so that the direct sound carries ``drr_db`` dB
    more energy than the tail. float64, ``ceil(rt60_s * rate)`` samples long (at least 1)."""
    if not (rt60_s >= 0.0 and math.isfinite(rt60_s)):
        raise ValueError(f"rt60_s must be a finite number >= 0, got {rt60_s}")
    n = max(1, math.ceil(rt60_s * sample_rate_hz))
    h = np.zeros(n)
    h[0] = 1.0
    if n > 1:
        t = np.arange(1, n) / sample_rate_hz
        tail = rng.standard_normal(n - 1) * np.exp(-3.0 * math.log(10.0) * t / rt60_s)  # -60 dB at rt60_s
        h[1:] = tail * math.sqrt(10.0 ** (-drr_db / 10.0) / float(np.sum(tail * tail)))
    return h


def add_reverb(samples: np.ndarray, rt60_s: float, drr_db: float, sample_rate_hz: int,
               rng: np.random.Generator) -> np.ndarray:
    """``samples`` as heard in :func:`room_impulse_response`'s room; int16 in/out, the tail kept (the clip grows by
    ``rt60_s``), the peak level kept. ``rt60_s = 0`` returns a copy of the input."""
    arr = _check_int16(samples)
    if rt60_s == 0.0 or arr.size == 0:
        return arr.copy()
    from scipy.signal import fftconvolve

    x = arr.astype(np.float64)
    y = fftconvolve(x, room_impulse_response(rt60_s, drr_db, sample_rate_hz, rng))
    peak = float(np.abs(y).max())
    if peak > 0.0:
        y *= float(np.abs(x).max()) / peak
    return np.clip(np.rint(y), -32768, 32767).astype(np.int16)


def cut_edges(samples: np.ndarray, max_fraction: float, rng: np.random.Generator) -> np.ndarray:
    """``samples`` without a random share, drawn uniformly from [0, ``max_fraction``] of their length, at each end
    (two draws: the start's, then the end's); int16 in/out. A word that starts or stops mid-sound, as in recordings
    cropped tightly round the word. ``max_fraction = 0`` returns a copy of the input."""
    arr = _check_int16(samples)
    if not 0.0 <= max_fraction < 0.5:
        raise ValueError(f"max_fraction must be in [0, 0.5), got {max_fraction}")
    if max_fraction == 0.0:
        return arr.copy()
    head = int(rng.uniform(0.0, max_fraction) * arr.size)
    tail = int(rng.uniform(0.0, max_fraction) * arr.size)
    return arr[head:arr.size - tail].copy()


def wav_bytes(samples: np.ndarray, sample_rate_hz: int) -> bytes:
    """16-bit PCM mono RIFF WAV of ``samples``; identical input gives identical bytes."""
    arr = _check_int16(samples)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(sample_rate_hz))
        w.writeframes(arr.astype("<i2", copy=False).tobytes())
    return buf.getvalue()


# --------------------------------------------------------------------------- espeak-ng


def _locate_espeak() -> tuple[str, str]:
    try:
        import espeakng_loader
    except ImportError:
        raise StageError(
            "espeakng_loader is not installed; run `pip install espeakng-loader` in this environment"
        ) from None
    lib_path = espeakng_loader.get_library_path()
    try:
        data_path = espeakng_loader.get_data_path()
    except RuntimeError as exc:
        raise StageError(f"espeak-ng data not found ({exc}); reinstall espeakng-loader") from None
    if not Path(lib_path).is_file():
        raise StageError(f"libespeak-ng not found at {lib_path}; reinstall espeakng-loader")
    return lib_path, data_path


def _dlclose(handle: int) -> None:
    try:
        import _ctypes

        _ctypes.dlclose(handle)
    except (ImportError, AttributeError, OSError):  # not POSIX: nothing to do
        pass


class Synthesizer:
    """Speaks text with espeak-ng; ``say`` returns trimmed int16 mono samples.

    One instance can be reused for any number of calls (calls are serialised
    by a process-wide lock: libespeak-ng is not re-entrant).  See the module
    docstring for why each utterance runs in a fresh library instance.
    """

    _lock = threading.Lock()

    def __init__(self) -> None:
        self.library_path, self.data_path = _locate_espeak()
        # espeak_Initialize's path is the folder that CONTAINS espeak-ng-data.
        self._init_path = os.path.dirname(os.path.abspath(self.data_path)).encode()
        self._variant_dir = Path(self.data_path) / "voices" / "!v"
        self._copy_dir: tempfile.TemporaryDirectory | None = None
        self._copies = 0
        self._chunks: list[bytes] = []

        def _collect(wav, n, _events):  # called by espeak during espeak_Synth
            if n > 0 and wav:
                self._chunks.append(ctypes.string_at(wav, n * 2))
            return 0

        self._callback = _SYNTH_CALLBACK(_collect)  # keep a reference: C holds the pointer
        with self._lock:
            lib = self._open(self.library_path)
            try:
                self.sample_rate_hz: int = self._initialize(lib)
            finally:
                self._close(lib)
        self._check_fresh_state()

    # -- library instances -------------------------------------------------

    def _open(self, path: str) -> ctypes.CDLL:
        try:
            lib = ctypes.CDLL(path)
        except OSError as exc:
            raise StageError(
                f"cannot load libespeak-ng from {path} ({exc}); reinstall espeakng-loader"
            ) from None
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
            ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Synchronize.argtypes = []
        lib.espeak_Synchronize.restype = ctypes.c_int
        lib.espeak_Terminate.argtypes = []
        lib.espeak_Terminate.restype = ctypes.c_int
        return lib

    def _initialize(self, lib: ctypes.CDLL) -> int:
        rate = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, self._init_path, _INITIALIZE_DONT_EXIT
        )
        if rate <= 0:
            raise StageError(
                f"espeak_Initialize failed (code {rate}) with data in {self.data_path}; "
                "reinstall espeakng-loader"
            )
        lib.espeak_SetSynthCallback(self._callback)
        return int(rate)

    def _close(self, lib: ctypes.CDLL) -> None:
        try:
            lib.espeak_Terminate()
        finally:
            _dlclose(lib._handle)

    def _fresh_library_path(self) -> str:
        if self._copy_dir is None:
            return self.library_path
        self._copies += 1
        dst = Path(self._copy_dir.name) / f"libespeak-ng-{self._copies}.so"
        shutil.copyfile(self.library_path, dst)
        return str(dst)

    def _check_fresh_state(self) -> None:
        probe = Voice("en", 175, 50)
        first = self._say_raw("seven", probe)
        if np.array_equal(first, self._say_raw("seven", probe)):
            return
        # dlclose did not unload the library: use a private copy per utterance
        self._copy_dir = tempfile.TemporaryDirectory(prefix="espeak-ng-")
        first = self._say_raw("seven", probe)
        if not np.array_equal(first, self._say_raw("seven", probe)):
            raise StageError(
                "libespeak-ng gives different audio for the same text on repeated calls; "
                "cannot synthesize deterministically on this platform"
            )

    # -- synthesis ---------------------------------------------------------

    def _validate(self, voice: Voice) -> None:
        if not isinstance(voice.name, str) or not _NAME_RE.match(voice.name):
            raise StageError(
                f"voice {voice.name!r}: not a valid espeak voice spec; use e.g. 'en-us' or 'en-us+f3'"
            )
        if voice.variant and not (self._variant_dir / voice.variant).is_file():
            raise StageError(
                f"voice {voice.name!r}: unknown variant '{voice.variant}'; "
                f"choose a file from {self._variant_dir}"
            )
        if not RATE_MIN <= int(voice.rate_wpm) <= RATE_MAX:
            raise StageError(
                f"voice {voice.name!r}: rate {voice.rate_wpm} wpm outside {RATE_MIN}..{RATE_MAX}"
            )
        if not 0 <= int(voice.pitch) <= 100:
            raise StageError(f"voice {voice.name!r}: pitch {voice.pitch} outside 0..100")

    def _say_raw(self, text: str, voice: Voice) -> np.ndarray:
        """Untrimmed samples of ``text`` from a fresh library instance."""
        self._validate(voice)
        encoded = text.encode("utf-8") + b"\0"
        with self._lock:
            path = self._fresh_library_path()
            lib = self._open(path)
            try:
                rate = self._initialize(lib)
                if rate != self.sample_rate_hz:
                    raise StageError(
                        f"libespeak-ng changed its sample rate ({rate} Hz, expected "
                        f"{self.sample_rate_hz} Hz)"
                    )
                err = lib.espeak_SetVoiceByName(voice.name.encode("ascii"))
                if err != _EE_OK:
                    raise StageError(
                        f"voice {voice.name!r}: unknown to espeak-ng (error {err}); use an English "
                        f"voice such as {', '.join(BASE_VOICES[:3])} (see espeak-ng-data/lang)"
                    )
                lib.espeak_SetParameter(_PARAM_RATE, int(voice.rate_wpm), 0)
                lib.espeak_SetParameter(_PARAM_PITCH, int(voice.pitch), 0)
                lib.espeak_SetParameter(_PARAM_RANGE, 50, 0)
                lib.espeak_SetParameter(_PARAM_VOLUME, 100, 0)
                if hasattr(lib, "espeak_ng_SetRandSeed"):  # espeak-ng >= 1.52
                    lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
                    lib.espeak_ng_SetRandSeed.restype = None
                    lib.espeak_ng_SetRandSeed(1)
                self._chunks = []
                err = lib.espeak_Synth(
                    encoded, len(encoded), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None
                )
                if err != _EE_OK:
                    raise StageError(f"espeak_Synth failed (error {err}) for {text!r} with voice {voice.name!r}")
                lib.espeak_Synchronize()
                data = b"".join(self._chunks)
                self._chunks = []
            finally:
                self._close(lib)
                if path != self.library_path:
                    os.unlink(path)
        return np.frombuffer(data, dtype=np.int16).copy()

    def say(self, text: str, voice: Voice) -> np.ndarray:
        """int16 mono samples at :attr:`sample_rate_hz`, silence trimmed to <= ~50 ms per end."""
        samples = trim_silence(self._say_raw(text, voice), self.sample_rate_hz)
        if samples.size == 0:
            raise StageError(f"espeak-ng produced no audio for {text!r} with voice {voice.name!r}")
        return samples


# --------------------------------------------------------------------------- dataset


def _stable_hash(text: str) -> int:
    return zlib.crc32(text.encode("utf-8"))


def take_voice(voice: Voice, digit: int, take: int, seed: int) -> Voice:
    """The voice actually used for one take: take 0 is ``voice`` itself, later
    takes get a small deterministic rate/pitch jitter."""
    if take == 0:
        return voice
    u_rate = _unit(seed, voice.id, digit, take, "rate")
    u_pitch = _unit(seed, voice.id, digit, take, "pitch")
    rate = int(round(voice.rate_wpm * (1.0 + JITTER_RATE_FRAC * u_rate)))
    pitch = int(round(voice.pitch + JITTER_PITCH * u_pitch))
    return Voice(voice.name, min(max(rate, RATE_MIN), RATE_MAX), min(max(pitch, 0), 100))


def clip_rng(seed: int, voice: Voice, digit: int, take: int, use: str = "noise") -> np.random.Generator:
    """The generator of one clip's ``use``, independent of the order clips are made in: ``"noise"``, ``"room"`` (its
    reverberation time, direct-to-reverberant ratio and tail) or ``"cut"`` (its ends). One stream per use, so that
    turning reverb or cutting on leaves every other draw of a clip, its noise among them, as it was."""
    key = [seed, _stable_hash(voice.id), digit, take]
    return np.random.default_rng(key if use == "noise" else key + [_stable_hash(use)])


def _check_voice_lists(train_voices: Iterable[Voice], test_voices: Iterable[Voice]) -> None:
    seen: dict[str, str] = {}
    for split, voices in (("train", train_voices), ("test", test_voices)):
        for v in voices:
            if not isinstance(v, Voice):
                raise StageError(f"{split} voices must be Voice objects, got {v!r}")
            if v.id in seen:
                where = "twice in train/test" if seen[v.id] != split else f"twice in {split}"
                raise StageError(f"voice {v.id} appears {where}; voices must be unique")
            seen[v.id] = split


def synthesize_digits(
    out_dir: Path,
    train_voices: list[Voice],
    test_voices: list[Voice],
    *,
    takes_per_voice: int,
    noise_snr_db: float,
    seed: int,
    reverb_rt60_s: float = 0.0,
    edge_cut_fraction: float = 0.0,
    progress: bool = True,
) -> list[dict]:
    """Write ``out_dir/recordings/{digit}_{voice.id}_{take}.wav`` for every voice,
    digit and take; return the manifest rows sorted by file.

    ``reverb_rt60_s`` > 0: each clip is heard in a room of its own (:func:`add_reverb`), its reverberation time
    drawn uniformly from [0, ``reverb_rt60_s``] s and its direct-to-reverberant ratio from :data:`REVERB_DRR_DB`;
    then the noise is added (a microphone's, after the room). ``edge_cut_fraction`` > 0: then each clip is cropped
    into the word (:func:`cut_edges`), as a recording cut tightly round it."""
    from tqdm import tqdm

    seed = _check_seed(seed)
    if not isinstance(takes_per_voice, (int, np.integer)) or takes_per_voice < 1:
        raise StageError(f"takes_per_voice must be a positive integer, got {takes_per_voice!r}")
    _check_voice_lists(train_voices, test_voices)
    out_dir = Path(out_dir)
    rec_dir = out_dir / "recordings"
    jobs = [
        (split, voice, digit, take)
        for split, voices in (("train", train_voices), ("test", test_voices))
        for voice in voices
        for digit in range(len(DIGIT_WORDS))
        for take in range(int(takes_per_voice))
    ]
    synth = Synthesizer()
    sr = synth.sample_rate_hz
    rows: list[dict] = []
    for split, voice, digit, take in tqdm(jobs, desc="synth", unit="wav", disable=not progress):
        samples = synth.say(spoken_word(voice, digit), take_voice(voice, digit, take, seed))
        if reverb_rt60_s > 0.0:
            room = clip_rng(seed, voice, digit, take, "room")
            samples = add_reverb(samples, room.uniform(0.0, reverb_rt60_s), room.uniform(*REVERB_DRR_DB), sr, room)
        samples = add_noise(samples, noise_snr_db, clip_rng(seed, voice, digit, take))
        if edge_cut_fraction > 0.0:
            samples = cut_edges(samples, edge_cut_fraction, clip_rng(seed, voice, digit, take, "cut"))
        data = wav_bytes(samples, sr)
        name = f"{digit}_{voice.id}_{take}.wav"
        atomic_write_bytes(rec_dir / name, data)
        rows.append(
            {
                "file": f"recordings/{name}",
                "label": digit,
                "split": split,
                "speaker": voice.id,
                "duration_s": round(samples.size / sr, 4),
                "sample_rate_hz": sr,
                "sha256": sha256_bytes(data),
            }
        )
    rows.sort(key=lambda r: r["file"])
    return rows
