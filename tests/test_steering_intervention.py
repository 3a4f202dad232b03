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




# ---------------------------------------------------------------------------- the authors' counting (forward calls)


def authors_hook(layers, counter: list, w: torch.Tensor, a: float, every: int = 25):
    """arXiv 2506.10225's hook, on Hugging Face's decoder layers: one call counter shared by every
    hooked layer, h <- (h + |h|·a·w) / (1 + a) on the conditional rows when counter % every == 0."""

    def hook(module, args, output):
        counter[0] += 1
        if counter[0] % every:
            return None
        h = output[0] if isinstance(output, tuple) else output
        half = h.shape[0] // 2  # [cond; uncond]
        cond = h[:half]
        h = torch.cat([(cond + cond.norm(dim=-1, keepdim=True) * a * w) / (1 + a), h[half:]])
        return (h, *output[1:]) if isinstance(output, tuple) else h

    return [layer.register_forward_hook(hook) for layer in layers]


def test_hugging_face_generate_runs_one_extra_prefill_call(checkpoint_dir, model):
    from transformers import MusicgenForConditionalGeneration

    hf = MusicgenForConditionalGeneration.from_pretrained(checkpoint_dir("base")).eval()
    seen, ours = [], []
    handle = hf.decoder.model.decoder.layers[1].register_forward_hook(
        lambda m, a, o: seen.append((o[0] if isinstance(o, tuple) else o).detach().clone()))
    try:
        hf.generate(**model.tokenize(PROMPTS), max_new_tokens=10, do_sample=False, guidance_scale=3.0)
    finally:
        handle.remove()
    model.generate(PROMPTS, max_new_frames=10 - model.pattern.max_delay, do_sample=False, guidance_scale=3.0,
                   fwd_hooks=[spy(RESID, ours, ctx=True)])
    assert len(seen) == len(ours) + 1  # 11 forward calls for our 10 steps
    # call 1 is a prefill HF discards, call 2 repeats it (our step 0), call c is our step c - 2
    for c, h in enumerate(seen, start=1):
        step = max(c - 2, 0)
        torch.testing.assert_close(h, ours[step][2], atol=1e-5, rtol=0)


@pytest.mark.parametrize("layers", [[1], [0, 1]])
def test_count_calls_reproduces_the_authors_hook_on_hugging_face_generate(checkpoint_dir, model, layers):
    from transformers import MusicgenForConditionalGeneration

    from helpers import hf_generate_codes

    hf = MusicgenForConditionalGeneration.from_pretrained(checkpoint_dir("base")).eval()
    w, a, frames = unit(32, 20), 0.5, 50  # 53 generation steps: calls 25 and 50 fall inside
    kw = dict(do_sample=False, guidance_scale=3.0)
    counter = [0]
    handles = authors_hook([hf.decoder.model.decoder.layers[L] for L in layers], counter, w, a)
    try:
        ref = hf_generate_codes(hf, model, PROMPTS, frames, **kw)
    finally:
        for h in handles:
            h.remove()
    assert counter[0] == len(layers) * (frames + model.pattern.max_delay + 1)  # one call per layer per step, + the extra prefill
    ivs = [Intervention(w, site="resid_post", layer=L, alpha=a, every=25, count="calls") for L in layers]
    hooks = steering_hooks(model, ivs, n_frames=frames, record=True)
    ours = model.generate(PROMPTS, max_new_frames=frames, **kw, fwd_hooks=hooks)
    assert torch.equal(ours, ref)
    fired = sorted((e["step"], h.plan.layer) for _, h in hooks for e in h.log)
    # counter at step s on the k-th of n layers is (s + 1)·n + k; one layer: steps 23 and 48 (calls 25, 50)
    assert fired == ([(23, 1), (48, 1)] if layers == [1] else [(11, 0), (23, 1), (36, 0), (48, 1)])
    # the steering mattered, and counting steps from 0 (what the docstring used to call "the paper") differs
    assert not torch.equal(ours, model.generate(PROMPTS, max_new_frames=frames, **kw))
    by_steps = [Intervention(w, site="resid_post", layer=L, alpha=a, every=25, offset=0) for L in layers]
    assert not torch.equal(ours, model.generate(PROMPTS, max_new_frames=frames, **kw, steering=by_steps))


def test_count_calls_firing_steps_and_replay_in_a_plain_forward(model):
    iv = Intervention(unit(32, 21), site="resid_post", layer=0, mode="add", alpha=8.0, every=4, offset=1, count="calls", prefill_calls=0)
    ((_, h),) = steering_hooks(model, [iv])
    # one layer, no prefill: the counter at step s is s + 1; fires when it is 1 mod 4
    assert [s for s in range(12) if h.plan.fires(s)] == [0, 4, 8]
    assert h.plan.first_firing(1, 12) == 4 and h.plan.period == 4
    two = steering_hooks(model, [Intervention(unit(32, 21), site=RESID, every=6, count="calls"),
                                 Intervention(unit(32, 21), site="resid_post", layer=0, every=6, count="calls")])
    # the layer-0 hook is first in forward order; counters (s + 1)·2 + k, k = 1, 2; period 6 / gcd(2, 6) = 3
    (_, h1), (_, h0) = two
    assert (h0.plan.slot, h1.plan.slot, h0.plan.shared) == (1, 2, 2)
    assert [s for s in range(12) if h0.plan.fires(s)] == []  # 2s + 3 is odd: never 0 mod 6
    assert [s for s in range(12) if h1.plan.fires(s)] == [1, 4, 7, 10] and h1.plan.period == 3
    # a plain forward steers the positions a generation would (position p = step p)
    name = "blocks.0.hook_resid_post"
    hooks, before, after, _ = sandwich(model, [iv], name=name)
    with model.hooks(fwd_hooks=hooks):
        model(torch.randint(0, 64, (2, 4, 14), generator=torch.Generator().manual_seed(0)), PROMPTS)
    diff = (after[0][2] - before[0][2]).abs().amax(dim=(0, 2)) > 0
    assert diff.nonzero().flatten().tolist() == [0, 4, 8, 12]
    for bad, match in [(dict(count="calls"), "needs every="), (dict(count="calls", every=5, offset=5), "offset must be < every"),
                       (dict(count="calls", every=5, prefill_calls=-1), "prefill_calls"), (dict(count="forward"), "count must be one of")]:
        with pytest.raises(ValueError, match=match):
            Intervention(unit(32, 0), site="resid_post", layer=0, **bad)


# ---------------------------------------------------------------------------- provenance, architectures


def test_vectors_from_other_trained_weights_are_refused(model, tmp_path):
    from musicgen_lens import HookedMusicGen
    from musicgen_lens.provenance import weights_fingerprint
    from musicgen_lens.tiny import save_tiny_checkpoint

    other = HookedMusicGen.from_pretrained(save_tiny_checkpoint(tmp_path / "retrained", seed=1), device="cpu")
    assert other.cfg.hash() == model.cfg.hash() and weights_fingerprint(other) != weights_fingerprint(model)
    acts = torch.randn(20, 32, generator=torch.Generator().manual_seed(0))
    sv = SteeringVector.from_diff_means(acts[:10], acts[10:], site="resid_post", layer=1, concept="violin", model=other)
    with pytest.raises(ValueError, match=r"steering vector 'violin' was made on other trained weights.*check_hash=False"):
        steering_hooks(model, [Intervention(sv)])
    assert no_hooks_left(model)
    assert len(steering_hooks(model, [Intervention(sv)], check_hash=False)) == 1  # the override
    assert len(steering_hooks(other, [Intervention(sv)])) == 1  # its own model
    sv.save(tmp_path / "v.safetensors")  # the weights hash survives save/load and is checked after it
    with pytest.raises(ValueError, match="other trained weights"):
        model.generate(PROMPTS, max_new_frames=4, steering=[Intervention(SteeringVector.load(tmp_path / "v.safetensors"))])
    old = SteeringVector(sv.vector, site="resid_post", layer=1, model_hash=model.cfg.hash())  # saved before weights hashes
    assert old.weights_hash is None and len(steering_hooks(model, [Intervention(old)])) == 1


def test_sites_the_architecture_lacks_are_a_clear_error(melody_model):
    iv = Intervention(unit(8, 0), site="cross_z", layer=0)
    with pytest.raises(ValueError, match=r"'cross_attn.z' .* does not exist on a MusicGen-melody model \(no cross-attention"):
        steering_hooks(melody_model, [iv])
    ((name, _),) = steering_hooks(melody_model, [Intervention(unit(8, 0), site="z", layer=0, heads=[1])])
    assert name == "blocks.0.attn.hook_z"
