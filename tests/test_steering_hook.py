"""SteeringHook: time windows exact to the frame, the modes computed by hand, CFG branches, head
sites, schedules applied per position / step, hook cleanup, and the ways to attach it."""

from __future__ import annotations

import pytest
import torch

from musicgen_lens.steering import Intervention, SteeringVector, steer, steering_hooks

from helpers import PROMPTS, random_codes
from steering_helpers import RESID, cond_batch, no_hooks_left, sandwich, spy, unit


# ---------------------------------------------------------------------------- time window


def test_frames_before_start_are_bit_identical_and_end_is_respected(model):
    md = model.ctx.max_delay
    base = model.generate(PROMPTS, max_new_frames=30, seed=0)
    iv = Intervention(unit(32, 0), site="resid_post", layer=1, mode="add", alpha=20.0, start=0.3, end=0.5)
    assert iv.window_frames(model.frame_rate) == (15, 25)
    hooks, before, after, (steer_hook,) = sandwich(model, [iv], n_frames=30, record=True)
    steered = model.generate(PROMPTS, max_new_frames=30, seed=0, fwd_hooks=hooks)
    assert torch.equal(steered[..., :15], base[..., :15])  # every codebook of frames < 0.3 s
    assert not torch.equal(steered[..., 15:], base[..., 15:])
    # the hook touched exactly the positions whose earliest frame is in [15, 25), conditional rows only
    changed = []
    for (step, start, a), (_, _, b) in zip(before, after):
        frame = start - md
        if 15 <= frame < 25 and step > 0:
            changed.append(frame)
            assert not torch.equal(a[:2], b[:2])
            assert torch.equal(a[2:], b[2:])  # unconditional rows untouched
        else:
            assert torch.equal(a, b), f"steered outside the window at step {step} (frame {frame})"
    assert changed == list(range(15, 25))
    assert [e["positions"][0] - md for e in steer_hook.log] == list(range(15, 25))
    assert no_hooks_left(model)


# ---------------------------------------------------------------------------- modes, exactly


@pytest.mark.parametrize("mode", ["norm_relative", "add", "clamp", "ablate"])
def test_modes_equal_hand_computation_on_cached_activations(model, mode):
    md = model.ctx.max_delay
    cond = cond_batch(model)
    codes = random_codes(model, batch=4, pos=40)
    v = 3.0 * unit(32, 1)
    vh = v / v.norm()
    a = 0.5
    iv = Intervention(v, site="resid_post", layer=0, alpha=a, mode=mode, start=0.2, end=0.5)  # frames [10, 25)
    name = "blocks.0.hook_resid_post"
    _, plain = model.run_with_cache(codes, cond, names_filter=name)
    with steer(model, [iv]):
        _, hooked = model.run_with_cache(codes, cond, names_filter=name)
    assert no_hooks_left(model)
    h, got = plain[name], hooked[name]
    sl = slice(10 + md, 25 + md)
    seg = h[:2, sl]
    if mode == "norm_relative":  # the paper's code: (h + ‖h‖·a·ŵ) / (1 + a), ‖h‖ per position
        want = (seg + seg.norm(dim=-1, keepdim=True) * a * vh) / (1 + a)
    elif mode == "add":
        want = seg + a * v
    elif mode == "clamp":
        want = seg + (a - seg @ vh)[..., None] * vh
        torch.testing.assert_close(got[:2, sl] @ vh, torch.full((2, 15), a), atol=1e-5, rtol=0)
    else:
        want = seg - (seg @ vh)[..., None] * vh
        torch.testing.assert_close(got[:2, sl] @ vh, torch.zeros(2, 15), atol=1e-5, rtol=0)
    torch.testing.assert_close(got[:2, sl], want, atol=1e-6, rtol=1e-6)
    # everything outside (uncond rows; positions before / after the window) bit-identical
    mask = torch.zeros_like(h, dtype=torch.bool)
    mask[:2, sl] = True
    assert torch.equal(got[~mask], h[~mask])


def test_branches_in_a_plain_forward(model):
    cond = cond_batch(model)
    codes = random_codes(model, batch=4, pos=12)
    v = unit(32, 2)

    def delta(branch):
        _, plain = model.run_with_cache(codes, cond, names_filter=RESID)
        with steer(model, Intervention(v, site=RESID, mode="add", alpha=1.0, branch=branch)):
            _, hooked = model.run_with_cache(codes, cond, names_filter=RESID)
        return (hooked[RESID] - plain[RESID]).abs().amax(dim=(1, 2)) > 0

    assert delta("cond").tolist() == [True, True, False, False]
    assert delta("uncond").tolist() == [False, False, True, True]
    assert delta("both").tolist() == [True, True, True, True]


# ---------------------------------------------------------------------------- CFG branch in generation


def test_conditional_only_steering_leaves_unconditional_rows_identical(model):
    iv = Intervention(unit(32, 3), site="resid_post", layer=0, mode="norm_relative", alpha=2.0)
    base_down, steered_down = [], []
    model.generate(PROMPTS, max_new_frames=8, seed=0, fwd_hooks=[spy(RESID, base_down)])
    hooks, before, after, _ = sandwich(model, [iv], name="blocks.0.hook_resid_post")
    model.generate(PROMPTS, max_new_frames=8, seed=0, fwd_hooks=hooks + [spy(RESID, steered_down)])
    assert before[0][2].shape[0] == 4  # [cond; uncond] CFG batch
    for (_, _, a), (_, _, b) in zip(before, after):  # at the steered hook: every step
        assert torch.equal(a[2:], b[2:]) and not torch.equal(a[:2], b[:2])
    # downstream in the same step the unconditional rows are untouched (later steps read
    # codes sampled from the steered guided logits, in both branches)
    assert torch.equal(base_down[0][2:], steered_down[0][2:])
    assert not torch.allclose(base_down[0][:2], steered_down[0][:2])


# ---------------------------------------------------------------------------- head sites


@pytest.mark.parametrize("heads", [[1, 3], [2]])  # a tensor index and a slice internally
def test_head_site_changes_only_the_chosen_heads(model, heads):
    cond = cond_batch(model)
    codes = random_codes(model, batch=4, pos=15)
    for site, name in [("z", "blocks.0.attn.hook_z"), ("cross_z", "blocks.0.cross_attn.hook_z")]:
        iv = Intervention(unit(model.cfg.d_head, 4), site=site, layer=0, heads=heads, mode="add", alpha=1.0, branch="both")
        _, plain = model.run_with_cache(codes, cond, names_filter=name)
        got: list = []
        model.run_with_hooks(codes, cond, fwd_hooks=steering_hooks(model, [iv]) + [spy(name, got)])
        z0, z1 = plain[name], got[0]
        others = [h for h in range(model.cfg.n_heads) if h not in heads]
        assert torch.equal(z1[:, :, others], z0[:, :, others])
        torch.testing.assert_close(z1[:, :, heads], z0[:, :, heads] + iv.vector, atol=1e-6, rtol=0)


def test_result_site_needs_use_attn_result_and_steers_one_head(model):
    iv = Intervention(unit(32, 5), site="result", layer=1, heads=[0], mode="ablate", branch="both")
    with pytest.raises(ValueError, match="use_attn_result"):
        steering_hooks(model, [iv])
    model.cfg.use_attn_result = True
    try:
        codes = random_codes(model, batch=2, pos=10)
        name = "blocks.1.attn.hook_result"
        _, plain = model.run_with_cache(codes, PROMPTS, names_filter=name)
        with steer(model, iv):
            _, hooked = model.run_with_cache(codes, PROMPTS, names_filter=name)
        r0, r1 = plain[name], hooked[name]
        assert torch.equal(r1[:, :, 1:], r0[:, :, 1:])
        torch.testing.assert_close(r1[:, :, 0] @ iv.vector, torch.zeros(2, 10), atol=1e-6, rtol=0)
    finally:
        model.cfg.use_attn_result = False


def test_linear_schedule_applied_per_position_in_a_plain_forward(model):
    md = model.ctx.max_delay
    v = unit(32, 7)
    iv = Intervention(v, site=RESID, mode="add", alpha=1.0, alpha_start=0.0, schedule="linear", ramp_steps=4, start=0.1)  # frame 5
    hooks, before, after, _ = sandwich(model, [iv])
    model.run_with_hooks(random_codes(model, batch=2, pos=16), PROMPTS, fwd_hooks=hooks)
    coef = (after[0][2] - before[0][2]) @ v  # [batch, pos]
    want = torch.tensor([0.0] * (5 + md) + [iv.alpha_at(p - (5 + md)) for p in range(5 + md, 16)])
    torch.testing.assert_close(coef, want.expand(2, -1), atol=1e-5, rtol=0)


def test_exp_schedule_applied_per_step_in_generation(model):
    md = model.ctx.max_delay
    v = unit(32, 8)
    iv = Intervention(v, site=RESID, mode="add", alpha=3.0, schedule="exp", gamma=0.5, start=0.06)  # frame 3: opens at position 6
    hooks, before, after, (h,) = sandwich(model, [iv], record=True)
    model.generate(PROMPTS, max_new_frames=6, seed=0, guidance_scale=1.0, fwd_hooks=hooks)
    seen = {step: float(((b - a)[0, -1] @ v)) for (step, _, a), (_, _, b) in zip(before, after)}
    for step, alpha in seen.items():
        k = step - (3 + md)  # no audio prompt: step s processes position s
        assert alpha == pytest.approx(3.0 * 0.5**k if k >= 0 else 0.0, abs=1e-5)
    assert [e["alpha"] for e in h.log] == [3.0 * 0.5**k for k in range(len(h.log))]


def test_no_hooks_left_after_an_error_inside_generate(model):
    def boom(resid, hook):
        if hook.ctx.step == 3:
            raise RuntimeError("boom at step 3")

    iv = Intervention(unit(32, 13), site="resid_post", layer=0, alpha=0.5)
    with pytest.raises(RuntimeError, match="step 3"):
        model.generate(PROMPTS, max_new_frames=6, fwd_hooks=steering_hooks(model, [iv]) + [("blocks.1.hook_resid_pre", boom)])
    assert no_hooks_left(model)
    with pytest.raises(RuntimeError, match="step 3"):
        with steer(model, [iv]):
            model.generate(PROMPTS, max_new_frames=6, fwd_hooks=[("blocks.1.hook_resid_pre", boom)])
    assert no_hooks_left(model) and not model.ctx.generating


def test_steer_context_equals_fwd_hooks(model):
    codes = random_codes(model, batch=2, pos=20)
    iv = Intervention(unit(32, 14), site="resid_mid", layer=1, alpha=0.7, start=0.1, every=3)
    with torch.no_grad():
        with steer(model, iv) as m:
            assert m is model
            inside = model(codes, PROMPTS)
        assert no_hooks_left(model)
        hooked = model.run_with_hooks(codes, PROMPTS, fwd_hooks=steering_hooks(model, [iv]))
        plain = model(codes, PROMPTS)
    assert torch.equal(inside, hooked) and not torch.equal(inside, plain)
    assert torch.isfinite(inside).all()


def test_generate_steering_argument_and_model_steer_context(model):
    v = SteeringVector(torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(7)), site="resid_post", layer=1)
    iv = Intervention(v, alpha=3.0, mode="add", start=0.1)
    base = model.generate(PROMPTS, max_new_frames=20, seed=0)
    via_arg = model.generate(PROMPTS, max_new_frames=20, seed=0, steering=[iv])
    via_hooks = model.generate(PROMPTS, max_new_frames=20, seed=0, fwd_hooks=steering_hooks(model, [iv], n_frames=20))
    with steer(model, [iv], n_frames=20):
        via_context = model.generate(PROMPTS, max_new_frames=20, seed=0)
    with pytest.warns(DeprecationWarning, match=r"steering\.steer\(model, interventions\)"):
        with model.steer([iv], n_frames=20):  # deprecated, still the same hooks
            via_method = model.generate(PROMPTS, max_new_frames=20, seed=0)
    assert torch.equal(via_arg, via_hooks) and torch.equal(via_arg, via_context) and torch.equal(via_arg, via_method)
    assert torch.equal(via_arg[..., :5], base[..., :5]) and not torch.equal(via_arg, base)
    assert all(not hp.fwd_hooks for hp in model.hook_dict.values())
