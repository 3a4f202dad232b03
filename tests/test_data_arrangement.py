"""Arranging and rendering clips (musicgen_lens.data.arrangement): determinism, stems, mix, tempo.

Checked from the rendered audio with plain numpy signal analysis (tests/signal_analysis.py).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from signal_analysis import SR, estimate_bpm

from musicgen_lens.data import ACCOMPANIMENTS, INSTRUMENTS, KEYS, STYLES, ClipSpec, render_clip
from musicgen_lens.data.arrangement import render_parts


def test_same_spec_is_bit_identical_and_seed_changes_audio() -> None:
    spec = ClipSpec("violin", "rock", tempo_bpm=128, key="E", seed=7, duration_s=2.0)
    first = render_clip(spec)
    np.random.seed(123)  # the global RNG must play no part
    second = render_clip(ClipSpec("violin", "rock", tempo_bpm=128, key="E", seed=7, duration_s=2.0))
    assert first.dtype == np.float32
    assert np.array_equal(first, second)
    other = render_clip(ClipSpec("violin", "rock", tempo_bpm=128, key="E", seed=8, duration_s=2.0))
    assert not np.allclose(first, other, atol=1e-3)


def test_accompaniment_is_a_minimal_pair() -> None:
    """Adding a tabla leaves lead and backing sample-identical: only the new layer differs."""
    base = ClipSpec("violin", "classical", tempo_bpm=90, key="D", seed=3, duration_s=2.0)
    with_tabla = ClipSpec(
        "violin", "classical", tempo_bpm=90, key="D", seed=3, duration_s=2.0, accompaniment="tabla"
    )
    a, b = render_parts(base), render_parts(with_tabla)
    assert np.array_equal(a["lead"], b["lead"])
    assert np.array_equal(a["backing"], b["backing"])
    assert not np.any(a["accompaniment"]) and np.sqrt(np.mean(b["accompaniment"] ** 2)) > 1e-3
    assert not np.allclose(render_clip(base), render_clip(with_tabla), atol=1e-3)


@pytest.mark.parametrize("style", STYLES)
def test_every_instrument_renders_in_every_style(style: str) -> None:
    duration = 1.37  # not a whole number of samples per beat or block
    for i, instrument in enumerate(INSTRUMENTS):
        spec = ClipSpec(
            instrument, style, tempo_bpm=70 + 15 * i, key=KEYS[i], seed=i, duration_s=duration
        )
        audio = render_clip(spec)
        assert audio.shape == (round(duration * SR),), instrument
        assert np.all(np.isfinite(audio)), instrument
        assert np.max(np.abs(audio)) <= 1.0, instrument
        assert np.max(np.abs(audio)) == pytest.approx(0.9, abs=1e-4), instrument
        assert np.sqrt(np.mean(audio**2)) > 0.02, instrument  # not silent


@pytest.mark.parametrize("accompaniment", ACCOMPANIMENTS)
def test_each_accompaniment_adds_sound(accompaniment: str) -> None:
    spec = ClipSpec(
        "flute", "classical", tempo_bpm=100, seed=1, duration_s=1.5, accompaniment=accompaniment
    )
    extra = render_parts(spec)["accompaniment"]
    assert np.all(np.isfinite(extra)) and np.sqrt(np.mean(extra**2)) > 1e-3


@settings(max_examples=12, deadline=None)
@given(
    instrument=st.sampled_from(INSTRUMENTS),
    style=st.sampled_from(STYLES),
    tempo=st.floats(60.0, 180.0),
    key=st.sampled_from((*KEYS, "Bb", "eb")),
    seed=st.integers(0, 2**31 - 1),
    duration=st.floats(0.05, 0.6),
    sample_rate=st.sampled_from([8000, 16000, 22050, 32000]),
    accompaniment=st.sampled_from((None, *ACCOMPANIMENTS)),
    backing_gain=st.floats(0.0, 2.0),
)
def test_any_valid_spec_renders_finite_audio_of_the_right_length(
    instrument: str,
    style: str,
    tempo: float,
    key: str,
    seed: int,
    duration: float,
    sample_rate: int,
    accompaniment: str | None,
    backing_gain: float,
) -> None:
    spec = ClipSpec(
        instrument,
        style,
        tempo_bpm=tempo,
        key=key,
        seed=seed,
        duration_s=duration,
        sample_rate=sample_rate,
        accompaniment=accompaniment,
        backing_gain=backing_gain,
    )
    audio = render_clip(spec)
    assert audio.shape == (round(duration * sample_rate),)
    assert np.all(np.isfinite(audio)) and np.max(np.abs(audio)) <= 0.9 + 1e-6


@pytest.mark.parametrize("style", ["rock", "electronic"])
@pytest.mark.parametrize("tempo", [90, 140])
def test_drum_pattern_has_the_requested_tempo(style: str, tempo: int) -> None:
    spec = ClipSpec(
        "piano", style, tempo_bpm=tempo, key="A", seed=5, duration_s=6.0, backing_gain=2.0
    )
    assert estimate_bpm(render_clip(spec)) == pytest.approx(tempo, rel=0.03)
