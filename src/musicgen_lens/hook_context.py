"""`HookContext`: where in time (and in the CFG batch) the current forward call is.

Every HookPoint of a `HookedMusicGen` carries the model's one context as ``hook.ctx``; the
model's `forward` fills it in on every call (a plain forward, or one cached generation step), so
a hook function can ask which decoder positions, frames and seconds its activation covers and
which batch rows are the unconditional branch of classifier-free guidance:

    def add_from_5s(resid, hook):
        ctx = hook.ctx
        when = ctx.seconds >= 5.0                      # [pos]
        mask = ctx.cond_rows[:, None, None] & when[None, :, None]
        return resid + mask * vector

    model.generate(["classical trumpet"], duration=10, fwd_hooks=[("blocks.2.hook_resid_post", add_from_5s)])

Positions are absolute decoder positions; frames and seconds follow the model's `DelayPattern`
(``frame = position - max_delay``: the earliest frame the position writes). A melody model
prepends ``prefix`` conditioning positions (chroma, then text); they sit at the negative
positions [-prefix, 0), so codes keep their positions, frames and seconds, and time windows
(which start at frame 0 or later) never touch the conditioning.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int

from musicgen_lens.delay_pattern import DelayPattern

__all__ = ["HookContext"]


@dataclass
class HookContext:
    """Read it as ``hook.ctx``; the model writes it (`HookedMusicGen.forward`), nothing else does."""

    pattern: DelayPattern
    start: int = 0  # absolute position of the first position of this call (negative: melody prefix)
    length: int = 0  # positions in this call
    uncond: Bool[torch.Tensor, "batch"] | None = None  # rows of the CFG batch whose conditioning is null
    generating: bool = False
    step: int = 0  # generation step: 0 is the prefill (BOS and any audio prompt)
    n_steps: int = 0
    prefix: int = 0  # melody models: conditioning positions prepended to the codes
    # Static-shape (CUDA-graph) decode steps only (`musicgen_lens.fast`): the step's first position as a
    # device tensor, so that `positions` / `frames` / `seconds` are computed on the device and a
    # captured graph reads the current step's time at every replay. None otherwise.
    device_start: Int[torch.Tensor, ""] | None = None

    @property
    def frame_rate(self) -> float:
        return self.pattern.frame_rate

    @property
    def max_delay(self) -> int:
        return self.pattern.max_delay

    @property
    def positions(self) -> Int[torch.Tensor, "pos"]:
        if self.device_start is not None:
            return self.device_start + torch.arange(self.length, device=self.device_start.device)
        device = self.uncond.device if self.uncond is not None else None
        return torch.arange(self.start, self.start + self.length, device=device)

    @property
    def frames(self) -> Int[torch.Tensor, "pos"]:
        return self.pattern.frame_of(self.positions)

    @property
    def seconds(self) -> Float[torch.Tensor, "pos"]:
        return self.frames / self.frame_rate

    @property
    def cond_rows(self) -> Bool[torch.Tensor, "batch"]:
        return ~self.uncond

    @property
    def uncond_rows(self) -> Bool[torch.Tensor, "batch"]:
        return self.uncond

    def enter(self, *, start: int, length: int, uncond: torch.Tensor, prefix: int, step: int | None = None, n_steps: int = 0) -> None:
        """Set by the model at the start of a forward call; `step` None means a plain forward."""
        self.start, self.length, self.uncond, self.prefix = start, length, uncond, prefix
        self.device_start = None
        self.generating = step is not None
        self.step, self.n_steps = (step, n_steps) if step is not None else (0, 0)

    def reset(self) -> None:
        self.start, self.length, self.uncond, self.prefix = 0, 0, None, 0
        self.device_start = None
        self.generating, self.step, self.n_steps = False, 0, 0
