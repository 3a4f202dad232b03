"""Arranging and rendering a clip from its spec.

The lead melody (a random walk on the style's scale, on a beat grid), each style's backing
(chords, drums, bass, drone), the optional accompaniment layer, and the mix:
:func:`render_parts` gives the three stems and :func:`render_clip` the normalised mono clip.
Every part draws from its own random stream, so adding a layer leaves the others untouched.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from musicgen_lens.data.dsp import _mix_into, _normalise, _rms, _stream_id, _time, midi_to_hz
from musicgen_lens.data.instruments import (
    _INSTRUMENT_RENDERERS,
    NoteRenderer,
    _bass,
    _clap,
    _hihat,
    _kick,
    _pad,
    _power_chord,
    _ride,
    _saw_bass,
    _snare,
    _tabla_strokes,
    _tanpura,
)
from musicgen_lens.data.vocabulary import _REGISTERS, _SCALES, ClipSpec

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
# Placing sounds on the grid
# --------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------
# Backing parts per style
# --------------------------------------------------------------------------------------


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


__all__ = [
    "Note",
    "make_melody",
    "render_clip",
    "render_parts",
]
