"""Offline data for musicgen-lens: a deterministic synthetic music world (see :mod:`.synth`)."""

from musicgen_lens.data.synth import (
    ACCOMPANIMENTS,
    INSTRUMENTS,
    KEYS,
    STYLES,
    Clip,
    ClipSpec,
    clip_spec_for_index,
    describe,
    make_dataset,
    render_clip,
    render_note,
    render_parts,
    spec_labels,
    split_of,
    write_dataset,
)

__all__ = [
    "ACCOMPANIMENTS",
    "INSTRUMENTS",
    "KEYS",
    "STYLES",
    "Clip",
    "ClipSpec",
    "clip_spec_for_index",
    "describe",
    "make_dataset",
    "render_clip",
    "render_note",
    "render_parts",
    "spec_labels",
    "split_of",
    "write_dataset",
]
