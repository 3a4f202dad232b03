"""Render note lists with a General MIDI SoundFont (offline; optional extra ``soundfont``).

SynTheory renders its concept sets from MIDI with the TimGM6mb General MIDI soundfont. The
same file ships inside the ``pretty_midi`` wheel (``pretty_midi/TimGM6mb.sf2``), and
``tinysoundfont`` (a self-contained TinySoundFont binding, no system library) renders it::

    pip install pretty_midi
    pip install --no-deps tinysoundfont   # its wheel requires pyaudio (a C build) for
                                          # live playback only; offline rendering needs none

:func:`render_notes` turns :class:`Note` events into mono float32 audio at any sample rate,
sample-accurately and deterministically (a fresh synth per clip, no randomness). When
``tinysoundfont`` or the soundfont is missing, ``backend="auto"`` falls back to the
project's own additive synth (:func:`musicgen_lens.data.render_note`), which maps GM
programs to its instruments; ``backend="soundfont"`` raises instead.

Programs are General MIDI, 0-based: piano 0, xylophone 13, guitar 24, violin 40,
trumpet 56, flute 73, square lead 80. Drums are channel 10 (``Note(drum=True)``; the
``pitch`` is the GM percussion key, e.g. 76 high wood block, 37 side stick).
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

__all__ = [
    "GM_PROGRAMS",
    "Note",
    "default_soundfont",
    "have_soundfont",
    "render_notes",
]

#: A few General MIDI programs (0-based) by name: the paper's instruments and some more.
GM_PROGRAMS: dict[str, int] = {
    "piano": 0,
    "electric_piano": 4,
    "harpsichord": 6,
    "celesta": 8,
    "glockenspiel": 9,
    "vibraphone": 11,
    "marimba": 12,
    "xylophone": 13,
    "organ": 19,
    "nylon_guitar": 24,
    "steel_guitar": 25,
    "electric_guitar": 27,
    "acoustic_bass": 32,
    "violin": 40,
    "cello": 42,
    "strings": 48,
    "choir": 52,
    "trumpet": 56,
    "trombone": 57,
    "french_horn": 60,
    "alto_sax": 65,
    "oboe": 68,
    "clarinet": 71,
    "flute": 73,
    "pan_flute": 75,
    "square_lead": 80,
    "saw_lead": 81,
    "sitar": 104,
}

_DRUM_CHANNEL = 9  # GM channel 10


@dataclass(frozen=True)
class Note:
    """One note: onset and length in seconds, MIDI pitch (or GM drum key), velocity 1..127."""

    start: float
    duration: float
    pitch: int
    velocity: int = 100
    program: int = 0
    drum: bool = False


def default_soundfont() -> Path | None:
    """The soundfont to use: ``$MUSICGEN_LENS_SOUNDFONT``, else pretty_midi's TimGM6mb.sf2 (or None)."""
    env = os.environ.get("MUSICGEN_LENS_SOUNDFONT")
    if env:
        return Path(env)
    spec = importlib.util.find_spec("pretty_midi")  # locate without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        path = Path(root) / "TimGM6mb.sf2"
        if path.is_file():
            return path
    return None


def have_soundfont() -> bool:
    """True when the SoundFont backend is available (tinysoundfont importable and a .sf2 found)."""
    path = default_soundfont()
    return importlib.util.find_spec("tinysoundfont") is not None and path is not None and path.is_file()


def render_notes(
    notes: Iterable[Note],
    duration: float,
    *,
    sr: int = 32000,
    backend: str = "auto",
    soundfont: str | os.PathLike | None = None,
    gain_db: float = 0.0,
) -> np.ndarray:
    """Mono float32 audio ``[round(duration * sr)]`` of `notes` (events past the end are cut).

    backend: "soundfont" (tinysoundfont + a GM .sf2), "additive" (the project's synth), or
    "auto" (soundfont when available). Same notes -> bit-identical audio.
    """
    notes = sorted(notes, key=lambda n: (n.start, n.pitch, n.program, n.drum))
    n_samples = int(round(duration * sr))
    if backend not in ("auto", "soundfont", "additive"):
        raise ValueError(f"backend must be 'auto', 'soundfont' or 'additive', got {backend!r}")
    if backend == "auto":
        backend = "soundfont" if (soundfont is not None or have_soundfont()) else "additive"
    if backend == "additive":
        return _render_additive(notes, n_samples, sr)
    path = Path(soundfont) if soundfont is not None else default_soundfont()
    if path is None or not path.is_file():
        raise FileNotFoundError(
            "no General MIDI soundfont found: pip install pretty_midi (ships TimGM6mb.sf2), "
            "set MUSICGEN_LENS_SOUNDFONT, or use backend='additive'"
        )
    return _render_soundfont(notes, n_samples, sr, path, gain_db)


def _render_soundfont(notes: Sequence[Note], n_samples: int, sr: int, path: Path, gain_db: float) -> np.ndarray:
    try:
        import tinysoundfont
    except ImportError as err:  # pragma: no cover - exercised only without the extra
        raise ImportError("backend='soundfont' needs tinysoundfont: pip install --no-deps tinysoundfont") from err

    synth = tinysoundfont.Synth(gain=gain_db, samplerate=sr)
    sfid = synth.sfload(str(path))
    # One channel per (program, drum) pair; GM's drum channel stays reserved for drums.
    channels: dict[tuple[int, bool], int] = {}
    free = iter(c for c in range(16) if c != _DRUM_CHANNEL)
    events: list[tuple[int, int, int, int, int]] = []  # (sample, order, channel, key, velocity)
    for note in notes:
        key = (note.program, note.drum)
        if key not in channels:
            if note.drum:
                channels[key] = _DRUM_CHANNEL
                synth.program_select(_DRUM_CHANNEL, sfid, 128, 0, True)
            else:
                try:
                    channels[key] = next(free)
                except StopIteration:
                    raise ValueError("more than 15 distinct programs in one clip") from None
                synth.program_select(channels[key], sfid, 0, note.program)
        ch = channels[key]
        on = int(round(note.start * sr))
        off = int(round((note.start + note.duration) * sr))
        if on >= n_samples:
            continue
        events.append((on, 1, ch, note.pitch, int(np.clip(note.velocity, 1, 127))))
        events.append((max(off, on + 1), 0, ch, note.pitch, 0))  # note-offs first at a shared sample
    events.sort()
    out = np.zeros((n_samples, 2), dtype=np.float32)
    pos = 0
    for sample, is_on, ch, key, velocity in events:
        sample = min(sample, n_samples)
        if sample > pos:
            out[pos:sample] = np.frombuffer(synth.generate(sample - pos), dtype=np.float32).reshape(-1, 2)
            pos = sample
        if pos >= n_samples:
            break
        if is_on:
            synth.noteon(ch, key, velocity)
        else:
            synth.noteoff(ch, key)
    if pos < n_samples:
        out[pos:] = np.frombuffer(synth.generate(n_samples - pos), dtype=np.float32).reshape(-1, 2)
    return np.ascontiguousarray(out.mean(axis=1, dtype=np.float32))


# GM program ranges -> the additive synth's instruments (musicgen_lens.data.INSTRUMENTS).
def _additive_instrument(program: int) -> str:
    if program in (56, 57, 58, 59, 60, 61, 62, 63):
        return "trumpet"
    if 40 <= program <= 55:
        return "violin"
    if 8 <= program <= 15:
        return "xylophone"
    if 64 <= program <= 79:
        return "flute"
    if 24 <= program <= 39 or program == 104:
        return "guitar"
    if 80 <= program <= 103:
        return "synth"
    return "piano"


def _render_additive(notes: Sequence[Note], n_samples: int, sr: int) -> np.ndarray:
    from musicgen_lens.data.instruments import render_note

    out = np.zeros(n_samples, dtype=np.float64)
    for i, note in enumerate(notes):
        on = int(round(note.start * sr))
        if on >= n_samples:
            continue
        if note.drum:  # a short high click stands in for any percussion key
            audio = render_note("xylophone", 96.0, min(note.duration, 0.08), sample_rate=sr, seed=i)
        else:
            audio = render_note(_additive_instrument(note.program), float(note.pitch), note.duration, sample_rate=sr, seed=i)
        audio = audio[: n_samples - on] * (note.velocity / 127.0)
        out[on : on + len(audio)] += audio
    peak = float(np.abs(out).max()) if n_samples else 0.0
    if peak > 1.0:
        out /= peak
    return (0.5 * out).astype(np.float32)
