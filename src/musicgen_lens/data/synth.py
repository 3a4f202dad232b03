"""A deterministic, offline "synthetic music world": labelled clips rendered with numpy.

Every clip is fully described by a :class:`ClipSpec` (lead instrument, style, tempo, key,
seed, ...). :func:`render_clip` turns a spec into mono float32 audio; the same spec always
gives bit-identical audio, because all randomness comes from ``np.random.default_rng``
seeded by the spec (never the global RNG). :func:`describe` gives the text prompt for a
text-conditioned model and :func:`spec_labels` the matching labels, so steering vectors and
probes for the paper's concepts (timbre: trumpet -> violin / xylophone; genre: classical ->
electronic -> rock; adding a tabla; genre fusion) can be built and checked without any
download.

The synthesis is deliberately simple (additive partials, Karplus-Strong strings, filtered
noise drums) but each instrument has the acoustic cue a listener - or a classifier - uses
to tell it apart: brass brightening with loudness and a pitch scoop, bowed-string vibrato
and body resonances, a xylophone's inharmonic bar modes, a flute's near-sinusoid with
breath, a piano's stretched decaying partials, a plucked string's Karplus-Strong decay and
a detuned sawtooth synth.

A sample-based FluidSynth backend would sound more realistic; it is optional and never
required, and nothing here depends on it.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from musicgen_lens._atomic import atomic_path
from musicgen_lens._paths import plain_file_name

# --------------------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------------------

INSTRUMENTS: tuple[str, ...] = (
    "trumpet",
    "violin",
    "xylophone",
    "flute",
    "piano",
    "guitar",
    "synth",
)
STYLES: tuple[str, ...] = ("classical", "rock", "electronic", "indian", "jazz")
ACCOMPANIMENTS: tuple[str, ...] = ("tabla", "drums", "drone")
KEYS: tuple[str, ...] = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
MIN_TEMPO_BPM = 60.0
MAX_TEMPO_BPM = 180.0

_FLAT_ALIASES = {"Db": "C#", "Eb": "D#", "Gb": "F#", "Ab": "G#", "Bb": "A#"}

# Scale (semitones above the tonic) and its name in the text prompt, per style.
_SCALES: dict[str, tuple[str, tuple[int, ...]]] = {
    "classical": ("major", (0, 2, 4, 5, 7, 9, 11)),
    "rock": ("minor pentatonic", (0, 3, 5, 7, 10)),
    "electronic": ("minor", (0, 2, 3, 5, 7, 8, 10)),
    "indian": ("raga bhairav", (0, 1, 4, 5, 7, 8, 11)),
    "jazz": ("dorian", (0, 2, 3, 5, 7, 9, 10)),
}

# Style-typical tempo ranges (BPM), used by make_dataset when no tempo_range is given.
_STYLE_TEMPI: dict[str, tuple[int, int]] = {
    "classical": (60, 120),
    "rock": (100, 160),
    "electronic": (115, 140),
    "indian": (60, 120),
    "jazz": (90, 180),
}

# Comfortable MIDI register (low, high) of each lead instrument.
_REGISTERS: dict[str, tuple[int, int]] = {
    "trumpet": (58, 82),
    "violin": (60, 88),
    "xylophone": (65, 96),
    "flute": (62, 93),
    "piano": (52, 84),
    "guitar": (48, 76),
    "synth": (52, 84),
}

_DESCRIPTIONS: dict[str, str] = {
    "classical": "",
    "rock": " with distorted guitars and drums",
    "electronic": " with a synth bass and four-on-the-floor beat",
    "indian": " with a tanpura drone and tabla",
    "jazz": " with walking bass and ride cymbal",
}

# Accompaniment layers that a style's backing already contains.
_STYLE_LAYERS: dict[str, frozenset[str]] = {
    "classical": frozenset(),
    "rock": frozenset({"drums"}),
    "electronic": frozenset(),
    "indian": frozenset({"tabla", "drone"}),
    "jazz": frozenset(),
}

_ACCOMPANIMENT_TEXT: dict[str, str] = {
    "tabla": "tabla",
    "drums": "rock drums",
    "drone": "a tanpura drone",
}


# --------------------------------------------------------------------------------------
# Specs and labels
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClipSpec:
    """Everything that determines a clip; two equal specs render bit-identical audio.

    ``backing_gain`` scales the style's own backing (drums, chords, drone) relative to the
    lead; 0 leaves the lead melody alone, which is handy for pure-timbre studies.
    ``accompaniment`` adds one extra layer from :data:`ACCOMPANIMENTS` on top of the style
    (e.g. a tabla over a classical violin); the lead and backing are unchanged by it, so a
    spec with and without an accompaniment forms a minimal pair. A layer the style's
    backing already plays (tabla or drone in "indian", drums in "rock") is not doubled.
    """

    instrument: str
    style: str
    tempo_bpm: float = 120.0
    key: str = "C"
    seed: int = 0
    duration_s: float = 4.0
    sample_rate: int = 16000
    accompaniment: str | None = None
    backing_gain: float = 0.5

    def __post_init__(self) -> None:
        # Frozen, so normalising the key needs object.__setattr__.
        object.__setattr__(self, "key", _normalise_key(self.key))
        if self.instrument not in INSTRUMENTS:
            raise ValueError(f"unknown instrument {self.instrument!r}; choose from {INSTRUMENTS}")
        if self.style not in STYLES:
            raise ValueError(f"unknown style {self.style!r}; choose from {STYLES}")
        if not MIN_TEMPO_BPM <= self.tempo_bpm <= MAX_TEMPO_BPM:
            raise ValueError(
                f"tempo_bpm must be in [{MIN_TEMPO_BPM:g}, {MAX_TEMPO_BPM:g}], got {self.tempo_bpm}"
            )
        if self.accompaniment is not None and self.accompaniment not in ACCOMPANIMENTS:
            raise ValueError(
                f"unknown accompaniment {self.accompaniment!r}; choose from {ACCOMPANIMENTS}"
            )
        if self.duration_s <= 0:
            raise ValueError(f"duration_s must be positive, got {self.duration_s}")
        if self.sample_rate < 8000:
            raise ValueError(f"sample_rate must be at least 8000 Hz, got {self.sample_rate}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if self.backing_gain < 0:
            raise ValueError(f"backing_gain must be >= 0, got {self.backing_gain}")

    @property
    def n_samples(self) -> int:
        return int(round(self.duration_s * self.sample_rate))

    @property
    def scale_name(self) -> str:
        return _SCALES[self.style][0]

    @property
    def tonic_pitch_class(self) -> int:
        return KEYS.index(self.key)

    @property
    def adds_layer(self) -> bool:
        """Whether ``accompaniment`` is audible as an extra layer: not when the style's own
        (audible) backing already plays it, e.g. a tabla over the "indian" style."""
        if self.accompaniment is None:
            return False
        return not (self.backing_gain > 0 and self.accompaniment in _STYLE_LAYERS[self.style])


def _normalise_key(key: str) -> str:
    key = key.strip()
    key = key[:1].upper() + key[1:]
    key = _FLAT_ALIASES.get(key, key)
    if key not in KEYS:
        raise ValueError(f"unknown key {key!r}; choose from {KEYS} (or a flat alias)")
    return key


def _format_tempo(tempo_bpm: float) -> str:
    return f"{tempo_bpm:g}"


def describe(spec: ClipSpec) -> str:
    """Text prompt for the clip, e.g. ``"classical violin melody at 96 BPM in D major"``.

    The text names only what is audible: no backing instruments when ``backing_gain`` is
    0, and an accompaniment only when it adds a layer (see :attr:`ClipSpec.adds_layer`).
    """
    backing = _DESCRIPTIONS[spec.style] if spec.backing_gain > 0 else ""
    text = (
        f"{spec.style} {spec.instrument} melody at {_format_tempo(spec.tempo_bpm)} BPM "
        f"in {spec.key} {spec.scale_name}{backing}"
    )
    if spec.adds_layer:
        assert spec.accompaniment is not None
        text += (" and " if backing else " with ") + _ACCOMPANIMENT_TEXT[spec.accompaniment]
    return text


def spec_labels(spec: ClipSpec) -> dict[str, Any]:
    """Flat labels for probes and CSVs (instrument, style, tempo_bpm, key, scale, ...)."""
    return {
        "instrument": spec.instrument,
        "style": spec.style,
        "tempo_bpm": spec.tempo_bpm,
        "key": spec.key,
        "scale": spec.scale_name,
        "accompaniment": spec.accompaniment or "",
        "seed": spec.seed,
        "duration_s": spec.duration_s,
        "sample_rate": spec.sample_rate,
    }


# --------------------------------------------------------------------------------------
# Small DSP helpers
# --------------------------------------------------------------------------------------


def midi_to_hz(midi: float | np.ndarray) -> Any:
    """Equal-tempered frequency with A4 (MIDI 69) = 440 Hz."""
    return 440.0 * 2.0 ** ((np.asarray(midi, dtype=np.float64) - 69.0) / 12.0)


def _time(n: int, sr: int) -> np.ndarray:
    return np.arange(n, dtype=np.float64) / sr


def _phase(freq: np.ndarray | float, n: int, sr: int) -> np.ndarray:
    """Running phase (radians) of an oscillator whose frequency may vary per sample."""
    if np.ndim(freq) == 0:
        return 2.0 * np.pi * float(freq) * _time(n, sr)
    return 2.0 * np.pi * np.cumsum(freq) / sr


def _envelope(n: int, sr: int, attack: float, release: float, note_len: int) -> np.ndarray:
    """Linear attack, sustain until ``note_len`` samples, then a linear release to zero."""
    t = _time(n, sr)
    env = np.minimum(1.0, t / max(attack, 1e-4))
    off = note_len / sr
    env *= np.clip(1.0 - (t - off) / max(release, 1e-4), 0.0, 1.0)
    return env


def _harmonics_below(f_max: float, sr: int, k_max: int) -> np.ndarray:
    """Harmonic numbers 1..k whose frequency stays below ~0.45 sr (no aliasing)."""
    k = int(min(k_max, max(1, np.floor(0.45 * sr / max(f_max, 1e-3)))))
    return np.arange(1, k + 1, dtype=np.float64)


def _additive(phase: np.ndarray, ratios: np.ndarray, amps: np.ndarray) -> np.ndarray:
    """Sum of sinusoids at ``ratios * phase``; ``amps`` is [K] or time-varying [K, n]."""
    if np.array_equal(ratios, np.arange(1, len(ratios) + 1)):
        return _harmonic_series(phase, amps)
    partials = np.sin(np.outer(ratios, phase))
    if amps.ndim == 1:
        return amps @ partials
    return np.einsum("kn,kn->n", amps, partials)


def _harmonic_series(
    phase: np.ndarray, amps: np.ndarray, tilt: np.ndarray | None = None
) -> np.ndarray:
    """Harmonics 1..K as successive powers of exp(i phase): a complex multiply per sample
    and harmonic is several times cheaper than a sin(), and the drift over <= 48 powers of
    a unit complex number is ~1e-14. ``tilt`` (per sample) additionally scales harmonic k
    by ``tilt**(k-1)``, a time-varying spectral slope at no extra cost."""
    z = np.exp(1j * phase)
    step = z if tilt is None else z * tilt
    zk = z.copy()
    out = np.zeros(len(phase))
    for k in range(len(amps)):
        out += amps[k] * zk.imag
        zk *= step
    return out


def _decaying_partials(
    freqs: np.ndarray, taus: np.ndarray, amps: np.ndarray, n: int, sr: int
) -> np.ndarray:
    """Sum of ``amps * exp(-t/tau) * sin(2 pi f t)``: each partial is a geometric sequence,
    so a cumulative product of one complex factor replaces a sin() and an exp() per sample."""
    factor = np.exp(2j * np.pi * freqs / sr - 1.0 / (taus * sr))
    steps = np.empty((len(freqs), n), dtype=np.complex128)
    steps[:, 0] = 1.0
    steps[:, 1:] = factor[:, None]
    return amps @ np.cumprod(steps, axis=1).imag


def _filtered_noise(rng: np.random.Generator, n: int, sr: int, lo: float, hi: float) -> np.ndarray:
    """White noise band-limited to [lo, hi] Hz in the FFT domain (no scipy needed)."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / sr)
    spectrum[(freqs < lo) | (freqs > hi)] = 0.0
    out = np.fft.irfft(spectrum, n)
    peak = np.max(np.abs(out))
    return out / peak if peak > 0 else out


def _resonance_gain(
    freqs: np.ndarray, centres: Sequence[float], widths: Sequence[float], gains: Sequence[float]
) -> np.ndarray:
    """A fixed formant-like response: 1 plus Lorentzian bumps at ``centres``."""
    response = np.ones_like(freqs)
    for centre, width, gain in zip(centres, widths, gains, strict=True):
        response += gain / (1.0 + ((freqs - centre) / width) ** 2)
    return response


def _soft_clip(x: np.ndarray, drive: float) -> np.ndarray:
    """tanh distortion normalised so full scale stays full scale."""
    return np.tanh(drive * x) / np.tanh(drive)


# --------------------------------------------------------------------------------------
# Melodic instruments: each renders one note of ``note_len`` samples plus its tail.
# --------------------------------------------------------------------------------------

NoteRenderer = Callable[[float, int, int, np.random.Generator], np.ndarray]


def _trumpet(f0: float, note_len: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Bright harmonic series; upper harmonics grow with loudness (the brassy attack)."""
    n = note_len + int(0.06 * sr)
    t = _time(n, sr)
    # Lips start slightly flat and lock onto the pitch within ~50 ms: the "scoop".
    freq = f0 * 2.0 ** (-0.5 / 12.0 * np.exp(-t / 0.035))
    k = _harmonics_below(f0, sr, min(24, int(8000.0 / f0) + 1))
    env = _envelope(n, sr, attack=0.03, release=0.06, note_len=note_len)
    env *= 1.0 + 0.3 * np.exp(-t / 0.05) * (t > 0.02)  # brief overshoot after the attack
    formant = _resonance_gain(k * f0, centres=[1200.0], widths=[900.0], gains=[3.0])
    # The bell radiates the 1-1.5 kHz region best and rolls off ~12 dB/octave above ~2.5 kHz.
    base = formant / k**0.35 / (1.0 + (k * f0 / 2500.0) ** 2)
    # Brass gets brighter as it gets louder: harmonic k follows env**(1 + 0.15 (k - 1)).
    level = np.clip(env, 0, None) / 1.3
    tone = level * _harmonic_series(_phase(freq, n, sr), base, tilt=level**0.15)
    breath = _filtered_noise(rng, n, sr, 1500.0, 6000.0) * np.exp(-t / 0.02) * 0.05
    return tone / np.sum(base) * 3.0 + breath


def _violin(f0: float, note_len: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Bowed sawtooth through body resonances, slow attack and delayed 5-6 Hz vibrato."""
    n = note_len + int(0.12 * sr)
    t = _time(n, sr)
    rate = 5.0 + rng.random()  # 5-6 Hz
    depth_semitones = 0.3
    onset = np.clip((t - 0.1) / 0.25, 0.0, 1.0)  # players start vibrato after the attack
    vib = depth_semitones / 12.0 * onset * np.sin(2 * np.pi * rate * t + rng.random() * 2 * np.pi)
    freq = f0 * 2.0**vib
    k = _harmonics_below(f0 * 1.02, sr, int(8000.0 / f0) + 1)  # body rolls off above 5 kHz
    body = _resonance_gain(
        k * f0, centres=[280.0, 480.0, 2700.0], widths=[50.0, 100.0, 800.0], gains=[1.5, 1.5, 8.0]
    )
    amps = body / k**0.8 * (1.0 / (1.0 + (k * f0 / 5000.0) ** 4))
    env = _envelope(n, sr, attack=0.12, release=0.12, note_len=note_len)
    tone = _additive(_phase(freq, n, sr), k, amps) / np.sum(amps) * 4.0
    bow = _filtered_noise(rng, n, sr, 2000.0, 7000.0) * 0.03
    return env * (tone + bow)


def _xylophone(f0: float, note_len: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Inharmonic bar modes (1 : 3.93 : 9.54) that decay fast, plus a mallet click."""
    del note_len  # a struck bar rings on regardless of the note's written length
    ratios = np.array([1.0, 3.93, 9.54])
    amps = np.array([1.0, 0.5, 0.25])
    keep = ratios * f0 < 0.45 * sr
    ratios, amps = ratios[keep], amps[keep]
    tau0 = float(np.clip(0.45 * np.sqrt(523.0 / f0), 0.15, 0.8))
    taus = tau0 / np.array([1.0, 3.0, 7.0])[keep]
    n = int(5 * tau0 * sr)
    tone = _decaying_partials(ratios * f0, taus, amps, n, sr)
    click_len = int(0.004 * sr)
    click = np.zeros(n)
    click[:click_len] = _filtered_noise(rng, click_len, sr, 2000.0, 0.5 * sr) * np.hanning(
        click_len
    )
    return tone + 0.4 * click


def _flute(f0: float, note_len: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Nearly a pure sine (weak 2nd/3rd harmonics) with breath noise and no vibrato."""
    n = note_len + int(0.08 * sr)
    k = _harmonics_below(f0, sr, 3)
    amps = np.array([1.0, 0.12, 0.04])[: len(k)]
    env = _envelope(n, sr, attack=0.07, release=0.08, note_len=note_len)
    tone = _additive(_phase(f0, n, sr), k, amps)
    breath = _filtered_noise(rng, n, sr, 1000.0, 5000.0) * 0.06
    chiff = np.exp(-_time(n, sr) / 0.03) * 2.0  # breath is strongest as the note speaks
    return env * (tone + breath * (1.0 + chiff))


def _piano(f0: float, note_len: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Stretched (slightly inharmonic) partials that decay, faster for higher partials."""
    sustain_len = note_len + int(0.1 * sr)
    tau0 = float(np.clip(1.2 * np.sqrt(261.6 / f0), 0.4, 2.5))
    n = int(min(sustain_len, 4 * tau0 * sr))
    t = _time(n, sr)
    inharm = 2e-4 * (f0 / 261.6)  # thicker, stiffer strings -> stretched partials
    k = np.arange(1, 20, dtype=np.float64)
    ratios = k * np.sqrt(1.0 + inharm * k**2)
    keep = ratios * f0 < 0.45 * sr
    k, ratios = k[keep], ratios[keep]
    # Hammer strikes ~1/8 of the string length: partials near multiples of 8 are weak.
    amps = (np.abs(np.sin(np.pi * k / 8.0)) + 0.05) / k
    taus = tau0 / (1.0 + 0.3 * (k - 1))
    damper = np.clip(1.0 - (t - note_len / sr) / 0.1, 0.0, 1.0)
    # Two-stage decay: a loud "prompt" sound that dies within ~0.2 s, then a quieter
    # long "aftersound" - the percussive drop that marks a struck string.
    tone = (
        _decaying_partials(
            np.concatenate([ratios, ratios]) * f0,
            np.concatenate([0.15 * taus, taus]),
            np.concatenate([0.75 * amps, 0.25 * amps]),
            n,
            sr,
        )
        / np.sum(amps)
        * 4.0
    )
    thump = _filtered_noise(rng, n, sr, 40.0, 800.0) * np.exp(-t / 0.01) * 0.2
    attack = np.minimum(1.0, t / 0.002)
    return (tone + thump) * attack * damper


def _karplus_strong(
    f0: float, n: int, sr: int, rng: np.random.Generator, tau: float, brightness: float
) -> np.ndarray:
    """Plucked string: a noise burst recirculating through a delay line with averaging.

    The recursion ``y[i] = rho/2 (y[i-N] + y[i-N-1])`` only reaches back one period, so a
    whole period is computed at once (one numpy op per period, not per sample). The
    integer delay detunes the string; reading the result at a fractional rate fixes it.
    """
    period = max(2, int(sr / f0 - 0.5))
    ks_f0 = sr / (period + 0.5)  # the averaging filter adds half a sample of delay
    ratio = f0 / ks_f0
    length = int(np.ceil(n * ratio)) + 2
    rho = float(np.exp(-1.0 / (f0 * tau)))  # loss per period -> decay time ~tau seconds
    buf = np.zeros(length + period + 1)
    excitation = rng.uniform(-1.0, 1.0, period)
    # A softer pluck is a low-passed burst: mix with its own moving average.
    smooth = np.convolve(excitation, np.ones(4) / 4.0, mode="same")
    buf[1 : period + 1] = brightness * excitation + (1.0 - brightness) * smooth
    # buf[0] is a zero guard so y[i-N-1] exists for the first computed sample.
    start = period + 1
    while start < len(buf):
        stop = min(start + period, len(buf))
        width = stop - start
        prev = buf[start - period : start - period + width]
        prev_shift = buf[start - period - 1 : start - period - 1 + width]
        buf[start:stop] = 0.5 * rho * (prev + prev_shift)
        start = stop
    y = buf[1:]
    return np.interp(np.arange(n) * ratio, np.arange(len(y)), y)


def _guitar(f0: float, note_len: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Clean plucked guitar string (Karplus-Strong), damped at the note's end."""
    n = note_len + int(0.05 * sr)
    string = _karplus_strong(f0, n, sr, rng, tau=1.0, brightness=0.7)
    damper = np.clip(1.0 - (_time(n, sr) - note_len / sr) / 0.05, 0.0, 1.0)
    return string * damper * 1.5


def _synth(f0: float, note_len: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Two detuned band-limited saws through a low-pass whose cutoff falls during the note."""
    del rng  # fully deterministic given the pitch
    n = note_len + int(0.04 * sr)
    t = _time(n, sr)
    k = _harmonics_below(f0 * 1.01, sr, int(7000.0 / f0) + 1)  # the filter never opens past ~4 kHz
    cutoff = 1200.0 + 3000.0 * np.exp(-t / 0.15)
    lowpass = 1.0 / np.sqrt(1.0 + (k[:, None] * f0 / cutoff[None, :]) ** 4)
    amps = lowpass / k[:, None]
    detune = 2.0 ** (8.0 / 1200.0)  # +-8 cents: the chorus that makes it a "supersaw"
    tone = _additive(_phase(f0 * detune, n, sr), k, amps) + _additive(
        _phase(f0 / detune, n, sr), k, amps
    )
    env = _envelope(n, sr, attack=0.005, release=0.04, note_len=note_len)
    return env * tone * 0.5


_INSTRUMENT_RENDERERS: dict[str, NoteRenderer] = {
    "trumpet": _trumpet,
    "violin": _violin,
    "xylophone": _xylophone,
    "flute": _flute,
    "piano": _piano,
    "guitar": _guitar,
    "synth": _synth,
}


def render_note(
    instrument: str, midi: float, duration_s: float, *, sample_rate: int = 16000, seed: int = 0
) -> np.ndarray:
    """One isolated note (float32, ``duration_s`` long, peak 0.9) - for pitch/timbre checks."""
    if instrument not in _INSTRUMENT_RENDERERS:
        raise ValueError(f"unknown instrument {instrument!r}; choose from {INSTRUMENTS}")
    n = int(round(duration_s * sample_rate))
    rng = np.random.default_rng([seed, _stream_id("note")])
    note = _INSTRUMENT_RENDERERS[instrument](float(midi_to_hz(midi)), n, sample_rate, rng)
    out = np.zeros(n)
    _mix_into(out, note[:n], 0)
    return _normalise(out)


# --------------------------------------------------------------------------------------
# Drums
# --------------------------------------------------------------------------------------


def _kick(sr: int, rng: np.random.Generator) -> np.ndarray:
    """Sine whose pitch drops from ~155 Hz to 45 Hz, plus a beater click."""
    n = int(0.35 * sr)
    t = _time(n, sr)
    freq = 45.0 + 110.0 * np.exp(-t / 0.03)
    body = np.sin(_phase(freq, n, sr)) * np.exp(-t / 0.12)
    click = _filtered_noise(rng, n, sr, 1000.0, 6000.0) * np.exp(-t / 0.003) * 0.3
    return body + click


def _snare(sr: int, rng: np.random.Generator) -> np.ndarray:
    """Noise burst (the wires) over a short 185 Hz drum-head tone."""
    n = int(0.25 * sr)
    t = _time(n, sr)
    wires = _filtered_noise(rng, n, sr, 1500.0, 0.45 * sr) * np.exp(-t / 0.06)
    head = np.sin(2 * np.pi * 185.0 * t) * np.exp(-t / 0.04)
    return 0.8 * wires + 0.6 * head


def _hihat(sr: int, rng: np.random.Generator, open_: bool = False) -> np.ndarray:
    n = int((0.25 if open_ else 0.06) * sr)
    t = _time(n, sr)
    lo = min(6000.0, 0.3 * sr)  # keep a band even at low sample rates
    return _filtered_noise(rng, n, sr, lo, 0.48 * sr) * np.exp(-t / (0.08 if open_ else 0.015))


def _clap(sr: int, rng: np.random.Generator) -> np.ndarray:
    """A few noise bursts ~10 ms apart (several hands), then a short tail."""
    n = int(0.2 * sr)
    t = _time(n, sr)
    bursts = sum(np.exp(-np.clip(t - d, 0, None) / 0.004) * (t >= d) for d in (0.0, 0.01, 0.02))
    return _filtered_noise(rng, n, sr, 800.0, 5000.0) * (bursts + np.exp(-t / 0.05)) * 0.5


def _ride(sr: int, rng: np.random.Generator) -> np.ndarray:
    """Long shimmering noise with a few inharmonic bell partials."""
    n = int(0.6 * sr)
    t = _time(n, sr)
    partials = np.array([3200.0, 4530.0, 5870.0])
    keep = partials < 0.45 * sr
    bell = _additive(_phase(1.0, n, sr), partials[keep], np.array([0.3, 0.2, 0.15])[keep])
    wash = _filtered_noise(rng, n, sr, min(4000.0, 0.3 * sr), 0.48 * sr)
    return (0.5 * wash + bell) * np.exp(-t / 0.25) * 0.6


def _membrane(
    f_start: float,
    f_end: float,
    glide: float,
    partials: Sequence[float],
    amps: Sequence[float],
    tau: float,
    sr: int,
) -> np.ndarray:
    """A pitched drum head: partials above a fundamental that glides f_start -> f_end."""
    n = int(4 * tau * sr)
    t = _time(n, sr)
    freq = f_end + (f_start - f_end) * np.exp(-t / glide)
    partial_ratios = np.asarray(partials, dtype=np.float64)
    keep = partial_ratios * max(f_start, f_end) < 0.45 * sr
    decays = np.exp(-t[None, :] / (tau / partial_ratios[keep, None] ** 0.5))
    return _additive(
        _phase(freq, n, sr),
        partial_ratios[keep],
        np.asarray(amps, dtype=np.float64)[keep, None] * decays,
    )


def _tabla_strokes(sr: int, rng: np.random.Generator, tonic_hz: float) -> dict[str, np.ndarray]:
    """Tabla bols. The dayan (right drum) is tuned to the tonic and, thanks to its loaded
    head, has nearly harmonic partials; the bayan (left drum) is a low membrane whose
    pitch the player bends with the palm (the "ge" glide)."""
    na = _membrane(tonic_hz, tonic_hz, 1.0, [1, 2, 3, 4, 5], [1.0, 0.6, 0.4, 0.25, 0.15], 0.12, sr)
    tin = _membrane(tonic_hz, tonic_hz, 1.0, [1, 2, 3, 4], [0.3, 0.8, 0.5, 0.3], 0.2, sr)
    ge = _membrane(85.0, 125.0, 0.08, [1, 1.5, 2], [1.0, 0.3, 0.15], 0.18, sr)  # upward bend
    n_ka = int(0.05 * sr)
    ka = _filtered_noise(rng, n_ka, sr, 100.0, 1200.0) * np.exp(-_time(n_ka, sr) / 0.012)
    ti = _filtered_noise(rng, n_ka, sr, 1500.0, 6000.0) * np.exp(-_time(n_ka, sr) / 0.008)
    dha = _overlay(na, ge)
    dhi = _overlay(tin, ge)
    return {"na": na, "tin": tin, "ge": ge, "ka": ka, "ti": ti, "dha": dha, "dhi": dhi}


def _overlay(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.zeros(max(len(a), len(b)))
    out[: len(a)] += a
    out[: len(b)] += b
    return out


# --------------------------------------------------------------------------------------
# Scores: notes on a beat grid
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Note:
    """A note on the beat grid; ``start``/``length`` are in beats."""

    start: float
    length: float
    midi: float
    velocity: float = 1.0


# Rhythm cells (note lengths in beats, each filling one 4/4 bar), articulation (sounding
# fraction of each note) and rest probability, per style.
_RHYTHMS: dict[str, tuple[tuple[tuple[float, ...], ...], float, float]] = {
    "classical": (((1, 1, 2), (2, 2), (1, 1, 1, 1), (1.5, 0.5, 2), (3, 1), (2, 1, 1)), 1.0, 0.03),
    "rock": (((0.5,) * 8, (1, 0.5, 0.5, 1, 1), (0.5, 0.5, 1, 2), (1, 1, 0.5, 0.5, 1)), 0.85, 0.08),
    "electronic": (((0.5,) * 8, (0.25,) * 8 + (0.5,) * 4, (0.75, 0.75, 0.5) * 2 + (1,)), 0.6, 0.1),
    "indian": (((2, 2), (1, 1, 2), (1, 1, 1, 1), (3, 1), (2, 1, 1)), 1.0, 0.03),
    "jazz": (
        ((0.5,) * 8, (1, 0.5, 0.5, 1, 1), (1.5, 0.5, 1, 1), (0.5, 0.5, 1, 0.5, 0.5, 1)),
        0.9,
        0.12,
    ),
}


def _n_bars(spec: ClipSpec) -> int:
    beats = spec.duration_s * spec.tempo_bpm / 60.0
    return int(np.ceil(beats / 4.0)) + 1


def _lead_tonic(spec: ClipSpec) -> int:
    """The tonic in the instrument's register, about a third of the way up its range."""
    low, high = _REGISTERS[spec.instrument]
    target = low + (high - low) / 3.0
    base = spec.tonic_pitch_class + 12 * int(round((target - spec.tonic_pitch_class) / 12.0))
    return base


def _degree_to_midi(degree: int, tonic: int, scale: Sequence[int]) -> int:
    octave, step = divmod(degree, len(scale))
    return tonic + 12 * octave + scale[step]


def _swing(start: float, style: str) -> float:
    """Jazz plays off-beat eighths late (long-short, 2:1 triplet feel)."""
    if style == "jazz" and abs(start % 1.0 - 0.5) < 1e-9:
        return start + 1.0 / 6.0
    return start


def make_melody(spec: ClipSpec, rng: np.random.Generator) -> list[Note]:
    """Random walk on the style's scale, in the lead instrument's register."""
    cells, articulation, rest_p = _RHYTHMS[spec.style]
    scale = _SCALES[spec.style][1]
    tonic = _lead_tonic(spec)
    low, high = _REGISTERS[spec.instrument]
    steps = np.array([-2, -1, 0, 1, 2, -4, 4])
    step_p = np.array([0.15, 0.3, 0.08, 0.3, 0.15, 0.01, 0.01])
    degree = 0
    notes: list[Note] = []
    for bar in range(_n_bars(spec)):
        cell = cells[rng.integers(len(cells))]
        start = 4.0 * bar
        for length in cell:
            if rng.random() >= rest_p:
                velocity = 0.8 + 0.2 * rng.random() + (0.1 if start % 2.0 == 0 else 0.0)
                onset = _swing(start, spec.style)
                sounding = length * articulation - (onset - start)
                notes.append(Note(onset, sounding, _degree_to_midi(degree, tonic, scale), velocity))
            step = int(rng.choice(steps, p=step_p))
            # Reflect off the register's edges rather than leaving the instrument's range.
            if not low <= _degree_to_midi(degree + step, tonic, scale) <= high:
                step = -step
            degree += step
            start += length
    return notes


# Chord roots per bar (semitones above the tonic) and chord shapes per style.
_PROGRESSIONS: dict[str, tuple[int, ...]] = {
    "classical": (0, 5, 7, 0),
    "rock": (0, 10, 8, 10),
    "electronic": (0, 8, 3, 10),
    "indian": (0, 0, 0, 0),
    "jazz": (0, 5, 0, 5),
}


def _triad(root: int, tonic: int, scale: Sequence[int]) -> tuple[int, int, int]:
    """Third and fifth above ``root`` taken from the scale (diatonic harmony)."""
    pcs = sorted({(tonic + s) % 12 for s in scale})
    above = [p for p in range(root + 1, root + 12) if p % 12 in pcs]
    third = next((p for p in above if p - root in (3, 4)), root + 4)
    fifth = next((p for p in above if p - root in (6, 7, 8)), root + 7)
    return root, third, fifth


# --------------------------------------------------------------------------------------
# Mixing
# --------------------------------------------------------------------------------------


def _mix_into(out: np.ndarray, sound: np.ndarray, offset: int, gain: float = 1.0) -> None:
    """Add ``sound`` at ``offset``, truncated at the end of ``out``."""
    if offset >= len(out) or offset < 0:
        return
    end = min(len(out), offset + len(sound))
    out[offset:end] += gain * sound[: end - offset]


class _Grid:
    """Beat -> sample index conversion for one clip."""

    def __init__(self, spec: ClipSpec) -> None:
        self.samples_per_beat = 60.0 / spec.tempo_bpm * spec.sample_rate
        self.n = spec.n_samples

    def at(self, beat: float) -> int:
        return int(round(beat * self.samples_per_beat))

    def length(self, beats: float) -> int:
        return max(1, int(round(beats * self.samples_per_beat)))

    @property
    def n_beats(self) -> int:
        return int(np.ceil(self.n / self.samples_per_beat))


def _render_notes(
    out: np.ndarray,
    notes: Iterable[Note],
    renderer: NoteRenderer,
    spec: ClipSpec,
    grid: _Grid,
    rng: np.random.Generator,
    gain: float,
) -> None:
    for note in notes:
        offset = grid.at(note.start)
        if offset >= len(out):
            continue
        # Never synthesise more than fits: long tails are cut at the clip end anyway.
        note_len = min(grid.length(note.length), len(out) - offset)
        sound = renderer(float(midi_to_hz(note.midi)), note_len, spec.sample_rate, rng)
        _mix_into(out, sound, offset, gain * note.velocity)


def _render_pattern(
    out: np.ndarray,
    hits: Iterable[tuple[float, float]],
    sound: np.ndarray,
    grid: _Grid,
    gain: float,
) -> None:
    """Place a one-shot ``sound`` at each (beat, velocity)."""
    for beat, velocity in hits:
        _mix_into(out, sound, grid.at(beat), gain * velocity)


def _every(
    step: float, n_beats: int, offset: float = 0.0, velocity: float = 1.0
) -> list[tuple[float, float]]:
    return [(b, velocity) for b in np.arange(offset, n_beats, step)]


def _normalise(audio: np.ndarray, peak: float = 0.9) -> np.ndarray:
    if not np.all(np.isfinite(audio)):
        raise FloatingPointError("synthesis produced non-finite samples")
    top = float(np.max(np.abs(audio))) if audio.size else 0.0
    # divide first: peak / top overflows to inf for a subnormal top (e.g. a near-zero backing gain)
    scaled = (audio / top) * peak if top > 0 else audio
    return scaled.astype(np.float32)


# --------------------------------------------------------------------------------------
# Backing parts per style
# --------------------------------------------------------------------------------------


def _pad(f0: float, note_len: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Soft sustained string-ensemble pad: mellow harmonics, slow swell, gentle chorus."""
    n = note_len + int(0.3 * sr)
    k = _harmonics_below(f0, sr, 8)
    amps = 1.0 / k**2
    env = _envelope(n, sr, attack=0.35, release=0.3, note_len=note_len)
    detune = 2.0 ** (rng.uniform(3.0, 7.0) / 1200.0)
    tone = _additive(_phase(f0 * detune, n, sr), k, amps) + _additive(
        _phase(f0 / detune, n, sr), k, amps
    )
    return env * tone * 0.5


def _power_chord(f0: float, note_len: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Root + fifth + octave plucked together, driven hard into tanh distortion."""
    n = note_len + int(0.03 * sr)
    strings = sum(
        _karplus_strong(f0 * ratio, n, sr, rng, tau=0.8, brightness=0.9)
        for ratio in (1.0, 1.5, 2.0)
    )
    damper = np.clip(1.0 - (_time(n, sr) - note_len / sr) / 0.03, 0.0, 1.0)
    return _soft_clip(strings * damper, drive=6.0) * 0.6


def _bass(f0: float, note_len: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Round plucked bass: a few harmonics with a quick decay."""
    del rng
    n = note_len + int(0.05 * sr)
    t = _time(n, sr)
    k = _harmonics_below(f0, sr, 4)
    amps = np.array([1.0, 0.5, 0.25, 0.1])[: len(k)]
    env = _envelope(n, sr, attack=0.005, release=0.05, note_len=note_len) * np.exp(-t / 0.5)
    return env * _additive(_phase(f0, n, sr), k, amps)


def _saw_bass(f0: float, note_len: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    del rng
    n = note_len + int(0.02 * sr)
    k = _harmonics_below(f0, sr, 16)
    amps = 1.0 / k / (1.0 + (k * f0 / 800.0) ** 2)
    env = _envelope(n, sr, attack=0.003, release=0.02, note_len=note_len)
    return env * _additive(_phase(f0, n, sr), k, amps)


def _tanpura(f0: float, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Buzzy drone: many harmonics whose emphasis wanders slowly (the jawari bridge)."""
    t = _time(n, sr)
    k = _harmonics_below(f0, sr, 20)
    centre = 6.0 + 4.0 * np.sin(2 * np.pi * 0.3 * t + rng.random() * 2 * np.pi)
    amps = (1.0 / k[:, None]) * (1.0 + 2.0 * np.exp(-((k[:, None] - centre[None, :]) ** 2) / 8.0))
    return _additive(_phase(f0, n, sr), k, amps) / np.sum(1.0 / k)


def _bass_root(spec: ClipSpec, octave_midi: int = 36) -> int:
    return octave_midi + spec.tonic_pitch_class


def _chord_notes(spec: ClipSpec, grid: _Grid, beats_per_chord: float, base_midi: int) -> list[Note]:
    """Sustained diatonic triads following the style's progression."""
    scale = _SCALES[spec.style][1]
    tonic = base_midi
    prog = _PROGRESSIONS[spec.style]
    notes = []
    for i, start in enumerate(np.arange(0.0, grid.n_beats, beats_per_chord)):
        root = tonic + prog[(i * int(beats_per_chord) // 4) % len(prog)]
        notes += [Note(start, beats_per_chord, p, 0.6) for p in _triad(root, tonic, scale)]
    return notes


def _classical_backing(
    out: np.ndarray, spec: ClipSpec, grid: _Grid, rng: np.random.Generator
) -> None:
    _render_notes(
        out, _chord_notes(spec, grid, 4.0, 48 + spec.tonic_pitch_class), _pad, spec, grid, rng, 0.5
    )


def _rock_kit(
    out: np.ndarray, spec: ClipSpec, grid: _Grid, rng: np.random.Generator, gain: float = 1.0
) -> None:
    sr = spec.sample_rate
    nb = grid.n_beats
    kicks = _every(2.0, nb) + _every(4.0, nb, offset=2.5, velocity=0.7)
    _render_pattern(out, kicks, _kick(sr, rng), grid, gain)
    _render_pattern(out, _every(2.0, nb, offset=1.0), _snare(sr, rng), grid, 0.8 * gain)
    _render_pattern(out, _every(0.5, nb, velocity=0.5), _hihat(sr, rng), grid, 0.5 * gain)


def _rock_backing(out: np.ndarray, spec: ClipSpec, grid: _Grid, rng: np.random.Generator) -> None:
    prog = _PROGRESSIONS["rock"]
    root_base = 40 + (spec.tonic_pitch_class - 4) % 12  # low E string .. D#
    chords = [
        Note(b, 0.45, root_base + prog[int(b // 4) % len(prog)], 0.9 if b % 1 == 0 else 0.7)
        for b in np.arange(0.0, grid.n_beats, 0.5)
    ]
    _render_notes(out, chords, _power_chord, spec, grid, rng, 0.5)
    _rock_kit(out, spec, grid, rng)


def _electronic_backing(
    out: np.ndarray, spec: ClipSpec, grid: _Grid, rng: np.random.Generator
) -> None:
    sr = spec.sample_rate
    nb = grid.n_beats
    _render_pattern(out, _every(1.0, nb), _kick(sr, rng), grid, 1.2)  # four on the floor
    _render_pattern(out, _every(2.0, nb, offset=1.0), _clap(sr, rng), grid, 0.6)
    _render_pattern(out, _every(1.0, nb, offset=0.5), _hihat(sr, rng, open_=True), grid, 0.35)
    prog = _PROGRESSIONS["electronic"]
    bass = [
        Note(b, 0.4, _bass_root(spec) + prog[int(b // 4) % len(prog)], 0.8)
        for b in np.arange(0.0, nb, 0.5)
    ]
    _render_notes(out, bass, _saw_bass, spec, grid, rng, 0.6)


def _drone(out: np.ndarray, spec: ClipSpec, rng: np.random.Generator, gain: float) -> None:
    sa = float(midi_to_hz(48 + spec.tonic_pitch_class))
    n = len(out)
    fade = np.minimum(1.0, _time(n, spec.sample_rate) / 0.3)
    # Sa and Pa (tonic and fifth), the classic tanpura tuning.
    out += (
        gain
        * fade
        * (
            _tanpura(sa, n, spec.sample_rate, rng)
            + 0.6 * _tanpura(sa * 1.5, n, spec.sample_rate, rng)
        )
    )


def _tabla(
    out: np.ndarray, spec: ClipSpec, grid: _Grid, rng: np.random.Generator, gain: float = 1.0
) -> None:
    """Keherwa theka (dha ge na ti | na ka dhi na), one bol per eighth note."""
    strokes = _tabla_strokes(spec.sample_rate, rng, float(midi_to_hz(60 + spec.tonic_pitch_class)))
    theka = ("dha", "ge", "na", "ti", "na", "ka", "dhi", "na")
    for i, beat in enumerate(np.arange(0.0, grid.n_beats, 0.5)):
        bol = theka[i % len(theka)]
        accent = 1.0 if i % 4 == 0 else 0.75
        _mix_into(out, strokes[bol], grid.at(beat), gain * accent)


def _indian_backing(out: np.ndarray, spec: ClipSpec, grid: _Grid, rng: np.random.Generator) -> None:
    _drone(out, spec, rng, 0.35)
    _tabla(out, spec, grid, rng)


def _jazz_backing(out: np.ndarray, spec: ClipSpec, grid: _Grid, rng: np.random.Generator) -> None:
    sr = spec.sample_rate
    nb = grid.n_beats
    ride_hits = [(b, 0.9) for b in range(nb)] + [
        (b + 2.0 / 3.0, 0.6)
        for b in range(1, nb, 2)  # the swung "ding-da-ding"
    ]
    _render_pattern(out, ride_hits, _ride(sr, rng), grid, 0.4)
    _render_pattern(out, _every(2.0, nb, offset=1.0), _hihat(sr, rng), grid, 0.4)
    _render_notes(out, _walking_bass(spec, nb, rng), _bass, spec, grid, rng, 0.8)


def _walking_bass(spec: ClipSpec, n_beats: int, rng: np.random.Generator) -> list[Note]:
    """Quarter notes: root, chord tone, chord tone, chromatic approach to the next root."""
    scale = _SCALES["jazz"][1]
    tonic = _bass_root(spec)
    prog = _PROGRESSIONS["jazz"]
    notes = []
    for beat in range(n_beats):
        bar, pos = divmod(beat, 4)
        root = tonic + prog[bar % len(prog)]
        next_root = tonic + prog[(bar + 1) % len(prog)]
        triad = _triad(root, tonic, scale)
        pitch = {0: root, 1: triad[1], 2: triad[2]}.get(pos, next_root + int(rng.choice([-1, 1])))
        notes.append(Note(float(beat), 0.95, pitch, 0.9))
    return notes


_BACKINGS: dict[str, Callable[[np.ndarray, ClipSpec, _Grid, np.random.Generator], None]] = {
    "classical": _classical_backing,
    "rock": _rock_backing,
    "electronic": _electronic_backing,
    "indian": _indian_backing,
    "jazz": _jazz_backing,
}


def _accompaniment(out: np.ndarray, spec: ClipSpec, grid: _Grid, rng: np.random.Generator) -> None:
    if spec.accompaniment == "tabla":
        _tabla(out, spec, grid, rng)
    elif spec.accompaniment == "drums":
        _rock_kit(out, spec, grid, rng)
    elif spec.accompaniment == "drone":
        _drone(out, spec, rng, 0.35)


# --------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------


def _stream_id(name: str) -> int:
    """Stable integer for a named random stream (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=4).digest(), "little")


def _rng(spec: ClipSpec, part: str) -> np.random.Generator:
    # One independent stream per part, so adding a layer (e.g. a tabla) leaves the
    # melody and backing sample-identical: with/without pairs differ only by that layer.
    return np.random.default_rng([spec.seed, _stream_id(part)])


def render_parts(spec: ClipSpec) -> dict[str, np.ndarray]:
    """The unnormalised float64 stems: ``lead``, ``backing`` and ``accompaniment``."""
    grid = _Grid(spec)
    n = spec.n_samples
    lead = np.zeros(n)
    melody = make_melody(spec, _rng(spec, "melody"))
    _render_notes(
        lead, melody, _INSTRUMENT_RENDERERS[spec.instrument], spec, grid, _rng(spec, "lead"), 1.0
    )
    backing = np.zeros(n)
    if spec.backing_gain > 0:
        _BACKINGS[spec.style](backing, spec, grid, _rng(spec, "backing"))
    extra = np.zeros(n)
    if spec.adds_layer:
        _accompaniment(extra, spec, grid, _rng(spec, "accompaniment"))
    return {"lead": lead, "backing": backing, "accompaniment": extra}


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x**2))) if x.size else 0.0


def render_clip(spec: ClipSpec) -> np.ndarray:
    """Mono float32 audio of ``spec.n_samples`` samples, peak-normalised to 0.9.

    Stems are balanced by RMS (the lead is the reference) so ``backing_gain`` means the
    same thing for a quiet flute as for a loud trumpet.
    """
    parts = render_parts(spec)
    ref = _rms(parts["lead"]) or 1.0
    mix = parts["lead"].copy()
    for name, gain in (("backing", spec.backing_gain), ("accompaniment", 0.6)):
        level = _rms(parts[name])
        if level > 0 and gain > 0:
            mix += parts[name] * (gain * ref / level)
    return _normalise(mix)


# --------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------


@dataclass
class Clip:
    """One dataset item; ``audio`` is rendered on first access and then cached."""

    id: str
    spec: ClipSpec
    text: str
    labels: dict[str, Any]
    split: str
    _audio: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def audio(self) -> np.ndarray:
        if self._audio is None:
            self._audio = render_clip(self.spec)
        return self._audio


def split_of(index: int, seed: int = 0, test_fraction: float = 0.2) -> str:
    """``"test"`` or ``"train"``, from a hash of (seed, index): stable across runs and
    processes, and independent of how many clips are requested."""
    digest = hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=8).digest()
    u = int.from_bytes(digest, "little") / 2.0**64
    return "test" if u < test_fraction else "train"


def _combo(
    index: int, combos: Sequence[tuple[str, str, str | None]], seed: int
) -> tuple[str, str, str | None]:
    """Walk through every (instrument, style, accompaniment) once per cycle, in a seeded
    order per cycle: balanced classes, yet no fixed pattern tied to the index."""
    cycle, pos = divmod(index, len(combos))
    order = np.random.default_rng([seed, _stream_id("combos"), cycle]).permutation(len(combos))
    return combos[int(order[pos])]


def clip_spec_for_index(
    index: int,
    *,
    seed: int = 0,
    duration_s: float = 4.0,
    sample_rate: int = 16000,
    instruments: Sequence[str] = INSTRUMENTS,
    styles: Sequence[str] = STYLES,
    accompaniments: Sequence[str | None] = (None,),
    tempo_range: tuple[float, float] | None = None,
    backing_gain: float = 0.5,
) -> ClipSpec:
    """The spec of dataset item ``index``; depends only on the arguments, not on n."""
    combos = list(itertools.product(instruments, styles, accompaniments))
    if not combos:
        raise ValueError("instruments, styles and accompaniments must all be non-empty")
    instrument, style, accompaniment = _combo(index, combos, seed)
    rng = np.random.default_rng([seed, _stream_id("clip"), index])
    low, high = tempo_range if tempo_range is not None else _STYLE_TEMPI[style]
    tempo = float(rng.integers(int(low), int(high) + 1))
    key = KEYS[int(rng.integers(len(KEYS)))]
    clip_seed = int(rng.integers(2**31 - 1))
    return ClipSpec(
        instrument=instrument,
        style=style,
        tempo_bpm=tempo,
        key=key,
        seed=clip_seed,
        duration_s=duration_s,
        sample_rate=sample_rate,
        accompaniment=accompaniment,
        backing_gain=backing_gain,
    )


def make_dataset(
    n: int,
    *,
    seed: int = 0,
    duration_s: float = 4.0,
    sample_rate: int = 16000,
    instruments: Sequence[str] = INSTRUMENTS,
    styles: Sequence[str] = STYLES,
    accompaniments: Sequence[str | None] = (None,),
    split: str | None = None,
    test_fraction: float = 0.2,
    tempo_range: tuple[float, float] | None = None,
    backing_gain: float = 0.5,
    render: bool = False,
) -> list[Clip]:
    """``n`` labelled clips (audio rendered lazily unless ``render=True``).

    Item ``i`` is a pure function of (seed, i, the other arguments), and its split is
    :func:`split_of` (i, seed, test_fraction). ``split="train"``/``"test"`` returns the
    first ``n`` items of that split, so train and test sets are disjoint and each is a
    prefix of any larger request. ``tempo_range=None`` uses style-typical tempi.
    """
    if split not in (None, "train", "test"):
        raise ValueError(f"split must be None, 'train' or 'test', got {split!r}")
    if not 0.0 <= test_fraction <= 1.0:
        raise ValueError(f"test_fraction must be in [0, 1], got {test_fraction}")
    if (split == "test" and test_fraction == 0.0) or (split == "train" and test_fraction == 1.0):
        raise ValueError(f"split={split!r} is empty with test_fraction={test_fraction}")
    if tempo_range is not None and not (
        MIN_TEMPO_BPM <= tempo_range[0] <= tempo_range[1] <= MAX_TEMPO_BPM
    ):
        raise ValueError(f"tempo_range must lie within [{MIN_TEMPO_BPM:g}, {MAX_TEMPO_BPM:g}]")
    clips: list[Clip] = []
    index = 0
    while len(clips) < n:
        which = split_of(index, seed, test_fraction)
        if split is None or which == split:
            spec = clip_spec_for_index(
                index,
                seed=seed,
                duration_s=duration_s,
                sample_rate=sample_rate,
                instruments=instruments,
                styles=styles,
                accompaniments=accompaniments,
                tempo_range=tempo_range,
                backing_gain=backing_gain,
            )
            clips.append(Clip(f"clip_{index:06d}", spec, describe(spec), spec_labels(spec), which))
        index += 1
    if render:
        for clip in clips:
            _ = clip.audio
    return clips


LABEL_COLUMNS: tuple[str, ...] = (
    "id",
    "path",
    "text",
    "instrument",
    "style",
    "tempo_bpm",
    "key",
    "split",
    "scale",
    "accompaniment",
    "seed",
    "duration_s",
    "sample_rate",
)


def _write_wav_atomic(path: Path, audio: np.ndarray, sample_rate: int, subtype: str) -> None:
    """Write to a temporary name then rename, so a crash never leaves a truncated .wav
    that a resumed run would mistake for a finished one."""
    import soundfile as sf

    with atomic_path(path) as tmp:
        sf.write(tmp, audio, sample_rate, format="WAV", subtype=subtype)


def _render_to(job: tuple[ClipSpec, str, str]) -> str:
    spec, path, subtype = job
    _write_wav_atomic(Path(path), render_clip(spec), spec.sample_rate, subtype)
    return path


def _label_row(clip: Clip, rel_path: str) -> dict[str, Any]:
    row = {"id": clip.id, "path": rel_path, "text": clip.text, "split": clip.split}
    row.update(clip.labels)
    return {col: row.get(col, "") for col in LABEL_COLUMNS}


def _write_labels(csv_path: Path, rows: dict[str, dict[str, Any]]) -> None:
    with atomic_path(csv_path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(LABEL_COLUMNS))
        writer.writeheader()
        for key in sorted(rows):
            writer.writerow(rows[key])


def _read_labels(csv_path: Path) -> dict[str, dict[str, Any]]:
    if not csv_path.exists():
        return {}
    with open(csv_path, newline="", encoding="utf-8") as f:
        return {row["id"]: row for row in csv.DictReader(f)}


def write_dataset(
    directory: str | os.PathLike[str],
    clips: Sequence[Clip],
    *,
    subtype: str = "PCM_16",
    num_workers: int = 1,
    progress: bool = True,
) -> Path:
    """Write ``<dir>/audio/<id>.wav`` per clip and ``<dir>/labels.csv``; return the CSV path.

    Each id must be a plain file name (see :func:`musicgen_lens._paths.plain_file_name`);
    otherwise ``ValueError`` is raised before anything is written.

    Resumable: wavs that already exist are skipped (never rewritten) and only the missing
    ones are rendered; ``labels.csv`` is merged by id with any previous one. Every file is
    written to a temporary name and renamed into place. ``num_workers > 1`` renders in a
    process pool.
    """
    from tqdm.auto import tqdm

    # Every id is checked before anything is written, so a bad one leaves no partial dataset.
    rels = {clip.id: f"audio/{plain_file_name(clip.id, 'clip id')}.wav" for clip in clips}
    root = Path(directory)
    audio_dir = root / "audio"
    audio_dir.mkdir(parents=True, exist_ok=True)
    rows = _read_labels(root / "labels.csv")
    jobs = []
    for clip in clips:
        rel = rels[clip.id]
        rows[clip.id] = _label_row(clip, rel)
        if not (root / rel).exists():
            jobs.append((clip.spec, str(root / rel), subtype))
    bar = tqdm(total=len(jobs), desc="rendering clips", unit="clip", disable=not progress)
    try:
        if num_workers > 1 and len(jobs) > 1:
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(max_workers=num_workers) as pool:
                for _ in pool.map(_render_to, jobs, chunksize=4):
                    bar.update()
        else:
            for job in jobs:
                _render_to(job)
                bar.update()
    finally:
        bar.close()
        # Written even after an interruption, so the CSV lists every clip whose wav exists.
        done = {k: r for k, r in rows.items() if (root / r["path"]).exists()}
        _write_labels(root / "labels.csv", done)
    return root / "labels.csv"


__all__ = [
    "ACCOMPANIMENTS",
    "INSTRUMENTS",
    "KEYS",
    "LABEL_COLUMNS",
    "MAX_TEMPO_BPM",
    "MIN_TEMPO_BPM",
    "STYLES",
    "Clip",
    "ClipSpec",
    "Note",
    "clip_spec_for_index",
    "describe",
    "make_dataset",
    "make_melody",
    "midi_to_hz",
    "render_clip",
    "render_note",
    "render_parts",
    "spec_labels",
    "split_of",
    "write_dataset",
]
