"""Steering: time windows exact to the frame, CFG branches, head sites, schedules, periodic
firing, save/load, validation, and the vector constructors on planted data."""

from __future__ import annotations

import os

import pytest
import torch

from musicgen_lens.steering import Intervention, SteeringVector, steer, steering_hooks

from helpers import PROMPTS, random_codes

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


def test_window_start_rounding_is_exact_to_the_frame():
    v = torch.ones(4)
    assert Intervention(v, start=0.58, end=0.6).window_frames(50.0) == (29, 30)  # 0.58·50 = 28.999999999999996
    assert Intervention(v, start=0.3).window_frames(50.0) == (15, None)
    assert Intervention(v, start=0.31).window_frames(50.0) == (16, None)  # first frame at or after 0.31 s
    assert Intervention(v, end=0.31).window_frames(50.0) == (None, 16)


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


# ---------------------------------------------------------------------------- vectors


def test_save_load_round_trip(tmp_path, model):
    sv = SteeringVector(unit(32, 9), site="resid_post", layer=1, concept="trumpet", method="probe",
                        model_hash=model.cfg.hash(), metadata={"auc": 0.93, "layers": [1, 2]})
    path = tmp_path / "trumpet.safetensors"
    sv.save(path)
    assert os.listdir(tmp_path) == ["trumpet.safetensors"]  # no temporary file left behind
    back = SteeringVector.load(path)
    assert torch.equal(back.vector, sv.vector)
    assert back.provenance() == sv.provenance()
    with open(path, "rb") as f:
        assert b"pickle" not in f.read()
    sv2 = SteeringVector(sv.vector.to(torch.bfloat16), site="z", layer=0, head=2)
    sv2.save(path)  # overwrite in place
    back2 = SteeringVector.load(path)
    assert back2.vector.dtype == torch.bfloat16 and (back2.site, back2.layer, back2.head) == ("z", 0, 2)
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(3)}, tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="not a SteeringVector file"):
        SteeringVector.load(tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="JSON"):
        SteeringVector(torch.ones(3), metadata={"t": torch.ones(1)}).save(tmp_path / "bad.safetensors")
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_arithmetic_and_provenance():
    a = SteeringVector(torch.tensor([3.0, 4.0]), site="resid_post", layer=2, concept="a", method="diff_means", model_hash="h")
    b = SteeringVector(torch.tensor([1.0, 0.0]), site="resid_post", layer=2, concept="b", method="probe", model_hash="h")
    assert a.norm == 5.0 and a.d == 2
    assert torch.equal((a * 2).vector, torch.tensor([6.0, 8.0])) and torch.equal((2 * a).vector, (a * 2).vector)
    assert (a * 2).metadata["scale"] == 2.0 and (a * 2).concept == "a"
    assert torch.equal((-a).vector, torch.tensor([-3.0, -4.0]))
    s = a + b
    assert torch.equal(s.vector, torch.tensor([4.0, 4.0]))
    assert (s.concept, s.method, s.site, s.layer, s.model_hash) == ("a+b", "combined", "resid_post", 2, "h")
    assert [c["concept"] for c in s.metadata["components"]] == ["a", "b"]
    assert (a - b).concept == "a-b" and torch.equal((a - b).vector, torch.tensor([2.0, 4.0]))
    assert a.normalized().norm == pytest.approx(1.0) and a.normalized().concept == "a"
    assert a.to(dtype=torch.float64).vector.dtype == torch.float64
    with pytest.raises(ValueError, match="different sizes: 2 and 3"):
        a + SteeringVector(torch.ones(3))
    with pytest.raises(ValueError, match="different model architectures"):
        a + SteeringVector(torch.ones(2), model_hash="other")
    with pytest.raises(ValueError, match="zero"):
        SteeringVector(torch.zeros(2)).normalized()


def test_constructors_recover_planted_directions(model):
    g = torch.Generator().manual_seed(0)
    d = 32
    u = unit(d, 10)
    cos = lambda x, y: float(x @ y / (x.norm() * y.norm()))  # noqa: E731

    pos, neg = torch.randn(400, d, generator=g) + 3 * u, torch.randn(400, d, generator=g)
    dm = SteeringVector.from_diff_means(pos, neg, site="resid_post", layer=1, concept="up", model=model)
    assert cos(dm.vector, u) > 0.95 and dm.norm == pytest.approx(3.0, rel=0.1)
    assert (dm.method, dm.model_hash, dm.concept) == ("diff_means", model.cfg.hash(), "up")

    offsets = torch.stack([torch.zeros(d), 4 * u, -2 * u])
    labels = torch.arange(300) % 3
    acts = torch.randn(300, d, generator=g) + offsets[labels]
    cm = SteeringVector.from_class_mean(acts, labels, 1, site="resid_post", layer=1)
    torch.testing.assert_close(cm.vector, acts[labels == 1].mean(0) - acts.mean(0), atol=1e-5, rtol=0)
    assert cos(cm.vector, u) > 0.95 and (cm.concept, cm.method) == ("1", "class_mean")
    cm_str = SteeringVector.from_class_mean(acts, ["a", "b", "c"] * 100, "b")
    torch.testing.assert_close(cm_str.vector, cm.vector)

    base = 5 * torch.randn(200, d, generator=g)  # large shared variance, cancelled by pairing
    p = base + 2 * u + 0.1 * torch.randn(200, d, generator=g)
    pc = SteeringVector.from_pca(p, base)
    assert cos(pc.vector, u) > 0.99 and pc.norm == pytest.approx(1.0) and pc.metadata["paired"]
    assert cos(SteeringVector.from_pca(base, p).vector, u) < -0.99  # sign points pos-ward
    up, dn = torch.randn(300, d, generator=g) + 4 * u, torch.randn(200, d, generator=g) - 4 * u
    pc2 = SteeringVector.from_pca(up, dn, paired=False)
    assert cos(pc2.vector, u) > 0.99
    with pytest.raises(ValueError, match="paired=False"):
        SteeringVector.from_pca(up, dn)

    class ClassificationProbe:
        def direction(self, target):
            return {"trumpet": 2 * u, "violin": -3 * u}[target]

    class RegressionProbe:
        concept = "tempo"

        def direction(self):
            return u[None] * 7

    sv = SteeringVector.from_probe(ClassificationProbe(), "violin", site="resid_post", layer=1, model=model)
    assert sv.norm == pytest.approx(1.0) and cos(sv.vector, u) == pytest.approx(-1.0)
    assert (sv.concept, sv.method, sv.metadata["target"], sv.model_hash) == ("violin", "probe", "violin", model.cfg.hash())
    reg = SteeringVector.from_probe(RegressionProbe(), site="resid_post", layer=1)
    assert reg.concept == "tempo" and reg.vector.shape == (d,) and reg.model_hash is None
    with pytest.raises(ValueError, match="d_model=32"):
        SteeringVector.from_diff_means(pos[:, :8], neg[:, :8], site="resid_post", model=model)


def test_intervention_defaults_from_vector_provenance(model):
    sv = SteeringVector(unit(32, 11), site="resid_post", layer=1, model_hash=model.cfg.hash())
    ((name, _),) = steering_hooks(model, [Intervention(sv)])
    assert name == RESID
    zv = SteeringVector(unit(8, 11), site="blocks.0.attn.hook_z", head=3)
    assert (zv.site, zv.layer) == ("z", 0)
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
        (lambda: Intervention(v, site="blocks.0.mlp.hook_post"), {}, r"not a steerable hook"),
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
    with model.steer([iv], n_frames=20):
        via_context = model.generate(PROMPTS, max_new_frames=20, seed=0)
    assert torch.equal(via_arg, via_hooks) and torch.equal(via_arg, via_context)
    assert torch.equal(via_arg[..., :5], base[..., :5]) and not torch.equal(via_arg, base)
    assert all(not hp.fwd_hooks for hp in model.hook_dict.values())
