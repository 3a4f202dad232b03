"""Signal-processing primitives the synthetic world's sounds are built from (numpy only).

Pitch and oscillator phase, envelopes, additive and exponentially decaying partials,
band-limited noise, fixed resonances, soft clipping, the Karplus-Strong plucked string,
mixing and peak normalisation, and the named random streams every renderer draws from.
Nothing here knows about instruments, styles or clips.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np

# --------------------------------------------------------------------------------------
# Pitch, time and oscillators
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


# --------------------------------------------------------------------------------------
# Noise, resonance and distortion
# --------------------------------------------------------------------------------------


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
# Plucked strings
# --------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------
# Mixing
# --------------------------------------------------------------------------------------


def _overlay(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.zeros(max(len(a), len(b)))
    out[: len(a)] += a
    out[: len(b)] += b
    return out


def _mix_into(out: np.ndarray, sound: np.ndarray, offset: int, gain: float = 1.0) -> None:
    """Add ``sound`` at ``offset``, truncated at the end of ``out``."""
    if offset >= len(out) or offset < 0:
        return
    end = min(len(out), offset + len(sound))
    out[offset:end] += gain * sound[: end - offset]


def _normalise(audio: np.ndarray, peak: float = 0.9) -> np.ndarray:
    if not np.all(np.isfinite(audio)):
        raise FloatingPointError("synthesis produced non-finite samples")
    top = float(np.max(np.abs(audio))) if audio.size else 0.0
    # divide first: peak / top overflows to inf for a subnormal top (e.g. a near-zero backing gain)
    scaled = (audio / top) * peak if top > 0 else audio
    return scaled.astype(np.float32)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x**2))) if x.size else 0.0


# --------------------------------------------------------------------------------------
# Random streams
# --------------------------------------------------------------------------------------


def _stream_id(name: str) -> int:
    """Stable integer for a named random stream (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=4).digest(), "little")


__all__ = [
    "midi_to_hz",
]
