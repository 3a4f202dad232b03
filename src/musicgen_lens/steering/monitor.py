"""`ProbeMonitor`: a linear probe read live during steering (SMITIN, arXiv 2404.02252).

SMITIN steers the attention heads whose probes detect a concept, and *monitors* the concept
while generating: it stops pushing once the probe says the concept is there. Here the monitor
is an option of `Intervention` (`monitor=ProbeMonitor(...)`): at every position (and head, on
head sites) where the intervention fires, the probe reads the activation h *before* the hook
modifies it, and the strength of that position is

    reading   r = w·h + b                    (l2=True: r = w·h / ‖h‖ + b, the paper's L2-normalised rows)
    alpha_t   = alpha_sched(k) · clip((target − r) / margin, 0, 1)

so alpha_t = 0 where the probe already reads r >= target (nothing is added: with mode "add"
h + 0·v == h bit for bit; norm_relative with alpha 0 is h too), alpha_t = alpha_sched(k) where
it reads r <= target − margin, and linear in between. `margin` > 0 is in the probe's units
(a logit for a logistic probe). The reading is computed on the device with tensor ops: no host
sync on the hot path.

`ProbeMonitor.from_probe(LinearProbe)` folds the probe's normalisation into (w, b) so that r is
exactly `probe.decision_function(h)` (for the positive class; `target_class=classes_[0]` negates
it), or the regression prediction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["ProbeMonitor", "monitored_strength"]


@dataclass(eq=False)
class ProbeMonitor:
    """A linear read-out r = w·h + b (or w·h/‖h‖ + b) and the rule that turns it into a strength.

    weight  [d] the probe's weights in the activation space of the steered site (d_head per head
            for attn.z: every steered head is read with the same weights).
    bias    the probe's intercept.
    target  the reading at which steering stops (default 0: the decision boundary).
    margin  the width of the ramp below target over which the strength grows from 0 to 1.
    l2      read w·h/‖h‖ (rows L2-normalised, as the paper's probes are trained).
    """

    weight: torch.Tensor
    bias: float = 0.0
    target: float = 0.0
    margin: float = 1.0
    l2: bool = False

    def __post_init__(self) -> None:
        w = torch.as_tensor(self.weight).detach()
        if w.ndim != 1 or w.numel() == 0:
            raise ValueError(f"ProbeMonitor.weight must be a vector [d], got shape {tuple(w.shape)}")
        w = w.float() if not w.dtype.is_floating_point else w
        if not torch.isfinite(w).all():
            raise ValueError("ProbeMonitor.weight contains NaN or inf")
        self.weight = w
        for name in ("bias", "target", "margin"):
            value = float(getattr(self, name))
            if not math.isfinite(value):
                raise ValueError(f"ProbeMonitor.{name} must be finite, got {value}")
            setattr(self, name, value)
        if not self.margin > 0:
            raise ValueError(f"ProbeMonitor.margin must be > 0, got {self.margin}")
        self._cache: dict[Any, torch.Tensor] = {}

    @property
    def d(self) -> int:
        return self.weight.shape[0]

    def _w(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        key = (device, dtype)
        w = self._cache.get(key)
        if w is None:
            w = self._cache[key] = self.weight.to(device=device, dtype=dtype)
        return w

    def read(self, h: torch.Tensor) -> torch.Tensor:
        """The probe's reading of every vector of h [..., d] -> [..., 1] (float32 at least)."""
        x = h.float() if h.dtype in (torch.float16, torch.bfloat16) else h
        r = (x * self._w(x.device, x.dtype)).sum(-1, keepdim=True)
        if self.l2:
            r = r / x.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
        return r + self.bias

    def strength(self, h: torch.Tensor) -> torch.Tensor:
        """clip((target − read(h)) / margin, 0, 1): [..., 1], 0 where the probe reads >= target."""
        return monitored_strength(self.read(h), self.target, self.margin)

    @classmethod
    def from_probe(cls, probe: Any, target_class: Any = None, *, target: float = 0.0, margin: float = 1.0) -> "ProbeMonitor":
        """From a fitted `musicgen_lens.probes.LinearProbe` (binary classification or a
        single-target regression): read(h) equals its decision function / prediction on h."""
        W = np.asarray(probe.coef_, dtype=np.float64)
        b = np.asarray(probe.intercept_, dtype=np.float64).reshape(-1)
        if W.shape[0] != 1:
            raise ValueError(f"ProbeMonitor needs a probe with one output (binary classification or one regression target), got {W.shape[0]}")
        w, bias = W[0], float(b[0])
        if getattr(probe, "task", None) == "classification" and target_class is not None:
            classes = list(probe.classes_.tolist())
            if target_class not in classes:
                raise ValueError(f"target_class {target_class!r} is not one of the probe's classes {classes}")
            if classes.index(target_class) == 0:
                w, bias = -w, -bias
        normalize = getattr(probe, "normalize", None)
        if normalize == "standardize":
            w_raw = w / probe.scale_
            bias = bias - float(w_raw @ probe.mean_)
            w = w_raw
        return cls(torch.from_numpy(np.asarray(w, dtype=np.float64)), bias=bias, target=target, margin=margin, l2=normalize == "l2")


def monitored_strength(reading: torch.Tensor, target: float, margin: float) -> torch.Tensor:
    """clip((target − reading) / margin, 0, 1), elementwise."""
    return ((target - reading) / margin).clamp(0.0, 1.0)
