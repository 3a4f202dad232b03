"""What the synthetic world is made of, and the spec that fixes one clip.

The vocabularies (lead instruments, styles, accompaniment layers, keys, the tempo range) and
the per-style and per-instrument tables behind them (scales, typical tempi, registers, prompt
wording); :class:`ClipSpec`, which determines a clip completely; and the text prompt
(:func:`describe`) and flat labels (:func:`spec_labels`) that go with a spec.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# --------------------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------------------


INSTRUMENTS: tuple[str, ...] = (
    "trumpet",
    "violin",
    "xylophone",
    "flute",
    "piano",
    "guitar",
    "synth",
)
STYLES: tuple[str, ...] = ("classical", "rock", "electronic", "indian", "jazz")
ACCOMPANIMENTS: tuple[str, ...] = ("tabla", "drums", "drone")
KEYS: tuple[str, ...] = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
MIN_TEMPO_BPM = 60.0
MAX_TEMPO_BPM = 180.0

_FLAT_ALIASES = {"Db": "C#", "Eb": "D#", "Gb": "F#", "Ab": "G#", "Bb": "A#"}

# Scale (semitones above the tonic) and its name in the text prompt, per style.
_SCALES: dict[str, tuple[str, tuple[int, ...]]] = {
    "classical": ("major", (0, 2, 4, 5, 7, 9, 11)),
    "rock": ("minor pentatonic", (0, 3, 5, 7, 10)),
    "electronic": ("minor", (0, 2, 3, 5, 7, 8, 10)),
    "indian": ("raga bhairav", (0, 1, 4, 5, 7, 8, 11)),
    "jazz": ("dorian", (0, 2, 3, 5, 7, 9, 10)),
}

# Style-typical tempo ranges (BPM), used by make_dataset when no tempo_range is given.
_STYLE_TEMPI: dict[str, tuple[int, int]] = {
    "classical": (60, 120),
    "rock": (100, 160),
    "electronic": (115, 140),
    "indian": (60, 120),
    "jazz": (90, 180),
}

# Comfortable MIDI register (low, high) of each lead instrument.
_REGISTERS: dict[str, tuple[int, int]] = {
    "trumpet": (58, 82),
    "violin": (60, 88),
    "xylophone": (65, 96),
    "flute": (62, 93),
    "piano": (52, 84),
    "guitar": (48, 76),
    "synth": (52, 84),
}

_DESCRIPTIONS: dict[str, str] = {
    "classical": "",
    "rock": " with distorted guitars and drums",
    "electronic": " with a synth bass and four-on-the-floor beat",
    "indian": " with a tanpura drone and tabla",
    "jazz": " with walking bass and ride cymbal",
}

# Accompaniment layers that a style's backing already contains.
_STYLE_LAYERS: dict[str, frozenset[str]] = {
    "classical": frozenset(),
    "rock": frozenset({"drums"}),
    "electronic": frozenset(),
    "indian": frozenset({"tabla", "drone"}),
    "jazz": frozenset(),
}

_ACCOMPANIMENT_TEXT: dict[str, str] = {
    "tabla": "tabla",
    "drums": "rock drums",
    "drone": "a tanpura drone",
}


# --------------------------------------------------------------------------------------
# Specs and labels
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClipSpec:
    """Everything that determines a clip; two equal specs render bit-identical audio.

    ``backing_gain`` scales the style's own backing (drums, chords, drone) relative to the
    lead; 0 leaves the lead melody alone, which is handy for pure-timbre studies.
    ``accompaniment`` adds one extra layer from :data:`ACCOMPANIMENTS` on top of the style
    (e.g. a tabla over a classical violin); the lead and backing are unchanged by it, so a
    spec with and without an accompaniment forms a minimal pair. A layer the style's
    backing already plays (tabla or drone in "indian", drums in "rock") is not doubled.
    """

    instrument: str
    style: str
    tempo_bpm: float = 120.0
    key: str = "C"
    seed: int = 0
    duration_s: float = 4.0
    sample_rate: int = 16000
    accompaniment: str | None = None
    backing_gain: float = 0.5

    def __post_init__(self) -> None:
        # Frozen, so normalising the key needs object.__setattr__.
        object.__setattr__(self, "key", _normalise_key(self.key))
        if self.instrument not in INSTRUMENTS:
            raise ValueError(f"unknown instrument {self.instrument!r}; choose from {INSTRUMENTS}")
        if self.style not in STYLES:
            raise ValueError(f"unknown style {self.style!r}; choose from {STYLES}")
        if not MIN_TEMPO_BPM <= self.tempo_bpm <= MAX_TEMPO_BPM:
            raise ValueError(
                f"tempo_bpm must be in [{MIN_TEMPO_BPM:g}, {MAX_TEMPO_BPM:g}], got {self.tempo_bpm}"
            )
        if self.accompaniment is not None and self.accompaniment not in ACCOMPANIMENTS:
            raise ValueError(
                f"unknown accompaniment {self.accompaniment!r}; choose from {ACCOMPANIMENTS}"
            )
        if self.duration_s <= 0:
            raise ValueError(f"duration_s must be positive, got {self.duration_s}")
        if self.sample_rate < 8000:
            raise ValueError(f"sample_rate must be at least 8000 Hz, got {self.sample_rate}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if self.backing_gain < 0:
            raise ValueError(f"backing_gain must be >= 0, got {self.backing_gain}")

    @property
    def n_samples(self) -> int:
        return int(round(self.duration_s * self.sample_rate))

    @property
    def scale_name(self) -> str:
        return _SCALES[self.style][0]

    @property
    def tonic_pitch_class(self) -> int:
        return KEYS.index(self.key)

    @property
    def adds_layer(self) -> bool:
        """Whether ``accompaniment`` is audible as an extra layer: not when the style's own
        (audible) backing already plays it, e.g. a tabla over the "indian" style."""
        if self.accompaniment is None:
            return False
        return not (self.backing_gain > 0 and self.accompaniment in _STYLE_LAYERS[self.style])


def _normalise_key(key: str) -> str:
    key = key.strip()
    key = key[:1].upper() + key[1:]
    key = _FLAT_ALIASES.get(key, key)
    if key not in KEYS:
        raise ValueError(f"unknown key {key!r}; choose from {KEYS} (or a flat alias)")
    return key


def _format_tempo(tempo_bpm: float) -> str:
    return f"{tempo_bpm:g}"


def describe(spec: ClipSpec) -> str:
    """Text prompt for the clip, e.g. ``"classical violin melody at 96 BPM in D major"``.

    The text names only what is audible: no backing instruments when ``backing_gain`` is
    0, and an accompaniment only when it adds a layer (see :attr:`ClipSpec.adds_layer`).
    """
    backing = _DESCRIPTIONS[spec.style] if spec.backing_gain > 0 else ""
    text = (
        f"{spec.style} {spec.instrument} melody at {_format_tempo(spec.tempo_bpm)} BPM "
        f"in {spec.key} {spec.scale_name}{backing}"
    )
    if spec.adds_layer:
        assert spec.accompaniment is not None
        text += (" and " if backing else " with ") + _ACCOMPANIMENT_TEXT[spec.accompaniment]
    return text


def caption(spec: ClipSpec) -> str:
    """The short prompt naming what a concept vector contrasts, e.g. ``"classical violin melody"``
    or ``"classical flute melody with tabla"``: `describe` without the tempo, key and backing,
    which differ at random between the clips of a concept and would add noise to a difference
    of their activations (`recipes.concept_vector(..., text=caption)`)."""
    text = f"{spec.style} {spec.instrument} melody"
    if spec.adds_layer:
        assert spec.accompaniment is not None
        text += " with " + _ACCOMPANIMENT_TEXT[spec.accompaniment]
    return text


def spec_labels(spec: ClipSpec) -> dict[str, Any]:
    """Flat labels for probes and CSVs (instrument, style, tempo_bpm, key, scale, ...)."""
    return {
        "instrument": spec.instrument,
        "style": spec.style,
        "tempo_bpm": spec.tempo_bpm,
        "key": spec.key,
        "scale": spec.scale_name,
        "accompaniment": spec.accompaniment or "",
        "seed": spec.seed,
        "duration_s": spec.duration_s,
        "sample_rate": spec.sample_rate,
    }


__all__ = [
    "ACCOMPANIMENTS",
    "INSTRUMENTS",
    "KEYS",
    "MAX_TEMPO_BPM",
    "MIN_TEMPO_BPM",
    "STYLES",
    "ClipSpec",
    "caption",
    "describe",
    "spec_labels",
]
