"""Text (and melody) conditioning: the T5 encoder behind a hook, and the `Conditioning` the decoder reads.

A `Conditioning` holds the text encoder's output *before* the projection into d_model, so
that the projection and its hook (`hook_cond`) run inside every forward pass: caching or
patching `hook_cond` then works with `run_with_cache` / `run_with_hooks` like any other hook.
For melody checkpoints it also holds the chroma features (one-hot pitch classes per chroma
frame, from `musicgen_lens.chroma`), projected behind `hook_chroma` in the forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn as nn
from jaxtyping import Bool, Float, Int
from musicgen_lens.hook_point import HookPoint


def null_chroma(batch: int, frames: int, n_chroma: int, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> Float[torch.Tensor, "batch frames n_chroma"]:
    """The "no melody" chroma of Hugging Face's MusicGen-melody: every frame one-hot on bin 0.

    It is what HF feeds when text comes without a melody, the unconditional branch of
    classifier-free guidance, and what silent (padded) audio turns into after the argmax.
    """
    out = torch.zeros(batch, frames, n_chroma, device=device, dtype=dtype)
    out[..., 0] = 1
    return out


def broadcast_melodies(chroma: Float[torch.Tensor, "n frames n_chroma"], batch: int) -> Float[torch.Tensor, "batch frames n_chroma"]:
    """One melody for every prompt, or one per prompt; anything else is an error."""
    if chroma.shape[0] == batch:
        return chroma
    if chroma.shape[0] != 1:
        raise ValueError(f"there are {chroma.shape[0]} melodies for {batch} prompts; pass one melody or one per prompt")
    return chroma.expand(batch, -1, -1)


@dataclass
class Conditioning:
    """What the decoder reads: text states [batch, text_pos, d_cond] and their padding mask.

    Melody models also read `chroma` [batch, chroma_frames, n_chroma] (None: the null melody,
    `null_chroma`) and `has_melody` [batch] (rows whose chroma is a real melody rather than the
    null one; defaults to all True when chroma is given). A melody-only conditioning has
    text_pos = 0. Text-only (cross-attention) models ignore the chroma.
    """

    states: Float[torch.Tensor, "batch text_pos d_cond"]
    mask: Bool[torch.Tensor, "batch text_pos"]
    texts: list[str | None] = field(default_factory=list)
    chroma: Float[torch.Tensor, "batch chroma_frames n_chroma"] | None = None
    has_melody: Bool[torch.Tensor, "batch"] | None = None

    def __post_init__(self) -> None:
        if self.states.ndim != 3:
            raise ValueError(f"Conditioning.states must be [batch, text_pos, d_cond], got shape {tuple(self.states.shape)}")
        if self.mask.shape != self.states.shape[:2]:
            raise ValueError(
                f"Conditioning.mask must be [batch, text_pos] = {tuple(self.states.shape[:2])}, got {tuple(self.mask.shape)}"
            )
        self.mask = self.mask.bool()
        if self.states.device.type != "meta" and not torch.isfinite(self.states).all():
            # NaN text states would give NaN logits everywhere, silently
            raise ValueError("Conditioning.states contains NaN or inf (check the text encoder's weights or the states you built)")
        if not self.texts:
            self.texts = [None] * self.batch
        if self.chroma is None:
            self.has_melody = None
        else:
            if self.chroma.ndim != 3 or self.chroma.shape[0] != self.batch or self.chroma.shape[1] == 0:
                raise ValueError(
                    f"Conditioning.chroma must be [batch={self.batch}, chroma_frames>=1, n_chroma], got shape {tuple(self.chroma.shape)}"
                )
            if self.has_melody is None:
                self.has_melody = torch.ones(self.batch, dtype=torch.bool, device=self.chroma.device)
            self.has_melody = self.has_melody.bool()
            if self.has_melody.shape != (self.batch,):
                raise ValueError(f"Conditioning.has_melody must be [batch={self.batch}], got {tuple(self.has_melody.shape)}")

    @property
    def batch(self) -> int:
        return self.states.shape[0]

    def __len__(self) -> int:
        return self.batch

    @property
    def is_null(self) -> torch.Tensor:
        """[batch] bool: rows with no text (and no melody) at all (the unconditional branch of CFG)."""
        null = ~self.mask.any(dim=-1)
        if self.has_melody is not None:
            null = null & ~self.has_melody.to(null.device)
        return null

    def chroma_or_null(self, n_chroma: int, dtype: torch.dtype) -> Float[torch.Tensor, "batch chroma_frames n_chroma"]:
        """The chroma a melody model reads: this one, or the null melody (one frame) when there is none."""
        if self.chroma is None:
            return null_chroma(self.batch, 1, n_chroma, self.states.device, dtype)
        return self.chroma.to(dtype)

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
        """Zero text of the same length and the null melody: Hugging Face's unconditional CFG branch."""
        return Conditioning(torch.zeros_like(self.states), torch.zeros_like(self.mask), [None] * self.batch)

    def with_chroma(self, chroma: Float[torch.Tensor, "batch chroma_frames n_chroma"] | None) -> "Conditioning":
        """The same text with another melody (chroma features; None: the null melody)."""
        return Conditioning(self.states, self.mask, list(self.texts), chroma)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "Conditioning":
        chroma = None if self.chroma is None else self.chroma.to(device=device, dtype=dtype)
        has_melody = None if self.has_melody is None else self.has_melody.to(device)
        return Conditioning(self.states.to(device=device, dtype=dtype), self.mask.to(device), list(self.texts), chroma, has_melody)

    def __getitem__(self, idx: int | slice | Sequence[int] | torch.Tensor) -> "Conditioning":
        if isinstance(idx, int):
            idx = [idx]
        rows = list(range(self.batch))[idx] if isinstance(idx, slice) else [int(i) for i in idx]
        chroma = None if self.chroma is None else self.chroma[rows]
        has_melody = None if self.has_melody is None else self.has_melody[rows]
        return Conditioning(self.states[rows], self.mask[rows], [self.texts[i] for i in rows], chroma, has_melody)

    def repeat(self, n: int) -> "Conditioning":
        """Each row repeated n times in place (row 0 n times, then row 1 ...), like `repeat_interleave`."""
        return Conditioning(
            self.states.repeat_interleave(n, dim=0),
            self.mask.repeat_interleave(n, dim=0),
            [t for t in self.texts for _ in range(n)],
            None if self.chroma is None else self.chroma.repeat_interleave(n, dim=0),
            None if self.has_melody is None else self.has_melody.repeat_interleave(n, dim=0),
        )

    @staticmethod
    def cat(items: Sequence["Conditioning"]) -> "Conditioning":
        """Stack along the batch, right-padding the text axis (padding is masked).

        Chroma of different lengths is right-padded with null-melody frames, which is what
        Hugging Face's feature extractor makes of the silence it pads a batch of melodies with;
        rows without a melody get the null melody.
        """
        if not items:
            raise ValueError("Conditioning.cat needs at least one Conditioning")
        width = max(c.states.shape[1] for c in items)
        states, masks, texts = [], [], []
        for c in items:
            pad = width - c.states.shape[1]
            states.append(torch.nn.functional.pad(c.states, (0, 0, 0, pad)))
            masks.append(torch.nn.functional.pad(c.mask, (0, pad), value=False))
            texts.extend(c.texts)
        chroma = has_melody = None
        with_chroma = [c for c in items if c.chroma is not None]
        if with_chroma:
            frames = max(c.chroma.shape[1] for c in with_chroma)
            n_chroma, dtype = with_chroma[0].chroma.shape[-1], with_chroma[0].chroma.dtype
            chromas, flags = [], []
            for c in items:
                rows = c.chroma if c.chroma is not None else null_chroma(c.batch, 1, n_chroma, c.states.device, dtype)
                pad = null_chroma(c.batch, frames - rows.shape[1], n_chroma, rows.device, rows.dtype)
                chromas.append(torch.cat([rows, pad], dim=1))
                flags.append(c.has_melody if c.has_melody is not None else torch.zeros(c.batch, dtype=torch.bool, device=rows.device))
            chroma, has_melody = torch.cat(chromas), torch.cat(flags)
        return Conditioning(torch.cat(states), torch.cat(masks), texts, chroma, has_melody)


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
