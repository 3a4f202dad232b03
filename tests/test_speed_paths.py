"""The speed paths: SDPA vs explicit attention, fused vs explicit LayerNorm, the HookPoint shortcut,
int8 weights, and the static (CUDA-graph-ready) decode step run eagerly on CPU."""

from __future__ import annotations

import pytest
import torch

from musicgen_lens import Conditioning, fast
from musicgen_lens.components import fused_kernels
from musicgen_lens.hook_point import HookPoint

from helpers import PROMPTS, random_codes


def test_fused_and_explicit_paths_agree(model):
    codes, cond = random_codes(model, pos=30), model.condition(PROMPTS)
    with torch.no_grad():
        fused = model(codes, cond)
        with fused_kernels(False):
            explicit = model(codes, cond)
    torch.testing.assert_close(fused, explicit, atol=1e-5, rtol=0)


def test_null_text_rows_attend_nowhere_on_both_paths(model):
    """CFG's null text masks every key: SDPA alone would give NaN there; output must be 0 as in HF."""
    cond = Conditioning.cat([model.condition(PROMPTS[:1]), model.null_condition(1)])
    codes = random_codes(model, batch=2, pos=12)
    cross_out = {}

    def grab(act, hook):
        cross_out[hook.name] = act.clone()

    with torch.no_grad():
        fused = model.run_with_hooks(codes, cond, fwd_hooks=[("blocks.0.hook_cross_attn_out", grab)])
        assert torch.isfinite(fused).all()
        assert torch.equal(cross_out["blocks.0.hook_cross_attn_out"][1], torch.zeros_like(cross_out["blocks.0.hook_cross_attn_out"][1]))
        with fused_kernels(False):
            explicit = model(codes, cond)
    torch.testing.assert_close(fused, explicit, atol=1e-5, rtol=0)


def test_a_pattern_hook_forces_the_explicit_path_and_sees_the_pattern(model, monkeypatch):
    from musicgen_lens.components import Attention

    calls = {"fused": 0, "explicit": 0}
    for path in ("fused", "explicit"):
        original = getattr(Attention, f"_{path}")

        def counted(self, *a, _original=original, _path=path):
            calls[_path] += 1
            return _original(self, *a)

        monkeypatch.setattr(Attention, f"_{path}", counted)
    codes, cond = random_codes(model, pos=9), model.condition(PROMPTS)
    seen = []
    with torch.no_grad():
        model(codes, cond)
        assert calls == {"fused": 2 * model.cfg.n_layers, "explicit": 0}
        model.run_with_hooks(codes, cond, fwd_hooks=[("blocks.1.attn.hook_pattern", lambda p, hook: seen.append(p.clone()))])
    assert calls["explicit"] == 1 and calls["fused"] == 4 * model.cfg.n_layers - 1
    (pattern,) = seen
    assert pattern.shape == (2, model.cfg.n_heads, 9, 9)
    torch.testing.assert_close(pattern.sum(-1), torch.ones(2, model.cfg.n_heads, 9))
    assert torch.equal(pattern.triu(1), torch.zeros_like(pattern))  # causal


def test_run_with_cache_takes_the_explicit_path(model):
    codes, cond = random_codes(model, pos=8), model.condition(PROMPTS)
    with torch.no_grad():
        logits, cache = model.run_with_cache(codes, cond)
        plain = model(codes, cond)
    assert "blocks.0.attn.hook_pattern" in cache and "blocks.0.ln1.hook_scale" in cache
    scale = cache["blocks.0.ln1.hook_scale"]
    resid = cache["blocks.0.hook_resid_pre"]
    centred = resid - resid.mean(-1, keepdim=True)
    torch.testing.assert_close(scale, (centred.pow(2).mean(-1, keepdim=True) + model.cfg.eps).sqrt())
    torch.testing.assert_close(logits, plain, atol=1e-5, rtol=0)


def test_scale_hook_fires_with_the_scale_and_can_edit_it(model):
    codes, cond = random_codes(model, pos=6), model.condition(PROMPTS)
    with torch.no_grad():
        base = model(codes, cond)
        doubled = model.run_with_hooks(codes, cond, fwd_hooks=[("blocks.0.ln2.hook_scale", lambda s, hook: s * 2)])
        same = model.run_with_hooks(codes, cond, fwd_hooks=[("blocks.0.ln2.hook_scale", lambda s, hook: None)])
    assert not torch.allclose(base, doubled)
    torch.testing.assert_close(same, base, atol=1e-5, rtol=0)


def test_hook_point_shortcut_returns_the_input_and_sees_torch_hooks():
    hp = HookPoint()
    x = torch.randn(3)
    assert hp(x) is x and not hp.is_live()
    handle = hp.register_forward_hook(lambda m, i, o: o * 2)  # a raw torch hook is honoured too
    assert hp.is_live()
    torch.testing.assert_close(hp(x), x * 2)
    handle.remove()
    assert hp(x) is x
    hp.add_hook(lambda act, hook: act + 1)
    assert hp.is_live() and len(hp.fwd_hooks) == 1
    torch.testing.assert_close(hp(x), x + 1)
    hp.remove_hooks()
    assert not hp.is_live()


def test_gradients_flow_through_the_fused_path(model):
    codes, cond = random_codes(model, pos=5), model.condition(PROMPTS)
    model.zero_grad()
    model(codes, cond, return_type="loss").backward()
    fused = model.blocks[0].attn.W_Q_T.grad.clone()
    model.zero_grad()
    with fused_kernels(False):
        model(codes, cond, return_type="loss").backward()
    torch.testing.assert_close(fused, model.blocks[0].attn.W_Q_T.grad, atol=1e-5, rtol=1e-4)
    model.zero_grad()


def test_int8_keeps_hooks_and_stays_close(load_model):
    model = load_model("base")
    codes, cond = random_codes(model, pos=20), model.condition(PROMPTS)
    with torch.no_grad():
        ref = model(codes, cond)
        fast.quantize_int8(model)
        try:
            assert fast.is_quantized(model)
            seen = []
            q = model.run_with_hooks(codes, cond, fwd_hooks=[("blocks.0.mlp.hook_post", lambda a, hook: seen.append(a.shape))])
            assert seen == [(2, 20, model.cfg.d_mlp)]
            assert q.shape == ref.shape and not torch.equal(q, ref)
            assert (q - ref).abs().max() < 0.05 * ref.abs().max()
        finally:
            fast.dequantize(model)
        assert torch.equal(model(codes, cond), ref)


@pytest.mark.parametrize("guidance_scale", [1.0, 3.0])
def test_static_step_gives_the_normal_greedy_codes(model, guidance_scale):
    ref = model.generate(PROMPTS, max_new_frames=15, do_sample=False, guidance_scale=guidance_scale, progress=False)
    codes, info = fast.generate_static(model, PROMPTS, max_new_frames=15, guidance_scale=guidance_scale, return_info=True)
    assert torch.equal(codes, ref)
    assert not info.graphed and info.path == "static-eager" and "CUDA" in info.reason


def test_static_step_hooks_read_time_from_the_device_position(model):
    vector = torch.randn(model.cfg.d_model)

    @fast.graph_safe
    def after_frame_4(resid, hook):  # tensor-only: graph-safe
        return resid + (hook.ctx.frames >= 4)[None, :, None] * vector

    hooks = [("blocks.1.hook_resid_post", after_frame_4)]
    ref = model.generate(PROMPTS, max_new_frames=12, do_sample=False, fwd_hooks=hooks, progress=False)
    codes = fast.generate_static(model, PROMPTS, max_new_frames=12, fwd_hooks=hooks)
    assert torch.equal(codes, ref)
    assert not torch.equal(codes, model.generate(PROMPTS, max_new_frames=12, do_sample=False, progress=False))


def test_static_step_falls_back_with_a_reason(model):
    import functools

    assert not fast._is_graph_safe(lambda r, hook: None)
    assert fast._is_graph_safe(functools.partial(fast.graph_safe(lambda r, v, hook: None), v=1))
    codes, info = fast.generate_static(
        model, PROMPTS, max_new_frames=6, return_info=True, fwd_hooks=[("blocks.0.attn.hook_pattern", lambda p, hook: None)]
    )
    assert info.path == "eager" and "scores/pattern" in info.reason
    assert torch.equal(codes, model.generate(PROMPTS, max_new_frames=6, do_sample=False, progress=False))
