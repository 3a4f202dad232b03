"""Intervention options beyond the paper: stochastic gating (inject_chance, MusicRFM), logistic
and sinusoidal schedules, and the monitored (probe-read) strength of SMITIN."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from musicgen_lens.probes import LinearProbe
from musicgen_lens.steering import Intervention, ProbeMonitor, gate_uniform

from helpers import PROMPTS, random_codes
from steering_helpers import RESID, sandwich, unit


# ---------------------------------------------------------------------------- stochastic gate


def test_gate_fires_at_the_expected_fraction_and_is_reproducible():
    v = unit(32, 0)
    for p in (0.1, 0.3, 0.75):
        iv = Intervention(v, site=RESID, inject_chance=p, seed=123)
        fired = [iv.gate(s) for s in range(20_000)]
        frac = sum(fired) / len(fired)
        assert abs(frac - p) < 4 * math.sqrt(p * (1 - p) / len(fired)), (p, frac)
        again = Intervention(v, site=RESID, inject_chance=p, seed=123)
        assert [again.gate(s) for s in range(20_000)] == fired  # same seed: same steps
        assert [again.gate(s) for s in reversed(range(20_000))][::-1] == fired  # order does not matter
        other = Intervention(v, site=RESID, inject_chance=p, seed=124)
        assert [other.gate(s) for s in range(20_000)] != fired
    assert all(Intervention(v, site=RESID).gate(s) for s in range(100))  # inject_chance=1: never gated
    assert gate_uniform(5, 7) == gate_uniform(5, 7) and 0 <= gate_uniform(5, 7) < 1


def test_gate_in_generation_matches_the_plain_forward_replay(model):
    """Generation gates steps, a plain forward gates positions (= steps): the same ones."""
    v = unit(32, 3)
    iv = Intervention(v, site=RESID, mode="add", alpha=2.0, inject_chance=0.4, seed=7)
    hooks, before, after, (h,) = sandwich(model, [iv], record=True)
    model.generate(PROMPTS, max_new_frames=30, seed=0, guidance_scale=1.0, fwd_hooks=hooks)
    fired = sorted(step for (step, _, a), (_, _, b) in zip(before, after) if not torch.equal(a, b))
    n_steps = len(before)
    assert fired == [s for s in range(n_steps) if iv.gate(s)]
    assert 0 < len(fired) < n_steps
    assert [e["step"] for e in h.log] == fired
    # the replay: a plain forward steers exactly the gated positions
    hooks, before, after, _ = sandwich(model, [iv])
    model.run_with_hooks(random_codes(model, batch=2, pos=n_steps), PROMPTS, fwd_hooks=hooks)
    coef = ((after[0][2] - before[0][2]) @ v)[0]
    want = torch.tensor([2.0 if iv.gate(p) else 0.0 for p in range(n_steps)])
    torch.testing.assert_close(coef, want, atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------- schedules


def test_logistic_and_sinusoidal_schedules_match_their_formulas():
    v = unit(32, 1)
    lg = Intervention(v, site=RESID, alpha=2.0, alpha_start=0.5, schedule="logistic", midpoint=10, width=3)
    sn = Intervention(v, site=RESID, alpha=1.5, alpha_start=-0.25, schedule="sinusoidal", period=8, phase=0.3)
    k = torch.arange(0, 40, dtype=torch.float64)
    for iv, f in (
        (lg, lambda k: 0.5 + 1.5 / (1 + math.exp(-(k - 10) / 3))),
        (sn, lambda k: -0.25 + 1.75 * (1 - math.cos(2 * math.pi * k / 8 + 0.3)) / 2),
    ):
        want = [f(int(x)) for x in k]
        assert [iv.alpha_at(int(x)) for x in k] == pytest.approx(want, abs=1e-12)
        assert iv._alpha_tensor(k).tolist() == pytest.approx(want, abs=1e-12)
    assert lg.alpha_at(10) == pytest.approx(1.25)
    assert Intervention(v, site=RESID, alpha=1.0, schedule="sinusoidal", period=4).alpha_at(2) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="period > 0"):
        Intervention(v, site=RESID, schedule="sinusoidal")
    with pytest.raises(ValueError, match="width > 0"):
        Intervention(v, site=RESID, schedule="logistic", width=0)
    with pytest.raises(ValueError, match="inject_chance"):
        Intervention(v, site=RESID, inject_chance=0.0)
    with pytest.raises(ValueError, match="alpha must be > -1"):
        Intervention(v, site=RESID, alpha=1.0, alpha_start=-1.5, schedule="logistic")


def test_logistic_schedule_applied_per_position(model):
    md = model.ctx.max_delay
    v = unit(32, 2)
    iv = Intervention(v, site=RESID, mode="add", alpha=2.0, schedule="logistic", midpoint=4, width=1.5, start=0.1)  # frame 5
    hooks, before, after, _ = sandwich(model, [iv])
    model.run_with_hooks(random_codes(model, batch=2, pos=20), PROMPTS, fwd_hooks=hooks)
    coef = (after[0][2] - before[0][2]) @ v
    p0 = 5 + md
    want = torch.tensor([0.0] * p0 + [iv.alpha_at(p - p0) for p in range(p0, 20)], dtype=torch.float32)
    torch.testing.assert_close(coef, want.expand(2, -1), atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------- monitored strength


def _planted_monitor(d: int, seed: int, margin: float = 1.0) -> tuple[ProbeMonitor, torch.Tensor]:
    w = unit(d, seed)
    return ProbeMonitor(w, bias=0.0, target=0.0, margin=margin), w


def test_monitored_add_is_zero_where_the_probe_reads_positive_and_alpha_where_far_negative(model):
    monitor, w = _planted_monitor(32, 11, margin=0.5)
    v = unit(32, 12)
    iv = Intervention(v, site=RESID, mode="add", alpha=3.0, monitor=monitor, branch="both")
    hooks, before, after, _ = sandwich(model, [iv])
    model.run_with_hooks(random_codes(model, batch=2, pos=40), PROMPTS, fwd_hooks=hooks)
    h, out = before[0][2], after[0][2]
    reading = h @ w
    added = out - h
    pos, far = reading >= 0, reading <= -0.5
    mid = ~pos & ~far
    assert pos.any() and far.any()
    assert torch.equal(out[pos], h[pos])  # exactly nothing added
    torch.testing.assert_close(added[far], 3.0 * v.expand(int(far.sum()), -1), atol=1e-5, rtol=0)
    ramp = 3.0 * (-reading[mid] / 0.5)
    torch.testing.assert_close(added[mid] @ v, ramp, atol=1e-5, rtol=1e-5)


def test_monitored_generation_is_bit_identical_where_the_probe_reads_positive(model):
    """A monitor whose target every activation already reaches never changes the generation,
    and one that never reaches it steers every step with the full alpha."""
    v = unit(32, 4)
    base = model.generate(PROMPTS, max_new_frames=20, seed=0)
    always_positive = ProbeMonitor(torch.zeros(32), bias=1.0, target=0.0)  # reads +1 everywhere
    iv = Intervention(v, site=RESID, mode="add", alpha=50.0, monitor=always_positive)
    assert torch.equal(model.generate(PROMPTS, max_new_frames=20, seed=0, steering=[iv]), base)
    always_negative = ProbeMonitor(torch.zeros(32), bias=-5.0, target=0.0, margin=1.0)
    full = model.generate(PROMPTS, max_new_frames=20, seed=0, steering=[Intervention(v, site=RESID, mode="add", alpha=50.0)])
    monitored = model.generate(PROMPTS, max_new_frames=20, seed=0, steering=[Intervention(v, site=RESID, mode="add", alpha=50.0, monitor=always_negative)])
    assert torch.equal(monitored, full) and not torch.equal(full, base)


def test_monitor_on_a_head_site_reads_each_head(model):
    d_head, H = model.cfg.d_head, model.cfg.n_heads
    monitor, w = _planted_monitor(d_head, 21, margin=0.1)
    v = unit(d_head, 22)
    name = "blocks.0.attn.hook_z"
    iv = Intervention(v, site=name, heads=[1], mode="add", alpha=2.0, monitor=monitor, branch="both")
    hooks, before, after, _ = sandwich(model, [iv], name=name)
    model.run_with_hooks(random_codes(model, batch=2, pos=30), PROMPTS, fwd_hooks=hooks)
    h, out = before[0][2], after[0][2]
    others = [i for i in range(H) if i != 1]
    assert torch.equal(out[:, :, others], h[:, :, others])
    r = h[:, :, 1] @ w
    strength = ((0.0 - r) / 0.1).clamp(0, 1)
    torch.testing.assert_close((out - h)[:, :, 1], 2.0 * strength[..., None] * v, atol=1e-6, rtol=0)


def test_monitor_from_probe_reads_the_probes_decision_function():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 16)) * 3 + 1
    y = (X[:, 0] - 0.5 * X[:, 3] > 1).astype(int)
    for normalize in ("standardize", None, "l2"):
        probe = LinearProbe(task="classification", normalize=normalize).fit(X, y)
        mon = ProbeMonitor.from_probe(probe)
        torch.testing.assert_close(mon.read(torch.from_numpy(X))[:, 0], torch.from_numpy(probe.decision_function(X).ravel()), atol=1e-8, rtol=1e-8)
        neg = ProbeMonitor.from_probe(probe, target_class=0)
        torch.testing.assert_close(neg.read(torch.from_numpy(X))[:, 0], -torch.from_numpy(probe.decision_function(X).ravel()), atol=1e-8, rtol=1e-8)


def test_monitor_validation(model):
    v = unit(32, 0)
    with pytest.raises(ValueError, match="mode must be 'add' or 'norm_relative'"):
        Intervention(v, site=RESID, mode="clamp", monitor=ProbeMonitor(torch.ones(32)))
    with pytest.raises(ValueError, match="margin must be > 0"):
        ProbeMonitor(torch.ones(32), margin=0)
    from musicgen_lens.steering import steering_hooks

    with pytest.raises(ValueError, match="monitor's probe has width 8"):
        steering_hooks(model, [Intervention(v, site=RESID, monitor=ProbeMonitor(torch.ones(8)))])
