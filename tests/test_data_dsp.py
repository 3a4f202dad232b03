"""Signal-processing primitives (musicgen_lens.data.dsp) against their direct definitions."""

from __future__ import annotations

import numpy as np
import pytest

from musicgen_lens.data.dsp import (
    _additive,
    _decaying_partials,
    _filtered_noise,
    _normalise,
    _phase,
    midi_to_hz,
)

SR = 16000


def test_midi_to_hz_is_equal_tempered_around_a440() -> None:
    assert midi_to_hz(69) == pytest.approx(440.0)
    assert midi_to_hz(81) == pytest.approx(880.0)
    assert midi_to_hz(70) / midi_to_hz(69) == pytest.approx(2 ** (1 / 12))


def test_harmonic_series_matches_a_sum_of_sines() -> None:
    """Harmonics 1..K take the fast path (powers of a complex exponential)."""
    phase = _phase(np.linspace(200.0, 260.0, SR), SR, SR)  # a gliding pitch
    amps = np.array([1.0, 0.5, 0.3, 0.2, 0.1])
    ratios = np.arange(1.0, 6.0)
    direct = amps @ np.sin(np.outer(ratios, phase))
    np.testing.assert_allclose(_additive(phase, ratios, amps), direct, atol=1e-9)


def test_decaying_partials_match_their_formula() -> None:
    freqs, taus, amps = np.array([220.0, 661.0]), np.array([0.3, 0.05]), np.array([1.0, 0.4])
    t = np.arange(4000) / SR
    direct = amps @ (np.exp(-t[None, :] / taus[:, None]) * np.sin(2 * np.pi * freqs[:, None] * t))
    np.testing.assert_allclose(_decaying_partials(freqs, taus, amps, len(t), SR), direct, atol=1e-9)


def test_filtered_noise_stays_in_its_band() -> None:
    noise = _filtered_noise(np.random.default_rng(0), SR, SR, 1000.0, 2000.0)
    power = np.abs(np.fft.rfft(noise)) ** 2
    freqs = np.fft.rfftfreq(SR, 1.0 / SR)
    assert power[(freqs < 1000.0) | (freqs > 2000.0)].sum() < 1e-12 * power.sum()
    assert np.max(np.abs(noise)) == pytest.approx(1.0)


def test_normalise_scales_to_the_peak_even_from_a_subnormal_level() -> None:
    audio = _normalise(np.array([0.0, 5e-324, -2.5e-324]))
    assert audio.dtype == np.float32 and np.max(np.abs(audio)) == pytest.approx(0.9)
    assert not np.any(_normalise(np.zeros(4)))
    with pytest.raises(FloatingPointError):
        _normalise(np.array([0.0, np.nan]))
