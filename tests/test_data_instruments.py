"""The sound sources (musicgen_lens.data.instruments): each keeps its defining acoustic cue.

Checked from the rendered audio with plain numpy signal analysis (tests/signal_analysis.py),
so these tests fail if an instrument loses its cue, not just if the code changes.
"""

from __future__ import annotations

import numpy as np
import pytest
from signal_analysis import (
    SR,
    instantaneous_frequency,
    ridge_classifier,
    spectrum,
    timbre_features,
)

from musicgen_lens.data import INSTRUMENTS, KEYS, ClipSpec, render_clip, render_note
from musicgen_lens.data.dsp import midi_to_hz


def test_flute_a4_has_its_fundamental_at_440_hz() -> None:
    freqs, mag = spectrum(render_note("flute", 69, 1.0))
    assert freqs[np.argmax(mag)] == pytest.approx(440.0, abs=2.0)
    # ... and a transposed note moves with it (the tuning is equal-tempered).
    freqs, mag = spectrum(render_note("flute", 76, 1.0))
    assert freqs[np.argmax(mag)] == pytest.approx(float(midi_to_hz(76)), abs=2.0)


@pytest.mark.parametrize("instrument", ["guitar", "piano", "trumpet", "violin"])
def test_pitched_instruments_are_in_tune(instrument: str) -> None:
    """The strongest low partial sits at f0: Karplus-Strong's integer delay is corrected,
    the trumpet's scoop settles and vibrato centres on the note."""
    f0 = float(midi_to_hz(62))
    note = render_note(instrument, 62, 1.0)[SR // 5 : 4 * SR // 5]
    freqs, mag = spectrum(note)
    band = (freqs > 0.9 * f0) & (freqs < 1.1 * f0)
    peak = freqs[band][np.argmax(mag[band])]
    assert abs(1200 * np.log2(peak / f0)) < 25  # cents


def test_violin_has_vibrato_and_flute_does_not() -> None:
    f0 = 440.0
    violin = instantaneous_frequency(render_note("violin", 69, 2.0), f0)
    flute = instantaneous_frequency(render_note("flute", 69, 2.0), f0)
    violin_cents = 1200 * np.log2(violin / f0)
    flute_cents = 1200 * np.log2(flute / f0)
    assert np.std(violin_cents) > 8.0  # a real wobble (the synth uses +-30 cents)
    assert np.std(flute_cents) < 0.25 * np.std(violin_cents)
    assert abs(np.mean(violin_cents)) < 10.0  # vibrato is centred on the note
    # The wobble is periodic at a violinist's 5-6 Hz, not noise.
    wobble = violin_cents - violin_cents.mean()
    rates = np.fft.rfftfreq(len(wobble), 1.0 / SR)
    power = np.abs(np.fft.rfft(wobble * np.hanning(len(wobble)))) ** 2
    assert 4.5 <= rates[np.argmax(power)] <= 6.5


def test_xylophone_partials_are_inharmonic() -> None:
    f0 = float(midi_to_hz(72))
    freqs, mag = spectrum(render_note("xylophone", 72, 1.0))

    def peak_near(ratio: float, tol: float = 0.01) -> float:
        band = np.abs(freqs - ratio * f0) < tol * ratio * f0
        return float(mag[band].max())

    upper = (freqs > 1.5 * f0) & (freqs < 6.0 * f0)
    strongest = freqs[upper][np.argmax(mag[upper])] / f0
    assert strongest == pytest.approx(3.93, abs=0.03)
    for harmonic in (2.0, 3.0, 4.0):
        assert peak_near(harmonic) < 0.05 * peak_near(3.93)


def test_percussive_instruments_decay_and_sustained_ones_do_not() -> None:
    def tail_to_head(instrument: str) -> float:
        note = render_note(instrument, 67, 1.5).astype(np.float64)
        head = np.sqrt(np.mean(note[int(0.1 * SR) : int(0.3 * SR)] ** 2))
        tail = np.sqrt(np.mean(note[int(1.0 * SR) : int(1.2 * SR)] ** 2))
        return tail / head

    for instrument in ("xylophone", "piano", "guitar"):
        assert tail_to_head(instrument) < 0.35, instrument
    for instrument in ("trumpet", "violin", "flute", "synth"):
        assert tail_to_head(instrument) > 0.6, instrument


def test_instruments_are_separable_by_timbre() -> None:
    """Held-out clips are told apart by instrument from simple spectral statistics, >= 90%.

    Classical melodies over the pad backing, as in the paper's timbre-transfer prompts;
    keys, tempi and melodies all vary, so only timbre separates the classes. (Over seeds
    this setup averages ~97% with a 93% worst case, so 90% is a margin, not a knife edge.)
    """
    per_instrument, n_train = 10, 6
    features, labels = [], []
    for label, instrument in enumerate(INSTRUMENTS):
        for j in range(per_instrument):
            spec = ClipSpec(
                instrument,
                "classical",
                tempo_bpm=70 + 6 * j,
                key=KEYS[(5 * j + label) % 12],
                seed=100 * label + j,
                duration_s=2.0,
            )
            features.append(timbre_features(render_clip(spec)))
            labels.append(label)
    x, y = np.array(features), np.array(labels)
    train = np.arange(len(y)) % per_instrument < n_train
    predicted = ridge_classifier(x[train], y[train], x[~train], len(INSTRUMENTS))
    assert np.mean(predicted == y[~train]) >= 0.9
