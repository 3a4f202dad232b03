"""The key/value cache of cached decoding: preallocated, one pair of buffers per attention layer.

`KVCache.for_model` allocates, for every block, a self-attention cache of the whole generation
(prefix + codes) and, for text MusicGen, a cross-attention cache filled once from the
conditioning and then only read. `HookedMusicGen.forward(new_codes, cond, kv_cache=cache)` runs
one cached step: it appends the new positions, advances `cache.length` (the absolute position of
the next call, a melody prefix included) and `cache.step`, and sets `hook.ctx` from them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float

if TYPE_CHECKING:
    from musicgen_lens.config import MusicGenConfig

__all__ = ["LayerKVCache", "KVCache"]


@dataclass
class LayerKVCache:
    """Keys/values of one attention layer, stored head-major ([batch, head, pos, d_head]) so
    that attention reads them without copies. No per-step growth during generation."""

    k: Float[torch.Tensor, "batch head_index max_pos d_head"]
    v: Float[torch.Tensor, "batch head_index max_pos d_head"]
    length: int = 0
    frozen: bool = False  # cross-attention: filled once from the conditioning, then only read

    @classmethod
    def empty(cls, batch: int, max_pos: int, cfg: "MusicGenConfig", device: torch.device | str, dtype: torch.dtype) -> "LayerKVCache":
        shape = (batch, cfg.n_heads, max_pos, cfg.d_head)
        return cls(torch.empty(shape, dtype=dtype, device=device), torch.empty(shape, dtype=dtype, device=device))

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        end = self.length + k.shape[2]
        if end > self.k.shape[2]:
            raise RuntimeError(f"KV cache full: {end} positions requested, {self.k.shape[2]} allocated")
        self.k[:, :, self.length : end] = k
        self.v[:, :, self.length : end] = v
        self.length = end
        return self.read()

    def read(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.k[:, :, : self.length], self.v[:, :, : self.length]


@dataclass
class KVCache:
    """The whole decoder's cache: `layers[l]` is (self-attention, cross-attention or None)."""

    layers: list[tuple[LayerKVCache, LayerKVCache | None]]
    batch: int
    max_pos: int
    n_steps: int = 0  # steps the caller plans (hook.ctx.n_steps); 0 = unknown
    step: int = 0  # forward calls made with this cache (hook.ctx.step of the next one)
    uncond: torch.Tensor | None = None  # [batch] null-conditioning rows, fixed at the first call

    @classmethod
    def for_model(
        cls,
        cfg: "MusicGenConfig",
        batch: int,
        max_pos: int,
        *,
        text_pos: int = 0,
        n_steps: int = 0,
        device: torch.device | str,
        dtype: torch.dtype,
    ) -> "KVCache":
        """Room for `max_pos` decoder positions (a melody prefix included) and `text_pos` text keys."""
        layers = [
            (
                LayerKVCache.empty(batch, max_pos, cfg, device, dtype),
                None if cfg.is_melody else LayerKVCache.empty(batch, text_pos, cfg, device, dtype),
            )
            for _ in range(cfg.n_layers)
        ]
        return cls(layers, batch, max_pos, n_steps)

    @property
    def length(self) -> int:
        """Decoder positions already cached (the absolute index of the next one, prefix included)."""
        return self.layers[0][0].length if self.layers else 0

    def __getitem__(self, layer: int) -> tuple[LayerKVCache, LayerKVCache | None]:
        return self.layers[layer]
