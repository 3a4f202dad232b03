"""The synthetic world's sound sources, one renderer per sound.

Each lead instrument renders one note with the acoustic cue a listener - or a classifier -
uses to tell it apart: brass brightening with loudness and a pitch scoop, bowed-string
vibrato and body resonances, a xylophone's inharmonic bar modes, a flute's near-sinusoid
with breath, a piano's stretched decaying partials, a plucked string's Karplus-Strong decay
and a detuned sawtooth synth. Also here: the drum kit and tabla strokes, and the voices the
style backings play (string pad, power chord, basses, tanpura). :func:`render_note` plays
one isolated note.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from musicgen_lens.data.dsp import (
    _additive,
    _decaying_partials,
    _envelope,
    _filtered_noise,
    _harmonic_series,
    _harmonics_below,
    _karplus_strong,
    _mix_into,
    _normalise,
    _overlay,
    _phase,
    _resonance_gain,
    _soft_clip,
    _stream_id,
    _time,
    midi_to_hz,
)
from musicgen_lens.data.vocabulary import INSTRUMENTS

# --------------------------------------------------------------------------------------
# Lead instruments: each renders one note of ``note_len`` samples plus its tail.
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


# --------------------------------------------------------------------------------------
# Backing voices
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


__all__ = [
    "NoteRenderer",
    "render_note",
]
