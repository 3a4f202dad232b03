"""Specs, prompts and labels (musicgen_lens.data.vocabulary)."""

from __future__ import annotations

import numpy as np
import pytest

from musicgen_lens.data import ClipSpec, caption, describe, render_clip, spec_labels
from musicgen_lens.data.arrangement import render_parts


@pytest.mark.parametrize(
    "kwargs",
    [
        {"instrument": "kazoo", "style": "rock"},
        {"instrument": "violin", "style": "polka"},
        {"instrument": "violin", "style": "rock", "tempo_bpm": 200},
        {"instrument": "violin", "style": "rock", "tempo_bpm": 59},
        {"instrument": "violin", "style": "rock", "key": "H"},
        {"instrument": "violin", "style": "rock", "accompaniment": "bagpipes"},
        {"instrument": "violin", "style": "rock", "duration_s": 0.0},
    ],
)
def test_invalid_specs_are_rejected(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        ClipSpec(**kwargs)


def test_description_and_labels() -> None:
    spec = ClipSpec("violin", "classical", tempo_bpm=96, key="D", seed=0)
    assert describe(spec) == "classical violin melody at 96 BPM in D major"
    fused = ClipSpec("trumpet", "rock", tempo_bpm=140.5, key="Bb", accompaniment="tabla")
    text = describe(fused)
    assert text.startswith("rock trumpet melody at 140.5 BPM in A# minor pentatonic")
    assert "tabla" in text
    labels = spec_labels(fused)
    assert labels["instrument"] == "trumpet" and labels["style"] == "rock"
    assert (
        labels["tempo_bpm"] == 140.5
        and labels["key"] == "A#"
        and labels["accompaniment"] == "tabla"
    )


def test_description_names_only_what_is_audible() -> None:
    bare = ClipSpec("violin", "rock", tempo_bpm=120, key="E", backing_gain=0.0)
    assert describe(bare) == "rock violin melody at 120 BPM in E minor pentatonic"
    assert not np.any(render_parts(bare)["backing"])
    with_drums = ClipSpec(
        "violin", "rock", tempo_bpm=120, key="E", backing_gain=0.0, accompaniment="drums"
    )
    assert describe(with_drums).endswith("with rock drums")
    # A tabla over the "indian" style (which already has one) is not doubled or repeated.
    indian = ClipSpec("flute", "indian", tempo_bpm=80, key="D", duration_s=1.0)
    indian_tabla = ClipSpec(
        "flute", "indian", tempo_bpm=80, key="D", duration_s=1.0, accompaniment="tabla"
    )
    assert describe(indian_tabla) == describe(indian)
    assert describe(indian).count("tabla") == 1
    assert np.array_equal(render_clip(indian_tabla), render_clip(indian))


def test_caption_is_the_description_without_what_varies_at_random_between_a_concepts_clips() -> None:
    spec = ClipSpec("violin", "classical", tempo_bpm=96, key="D", seed=0)
    assert caption(spec) == "classical violin melody"
    assert caption(ClipSpec("flute", "classical", tempo_bpm=131, key="F", accompaniment="tabla")) == "classical flute melody with tabla"
    # an accompaniment the style already plays is not named (as in `describe`)
    assert caption(ClipSpec("flute", "indian", accompaniment="tabla")) == "indian flute melody"
