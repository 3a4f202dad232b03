"""MusicGen's delay pattern and the time model: decoder position <-> audio frame <-> second.

The decoder does not read audio frames directly. Codebook k is shifted right by its delay
(k for mono; a stereo model interleaves [L0, R0, L1, R1, ...] and shifts pair c by c), after
one BOS/pad column, so that predicting position t for every codebook at once is causal. For
4 mono codebooks and 3 frames (``f0 f1 f2``; ``.`` is the pad/BOS code):

::

    position      0    1    2    3    4    5    6
    codebook 0    .   f0   f1   f2    .    .    .
    codebook 1    .    .   f0   f1   f2    .    .
    codebook 2    .    .    .   f0   f1   f2    .
    codebook 3    .    .    .    .   f0   f1   f2
                                 ^ max_delay + 1 = 4: the first position where every codebook holds a frame

Position t holds frame ``t - 1 - delay(k)`` of codebook k, and its logits predict frame
``t - delay(k)``. The *earliest* frame position t writes (its codebook with the largest delay)
is ``frame_of(t) = t - max_delay``: intervening only at positions with ``frame_of(t) >= N``
leaves every codebook of every frame before N unchanged. That is the convention of
`HookContext.frames`, steering windows, patching windows and activation pooling, and it lives
here only. ``seconds = frame / frame_rate``.

A sequence holding F frames completely has ``length_for(F) = F + max_delay + 1`` positions, so a
model with ``n_ctx`` positions generates at most ``max_frames(n_ctx) = n_ctx - max_delay - 1``
frames (less any melody prefix). audiocraft's ``modules/codebooks_patterns.py`` (its
``DelayedPatternProvider``) builds the same layout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import overload

import torch
from jaxtyping import Int

__all__ = ["DelayPattern", "apply_delay_pattern", "revert_delay_pattern", "delays"]


@dataclass(frozen=True)
class DelayPattern:
    """The delay layout of one model (``model.pattern``) plus its frame rate for seconds."""

    n_codebooks: int
    audio_channels: int = 1
    frame_rate: float = 50.0

    def __post_init__(self) -> None:
        if self.n_codebooks < 1 or self.audio_channels not in (1, 2) or self.n_codebooks % self.audio_channels:
            raise ValueError(
                f"a delay pattern needs n_codebooks >= 1 divisible by audio_channels in (1, 2), got "
                f"n_codebooks={self.n_codebooks}, audio_channels={self.audio_channels}"
            )
        if not (self.frame_rate > 0 and math.isfinite(self.frame_rate)):
            raise ValueError(f"frame_rate must be a positive number, got {self.frame_rate}")

    # ------------------------------------------------------------------ layout
    @property
    def delays(self) -> list[int]:
        """Delay in positions of each codebook: k for mono, k // 2 for interleaved stereo."""
        return [k // self.audio_channels for k in range(self.n_codebooks)]

    @property
    def max_delay(self) -> int:
        return (self.n_codebooks - 1) // self.audio_channels

    def length_for(self, n_frames: int) -> int:
        """Positions needed to hold n_frames of every codebook (BOS column included)."""
        return n_frames + self.max_delay + 1

    def frames_in(self, length: int) -> int:
        """Frames a sequence of `length` positions holds completely."""
        return length - self.max_delay - 1

    def max_frames(self, n_ctx: int, n_prefix: int = 0) -> int:
        """The longest audio (in frames, an audio prompt included) a model with n_ctx positions generates."""
        return n_ctx - n_prefix - self.max_delay - 1

    def apply(
        self, codes: Int[torch.Tensor, "batch n_codebooks frames"], pad_id: int, length: int | None = None
    ) -> Int[torch.Tensor, "batch n_codebooks length"]:
        """Audio frames -> the decoder's layout (see the module docstring); `length` defaults to
        `length_for(frames)`: every frame of every codebook present."""
        b, k, n = codes.shape
        if k != self.n_codebooks:
            raise ValueError(f"codes have {k} codebooks, the pattern has {self.n_codebooks}")
        length = self.length_for(n) if length is None else length
        out = torch.full((b, k, length), pad_id, dtype=codes.dtype, device=codes.device)
        for cb, d in enumerate(self.delays):
            end = min(length, n + d + 1)
            out[:, cb, d + 1 : end] = codes[:, cb, : end - d - 1]
        return out

    def revert(
        self, seq: Int[torch.Tensor, "batch n_codebooks length"], frames: int | None = None
    ) -> Int[torch.Tensor, "batch n_codebooks frames"]:
        """The inverse of `apply`: undelayed frames [batch, n_codebooks, frames]."""
        frames = self.frames_in(seq.shape[-1]) if frames is None else frames
        return torch.stack([seq[:, cb, d + 1 : d + 1 + frames] for cb, d in enumerate(self.delays)], dim=1)

    # ------------------------------------------------------------------ time
    @overload
    def frame_of(self, position: int) -> int: ...
    @overload
    def frame_of(self, position: torch.Tensor) -> torch.Tensor: ...
    def frame_of(self, position):
        """The earliest frame a decoder position writes: position - max_delay."""
        return position - self.max_delay

    @overload
    def position_of(self, frame: int) -> int: ...
    @overload
    def position_of(self, frame: torch.Tensor) -> torch.Tensor: ...
    def position_of(self, frame):
        """The first decoder position whose earliest frame is `frame`: frame + max_delay."""
        return frame + self.max_delay

    def seconds_of(self, position: int | torch.Tensor) -> float | torch.Tensor:
        """Time of a decoder position's earliest frame, in seconds."""
        return self.frame_of(position) / self.frame_rate

    def frame_at(self, seconds: float) -> int:
        """The first frame f with f >= seconds * frame_rate (how windows [start, end) become frames).

        Float rounding is forgiven: 0.58 s at 50 frames/s is 28.999999999999996 frames -> frame 29.
        """
        x = seconds * self.frame_rate
        return math.ceil(x - 1e-9 * max(1.0, abs(x)))

    def frames_for_seconds(self, seconds: float) -> int:
        """How many frames `seconds` of audio is (rounded to the nearest frame)."""
        return round(seconds * self.frame_rate)

    def position_seconds(self, n_pos: int, device: torch.device | str | None = None) -> torch.Tensor:
        """Seconds of positions 0..n_pos-1 (float64), as patching windows and pooling read them."""
        return self.seconds_of(torch.arange(n_pos, dtype=torch.float64, device=device))


# Functional forms kept for users of the first API (musicgen_lens.generation re-exports them).


def delays(n_codebooks: int, audio_channels: int = 1) -> list[int]:
    """Delay in positions of each codebook: k for mono, k // 2 for interleaved stereo."""
    return DelayPattern(n_codebooks, audio_channels).delays


def apply_delay_pattern(
    codes: Int[torch.Tensor, "batch n_codebooks frames"], pad_id: int, audio_channels: int = 1, length: int | None = None
) -> Int[torch.Tensor, "batch n_codebooks length"]:
    """`DelayPattern.apply` for codes of any codebook count."""
    return DelayPattern(codes.shape[1], audio_channels).apply(codes, pad_id, length)


def revert_delay_pattern(
    seq: Int[torch.Tensor, "batch n_codebooks length"], audio_channels: int = 1, frames: int | None = None
) -> Int[torch.Tensor, "batch n_codebooks frames"]:
    """`DelayPattern.revert` for codes of any codebook count."""
    return DelayPattern(seq.shape[1], audio_channels).revert(seq, frames)
