"""Per-head probes, head rankings and top-k (monitored) head steering (SMITIN, arXiv 2404.02252).

SMITIN ("Self-Monitored Inference-Time INtervention") trains one linear probe per self-attention
head on the head's output, ranks the heads by the probe's held-out accuracy, and steers only the
top-k heads, each along its own probe direction; while generating it watches the probe and
stops steering once the concept is detected. Here:

- `fit_head_probes(activations, labels)` fits one `LinearProbe` per (layer, head) on
  per-head activations ``attn.z`` ([n, heads, d_head]) or ``attn.result`` ([n, heads, d_model]),
  from an `ActivationStore` (``store[hook]`` memory-mapped arrays, labels by name) or a mapping
  hook -> array (e.g. a ``run_with_cache`` cache: [batch, pos, heads, d] rows are flattened, the
  labels given per row or per batch item). Each probe is scored on a seeded held-out split
  (accuracy, or R² for regression). It returns a `HeadProbes`: `.table` (one row per head:
  hook, site, layer, head, score, metric, std), `.rank(k)`, `.probes[(layer, head)]`.
- `rank_heads(...)` is the sorted table ((layer, head, score) first).
- `HeadProbes.interventions(k, alpha, monitored=True)` returns one `Intervention` per top-k head,
  on that head only (``heads=[h]``), mode "add", along the unit probe direction scaled by the
  standard deviation of the head's activations along it (SMITIN / ITI scale the push in units of
  that spread; ``scale="unit"`` does not) and, with ``monitored=True``, a `ProbeMonitor` of the
  same probe: alpha_t = alpha·clip((target − reading)/margin, 0, 1), the reading taken on the
  head's own activation before the hook modifies it (`steering.monitor`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from musicgen_lens.hooks import parse_hook_name
from musicgen_lens.probes import LinearProbe

if TYPE_CHECKING:
    from musicgen_lens.model import HookedMusicGen
    from musicgen_lens.steering import Intervention, SteeringVector

__all__ = ["HeadProbes", "fit_head_probes", "rank_heads"]


def _head_arrays(activations: Any, hooks: Sequence[str] | None) -> list[tuple[str, Any]]:
    if isinstance(activations, Mapping):
        names = list(activations.keys())
    elif hasattr(activations, "hooks") and hasattr(activations, "__getitem__"):
        names = list(activations.hooks() if callable(activations.hooks) else activations.hooks)
    else:
        raise TypeError(f"activations must be a mapping hook -> array or an ActivationStore, got {type(activations).__name__}")
    if hooks is None:
        hooks = [h for h in names if h.startswith("blocks.") and parse_hook_name(h)[0].is_head]
    else:
        hooks = [hooks] if isinstance(hooks, str) else list(hooks)
        missing = [h for h in hooks if h not in names]
        if missing:
            raise ValueError(f"hooks {missing} are not in the activations ({names[:8]}...)")
    if not hooks:
        raise ValueError("no per-head hooks (attn.z / attn.result) in the activations")
    out = []
    for h in hooks:
        s, layer = parse_hook_name(h)
        if not s.is_head or layer is None:
            raise ValueError(f"{h!r} is not a per-head site ([.., heads, d]): use attn.z or attn.result")
        out.append((h, activations[h]))
    return out


@dataclass
class HeadProbes:
    """One probe per (layer, head); see the module docstring."""

    table: list[dict[str, Any]]
    probes: dict[tuple[str, int], LinearProbe]
    task: str
    metric: str
    probe_kwargs: dict[str, Any] = field(default_factory=dict)

    def rank(self, k: int | None = None) -> list[dict[str, Any]]:
        """The table sorted by score (best first; ties: lower layer, lower head)."""
        rows = sorted(self.table, key=lambda r: (-r["score"], r["layer"], r["head"]))
        return rows if k is None else rows[:k]

    def probe(self, layer: int, head: int, site: str | None = None) -> LinearProbe:
        matches = [r for r in self.table if r["layer"] == layer and r["head"] == head and (site is None or r["site"] == site)]
        if not matches:
            raise KeyError(f"no probe for layer {layer}, head {head}" + (f" at {site}" if site else ""))
        return self.probes[(matches[0]["hook"], head)]

    def vector(self, row: Mapping[str, Any], target: Any = None, *, scale: str = "std", concept: str | None = None,
               model: "HookedMusicGen | None" = None) -> "SteeringVector":
        """The head's probe direction as a SteeringVector (site, layer, head set; unit norm, or
        times the spread of the head's activations along it with scale="std")."""
        from musicgen_lens.steering import SteeringVector

        probe = self.probes[(row["hook"], row["head"])]
        sv = SteeringVector.from_probe(probe, target, site=row["site"], layer=row["layer"], head=row["head"], concept=concept, model=model,
                                       metadata={"head_score": row["score"], "metric": self.metric, "std": row["std"]})
        if scale == "std":
            return sv * float(row["std"])
        if scale != "unit":
            raise ValueError(f"scale must be 'std' or 'unit', got {scale!r}")
        return sv

    def interventions(
        self, k: int = 4, alpha: float = 5.0, target: Any = None, *, monitored: bool = True, margin: float = 1.0,
        monitor_target: float = 0.0, scale: str = "std", concept: str | None = None, model: "HookedMusicGen | None" = None,
        **intervention_kwargs: Any,
    ) -> "list[Intervention]":
        """One Intervention per top-k head (mode "add", heads=[h]), monitored by the head's own probe
        unless monitored=False. Other keyword arguments are Intervention options (start, every, ...)."""
        from musicgen_lens.steering import Intervention, ProbeMonitor

        out = []
        for row in self.rank(k):
            sv = self.vector(row, target, scale=scale, concept=concept, model=model)
            monitor = None
            if monitored:
                monitor = ProbeMonitor.from_probe(self.probes[(row["hook"], row["head"])], target_class=target, target=monitor_target, margin=margin)
            kw = {"mode": "add", **intervention_kwargs}
            out.append(Intervention(sv, alpha=alpha, heads=[row["head"]], monitor=monitor, **kw))
        return out


def fit_head_probes(
    activations: Any,
    labels: Any,
    hooks: Sequence[str] | str | None = None,
    *,
    task: str = "classification",
    probe_kwargs: Mapping[str, Any] | None = None,
    test_size: float = 0.25,
    seed: int = 0,
) -> HeadProbes:
    """Fit and score one LinearProbe per head of each per-head hook (module docstring).

    labels: [n] (or a label name with a store). probe_kwargs go to LinearProbe (normalize, C, ...).
    """
    probe_kwargs = dict(probe_kwargs or {})
    arrays = _head_arrays(activations, hooks)
    if isinstance(labels, str):
        if not hasattr(activations, "labels"):
            raise ValueError(f"labels={labels!r} is a name, which needs an ActivationStore; pass the label array")
        labels = activations.labels(labels)
    y = np.asarray(labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else labels)
    if not 0 < test_size < 1:
        raise ValueError(f"test_size must be in (0, 1), got {test_size}")
    table, probes = [], {}
    perm = None
    for hook, A in arrays:
        A = A.detach().cpu().double().numpy() if isinstance(A, torch.Tensor) else np.asarray(A)
        if A.ndim == 4:  # [batch, pos, heads, d] from a cache
            b, p = A.shape[:2]
            A = A.reshape(b * p, *A.shape[2:])
            yy = np.repeat(y, p) if len(y) == b else y
        else:
            yy = y
        if A.ndim != 3:
            raise ValueError(f"{hook}: expected [n, heads, d] (or [batch, pos, heads, d]), got shape {A.shape}")
        n = A.shape[0]
        if len(yy) != n:
            raise ValueError(f"{hook}: {n} rows but {len(yy)} labels")
        if perm is None or len(perm) != n:
            perm = np.random.default_rng(seed).permutation(n)
        n_test = max(1, int(round(n * test_size)))
        test, train = perm[:n_test], perm[n_test:]
        s, layer = parse_hook_name(hook)
        for h in range(A.shape[1]):
            X = np.asarray(A[:, h, :], dtype=np.float64)
            probe = LinearProbe(task=task, **probe_kwargs).fit(X[train], yy[train])
            score = probe.score(X[test], yy[test])
            direction = probe.direction(None if task == "regression" or len(getattr(probe, "classes_", [])) <= 2 else probe.classes_[-1]).double().numpy()
            std = float(np.std(X[train] @ direction))
            probes[(hook, h)] = probe
            table.append({"hook": hook, "site": s.name, "layer": layer, "head": h, "score": float(score),
                          "metric": "accuracy" if task == "classification" else "r2", "std": std, "n_train": len(train), "n_test": n_test})
    return HeadProbes(table, probes, task, "accuracy" if task == "classification" else "r2", probe_kwargs)


def rank_heads(activations: Any, labels: Any, hooks: Sequence[str] | str | None = None, k: int | None = None, **kwargs: Any) -> list[dict[str, Any]]:
    """`fit_head_probes(...).rank(k)`: rows (layer, head, score, hook, site, ...) best first."""
    return fit_head_probes(activations, labels, hooks, **kwargs).rank(k)
