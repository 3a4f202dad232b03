"""SynTheory concept sets: deterministic, labels that match the audio, and usable as a store.

The SoundFont tests need the `soundfont` extra (pretty_midi's TimGM6mb.sf2 + tinysoundfont,
both in `dev`); the additive fallback is tested either way.
"""

from __future__ import annotations

import numpy as np
import pytest

from musicgen_lens.activations import Item, cache_activations
from musicgen_lens.data.soundfont import Note, default_soundfont, have_soundfont, render_notes
from musicgen_lens.data.syntheory import (
    CONCEPT_LABEL,
    CONCEPTS,
    INTERVALS,
    TEMPOS,
    concept_items,
    concept_specs,
    render_spec,
)
from musicgen_lens.probes import LinearProbe

needs_sf = pytest.mark.skipif(not have_soundfont(), reason="needs the soundfont extra (pretty_midi + tinysoundfont)")
SR = 16000
FLUTE = 73


def midi_of_peak(audio: np.ndarray, sr: int, lo_hz: float = 80.0, harmonics: int = 3) -> float:
    """The fundamental as a MIDI number: the peak of the harmonic product spectrum (a flute's
    2nd harmonic can be louder than its fundamental; the product of the spectrum compressed
    by 1..`harmonics` peaks at f0)."""
    spec = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    freqs = np.fft.rfftfreq(len(audio), 1 / sr)
    n = len(spec) // harmonics
    hps = np.prod([spec[::h][:n] for h in range(1, harmonics + 1)], axis=0)
    hps[freqs[:n] < lo_hz] = 0
    return 69 + 12 * np.log2(freqs[np.argmax(hps)] / 440.0)


def onsets(audio: np.ndarray, sr: int, rel: float = 0.3) -> np.ndarray:
    """Onset times: where a 2 ms energy envelope first crosses `rel` of its max after a gap."""
    hop = int(0.002 * sr)
    env = np.sqrt(np.convolve(audio**2, np.ones(hop) / hop, mode="same"))[::hop]
    above = np.concatenate([[False], env > rel * env.max()])
    starts = np.flatnonzero(above[1:] & ~above[:-1])
    keep = [s for i, s in enumerate(starts) if i == 0 or s - starts[i - 1] > 0.1 * sr / hop]
    return np.asarray(keep) * hop / sr


def test_every_concept_has_classes_and_is_balanced():
    for concept in CONCEPTS:
        specs = concept_specs(concept, n_per_class=2)
        values = [s.labels[CONCEPT_LABEL[concept]] for s in specs]
        counts = {v: values.count(v) for v in values}
        assert len(counts) >= 4 and set(counts.values()) == {2}, concept
        assert len({s.id for s in specs}) == len(specs)
    assert len(concept_specs("intervals", limit=12)) == 12
    assert {s.labels["interval"] for s in concept_specs("intervals", limit=12)} == set(INTERVALS)  # round robin
    with pytest.raises(ValueError):
        concept_specs("nope")


def test_subsets_are_seeded_and_filters_keep_ids():
    a = [s.id for s in concept_specs("chords", n_per_class=3, seed=0)]
    assert a == [s.id for s in concept_specs("chords", n_per_class=3, seed=0)]
    assert a != [s.id for s in concept_specs("chords", n_per_class=3, seed=1)]
    only = [s.id for s in concept_specs("chords", n_per_class=3, seed=0, classes=["minor"])]
    assert only == [i for i in a if i.endswith("-minor")]


@needs_sf
def test_soundfont_is_the_one_in_pretty_midi():
    assert default_soundfont().name == "TimGM6mb.sf2"


@pytest.mark.parametrize("backend", [pytest.param("soundfont", marks=needs_sf), "additive"])
def test_same_seed_bit_identical_audio(backend):
    first = concept_items("intervals", sr=SR, n_per_class=1, limit=3, seed=5, backend=backend)
    again = concept_items("intervals", sr=SR, n_per_class=1, limit=3, seed=5, backend=backend)
    for x, y in zip(first, again):
        assert x.id == y.id and x.labels == y.labels and x.labels["backend"] == backend
        assert x.audio.dtype == np.float32 and x.audio.ndim == 1 and x.sr == SR
        assert np.array_equal(x.audio, y.audio)
        assert len(x.audio) == 2 * SR and np.abs(x.audio).max() > 0.01


@needs_sf
@pytest.mark.parametrize("midi", [57, 60, 64, 69, 76])
def test_rendered_note_has_its_pitch(midi):
    spec = next(s for s in concept_specs("notes", programs=[FLUTE]) if s.labels["midi"] == midi)
    audio = render_spec(spec, sr=SR)
    assert abs(midi_of_peak(audio[: SR], SR) - midi) < 0.5


@needs_sf
@pytest.mark.parametrize("name", ["m3", "P5", "M6", "P8"])
def test_melodic_interval_spans_its_semitones(name):
    spec = next(
        s for s in concept_specs("intervals", programs=[FLUTE], roots=[62])
        if s.labels["interval"] == name and s.labels["play_style"] == "melodic"
    )
    audio = render_spec(spec, sr=SR)
    half = len(audio) // 2
    lower, upper = midi_of_peak(audio[:half], SR), midi_of_peak(audio[half:], SR)
    assert abs(lower - 62) < 0.5
    assert abs((upper - lower) - spec.labels["semitones"]) < 0.5


@pytest.mark.parametrize("backend", [pytest.param("soundfont", marks=needs_sf), "additive"])
@pytest.mark.parametrize("bpm", [60, 120, 200])
def test_tempo_onset_spacing(bpm, backend):
    spec = concept_specs("tempos", classes=[bpm], n_per_class=1, seed=2)[0]
    audio = render_spec(spec, sr=SR, backend=backend)
    times = onsets(audio, SR)
    assert len(times) >= 3
    assert abs(np.median(np.diff(times)) - 60.0 / bpm) < 0.01
    assert abs(times[0] - spec.labels["first_onset"]) < 0.01


@needs_sf
def test_time_signature_downbeats_are_a_bar_apart():
    for spec in concept_specs("time_signatures", classes=["3/4", "6/8"], n_per_class=3):
        audio = render_spec(spec, sr=SR)
        downbeats = onsets(audio, SR, rel=0.8)
        assert len(downbeats) >= 2, spec.id
        assert abs(np.median(np.diff(downbeats)) - spec.labels["bar_seconds"]) < 0.01, spec.id


def test_auto_falls_back_to_the_additive_synth(monkeypatch, tmp_path):
    monkeypatch.setenv("MUSICGEN_LENS_SOUNDFONT", str(tmp_path / "missing.sf2"))
    assert not have_soundfont()
    items = concept_items("notes", sr=8000, limit=2)
    assert [it.labels["backend"] for it in items] == ["additive", "additive"]
    with pytest.raises(FileNotFoundError):
        render_spec(concept_specs("notes", limit=1)[0], sr=8000, backend="soundfont")


def test_render_notes_checks_and_cuts():
    audio = render_notes([Note(0.0, 0.2, 60, program=FLUTE), Note(5.0, 1.0, 60)], 0.5, sr=8000, backend="additive")
    assert audio.shape == (4000,)
    with pytest.raises(ValueError):
        render_notes([], 0.1, backend="fluidsynth")


def test_items_roundtrip_through_cache_activations_and_probe(model, tmp_path):
    """Two tempos on the tiny model (its codec's rate): stored with labels; a probe learns them."""
    sr = model.cfg.sample_rate
    items = concept_items("tempos", sr=sr, classes=[60, 180], n_per_class=8, duration=2.0)
    assert all(isinstance(it, Item) and it.sr == sr for it in items)
    hooks = [f"blocks.{model.cfg.n_layers - 1}.hook_resid_post", "hook_embed"]
    store = cache_activations(model, items, tmp_path / "store", hooks, progress=False)
    assert len(store) == 16 and store.ids == [it.id for it in items]
    y = store.labels("bpm")
    assert sorted(set(y.tolist())) == [60, 180] and set(TEMPOS) >= set(y.tolist())
    X = np.asarray(store[hooks[0]])
    assert X.shape == (16, model.cfg.d_model)
    order = np.random.default_rng(0).permutation(16)
    train, test = order[:12], order[12:]
    best = 0.0
    for hook in hooks:
        X = np.asarray(store[hook])
        probe = LinearProbe(task="classification", normalize="standardize").fit(X[train], y[train])
        best = max(best, probe.score(X[test], y[test]))
    assert best >= 0.75
