"""Helpers shared by the steering tests (test_steering_vector / _intervention / _hook)."""

from __future__ import annotations

import torch

from musicgen_lens.steering import steering_hooks

from helpers import PROMPTS

RESID = "blocks.1.hook_resid_post"


def unit(d: int, seed: int) -> torch.Tensor:
    v = torch.randn(d, generator=torch.Generator().manual_seed(seed))
    return v / v.norm()


def spy(name: str, store: list, *, ctx: bool = False):
    def fn(act, hook):
        store.append((hook.ctx.step, hook.ctx.start, act.clone()) if ctx else act.clone())

    return (name, fn)


def sandwich(model, ivs, name=RESID, **kwargs):
    """[capture before] + steering hooks + [capture after] on the same hook point."""
    hooks = steering_hooks(model, ivs, **kwargs)
    before, after = [], []
    return [spy(name, before, ctx=True)] + hooks + [spy(name, after, ctx=True)], before, after, [h for _, h in hooks]


def cond_batch(model):
    cond = model.condition(PROMPTS)
    return type(cond).cat([cond, cond.null_like()])  # rows 0, 1 conditional; 2, 3 null


def no_hooks_left(model) -> bool:
    return all(not hp.fwd_hooks and not hp.bwd_hooks for hp in model.hook_dict.values())

