"""A musicgen-small-shaped random model (no download) and a timer for alternating runs."""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch


def small_shaped_hf_model(dtype: torch.dtype = torch.float32):
    """d_model 1024, 24 layers, 16 heads, d_mlp 4096, 4 x 2048 codes, T5-base-shaped text encoder."""
    from transformers import MusicgenForConditionalGeneration, T5Config

    from musicgen_lens.tiny import tiny_hf_config

    cfg = tiny_hf_config(n_layers=24, d_model=1024, n_heads=16, d_mlp=4096, n_codebooks=4, codebook_size=2048, n_ctx=2048)
    cfg.text_encoder = T5Config(vocab_size=32128, d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12)
    torch.manual_seed(0)
    model = MusicgenForConditionalGeneration(cfg).eval().to(dtype)
    model.generation_config.pad_token_id = 2048
    model.generation_config.decoder_start_token_id = 2048
    return model


def alternate(fns: dict[str, Callable[[], float]], rounds: int) -> dict[str, float]:
    """Run each fn `rounds` times, interleaved, and return the median of what each returns."""
    results: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            results[name].append(fn())
    return {name: statistics.median(v) for name, v in results.items()}


def seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start
