"""Intervention: windows and their rounding, periodic firing (steps, and the authors' forward
calls compared with Hugging Face's generate), schedules, defaults from provenance, validation."""

from __future__ import annotations

import pytest
import torch

from musicgen_lens.steering import Intervention, SteeringVector, steer, steering_hooks

from helpers import PROMPTS
from steering_helpers import RESID, no_hooks_left, sandwich, spy, unit


def test_window_start_rounding_is_exact_to_the_frame():
    v = torch.ones(4)
    assert Intervention(v, start=0.58, end=0.6).window_frames(50.0) == (29, 30)  # 0.58·50 = 28.999999999999996
    assert Intervention(v, start=0.3).window_frames(50.0) == (15, None)
    assert Intervention(v, start=0.31).window_frames(50.0) == (16, None)  # first frame at or after 0.31 s
    assert Intervention(v, end=0.31).window_frames(50.0) == (None, 16)


# ---------------------------------------------------------------------------- periodic firing and schedules


@pytest.mark.parametrize(
    "offset, start, expected",
    [
        (6, None, [6, 10, 14]),  # not step 2: firing starts at step `offset`
        (1, 0.02, [5, 9, 13]),  # window opens at frame 1 = position 4; the period stays anchored at offset
    ],
)
def test_periodic_firing_at_documented_steps_and_replay_in_plain_forward(model, offset, start, expected):
    # fires at steps s >= offset with (s - offset) % every == 0, inside the time window
    iv = Intervention(unit(32, 6), site="resid_post", layer=0, mode="add", alpha=8.0, every=4, offset=offset, start=start)
    name = "blocks.0.hook_resid_post"
    hooks, before, after, (h,) = sandwich(model, [iv], name=name, record=True)
    logits = []
    cond = model.condition(PROMPTS)
    seq = model.generate(cond=cond, max_new_frames=12, seed=0, guidance_scale=1.0, return_delayed=True,
                         fwd_hooks=hooks + [spy("hook_logits", logits, ctx=True)])
    n_steps = seq.shape[-1] - 1
    fired = [step for (step, _, a), (_, _, b) in zip(before, after) if not torch.equal(a, b)]
    assert fired == expected == [e["step"] for e in h.log]
    p_lo = 0 if start is None else 1 + model.ctx.max_delay
    assert [s for s in range(n_steps) if s >= offset and (s - offset) % 4 == 0 and s >= p_lo] == fired
    # a plain forward counts position p as step p: replaying the generated codes with the same
    # intervention steers the same positions, so it reproduces the generation's logits
    hooks2, before2, after2, _ = sandwich(model, [iv], name=name)
    with model.hooks(fwd_hooks=hooks2):
        full = model(seq, cond)
    diff = (after2[0][2] - before2[0][2]).abs().amax(dim=(0, 2)) > 0
    assert diff.nonzero().flatten().tolist() == expected
    for _, start, lg in logits:
        torch.testing.assert_close(lg[:, :, -1], full[:, :, start + lg.shape[2] - 1], atol=1e-4, rtol=0)


def test_schedule_alpha_at():
    v = torch.ones(4)
    assert Intervention(v, alpha=0.5).alpha_at(7) == 0.5
    lin = Intervention(v, alpha=1.0, alpha_start=0.2, schedule="linear", ramp_steps=4)
    assert [lin.alpha_at(k) for k in range(6)] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0, 1.0])
    exp = Intervention(v, alpha=2.0, schedule="exp", gamma=0.5)
    assert [exp.alpha_at(k) for k in range(4)] == [2.0, 1.0, 0.5, 0.25]


def test_intervention_defaults_from_vector_provenance(model):
    sv = SteeringVector(unit(32, 11), site="resid_post", layer=1, model_hash=model.cfg.hash())
    ((name, _),) = steering_hooks(model, [Intervention(sv)])
    assert name == RESID
    zv = SteeringVector(unit(8, 11), site="blocks.0.attn.hook_z", head=3)
    assert (zv.site, zv.layer) == ("attn.z", 0)
    ((name, hook),) = steering_hooks(model, Intervention(zv))
    assert name == "blocks.0.attn.hook_z" and hook.plan.heads == [3]
    ((name, _),) = steering_hooks(model, [Intervention(torch.ones(32), site="blocks.0.hook_mlp_out")])
    assert name == "blocks.0.hook_mlp_out"


# ---------------------------------------------------------------------------- errors


def _bad_cases(model):
    v, vz = unit(32, 12), unit(8, 12)
    other = SteeringVector(v, site="resid_post", layer=0, concept="trumpet", model_hash="0123456789abcdef")
    return [
        (lambda: Intervention(torch.ones(31), site="resid_post", layer=0), {}, r"size 31 .* d_model=32"),
        (lambda: Intervention(v, site="z", layer=0), {}, r"size 32 .* d_head=8"),
        (lambda: Intervention(v, site="resid_psot", layer=0), {}, r"unknown steering site 'resid_psot'"),
        (lambda: Intervention(v, site="blocks.0.attn.hook_pattern"), {}, r"not a steerable hook"),
        (lambda: Intervention(v, site="blocks.0.cross_attn.hook_k"), {}, r"not a steerable hook"),
        (lambda: Intervention(v, site="blocks.0.mlp.hook_post"), {}, r"size 32 .* d_mlp=64"),
        (lambda: Intervention(v, site="blocks.1.hook_resid_post", layer=0), {}, r"is layer 1 but layer=0"),
        (lambda: Intervention(v, site="resid_post", layer=2), {}, r"layer 2 out of range: the model has 2 layers"),
        (lambda: Intervention(v, site="resid_post", layer=-1), {}, r"layer -1 out of range"),
        (lambda: Intervention(v, site="resid_post"), {}, r"needs layer="),
        (lambda: Intervention(v), {}, r"needs site= and layer="),
        (lambda: Intervention(v, site="resid_post", layer=0, start=0.5, end=0.5), {}, r"empty window"),
        (lambda: Intervention(v, site="resid_post", layer=0, start=-0.1), {}, r"start must be >= 0"),
        (lambda: Intervention(v, site="resid_post", layer=0, start=0.301, end=0.309), {}, r"contains no frame"),
        (lambda: Intervention(v, site="resid_post", layer=0, start=1.0), {"n_frames": 30}, r"start 1.0 s \(frame 50\) is beyond the end of the generation \(30 frames"),
        (lambda: Intervention(v, site="resid_post", layer=0, start=0.6), {"duration": 0.6}, r"beyond the end of the generation"),
        (lambda: Intervention(v, site="resid_post", layer=0, start=6.0), {}, r"beyond the end of the longest audio the model can generate \(252 frames"),
        (lambda: Intervention(v, site="resid_post", layer=0, alpha=float("inf")), {}, r"alpha must be a finite number"),
        (lambda: Intervention(v, site="resid_post", layer=0, alpha=float("nan")), {}, r"alpha must be a finite number"),
        (lambda: Intervention(v, site="resid_post", layer=0, alpha=-1.0), {}, r"alpha must be > -1"),
        (lambda: Intervention(vz, site="z", layer=0, heads=[4]), {}, r"head 4 out of range: the model has 4 heads"),
        (lambda: Intervention(vz, site="z", layer=0, heads=[1, 1]), {}, r"duplicates"),
        (lambda: Intervention(v, site="resid_post", layer=0, heads=[0]), {}, r"heads= only applies to head sites"),
        (lambda: Intervention(v, site="resid_post", layer=0, schedule="linear"), {}, r"needs ramp_steps"),
        (lambda: Intervention(v, site="resid_post", layer=0, schedule="exp", gamma=0.0), {}, r"gamma > 0"),
        (lambda: Intervention(v, site="resid_post", layer=0, schedule="cosine"), {}, r"schedule must be one of"),
        (lambda: Intervention(v, site="resid_post", layer=0, mode="multiply"), {}, r"mode must be one of"),
        (lambda: Intervention(v, site="resid_post", layer=0, branch="conditional"), {}, r"branch must be one of"),
        (lambda: Intervention(v, site="resid_post", layer=0, every=0), {}, r"every must be an int >= 1"),
        (lambda: Intervention(v, site="resid_post", layer=0, offset=-2), {}, r"offset must be an int >= 0"),
        (lambda: Intervention(torch.zeros(32), site="resid_post", layer=0, mode="clamp"), {}, r"needs a direction"),
        (lambda: Intervention(other), {}, r"hash '0123456789abcdef'.*cfg.hash\(\) is '" + model.cfg.hash()),
    ]


def test_bad_inputs_raise_clear_errors(model):
    for make, kwargs, match in _bad_cases(model):
        with pytest.raises(ValueError, match=match):
            steering_hooks(model, [make()], **kwargs)
    assert no_hooks_left(model)
    other = SteeringVector(unit(32, 0), site="resid_post", layer=0, model_hash="0123456789abcdef")
    assert len(steering_hooks(model, [Intervention(other)], check_hash=False)) == 1
    good = Intervention(unit(32, 0), site="resid_post", layer=0)
    with pytest.raises(ValueError, match="out of range"):  # validated before anything is attached
        with steer(model, [good, Intervention(unit(32, 0), site="resid_post", layer=5)]):
            pass
    assert no_hooks_left(model)


