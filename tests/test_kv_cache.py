"""The model's cached step: forward(new_codes, cond, kv_cache=...) equals the full forward."""

from __future__ import annotations

import pytest
import torch
from helpers import PROMPTS, random_codes

from musicgen_lens import KVCache


@pytest.mark.parametrize("name", ["base", "melody"])
def test_cached_steps_equal_the_full_forward_and_set_ctx(load_model, name):
    model = load_model(name)
    codes = random_codes(model, batch=2, pos=9, seed=1)
    cond = model.condition(PROMPTS)
    n_prefix = model.n_prefix(cond)
    with torch.no_grad():
        full = model(codes, cond)
        cache = KVCache.for_model(model.cfg, 2, n_prefix + 9, text_pos=cond.states.shape[1], n_steps=6, device="cpu", dtype=model.dtype)
        seen = []
        hook = ("blocks.0.hook_resid_pre", lambda a, hook: seen.append((hook.ctx.start, hook.ctx.length, hook.ctx.step, hook.ctx.n_steps)))
        with model.hooks(fwd_hooks=[hook]):
            parts = [model(codes[..., :4], cond, kv_cache=cache)]  # a prefill of 4 positions, then one at a time
            for t in range(4, 9):
                parts.append(model(codes[..., t : t + 1], cond, kv_cache=cache))
    torch.testing.assert_close(torch.cat(parts, dim=2), full, atol=1e-5, rtol=0)
    assert cache.length == n_prefix + 9 and cache.step == 6
    assert seen == [(-n_prefix, n_prefix + 4, 0, 6)] + [(t, 1, t - 3, 6) for t in range(4, 9)]
    assert not model.ctx.generating  # reset between steps: no stale step for hooks outside forward


def test_cached_step_errors(model):
    codes = random_codes(model, batch=2, pos=3)
    cache = KVCache.for_model(model.cfg, 1, 8, text_pos=1, device="cpu", dtype=model.dtype)
    with pytest.raises(ValueError, match="made for batch 1"):
        model(codes, kv_cache=cache)
    with pytest.raises(ValueError, match="stop_at_layer cannot be combined"):
        model(codes[:1], kv_cache=cache, stop_at_layer=1)
    with pytest.raises(TypeError, match="KVCache.for_model"):
        model(codes, kv_cache=[None])
    small = KVCache.for_model(model.cfg, 2, 2, text_pos=1, device="cpu", dtype=model.dtype)
    with pytest.raises(RuntimeError, match="KV cache full"):
        model(codes, kv_cache=small)
