"""Compatibility module: the synthetic music world used to live here in one file.

It is now split on its seams (see :mod:`musicgen_lens.data`): :mod:`.vocabulary`,
:mod:`.dsp`, :mod:`.instruments`, :mod:`.arrangement` and :mod:`.dataset`. This module
re-exports the public names it had, so ``from musicgen_lens.data.synth import X`` keeps
working; new code should import from :mod:`musicgen_lens.data` or the module named.
"""

from __future__ import annotations

from musicgen_lens.data.arrangement import Note, make_melody, render_clip, render_parts
from musicgen_lens.data.dataset import (
    LABEL_COLUMNS,
    Clip,
    clip_spec_for_index,
    make_dataset,
    split_of,
    write_dataset,
)
from musicgen_lens.data.dsp import midi_to_hz
from musicgen_lens.data.instruments import render_note
from musicgen_lens.data.vocabulary import (
    ACCOMPANIMENTS,
    INSTRUMENTS,
    KEYS,
    MAX_TEMPO_BPM,
    MIN_TEMPO_BPM,
    STYLES,
    ClipSpec,
    caption,
    describe,
    spec_labels,
)

__all__ = [
    "ACCOMPANIMENTS",
    "INSTRUMENTS",
    "KEYS",
    "LABEL_COLUMNS",
    "MAX_TEMPO_BPM",
    "MIN_TEMPO_BPM",
    "STYLES",
    "Clip",
    "ClipSpec",
    "Note",
    "clip_spec_for_index",
    "caption",
    "describe",
    "make_dataset",
    "make_melody",
    "midi_to_hz",
    "render_clip",
    "render_note",
    "render_parts",
    "spec_labels",
    "split_of",
    "write_dataset",
]
