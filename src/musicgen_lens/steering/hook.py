"""`SteeringHook`: the forward hook of one resolved `Intervention` (its `Plan`).

Modes (v the vector, v̂ = v / ‖v‖, a the alpha of this step, h one position's activation; on
head sites h is one head's vector at one position, so ‖h‖ is per head):

    add            h + a·v                         (v's norm matters: music-mechint's scaled diff-of-means)
    norm_relative  (h + ‖h‖·a·v̂) / (1 + a)         (the paper's code; ‖h‖ per position)
    clamp          h + (a − h·v̂)·v̂                 (the component along v̂ set to a)
    ablate         h − (h·v̂)·v̂                     (the component along v̂ removed; alpha is ignored)

Options of the Intervention applied here (formulas in `steering.intervention` and
`steering.monitor`):

    inject_chance < 1   a step (a position, in a plain forward) that would fire fires only if
                        gate_uniform(seed, step) < inject_chance (decided from Python ints)
    monitor             a = a_sched(k)·clip((target − r(h)) / margin, 0, 1), r(h) the probe's reading
                        of the unmodified activation, per position (per head on head sites)

Vectors are detached (no gradient flows into them); gradients do flow through the steered
activations, so attribution through a steered forward works.

Hot path: the vector is moved to the activation's device/dtype once (cached), the window and
firing are decided from Python ints (ctx.start/length/step), rows are selected with
`torch.where` on a cached [batch] mask, and nothing calls `.item()` or branches on tensor
values, so a generation step never waits on the device.
"""

from __future__ import annotations

from typing import Any

import torch

from musicgen_lens.steering.intervention import Plan

__all__ = ["SteeringHook"]


class SteeringHook:
    """The forward hook of one Intervention (callable as fn(activation, hook)).

    With `record=True` every firing appends a dict to `.log`: step (None in a plain forward),
    start (ctx.start), positions (first, stop, stride: absolute positions steered), alpha (a
    float, or a list per position), rows (branch).
    """

    def __init__(self, plan: Plan, record: bool = False):
        self.plan = plan
        self.intervention = plan.iv
        self.hook_name = plan.name
        iv = plan.iv
        self.mode, self.branch = iv.mode, iv.branch
        self.constant = iv.schedule == "constant"
        self.alpha = iv.alpha
        # absolute positions of the window: [p_lo, p_hi)
        self.p_lo, self.p_hi = plan.p_lo, plan.p_hi
        self.p_open = self.p_lo
        heads = plan.heads
        self.head_index: Any = ()
        self._head_cache: dict[Any, Any] = {}
        if heads is not None:
            hs = sorted(heads)
            if hs == list(range(hs[0], hs[-1] + 1)):
                self.head_index = (slice(hs[0], hs[-1] + 1),)
            else:
                self.head_index = None  # a tensor index, built per device
                self._heads = hs
        self.record = record
        self.log: list[dict[str, Any]] = []
        self._vec_cache: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}
        self._rows_key: Any = None
        self._rows_mask: torch.Tensor | None = None
        self.gated = iv.inject_chance < 1.0
        self.monitor = iv.monitor
        self._vectors(plan.device, plan.dtype)  # precompute for the model's device/dtype

    def __repr__(self) -> str:  # TransformerLens names the torch hook with this; keep it cheap
        return f"SteeringHook({self.hook_name}, mode={self.mode}, alpha={self.alpha})"

    def _vectors(self, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        key = (device, dtype)
        cached = self._vec_cache.get(key)
        if cached is None:
            v = self.plan.vector.to(device=device, dtype=torch.float32)
            n = v.norm()
            unit = v / n if self.mode != "add" else v
            cached = (v.to(dtype), unit.to(dtype))
            self._vec_cache[key] = cached
        return cached

    def _heads_for(self, device: torch.device) -> tuple[Any, ...]:
        if self.head_index is not None:
            return self.head_index
        idx = self._head_cache.get(device)
        if idx is None:
            idx = self._head_cache[device] = torch.tensor(self._heads, device=device)
        return (idx,)

    def _rows(self, ctx: Any, ndim: int) -> torch.Tensor | None | bool:
        """[batch, 1, ...] bool mask of the rows to steer; None = all rows; False = no rows."""
        uncond = ctx.uncond
        if self.branch == "both":
            return None
        if uncond is None:  # no CFG information: every row is conditional
            return None if self.branch == "cond" else False
        if self._rows_key is not uncond or self._rows_mask.ndim != ndim:
            mask = ~uncond if self.branch == "cond" else uncond
            self._rows_key, self._rows_mask = uncond, mask.reshape(-1, *([1] * (ndim - 1)))
        return self._rows_mask

    def _transform(self, h: torch.Tensor, alpha: float | torch.Tensor, v: torch.Tensor, unit: torch.Tensor) -> torch.Tensor:
        low = h.dtype in (torch.float16, torch.bfloat16)
        x = h.float() if low else h
        if low:
            v, unit = v.float(), unit.float()
        mode = self.mode
        if mode == "add":
            out = x + alpha * v
        elif mode == "norm_relative":
            out = (x + x.norm(dim=-1, keepdim=True) * alpha * unit) / (1 + alpha)
        elif mode == "clamp":
            out = x + (alpha - (x * unit).sum(-1, keepdim=True)) * unit
        else:  # ablate
            out = x - (x * unit).sum(-1, keepdim=True) * unit
        return out.to(h.dtype) if low else out

    def __call__(self, act: torch.Tensor, hook: Any) -> torch.Tensor | None:
        ctx = hook.ctx
        s, length = ctx.start, act.shape[1]
        if length != ctx.length:
            raise RuntimeError(
                f"{self.hook_name}: hook.ctx says {ctx.length} positions but the activation has {length}; steering needs "
                "model(...), run_with_cache/run_with_hooks or model.generate, which keep hook.ctx up to date"
            )
        i0 = max(self.p_lo - s, 0)
        i1 = length if self.p_hi is None else min(self.p_hi - s, length)
        if i0 >= i1:
            return None
        stride = 1
        if ctx.generating:
            step = ctx.step
            if not self.plan.fires(step):
                return None
            j0 = i0
        else:  # a plain forward: position p counts as step p
            step = None
            first = self.plan.first_firing(s + i0, s + i1)
            if first is None:
                return None
            j0, stride = first - s, self.plan.period
        rows = self._rows(ctx, act.ndim)
        if rows is False:
            return None
        n = len(range(j0, i1, stride))
        gate = None
        if self.gated and step is None:  # plain forward: gate each position (= step) from Python ints
            gates = [self.intervention.gate(p) for p in range(s + j0, s + i1, stride)]
            if not any(gates):
                return None
            if not all(gates):
                gate = torch.tensor(gates, device=act.device).view((1, n) + (1,) * (act.ndim - 2))
        k0 = s + j0 - self.p_open
        shape = (1, n) + (1,) * (act.ndim - 2)
        if self.constant:
            alpha: float | torch.Tensor = self.alpha
        elif n == 1:
            alpha = self.intervention.alpha_at(k0)
        else:
            k = torch.arange(k0, k0 + n * stride, stride, device=act.device, dtype=torch.float64)
            alpha = self.intervention._alpha_tensor(k).to(torch.float32 if act.dtype in (torch.float16, torch.bfloat16) else act.dtype).view(shape)
        v, unit = self._vectors(act.device, act.dtype)
        heads = self._heads_for(act.device) if self.plan.heads is not None else ()
        full = j0 == 0 and i1 == length and stride == 1 and not heads
        index = (slice(None), slice(j0, i1, stride)) + heads
        seg = act if full else act[index]
        strength = None
        if self.monitor is not None:  # the probe reads the activation before it is modified
            strength = self.monitor.strength(seg)
            alpha = alpha * strength
        new = self._transform(seg, alpha, v, unit)
        if gate is not None:
            new = torch.where(gate, new, seg)
        if rows is not None:
            new = torch.where(rows, new, seg)
        if self.record:
            a = alpha if isinstance(alpha, float) else alpha.flatten().tolist()
            entry = {"step": step, "start": s, "positions": (s + j0, s + i1, stride), "alpha": a, "rows": self.branch}
            if gate is not None:
                entry["gate"] = gate.flatten().tolist()
            if strength is not None:
                entry["strength"] = strength.detach().float().cpu()
            self.log.append(entry)
        if full:
            return new
        out = act.clone()
        out[index] = new
        return out
