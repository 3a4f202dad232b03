"""Fixtures: tiny random checkpoints, written with save_pretrained and loaded through from_pretrained.

Helpers that tests import live in `helpers.py`; the checkpoint configurations too.
"""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(min(2, os.cpu_count() or 1))

from helpers import CONFIGS, MELODY_CONFIGS  # noqa: E402

from musicgen_lens import HookedMusicGen  # noqa: E402
from musicgen_lens.tiny import save_tiny_checkpoint, save_tiny_melody_checkpoint  # noqa: E402


@pytest.fixture(scope="session")
def checkpoint_dir(tmp_path_factory):
    """name in CONFIGS (text MusicGen) or MELODY_CONFIGS -> a saved tiny checkpoint directory."""
    made: dict[str, str] = {}

    def make(name: str = "base") -> str:
        if name not in made:
            if name in MELODY_CONFIGS:
                path = save_tiny_melody_checkpoint(tmp_path_factory.mktemp(name), seed=0, **MELODY_CONFIGS[name])
            else:
                path = save_tiny_checkpoint(tmp_path_factory.mktemp(name), seed=0, **CONFIGS[name])
            made[name] = str(path)
        return made[name]

    return make


@pytest.fixture(scope="session")
def load_model(checkpoint_dir):
    loaded: dict[str, HookedMusicGen] = {}

    def load(name: str = "base") -> HookedMusicGen:
        if name not in loaded:
            loaded[name] = HookedMusicGen.from_pretrained(checkpoint_dir(name), device="cpu")
        return loaded[name]

    return load


@pytest.fixture(scope="session")
def model(load_model) -> HookedMusicGen:
    return load_model("base")


@pytest.fixture(scope="session")
def melody_model(load_model) -> HookedMusicGen:
    """The tiny MusicGen-melody model (no cross-attention; chroma + text prefix)."""
    return load_model("melody")
