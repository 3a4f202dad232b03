"""HookPoint: a forward hook that changes the activation's shape is refused, naming the hook."""

from __future__ import annotations

import pytest
import torch
from helpers import random_codes


def test_shape_changing_hook_raises_with_the_hook_name(model):
    codes = random_codes(model, batch=2, pos=5)
    with pytest.raises(ValueError, match=r"blocks\.0\.hook_resid_post returned a tensor of shape \(2, 4, 32\)"):
        model.run_with_hooks(codes, fwd_hooks=[("blocks.0.hook_resid_post", lambda a, hook: a[:, :4])])
    with pytest.raises(ValueError, match=r"shape \(1, 5, 32\)"):  # a broadcastable batch is still a different shape
        model.run_with_hooks(codes, fwd_hooks=[("blocks.0.hook_resid_post", lambda a, hook: a[:1])])
    assert not any(hp.fwd_hooks for hp in model.hook_dict.values())  # nothing left behind


def test_same_shape_and_read_only_hooks_pass(model):
    codes = random_codes(model, batch=1, pos=5)
    with torch.no_grad():
        ref = model(codes)
        doubled = model.run_with_hooks(codes, fwd_hooks=[("blocks.1.hook_mlp_out", lambda a, hook: a * 0)])
        same = model.run_with_hooks(codes, fwd_hooks=[(lambda n: n.endswith("resid_post"), lambda a, hook: None)])
    assert not torch.equal(ref, doubled) and torch.equal(ref, same)


def test_reset_hooks_keeps_the_models_time_context(model):
    """TransformerLens's reset_hooks() clears each hook.ctx to {}; ours is the model's HookContext,
    which time-aware hooks (steering windows) read, so it must survive the TL habit."""
    from musicgen_lens.hook_context import HookContext

    model.reset_hooks()  # clear_contexts=True by default
    model.reset_hooks(clear_contexts=True, including_permanent=True)
    seen = []
    codes = torch.zeros(1, model.cfg.n_codebooks, 6, dtype=torch.long)
    model.run_with_hooks(codes, "x", fwd_hooks=[("blocks.0.hook_resid_post", lambda x, hook: seen.append((hook.ctx.start, hook.ctx.length)))])
    assert seen == [(0, 6)]
    assert all(isinstance(hp.ctx, HookContext) and hp.ctx is model.ctx for hp in model.hook_dict.values())
