"""torch.compile keeps hooks: attached before or after compiling, removed, cached, refused when unsupported.

backend="eager" runs dynamo's tracing and guards (where hooks used to vanish) without inductor's
C++ build, so these run in seconds; the inductor backend is measured in benchmarks/."""

from __future__ import annotations

import pytest
import torch

from helpers import random_codes


@pytest.fixture
def compiled(load_model):
    import torch._dynamo

    model = load_model("base")
    torch._dynamo.reset()
    for block in model.blocks:
        block.compile(backend="eager", dynamic=False)
    yield model
    model.reset_hooks()
    for block in model.blocks:
        block._compiled_call_impl = None
    torch._dynamo.reset()


def _direction(model, seed=0):
    return torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(seed))


def _eager(model, codes, hooks=()):
    compiled = [b._compiled_call_impl for b in model.blocks]
    for b in model.blocks:
        b._compiled_call_impl = None
    try:
        with torch.no_grad():
            return model.run_with_hooks(codes, "a melody", fwd_hooks=list(hooks))
    finally:
        for b, c in zip(model.blocks, compiled):
            b._compiled_call_impl = c


def test_a_compiled_model_runs_hooks_attached_before_and_after_compiling_and_forgets_removed_ones(compiled):
    model, codes, v = compiled, random_codes(compiled, batch=1, pos=12), _direction(compiled)
    steer = ("blocks.1.hook_resid_post", lambda x, hook: x + 3 * v)
    plain, hooked = _eager(model, codes), _eager(model, codes, [steer])
    assert (plain - hooked).abs().max() > 1e-2  # the hook matters
    with torch.no_grad():
        torch.testing.assert_close(model(codes, "a melody"), plain, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(model.run_with_hooks(codes, "a melody", fwd_hooks=[steer]), hooked, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(model(codes, "a melody"), plain, atol=1e-4, rtol=1e-4)  # removed again
        model.blocks[1].hook_resid_post.add_hook(steer[1])  # attached after the compiled graphs exist
        torch.testing.assert_close(model(codes, "a melody"), hooked, atol=1e-4, rtol=1e-4)


def test_a_pattern_hook_attached_after_compiling_switches_off_the_fused_attention(compiled):
    model, codes = compiled, random_codes(compiled, batch=1, pos=12)
    zero_head = ("blocks.0.attn.hook_pattern", lambda p, hook: p * torch.tensor([0.0] + [1.0] * (p.shape[1] - 1))[None, :, None, None])
    with torch.no_grad():
        model(codes, "a melody")  # compiled without any hook: the fused SDPA path
        torch.testing.assert_close(model.run_with_hooks(codes, "a melody", fwd_hooks=[zero_head]), _eager(model, codes, [zero_head]),
                                   atol=1e-4, rtol=1e-4)


def test_run_with_cache_under_compile_caches_what_eager_caches(compiled):
    model, codes = compiled, random_codes(compiled, batch=1, pos=12)
    names = lambda n: n.startswith("blocks.") and n.endswith(("hook_resid_post", "attn.hook_z", "mlp.hook_post"))
    with torch.no_grad():
        _, cache = model.run_with_cache(codes, "a melody", names_filter=names)
        compiled_blocks = [b._compiled_call_impl for b in model.blocks]
        for b in model.blocks:
            b._compiled_call_impl = None
        _, eager = model.run_with_cache(codes, "a melody", names_filter=names)
        for b, c in zip(model.blocks, compiled_blocks):
            b._compiled_call_impl = c
    assert sorted(cache.keys()) == sorted(eager.keys()) and len(eager.keys()) == 4 * model.cfg.n_layers  # attn.hook_z, cross_attn.hook_z, mlp, resid
    for k in eager.keys():
        torch.testing.assert_close(cache[k], eager[k], atol=1e-5, rtol=1e-5)


def test_a_backward_hook_under_compile_still_sees_the_gradient_eager_sees(compiled):
    """Backward hooks are not traced: the block holding one runs eagerly, and the hook fires."""
    model, codes = compiled, random_codes(compiled, batch=1, pos=12)
    grads = {}
    store = lambda key: (lambda g, hook: grads.__setitem__(key, g.detach().clone()))
    model.blocks[0].hook_resid_post.add_hook(store("compiled"), dir="bwd")
    model(codes, "a melody").logsumexp(-1).sum().backward()
    model.reset_hooks()
    for b in model.blocks:
        b._compiled_call_impl = None
    model.blocks[0].hook_resid_post.add_hook(store("eager"), dir="bwd")
    model(codes, "a melody").logsumexp(-1).sum().backward()
    model.zero_grad(set_to_none=True)
    torch.testing.assert_close(grads["compiled"], grads["eager"], atol=1e-5, rtol=1e-5)
