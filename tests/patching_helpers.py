"""Shared fixtures and helpers of the tests/test_patching_*.py files (import them from here)."""

from __future__ import annotations

import pytest
import torch

from musicgen_lens import HookedMusicGen

from helpers import PROMPTS, random_codes

POS = 14  # decoder positions: with 4 codebooks (max_delay 3) and 50 frames/s, -0.06 s to 0.2 s


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # These models are tiny: one thread avoids thread-pool stalls on a shared, busy CPU.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def m64(checkpoint_dir) -> HookedMusicGen:
    """float64 copy of the base model with larger weights, so that patching effects are far above rounding."""
    m = HookedMusicGen.from_pretrained(checkpoint_dir("base"), device="cpu", dtype=torch.float64).eval()
    m.init_weights(std=0.15, seed=1)
    return m


@pytest.fixture(scope="module")
def data(m64):
    clean = random_codes(m64, batch=2, pos=POS, seed=0)
    corrupted = random_codes(m64, batch=2, pos=POS, seed=1)
    cond = m64.condition(PROMPTS)
    return clean, corrupted, cond


def run_metric(model, metric, codes, cond, fwd_hooks=()):
    with torch.no_grad():
        return float(metric(model.run_with_hooks(codes, cond, fwd_hooks=list(fwd_hooks))))


KW = dict(progress=False)
