"""musicgen_lens.data.synth is a compatibility module: its names are the split modules' own."""

from __future__ import annotations

import importlib

import musicgen_lens.data
from musicgen_lens.data import synth

_MODULES = ("vocabulary", "dsp", "instruments", "arrangement", "dataset")


def test_synth_re_exports_each_public_name_from_its_new_home() -> None:
    homes = {}
    for name in _MODULES:
        module = importlib.import_module(f"musicgen_lens.data.{name}")
        homes.update({public: getattr(module, public) for public in module.__all__})
    assert len(synth.__all__) == 22
    for name in synth.__all__:
        assert getattr(synth, name) is homes[name], name
    for name in musicgen_lens.data.__all__:
        assert getattr(musicgen_lens.data, name) is homes[name], name
