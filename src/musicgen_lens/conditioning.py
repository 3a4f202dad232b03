"""Text conditioning: the T5 encoder behind a hook, and the `Conditioning` the decoder reads.

A `Conditioning` holds the text encoder's output *before* the projection into d_model, so
that the projection and its hook (`hook_cond`) run inside every forward pass: caching or
patching `hook_cond` then works with `run_with_cache` / `run_with_hooks` like any other hook.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn as nn
from jaxtyping import Bool, Float, Int
from transformer_lens.hook_points import HookPoint


@dataclass
class Conditioning:
    """What cross-attention reads: text states [batch, text_pos, d_cond] and their padding mask."""

    states: Float[torch.Tensor, "batch text_pos d_cond"]
    mask: Bool[torch.Tensor, "batch text_pos"]
    texts: list[str | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.states.ndim != 3:
            raise ValueError(f"Conditioning.states must be [batch, text_pos, d_cond], got shape {tuple(self.states.shape)}")
        if self.mask.shape != self.states.shape[:2]:
            raise ValueError(
                f"Conditioning.mask must be [batch, text_pos] = {tuple(self.states.shape[:2])}, got {tuple(self.mask.shape)}"
            )
        self.mask = self.mask.bool()
        if not self.texts:
            self.texts = [None] * self.batch

    @property
    def batch(self) -> int:
        return self.states.shape[0]

    def __len__(self) -> int:
        return self.batch

    @property
    def is_null(self) -> torch.Tensor:
        """[batch] bool: rows with no text at all (the unconditional branch of CFG)."""
        return ~self.mask.any(dim=-1)

    @classmethod
    def null(cls, batch: int, d_cond: int, device: torch.device | str, dtype: torch.dtype) -> "Conditioning":
        """The unconditional input of classifier-free guidance: zero states, every position masked.

        This is what Hugging Face's MusicGen feeds its unconditional branch (zeros, mask 0).
        """
        return cls(
            torch.zeros(batch, 1, d_cond, device=device, dtype=dtype),
            torch.zeros(batch, 1, dtype=torch.bool, device=device),
            [None] * batch,
        )

    def null_like(self) -> "Conditioning":
        return Conditioning(torch.zeros_like(self.states), torch.zeros_like(self.mask), [None] * self.batch)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "Conditioning":
        return Conditioning(self.states.to(device=device, dtype=dtype), self.mask.to(device), list(self.texts))

    def __getitem__(self, idx: int | slice | Sequence[int] | torch.Tensor) -> "Conditioning":
        if isinstance(idx, int):
            idx = [idx]
        rows = list(range(self.batch))[idx] if isinstance(idx, slice) else [int(i) for i in idx]
        return Conditioning(self.states[rows], self.mask[rows], [self.texts[i] for i in rows])

    def repeat(self, n: int) -> "Conditioning":
        """Each row repeated n times in place (row 0 n times, then row 1 ...), like `repeat_interleave`."""
        return Conditioning(
            self.states.repeat_interleave(n, dim=0),
            self.mask.repeat_interleave(n, dim=0),
            [t for t in self.texts for _ in range(n)],
        )

    @staticmethod
    def cat(items: Sequence["Conditioning"]) -> "Conditioning":
        """Stack along the batch, right-padding the text axis (padding is masked)."""
        if not items:
            raise ValueError("Conditioning.cat needs at least one Conditioning")
        width = max(c.states.shape[1] for c in items)
        states, masks, texts = [], [], []
        for c in items:
            pad = width - c.states.shape[1]
            states.append(torch.nn.functional.pad(c.states, (0, 0, 0, pad)))
            masks.append(torch.nn.functional.pad(c.mask, (0, pad), value=False))
            texts.extend(c.texts)
        return Conditioning(torch.cat(states), torch.cat(masks), texts)


class TextEncoder(nn.Module):
    """The checkpoint's T5 encoder, unchanged, with its output behind `text_encoder.hook_out`."""

    def __init__(self, t5: nn.Module):
        super().__init__()
        self.t5 = t5
        self.hook_out = HookPoint()  # [batch, text_pos, d_cond]

    def forward(
        self, input_ids: Int[torch.Tensor, "batch text_pos"], attention_mask: Int[torch.Tensor, "batch text_pos"]
    ) -> Float[torch.Tensor, "batch text_pos d_cond"]:
        out = self.t5(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.hook_out(out)
