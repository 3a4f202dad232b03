"""Offline data for musicgen-lens: a deterministic, offline "synthetic music world".

Every clip is fully described by a :class:`ClipSpec` (lead instrument, style, tempo, key,
seed, ...). :func:`render_clip` turns a spec into mono float32 audio; the same spec always
gives bit-identical audio, because all randomness comes from ``np.random.default_rng``
seeded by the spec (never the global RNG). :func:`describe` gives the text prompt for a
text-conditioned model and :func:`spec_labels` the matching labels, so steering vectors and
probes for the paper's concepts (timbre: trumpet -> violin / xylophone; genre: classical ->
electronic -> rock; adding a tabla; genre fusion) can be built and checked without any
download.

The synthesis is deliberately simple (additive partials, Karplus-Strong strings, filtered
noise drums) but each instrument has the acoustic cue that tells it apart. A sample-based
FluidSynth backend would sound more realistic; it is optional and never required, and
nothing here depends on it.

Modules:

- :mod:`.vocabulary` - instruments, styles, keys, tempi; :class:`ClipSpec`, the prompt and labels
- :mod:`.dsp` - signal-processing primitives (oscillators, envelopes, noise, mixing, streams)
- :mod:`.instruments` - per-instrument note renderers, drums, tabla strokes, backing voices
- :mod:`.arrangement` - melodies, backings and accompaniment on a beat grid; the mix
- :mod:`.dataset` - :class:`Clip`, splits, :func:`make_dataset` and :func:`write_dataset`
- :mod:`.synth` - the former single module, kept as re-exports for compatibility
- :mod:`.soundfont` - General MIDI rendering (TinySoundFont + TimGM6mb, optional; additive fallback)
- :mod:`.syntheory` - SynTheory's music-theory concept sets as activation-store items
"""

from musicgen_lens.data.arrangement import render_clip, render_parts
from musicgen_lens.data.dataset import (
    Clip,
    clip_spec_for_index,
    make_dataset,
    split_of,
    write_dataset,
)
from musicgen_lens.data.instruments import render_note
# SynTheory concept sets: importable from here, but deliberately left out of __all__, which
# lists the synthetic-world names of the split modules (tests/test_data_synth.py pins that).
from musicgen_lens.data import soundfont, syntheory  # noqa: F401
from musicgen_lens.data.soundfont import render_notes  # noqa: F401
from musicgen_lens.data.syntheory import CONCEPTS, concept_items, concept_specs  # noqa: F401
from musicgen_lens.data.vocabulary import (
    ACCOMPANIMENTS,
    INSTRUMENTS,
    KEYS,
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
    "STYLES",
    "Clip",
    "ClipSpec",
    "clip_spec_for_index",
    "caption",
    "describe",
    "make_dataset",
    "render_clip",
    "render_note",
    "render_parts",
    "spec_labels",
    "split_of",
    "write_dataset",
]
