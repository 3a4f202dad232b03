"""A musicgen-small-shaped random model (no download), timers for interleaved runs, the memory bound."""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch


def small_shaped_hf_model(dtype: torch.dtype = torch.float32, **overrides):
    """d_model 1024, 24 layers, 16 heads, d_mlp 4096, 4 x 2048 codes, T5-base-shaped text encoder."""
    from transformers import MusicgenForConditionalGeneration, T5Config

    from musicgen_lens.tiny import tiny_hf_config

    shape = dict(n_layers=24, d_model=1024, n_heads=16, d_mlp=4096, n_codebooks=4, codebook_size=2048, n_ctx=2048)
    shape.update(overrides)
    cfg = tiny_hf_config(**shape)
    cfg.text_encoder = T5Config(vocab_size=32128, d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12)
    torch.manual_seed(0)
    model = MusicgenForConditionalGeneration(cfg).eval().to(dtype)
    pad = shape["codebook_size"]
    model.generation_config.pad_token_id = pad
    model.generation_config.decoder_start_token_id = pad
    return model


def alternate(fns: dict[str, Callable[[], float]], rounds: int, pick: str = "median") -> dict[str, float]:
    """Run each fn `rounds` times, interleaved; per fn the median, or with pick="min"/"max" the best, of what it returns.

    The machine is shared: best-of-N of interleaved runs is the least noisy estimate of each
    implementation's own speed, and ratios are only taken between runs of one call."""
    results: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            results[name].append(fn())
    reduce = {"median": statistics.median, "min": min, "max": max}[pick]
    return {name: reduce(v) for name, v in results.items()}


def seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def copy_bandwidth_gbs(mbytes: int = 512, rounds: int = 5) -> float:
    """Memory bandwidth in GB/s (bytes read + written by a large copy, best of `rounds`)."""
    n = mbytes * 2**20 // 4
    src, dst = torch.ones(n), torch.empty(n)
    dst.copy_(src)
    best = min(seconds(lambda: dst.copy_(src)) for _ in range(rounds))
    return 2 * n * 4 / best / 1e9


def decoder_bytes_per_step(model, bytes_per_weight: float | None = None) -> float:
    """Weight bytes a cached step reads: every block matrix except the cross-attention K/V (cached), plus the unembedding."""
    total = 0
    for name, p in model.named_parameters():
        if not name.startswith("blocks.") and not name.startswith("unembed."):
            continue
        if ".cross_attn.W_K_T" in name or ".cross_attn.W_V_T" in name:
            continue
        total += p.numel() * (bytes_per_weight or p.element_size())
    return total
