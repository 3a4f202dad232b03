"""`Intervention`: how to apply a steering vector, checked, and resolved against a model.

Time window. `start` / `end` are seconds of audio from the first frame (an audio prompt
included). A decoder position p writes frames p − delay(k); its *earliest* frame is
f(p) = p − max_delay (`model.pattern.frame_of`, `hook.ctx.frames`). The intervention applies at
the positions with start·frame_rate <= f(p) < end·frame_rate (None = open; seconds become frames
with `model.pattern.frame_at`), so every codebook of every frame before `start` is
bit-identical to the unsteered run. Positions from `end` on are left alone, but the audio after
`end` may still change: later positions attend to the steered ones (KV cache), and codebook k
of frame f is written at position f + delay(k).

Steps. During generation `hook.ctx.step` is the generation step: 0 is the prefill (BOS plus
any audio prompt, one call over several positions), then one new position per step (without
an audio prompt, step s processes position s; with n prompt frames, position n + s). In a
plain forward (teacher forcing) there are no steps; position p counts as step p, which is
exactly the generation step that processed it when there is no audio prompt, so replaying a
generated sequence through `model(codes, cond)` with the same hooks steers the same positions.

Periodic firing, `count="steps"` (default): the intervention fires at step s iff s >= offset
and (s − offset) % every == 0 (every=25, offset=0: steps 0, 25, 50, ...); `every=None` fires at
every step s >= offset. At the other steps it does nothing (the positions it steered stay in
the KV cache). Firing and the time window must both hold.

Periodic firing, `count="calls"`: the authors' counting (arXiv 2506.10225's code). Their hook
is one `register_forward_hook` object on Hugging Face's decoder layer(s) with one call counter
shared by every hooked layer, incremented before the test, firing when
counter % every == offset (0 <= offset < every; the paper: every=25, offset=0, so calls 25,
50, ...). Hugging Face's MusicGen `generate` (transformers 5.x, measured: tests/
test_steering_intervention.py) runs one extra prefill forward before the real loop and
discards it (`prefill_calls=1`), so with one hooked layer HF call c is our step c − 2:

    counter at our step s, hooked layer k of n (1-based, forward order) = (s + prefill_calls)·n + k
    fires at step s iff that counter % every == offset

One layer, every=25, offset=0, prefill_calls=1: steps 23, 48, 73, ... (not 0, 25, 50). The
interventions with count="calls" passed together (one `steering_hooks` / `generate(steering=)`
call) share one counter, ordered by layer and then by the registry's order of sites in a block,
as the authors' one hook on several layers does: with n layers only some layers fire, at some
steps (n=5, every=25: the 5th layer at steps 3, 8, 13, ...). In a plain forward position p
counts as step p, as for "steps".

Schedules give the alpha at k = p − p_open, the number of positions (= generation steps,
one position per step) since the window opened; p_open = `model.pattern.position_of(start
frame)` is the first position in the window (0 when start is None, so an open window counts
from position 0):

    constant   alpha
    linear     alpha_start + (alpha − alpha_start)·min(k / ramp_steps, 1)   (alpha_start at k=0, alpha from k=ramp_steps)
    exp        alpha·gamma**k
    logistic   alpha_start + (alpha − alpha_start)·σ((k − midpoint) / width),  σ(x) = 1 / (1 + e^−x)
               (alpha_start far before `midpoint` steps, halfway at k = midpoint, alpha far after)
    sinusoidal alpha_start + (alpha − alpha_start)·(1 − cos(2π·k / period + phase)) / 2
               (alpha_start at k = 0 when phase = 0, alpha at k = period/2, back at k = period)

k counts steps, not firings: with every=25 the intervention fires at k = 0, 25, 50, ... (when
the window opens at a firing step) and uses alpha_at(k) there. `Intervention.alpha_at(k)` is
the schedule as a plain function.

Stochastic gating (MusicRFM's `inject_chance`, arXiv 2510.19127): with `inject_chance=p < 1`
an intervention that would fire at step s fires only if

    u(seed, s) < p,   u(seed, s) = splitmix64(seed·2^32 + s) / 2^64   (`intervention.gate_uniform`)

a pseudo-random number in [0, 1) that depends only on (seed, step): the same seed gives the same
gated steps in every run, in any call order, on any device, and needs no RNG state nor a device
round trip (pure Python integer arithmetic on the step). In a plain forward position p counts
as step p, as above, so the replay of a generation is gated at the same positions. Over many
steps the fraction of firing steps tends to p. `Intervention.gate(step)` is the gate as a plain
function; `inject_chance=1` (default) never gates.

Monitoring (SMITIN, arXiv 2404.02252): `monitor=ProbeMonitor(...)` (`steering.monitor`) makes
the strength follow a linear probe's live reading of the same activation, before it is
modified: alpha_t = alpha_sched(k)·clip((target − reading) / margin, 0, 1) per position (and
per head on head sites), so nothing is added where the probe already reads >= target.

Branches: `branch="cond"` (default, the paper's) steers only the conditional rows of the CFG
batch (`hook.ctx.cond_rows`); in a plain forward the rows whose conditioning is null count as
unconditional, so `model(codes)` with the default null text and branch="cond" steers nothing.

Sites come from the registry (`musicgen_lens.hooks`): any `Site.is_vector` site (a feature
vector per decoder position) is steerable, head sites (`Site.is_head`) per head; the width is
`Site.width(cfg)`, and a site the architecture lacks (cross-attention on MusicGen-melody) is an
error. Provenance: `resolve` refuses a vector made on another architecture or other trained
weights (`provenance.check_model`; `check_hash=False` overrides).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import torch

from musicgen_lens.delay_pattern import DelayPattern
from musicgen_lens.hooks import SITES, Site
from musicgen_lens.provenance import check_model
from musicgen_lens.steering.vector import SteeringVector, _finite, _is_int, steerable_site

if TYPE_CHECKING:
    from musicgen_lens.model import HookedMusicGen

__all__ = ["BRANCHES", "COUNTS", "MODES", "SCHEDULES", "Intervention", "Plan", "gate_uniform"]

MODES = ("add", "norm_relative", "clamp", "ablate")
SCHEDULES = ("constant", "linear", "exp", "logistic", "sinusoidal")
_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def gate_uniform(seed: int, step: int) -> float:
    """u(seed, step) in [0, 1): splitmix64(seed·2^32 + step) / 2^64 (the stochastic gate's draw)."""
    return _splitmix64(((int(seed) & 0xFFFFFFFF) << 32) + (int(step) & 0xFFFFFFFF)) / 2.0**64
BRANCHES = ("cond", "uncond", "both")
COUNTS = ("steps", "calls")
_SITE_ORDER = {name: i for i, name in enumerate(SITES)}


@dataclass(eq=False)
class Intervention:
    """One steering intervention; see the module docstring for the exact semantics.

    vector   SteeringVector or tensor [d] (the site's width: d_model; d_head for attn.z, ...).
    site     a site name ("resid_post", "attn.z", ...; musicgen_lens.hooks.SITES, aliases such as
             "z" too) or a full hook name; with layer. Default: the vector's own site / layer
             (/ head for head sites).
    heads    head sites only: the heads to steer (default all); each gets the same vector.
    alpha    strength (a finite float; norm_relative needs alpha > -1); the value a schedule reaches.
    mode     "add" | "norm_relative" | "clamp" | "ablate".
    schedule "constant" | "linear" (alpha_start -> alpha over ramp_steps) | "exp" (alpha·gamma**k) |
             "logistic" (alpha_start -> alpha around step `midpoint`, `width` steps wide) |
             "sinusoidal" (between alpha_start and alpha with `period` steps, `phase` radians).
    inject_chance, seed  stochastic gating: a step that would fire fires iff gate_uniform(seed, step) < inject_chance.
    monitor  a `steering.monitor.ProbeMonitor`: the strength follows a probe's live reading (add / norm_relative).
    start, end  seconds, window [start, end); None = open.
    every, offset  periodic firing; what they count is `count`.
    count    "steps" (default): fires at steps s >= offset with (s − offset) % every == 0.
             "calls": the authors' shared forward-call counter (counter % every == offset), with
             `prefill_calls` extra Hugging Face forwards before step 0 (1 in transformers 5.x).
    branch   "cond" (default) | "uncond" | "both": rows of the CFG batch.
    """

    vector: SteeringVector | torch.Tensor
    site: str | None = None
    layer: int | None = None
    alpha: float = 0.5
    mode: str = "norm_relative"
    heads: Sequence[int] | None = None
    start: float | None = None
    end: float | None = None
    every: int | None = None
    offset: int = 0
    branch: str = "cond"
    schedule: str = "constant"
    alpha_start: float = 0.0
    ramp_steps: int | None = None
    gamma: float = 1.0
    count: str = "steps"
    prefill_calls: int = 1
    midpoint: float = 0.0
    width: float = 1.0
    period: float | None = None
    phase: float = 0.0
    inject_chance: float = 1.0
    seed: int = 0
    monitor: Any = None

    def __post_init__(self) -> None:
        self.validate()

    # ---------------------------------------------------------------- model-free checks
    def validate(self) -> None:
        """Checks that need no model (run again by `steering_hooks`)."""
        if not isinstance(self.vector, (SteeringVector, torch.Tensor)):
            raise TypeError(f"Intervention.vector must be a SteeringVector or a tensor [d], got {type(self.vector).__name__}")
        if isinstance(self.vector, torch.Tensor) and self.vector.ndim != 1:
            raise ValueError(f"Intervention.vector must be 1-D [d], got shape {tuple(self.vector.shape)}")
        for name, allowed in (("mode", MODES), ("schedule", SCHEDULES), ("branch", BRANCHES), ("count", COUNTS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"Intervention.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        self.alpha = _finite("Intervention.alpha", self.alpha)
        self.alpha_start = _finite("Intervention.alpha_start", self.alpha_start)
        self.gamma = _finite("Intervention.gamma", self.gamma)
        if self.schedule == "linear":
            if not _is_int(self.ramp_steps) or self.ramp_steps < 1:
                raise ValueError(f"schedule='linear' needs ramp_steps, an int >= 1 (steps from alpha_start to alpha), got {self.ramp_steps!r}")
        self.midpoint = _finite("Intervention.midpoint", self.midpoint)
        self.width = _finite("Intervention.width", self.width)
        self.phase = _finite("Intervention.phase", self.phase)
        if self.schedule == "logistic" and not self.width > 0:
            raise ValueError(f"schedule='logistic' needs width > 0 (steps of the transition), got {self.width}")
        if self.schedule == "sinusoidal":
            if self.period is None or not _finite("Intervention.period", self.period) > 0:
                raise ValueError(f"schedule='sinusoidal' needs period > 0 (steps of one cycle), got {self.period!r}")
            self.period = float(self.period)
        self.inject_chance = _finite("Intervention.inject_chance", self.inject_chance)
        if not 0 < self.inject_chance <= 1:
            raise ValueError(f"Intervention.inject_chance must be in (0, 1] (the chance a step fires), got {self.inject_chance}")
        if not _is_int(self.seed):
            raise ValueError(f"Intervention.seed must be an int (the stochastic gate's seed), got {self.seed!r}")
        if self.monitor is not None:
            from musicgen_lens.steering.monitor import ProbeMonitor

            if not isinstance(self.monitor, ProbeMonitor):
                raise TypeError(f"Intervention.monitor must be a steering.monitor.ProbeMonitor, got {type(self.monitor).__name__}")
            if self.mode not in ("add", "norm_relative"):
                raise ValueError(f"a monitored intervention scales its strength per position: mode must be 'add' or 'norm_relative', got {self.mode!r}")
        if self.schedule == "exp" and not self.gamma > 0:
            raise ValueError(f"schedule='exp' needs gamma > 0 (alpha·gamma**k), got {self.gamma}")
        if self.mode == "norm_relative":
            lows = [self.alpha] + ([self.alpha_start] if self.schedule in ("linear", "logistic", "sinusoidal") else [])
            if self.schedule == "exp" and self.gamma > 1 and self.alpha < 0:
                raise ValueError("norm_relative with a negative alpha and gamma > 1 would reach alpha <= -1 (division by 1 + alpha)")
            if min(lows) <= -1:
                raise ValueError(f"norm_relative divides by (1 + alpha): alpha must be > -1, got {min(lows)}")
        for name in ("start", "end"):
            value = getattr(self, name)
            if value is not None:
                value = _finite(f"Intervention.{name} (seconds)", value)
                if value < 0:
                    raise ValueError(f"Intervention.{name} must be >= 0 seconds, got {value}")
                setattr(self, name, value)
        if self.start is not None and self.end is not None and self.start >= self.end:
            raise ValueError(f"empty window: start={self.start} s must be before end={self.end} s")
        if self.end is not None and self.end == 0:
            raise ValueError("empty window: end=0 s")
        if self.every is not None and (not _is_int(self.every) or self.every < 1):
            raise ValueError(f"Intervention.every must be an int >= 1 (fire every N generation steps) or None, got {self.every!r}")
        if not _is_int(self.offset) or self.offset < 0:
            raise ValueError(f"Intervention.offset must be an int >= 0 (the first firing step), got {self.offset!r}")
        if self.count == "calls":
            if self.every is None:
                raise ValueError("count='calls' needs every= (the authors' hook fires when its call counter % every == offset)")
            if self.offset >= self.every:
                raise ValueError(f"count='calls' fires when counter % every == offset: offset must be < every={self.every}, got {self.offset}")
            if not _is_int(self.prefill_calls) or self.prefill_calls < 0:
                raise ValueError(f"Intervention.prefill_calls must be an int >= 0, got {self.prefill_calls!r}")
        if self.heads is not None:
            heads = [self.heads] if _is_int(self.heads) else list(self.heads)
            if not heads or not all(_is_int(h) for h in heads):
                raise ValueError(f"Intervention.heads must be a non-empty list of ints, got {self.heads!r}")
            if len(set(heads)) != len(heads):
                raise ValueError(f"Intervention.heads has duplicates: {heads}")
            self.heads = [int(h) for h in heads]

    # ---------------------------------------------------------------- schedule
    def alpha_at(self, k: int) -> float:
        """The alpha k steps (positions) after the window opened (k >= 0)."""
        if k < 0:
            raise ValueError(f"k must be >= 0 (steps since the window opened), got {k}")
        if self.schedule == "constant":
            return self.alpha
        if self.schedule == "linear":
            return self.alpha_start + (self.alpha - self.alpha_start) * min(k / self.ramp_steps, 1.0)
        if self.schedule == "logistic":
            z = (k - self.midpoint) / self.width
            sig = 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))
            return self.alpha_start + (self.alpha - self.alpha_start) * sig
        if self.schedule == "sinusoidal":
            return self.alpha_start + (self.alpha - self.alpha_start) * (1.0 - math.cos(2 * math.pi * k / self.period + self.phase)) / 2
        return self.alpha * self.gamma**k

    def _alpha_tensor(self, k: torch.Tensor) -> torch.Tensor:
        """alpha_at elementwise on a float64 tensor of k (no host sync)."""
        if self.schedule == "linear":
            return self.alpha_start + (self.alpha - self.alpha_start) * (k / self.ramp_steps).clamp(max=1.0)
        if self.schedule == "logistic":
            return self.alpha_start + (self.alpha - self.alpha_start) * torch.sigmoid((k - self.midpoint) / self.width)
        if self.schedule == "sinusoidal":
            return self.alpha_start + (self.alpha - self.alpha_start) * (1.0 - torch.cos(2 * math.pi * k / self.period + self.phase)) / 2
        return self.alpha * torch.pow(torch.full_like(k, self.gamma), k)

    # ---------------------------------------------------------------- stochastic gate
    def gate(self, step: int) -> bool:
        """Whether the stochastic gate lets step `step` fire: gate_uniform(seed, step) < inject_chance."""
        return self.inject_chance >= 1.0 or gate_uniform(self.seed, step) < self.inject_chance

    def window_frames(self, pattern: DelayPattern | float) -> tuple[int | None, int | None]:
        """[start, end) in frames (`DelayPattern.frame_at`: the first frame at or after each time;
        None = open). Takes `model.pattern`, or a frame rate."""
        if not isinstance(pattern, DelayPattern):
            pattern = DelayPattern(1, 1, float(pattern))
        return tuple(None if t is None else pattern.frame_at(t) for t in (self.start, self.end))  # type: ignore[return-value]

    # ---------------------------------------------------------------- resolution against a model
    def _where(self, model: "HookedMusicGen") -> tuple[Site, int, list[int] | None]:
        """The site, layer and heads this intervention steers on `model` (every check on them)."""
        cfg = model.cfg
        sv = self.vector if isinstance(self.vector, SteeringVector) else None
        spelled, layer = self.site, self.layer
        if spelled is None:
            if sv is None or sv.site is None:
                raise ValueError("Intervention needs site= and layer= (the vector is a plain tensor or has no site provenance)")
            spelled = sv.site
        s, named_layer = steerable_site(spelled)
        if named_layer is not None:
            if layer is not None and layer != named_layer:
                raise ValueError(f"hook {spelled!r} is layer {named_layer} but layer={layer} was given")
            layer = named_layer
        if layer is None:
            layer = sv.layer if sv is not None else None
            if layer is None:
                raise ValueError(f"Intervention at site {s.name!r} needs layer= (the vector has no layer provenance)")
        if not _is_int(layer) or not 0 <= layer < cfg.n_layers:
            raise ValueError(f"layer {layer!r} out of range: the model has {cfg.n_layers} layers (0..{cfg.n_layers - 1})")
        if not s.available(cfg):
            kind = "MusicGen-melody model (no cross-attention: text and chroma are prepended)" if cfg.is_melody else "text-to-music MusicGen model"
            raise ValueError(f"site {s.name!r} ({s.hook_name(layer)}) does not exist on a {kind}; steer e.g. 'resid_post' or 'attn.z'")
        if s.opt_in and not getattr(cfg, s.opt_in):
            raise ValueError(f"site {s.name!r} ({s.hook_name(layer)}) only runs with model.cfg.{s.opt_in} = True; set it (costs memory) or steer 'attn.z'")
        heads = self.heads
        if s.is_head:
            if heads is None and sv is not None and sv.head is not None:
                heads = [sv.head]
            for h in heads or []:
                if not 0 <= h < cfg.n_heads:
                    raise ValueError(f"head {h} out of range: the model has {cfg.n_heads} heads (0..{cfg.n_heads - 1})")
        elif heads is not None:
            head_sites = sorted(n for n, x in SITES.items() if x.is_head and x.is_vector)
            raise ValueError(f"heads= only applies to head sites ({head_sites}), not {s.name!r}")
        return s, layer, heads

    def resolve(self, model: "HookedMusicGen", *, n_frames: int | None = None, check_hash: bool = True) -> "Plan":
        """Every model-dependent check; returns what the hook needs."""
        self.validate()
        cfg, pattern = model.cfg, model.pattern
        sv = self.vector if isinstance(self.vector, SteeringVector) else None
        s, layer, heads = self._where(model)
        name, width = s.hook_name(layer), s.width(cfg)
        vec = sv.vector if sv is not None else self.vector.detach()
        if not vec.dtype.is_floating_point:
            vec = vec.float()
        if vec.shape[0] != width:
            raise ValueError(
                f"vector has size {vec.shape[0]} but site {s.name!r} ({name}) needs {s.width_axis}={width}"
                + (f" (concept {sv.concept!r}, made at {sv.site}@{sv.layer})" if sv is not None else "")
            )
        if not torch.isfinite(vec).all():
            raise ValueError("the steering vector contains NaN or inf")
        if self.monitor is not None and self.monitor.d != width:
            raise ValueError(f"the monitor's probe has width {self.monitor.d} but site {s.name!r} ({name}) needs {s.width_axis}={width}")
        if check_hash and sv is not None:
            check_model(model, sv.model_hash, sv.weights_hash, f"steering vector {sv.concept!r}")
        if self.mode != "add" and float(vec.float().norm()) == 0.0:
            raise ValueError(f"mode {self.mode!r} needs a direction, but the vector is zero")
        f0, f1 = self.window_frames(pattern)
        longest = pattern.max_frames(cfg.n_ctx)  # frames the model can generate at most
        limit, what = (n_frames, f"the generation ({n_frames} frames = {n_frames / pattern.frame_rate:g} s)") if n_frames is not None else (
            longest,
            f"the longest audio the model can generate ({longest} frames = {longest / pattern.frame_rate:g} s)",
        )
        if f0 is not None and f0 >= limit:
            raise ValueError(f"window start {self.start} s (frame {f0}) is beyond the end of {what}: the intervention would never fire")
        if f1 is not None and f0 is not None and f1 <= f0:
            raise ValueError(f"window [{self.start}, {self.end}) s contains no frame at {pattern.frame_rate} frames/s")
        if f1 is not None and f1 <= 0:
            raise ValueError(f"window end {self.end} s is before the first frame")
        p_lo = 0 if f0 is None else pattern.position_of(f0)
        p_hi = None if f1 is None else pattern.position_of(f1)
        return Plan(self, name, s, layer, heads, vec, p_lo, p_hi, model.device, cfg.dtype)


@dataclass
class Plan:
    """A resolved intervention: hook name, vector, window in absolute positions [p_lo, p_hi), and
    for count="calls" its place (`slot`, 1-based) among the `shared` hooks of one call counter."""

    iv: Intervention
    name: str
    site: Site
    layer: int
    heads: list[int] | None
    vector: torch.Tensor
    p_lo: int
    p_hi: int | None
    device: torch.device
    dtype: torch.dtype
    slot: int = 1
    shared: int = 1

    def fires(self, step: int) -> bool:
        """Whether the intervention fires at generation step `step` (the module docstring)."""
        return self.periodic(step) and self.iv.gate(step)

    def periodic(self, step: int) -> bool:
        """`fires` without the stochastic gate (every / offset / count only)."""
        iv = self.iv
        if iv.count == "calls":
            return ((step + iv.prefill_calls) * self.shared + self.slot) % iv.every == iv.offset
        if step < iv.offset:
            return False
        return iv.every is None or (step - iv.offset) % iv.every == 0

    @property
    def period(self) -> int:
        """Steps between firings once it has fired."""
        iv = self.iv
        if iv.every is None:
            return 1
        return iv.every // math.gcd(self.shared, iv.every) if iv.count == "calls" else iv.every

    def first_firing(self, lo: int, hi: int) -> int | None:
        """The first step in [lo, hi) at which it fires periodically (then every `period` steps), or
        None; the stochastic gate is applied on top (`fires`)."""
        if self.iv.count == "steps":
            lo = max(lo, self.iv.offset)
        return next((s for s in range(lo, min(hi, lo + self.period)) if self.periodic(s)), None)


def share_call_counters(plans: Sequence[Plan]) -> list[Plan]:
    """count="calls" plans share one counter: number them in forward order (layer, site in block)."""
    calls = sorted((i for i, p in enumerate(plans) if p.iv.count == "calls"), key=lambda i: (plans[i].layer, _SITE_ORDER[plans[i].site.name], i))
    out = list(plans)
    for slot, i in enumerate(calls, start=1):
        out[i] = dataclasses.replace(plans[i], slot=slot, shared=len(calls))
    return out


def as_list(interventions: Intervention | Sequence[Intervention]) -> list[Intervention]:
    if isinstance(interventions, Intervention):
        return [interventions]
    items = list(interventions)
    for i, iv in enumerate(items):
        if not isinstance(iv, Intervention):
            raise TypeError(f"interventions[{i}] must be an Intervention, got {type(iv).__name__}")
    return items
