"""SynTheory-style music-theory concept sets, rendered offline (Wei et al., ISMIR 2024).

SynTheory probes MusicGen on synthetic clips that each vary one music-theory concept:
tempos, time signatures, notes, intervals, scales, chords and chord progressions, rendered
from MIDI with the TimGM6mb General MIDI soundfont. This module rebuilds those sets
deterministically and offline (plus an ``instruments`` timbre set across GM programs),
as :class:`musicgen_lens.activations.Item` s ready for
:func:`musicgen_lens.activations.cache_activations` and the probes::

    from musicgen_lens.data.syntheory import concept_items
    items = concept_items("intervals", sr=model.cfg.sample_rate, n_per_class=8)
    store = cache_activations(model, items, "acts/intervals", ["blocks.0.hook_resid_post"])
    probe_sweep(store, "interval")

Each item is a short mono float32 clip at ``sr`` with labels naming the concept value and
what else varied (root, program, ...). :func:`concept_specs` gives the same sets without
rendering (cheap: filter, count, inspect); :func:`render_spec` renders one. The full grid of
a concept is enumerated in a fixed order; ``n_per_class`` keeps a seeded random subset per
class and ``limit`` caps the total, so the same arguments always give the same items and
the same audio, bit for bit. Rendering uses :func:`musicgen_lens.data.soundfont.render_notes`
(TinySoundFont + TimGM6mb when installed, else the project's additive synth; the
``backend`` label of each item says which).

This is a re-implementation of the paper's *design* (the concept vocabularies below), not of
its exact files: the clip lengths, voicings and the instrument subset are ours.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np

from musicgen_lens.data.soundfont import GM_PROGRAMS, Note, have_soundfont, render_notes

__all__ = [
    "CHORD_PROGRESSIONS",
    "CHORD_QUALITIES",
    "CONCEPTS",
    "CONCEPT_LABEL",
    "DEFAULT_PROGRAMS",
    "INTERVALS",
    "MODES",
    "NOTE_NAMES",
    "TEMPOS",
    "TIME_SIGNATURES",
    "ConceptSpec",
    "concept_items",
    "concept_specs",
    "iter_concept_items",
    "render_spec",
]

NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
INTERVALS = ("m2", "M2", "m3", "M3", "P4", "TT", "P5", "m6", "M6", "m7", "M7", "P8")  # 1..12 semitones
MODES: dict[str, tuple[int, ...]] = {
    "ionian": (0, 2, 4, 5, 7, 9, 11),
    "dorian": (0, 2, 3, 5, 7, 9, 10),
    "phrygian": (0, 1, 3, 5, 7, 8, 10),
    "lydian": (0, 2, 4, 6, 7, 9, 11),
    "mixolydian": (0, 2, 4, 5, 7, 9, 10),
    "aeolian": (0, 2, 3, 5, 7, 8, 10),
    "locrian": (0, 1, 3, 5, 6, 8, 10),
}
CHORD_QUALITIES: dict[str, tuple[int, int, int]] = {
    "major": (0, 4, 7),
    "minor": (0, 3, 7),
    "augmented": (0, 4, 8),
    "diminished": (0, 3, 6),
}
# Roman numerals -> (semitones above the tonic, quality), for the progressions.
_NUMERALS: dict[str, tuple[int, str]] = {
    "I": (0, "major"), "ii": (2, "minor"), "iii": (4, "minor"), "IV": (5, "major"), "V": (7, "major"),
    "vi": (9, "minor"), "vii°": (11, "diminished"),
    "i": (0, "minor"), "ii°": (2, "diminished"), "III": (3, "major"), "iv": (5, "minor"), "v": (7, "minor"),
    "VI": (8, "major"), "VII": (10, "major"),
}
CHORD_PROGRESSIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "I-IV-V-I": ("major", ("I", "IV", "V", "I")),
    "I-V-vi-IV": ("major", ("I", "V", "vi", "IV")),
    "I-vi-IV-V": ("major", ("I", "vi", "IV", "V")),
    "ii-V-I-I": ("major", ("ii", "V", "I", "I")),
    "vi-IV-I-V": ("major", ("vi", "IV", "I", "V")),
    "I-iii-IV-V": ("major", ("I", "iii", "IV", "V")),
    "i-iv-v-i": ("minor", ("i", "iv", "v", "i")),
    "i-VI-III-VII": ("minor", ("i", "VI", "III", "VII")),
    "i-iv-VII-III": ("minor", ("i", "iv", "VII", "III")),
    "ii°-v-i-i": ("minor", ("ii°", "v", "i", "i")),
}
TEMPOS: tuple[int, ...] = tuple(range(50, 211, 10))  # bpm
# name -> (beats per bar, beat unit, accent groups of beat units: a group starts on a medium accent)
TIME_SIGNATURES: dict[str, tuple[int, int, int]] = {
    "2/4": (2, 4, 1),
    "3/4": (3, 4, 1),
    "4/4": (4, 4, 1),
    "2/2": (2, 2, 1),
    "3/8": (3, 8, 3),
    "6/8": (6, 8, 3),
    "9/8": (9, 8, 3),
    "12/8": (12, 8, 3),
}
#: The default timbres (GM programs): piano, xylophone, violin, trumpet, flute.
DEFAULT_PROGRAMS: tuple[int, ...] = (0, 13, 40, 56, 73)
CONCEPTS = ("tempos", "time_signatures", "notes", "intervals", "scales", "chords", "chord_progressions", "instruments")
#: The label each concept varies (what to probe).
CONCEPT_LABEL = {
    "tempos": "bpm",
    "time_signatures": "time_signature",
    "notes": "note",
    "intervals": "interval",
    "scales": "mode",
    "chords": "quality",
    "chord_progressions": "progression",
    "instruments": "instrument",
}
_DEFAULT_DURATION = {"tempos": 4.0, "time_signatures": 4.0, "chord_progressions": 4.0}
_PROGRAM_NAMES = {v: k for k, v in GM_PROGRAMS.items()}
_CLICK_STRONG, _CLICK_WEAK = 76, 77  # GM hi / low wood block
_CLICKS = (76, 77, 75, 37)  # GM percussion keys: hi wood block, low wood block, claves, side stick


@dataclass(frozen=True)
class ConceptSpec:
    """One clip: its notes, length and labels (rendering it needs nothing else)."""

    id: str
    concept: str
    notes: tuple[Note, ...]
    duration: float
    labels: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


def _program_name(program: int) -> str:
    return _PROGRAM_NAMES.get(program, f"program_{program}")


def _roots(roots: Sequence[int] | None) -> tuple[int, ...]:
    return tuple(roots) if roots is not None else tuple(range(60, 72))  # C4..B4


def _grid(concept: str, duration: float, programs: Sequence[int], roots: Sequence[int] | None) -> list[tuple[str, tuple[Note, ...], dict[str, Any]]]:
    """Every (class, notes, labels) of a concept, in a fixed order."""
    out: list[tuple[str, tuple[Note, ...], dict[str, Any]]] = []
    hold = 0.9 * duration
    if concept == "notes":
        for octave in (3, 4, 5):
            for pc, name in enumerate(NOTE_NAMES):
                midi = 12 * (octave + 1) + pc
                for p in programs:
                    out.append((name, (Note(0.0, hold, midi, 100, p),),
                                {"note": name, "pitch_class": pc, "octave": octave, "midi": midi, "program": p, "instrument": _program_name(p)}))
    elif concept == "intervals":
        for semis, name in enumerate(INTERVALS, start=1):
            for root in _roots(roots):
                for p in programs:
                    for style in ("harmonic", "melodic"):
                        if style == "harmonic":
                            notes = (Note(0.0, hold, root, 100, p), Note(0.0, hold, root + semis, 100, p))
                        else:  # root, then the upper note
                            half = duration / 2
                            notes = (Note(0.0, half * 0.9, root, 100, p), Note(half, half * 0.9, root + semis, 100, p))
                        out.append((name, notes, {"interval": name, "semitones": semis, "root": root, "program": p,
                                                  "instrument": _program_name(p), "play_style": style}))
    elif concept == "scales":
        for mode, steps in MODES.items():
            pitches = [*steps, 12]
            step = duration / len(pitches)
            for root in _roots(roots):
                for p in programs:
                    notes = tuple(Note(i * step, 0.9 * step, root + s, 100, p) for i, s in enumerate(pitches))
                    out.append((mode, notes, {"mode": mode, "root": root, "program": p, "instrument": _program_name(p)}))
    elif concept == "chords":
        for quality, triad in CHORD_QUALITIES.items():
            for inversion in (0, 1, 2):
                voiced = sorted(t + (12 if i < inversion else 0) for i, t in enumerate(triad))
                for root in _roots(roots):
                    for p in programs:
                        strikes = 4
                        step = duration / strikes
                        notes = tuple(Note(k * step, 0.9 * step, root + v, 100, p) for k in range(strikes) for v in voiced)
                        out.append((quality, notes, {"quality": quality, "inversion": inversion, "root": root,
                                                     "program": p, "instrument": _program_name(p)}))
    elif concept == "chord_progressions":
        for name, (key_mode, numerals) in CHORD_PROGRESSIONS.items():
            step = duration / len(numerals)
            for root in _roots(roots):
                for p in programs:
                    notes = []
                    for k, numeral in enumerate(numerals):
                        degree, quality = _NUMERALS[numeral]
                        chord_root = root + degree - (12 if degree > 6 else 0)
                        notes += [Note(k * step, 0.9 * step, chord_root + t, 100, p) for t in CHORD_QUALITIES[quality]]
                    out.append((name, tuple(notes), {"progression": name, "key_mode": key_mode, "root": root,
                                                     "program": p, "instrument": _program_name(p)}))
    elif concept == "tempos":
        for bpm in TEMPOS:
            beat = 60.0 / bpm
            for click in _CLICKS:
                for phase in (0.0, 0.25, 0.5, 0.75):  # where the first click falls, in beats
                    onsets = np.arange(phase * beat, duration, beat)
                    notes = tuple(Note(float(t), 0.05, click, 110, 0, drum=True) for t in onsets)
                    out.append((str(bpm), notes, {"bpm": bpm, "beat_seconds": beat, "click": click,
                                                  "first_onset": float(onsets[0])}))
    elif concept == "time_signatures":
        for name, (beats, unit, group) in TIME_SIGNATURES.items():
            for bpm in (60, 90, 120):  # quarter-note tempo
                tick = 60.0 / bpm * 4 / unit
                notes = []
                k = 0
                while k * tick < duration:
                    pos = k % beats
                    if pos == 0:
                        notes.append(Note(k * tick, 0.05, _CLICK_STRONG, 127, 0, drum=True))
                    else:
                        notes.append(Note(k * tick, 0.05, _CLICK_WEAK, 90 if pos % group == 0 else 50, 0, drum=True))
                    k += 1
                out.append((name, tuple(notes), {"time_signature": name, "beats_per_bar": beats, "beat_unit": unit,
                                                  "bpm": bpm, "bar_seconds": beats * tick}))
    elif concept == "instruments":
        phrase = (0, 4, 7, 12)  # a major arpeggio from each root
        step = duration / len(phrase)
        for p in programs:
            for root in _roots(roots):
                notes = tuple(Note(i * step, 0.9 * step, root + s, 100, p) for i, s in enumerate(phrase))
                out.append((_program_name(p), notes, {"instrument": _program_name(p), "program": p, "root": root}))
    else:
        raise ValueError(f"unknown concept {concept!r}; choose from {CONCEPTS}")
    return out


def concept_specs(
    concept: str,
    *,
    n_per_class: int | None = None,
    limit: int | None = None,
    seed: int = 0,
    duration: float | None = None,
    programs: Sequence[int] | None = None,
    roots: Sequence[int] | None = None,
    classes: Sequence[Any] | None = None,
) -> list[ConceptSpec]:
    """The clips of one concept set (not rendered), deterministic in the arguments.

    n_per_class: keep this many per class (a seeded random subset; all when None).
    limit: then keep at most this many in total (classes interleaved, so a small limit
    still covers every class). duration: clip length in seconds (2 s; 4 s for tempos,
    time signatures and progressions). programs: GM programs (default
    :data:`DEFAULT_PROGRAMS`; for ``instruments``, every program in ``GM_PROGRAMS``).
    roots: MIDI roots for intervals/scales/chords/progressions/instruments (C4..B4).
    classes: keep only these values of the concept's label (:data:`CONCEPT_LABEL`), e.g.
    ``classes=[60, 180]`` for two tempos.
    """
    if concept not in CONCEPTS:
        raise ValueError(f"unknown concept {concept!r}; choose from {CONCEPTS}")
    if n_per_class is not None and n_per_class < 1:
        raise ValueError(f"n_per_class must be >= 1, got {n_per_class}")
    duration = float(duration if duration is not None else _DEFAULT_DURATION.get(concept, 2.0))
    if programs is None:
        programs = tuple(GM_PROGRAMS.values()) if concept == "instruments" else DEFAULT_PROGRAMS
    grid = _grid(concept, duration, tuple(programs), roots)
    kept = list(range(len(grid)))  # ids keep the full grid's index, whatever is filtered
    if classes is not None:
        wanted = set(classes)
        kept = [i for i in kept if grid[i][2][CONCEPT_LABEL[concept]] in wanted]
        if not kept:
            raise ValueError(f"no {concept} clip has {CONCEPT_LABEL[concept]} in {sorted(map(str, wanted))}")
    by_class: dict[str, list[int]] = {}
    for i in kept:
        by_class.setdefault(grid[i][0], []).append(i)
    chosen: list[list[int]] = []
    for cls, members in by_class.items():
        # One stream per (seed, concept, class): a class's subset does not depend on the others.
        rng = np.random.default_rng([seed, zlib.crc32(concept.encode()), zlib.crc32(cls.encode())])
        order = [members[j] for j in rng.permutation(len(members))]
        chosen.append(order[:n_per_class] if n_per_class is not None else order)
    # Interleave the classes (round robin) so `limit` stays balanced.
    picked = [c[r] for r in range(max(map(len, chosen))) for c in chosen if r < len(c)]
    if limit is not None:
        picked = picked[:limit]
    specs = []
    for i in picked:
        cls, notes, labels = grid[i]
        spec_id = f"{concept}-{i:05d}-{cls}"
        specs.append(ConceptSpec(spec_id, concept, notes, duration, {"concept": concept, **labels}))
    return specs


def render_spec(spec: ConceptSpec, *, sr: int = 32000, backend: str = "auto", soundfont: Any = None) -> np.ndarray:
    """One clip's mono float32 audio at `sr`."""
    return render_notes(spec.notes, spec.duration, sr=sr, backend=backend, soundfont=soundfont)


def iter_concept_items(
    concept: str,
    *,
    sr: int = 32000,
    backend: str = "auto",
    soundfont: Any = None,
    text: str | None = None,
    **spec_kwargs: Any,
) -> Iterator[Any]:
    """Lazily render :func:`concept_specs` as ``Item`` s (audio, sr, labels; text optional)."""
    from musicgen_lens.activations import Item

    if backend == "auto":
        backend = "soundfont" if (soundfont is not None or have_soundfont()) else "additive"
    for spec in concept_specs(concept, **spec_kwargs):
        audio = render_spec(spec, sr=sr, backend=backend, soundfont=soundfont)
        yield Item(spec.id, audio=audio, sr=sr, text=text, labels={**spec.labels, "backend": backend})


def concept_items(concept: str, **kwargs: Any) -> list[Any]:
    """:func:`iter_concept_items` as a list (arguments as there and in :func:`concept_specs`)."""
    return list(iter_concept_items(concept, **kwargs))
