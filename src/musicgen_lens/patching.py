"""Activation patching, attribution patching and path patching for MusicGen.

Two runs of the decoder, *clean* and *corrupted* (different codes, different text, or both),
and a metric of the logits. Activation patching copies one activation from one run into the
other and reports the metric of the patched run:

- ``direction="denoise"`` (default, as in TransformerLens): run the corrupted input and patch in
  clean activations ("which activations are sufficient to restore the clean behaviour?");
- ``direction="noise"``: run the clean input and patch in corrupted activations ("which
  activations are necessary?").

Sweeps (each returns a :class:`PatchResult`: a tensor with named, labelled axes and a heatmap):

===========================  ================================================  =================
function                     cells                                             axes
===========================  ================================================  =================
:func:`patch_resid`          ``blocks.{l}.hook_{site}`` at one position        layer, pos
                             (or a time window, or all positions)              layer, window
:func:`patch_windows`        the same over windows in seconds                  layer, window
:func:`patch_heads`          one head's z/q/k/v/pattern/result of self- or     layer, head
                             cross-attention (all positions or per position)   (+ pos)
:func:`patch_codebooks`      one codebook's slice of ``hook_codebook_embed``   codebook (+ pos)
:func:`patch_conditioning`   ``hook_cond`` (the whole text) or one layer's     () or layer
                             ``hook_cross_attn_out``
:func:`patch_site`           any of the above by site name
:func:`path_patch`           sender -> receivers only, all else frozen         () / sender / ...
:func:`attribution_patch`    first-order estimate of every cell at once        as above
===========================  ================================================  =================

Implementation: our own batched loop. Each forward pass runs ``chunk_size`` patched copies of
the batch side by side (batch ``chunk_size * batch``), so a 24-layer x 1500-position sweep costs
about ``24 * 1500 / chunk_size`` forward passes, and ``chunk_size`` bounds the memory. Only the
hooks a sweep patches are cached from the source run (``names_filter``), nothing else.

TransformerLens: ``patch_resid`` and ``patch_heads(which="attn")`` accept
``backend="transformer_lens"``; they then simply call ``transformer_lens.patching``
(``generic_activation_patch`` / ``get_act_patch_attn_head_*``) inside
``model.conditioning(target_cond)`` and wrap its tensor in a :class:`PatchResult` with the same
layout as the default backend (one unbatched forward per cell, every position and every layer).
Cross-attention heads, time windows, codebooks, the text conditioning, position subsets,
activation-reading metrics (:func:`probe_score`) and path patching are not expressible in
``transformer_lens.patching`` (it maps q/k/v/z/pattern to ``.attn.`` only and cannot pass a
conditioning) and always use our loop. The two backends agree to float rounding (tested).

Conditionings of different text lengths are right-padded to a common length (padding is
masked, so outputs are unchanged) so that cross-attention k/v/pattern and ``hook_cond`` line up.
The model must be in eval mode (``model.eval()``), as for TransformerLens.
"""

from __future__ import annotations

import difflib
import itertools
import math
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from tqdm.auto import tqdm

from musicgen_lens.conditioning import Conditioning

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from musicgen_lens.model import HookedMusicGen

__all__ = [
    "AttributionCheck",
    "PatchResult",
    "RESID_SITES",
    "HEAD_ACTS",
    "attribution_patch",
    "check_attribution",
    "code_logprob",
    "kl_to",
    "logit_diff",
    "patch_codebooks",
    "patch_conditioning",
    "patch_heads",
    "patch_resid",
    "patch_site",
    "patch_windows",
    "path_patch",
    "position_seconds",
    "probe_score",
]

RESID_SITES = ("resid_pre", "resid_mid", "resid_mid_cross", "resid_post", "attn_out", "cross_attn_out", "mlp_out")
HEAD_ACTS = ("z", "q", "k", "v", "pattern", "result")
_WHICH = ("attn", "cross_attn")
_DIRECTIONS = ("denoise", "noise")
_POS_AXES = ("pos", "window", "text_pos")

CondLike = "Conditioning | Sequence[str] | str | None"
Direction = Literal["denoise", "noise"]
Window = tuple[float, float]


# ============================================================================ result type


@dataclass(eq=False)
class PatchResult:
    """Patching results: ``values`` with one named axis per swept dimension.

    ``axes`` name the dimensions (``"layer"``, ``"pos"``, ``"window"``, ``"head"``,
    ``"codebook"``, ``"text_pos"``, ``"sender"``) and ``labels[axis]`` lists what each index is
    (layer numbers, positions, ``(t0, t1)`` windows in seconds, ...).

    ``quantity`` says what the values are: ``"metric"`` (the metric of the patched run),
    ``"change"`` (patched minus unpatched run; attribution patching returns this) or
    ``"normalized"`` (``(patched - corrupted) / (clean - corrupted)``: 0 = the corrupted metric,
    1 = the clean metric, whatever the direction). ``clean_metric`` / ``corrupted_metric`` are the
    metrics of the two unpatched runs.
    """

    values: torch.Tensor
    axes: tuple[str, ...]
    labels: dict[str, list] = field(default_factory=dict)
    clean_metric: float | None = None
    corrupted_metric: float | None = None
    direction: str = "denoise"
    quantity: str = "metric"
    site: str = ""
    metric_name: str = "metric"

    def __post_init__(self) -> None:
        self.values = torch.as_tensor(self.values).detach()
        self.axes = tuple(self.axes)
        if self.values.ndim != len(self.axes):
            raise ValueError(f"values have {self.values.ndim} dims but axes are {self.axes}")
        labels = dict(self.labels)
        for axis, n in zip(self.axes, self.values.shape):
            labels.setdefault(axis, list(range(n)))
            if len(labels[axis]) != n:
                raise ValueError(f"axis {axis!r} has {n} entries but {len(labels[axis])} labels")
        self.labels = labels

    # ------------------------------------------------------------------ basics
    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.values.shape)

    @property
    def baseline(self) -> float | None:
        """The metric of the run being patched, unpatched (corrupted when denoising, clean when noising)."""
        return self.corrupted_metric if self.direction == "denoise" else self.clean_metric

    def to_numpy(self) -> np.ndarray:
        return self.values.detach().float().cpu().numpy()

    def item(self) -> float:
        return float(self.values.item())

    def __float__(self) -> float:
        return self.item()

    def __repr__(self) -> str:
        dims = ", ".join(f"{a}={n}" for a, n in zip(self.axes, self.shape))
        return (
            f"PatchResult({self.site or 'patch'}, {self.direction}, {self.quantity}, [{dims}], "
            f"clean={self.clean_metric}, corrupted={self.corrupted_metric})"
        )

    def _replace(self, values: torch.Tensor, quantity: str) -> "PatchResult":
        return PatchResult(
            values, self.axes, dict(self.labels), self.clean_metric, self.corrupted_metric, self.direction, quantity, self.site, self.metric_name
        )

    def normalized(self) -> "PatchResult":
        """``(patched - corrupted) / (clean - corrupted)`` (TransformerLens tutorials' recovery score)."""
        if self.quantity == "normalized":
            return self
        if self.clean_metric is None or self.corrupted_metric is None:
            raise ValueError("normalized() needs clean_metric and corrupted_metric")
        patched = self.values.double()
        if self.quantity == "change":
            patched = patched + self.baseline
        scale = self.clean_metric - self.corrupted_metric
        if scale == 0:
            warnings.warn("clean and corrupted metrics are equal: normalized values are inf/nan", stacklevel=2)
        values = (patched - self.corrupted_metric) / scale
        return self._replace(values.to(self.values.dtype), "normalized")

    def effect(self) -> "PatchResult":
        """Patched minus unpatched metric of the patched run."""
        if self.quantity == "change":
            return self
        if self.quantity != "metric" or self.baseline is None:
            raise ValueError("effect() needs quantity='metric' and the unpatched metrics")
        return self._replace(self.values - self.baseline, "change")

    def to_dataframe(self) -> Any:
        """Long form (pandas): one row per cell with its labels and value."""
        import pandas as pd

        rows = []
        flat = self.values.detach().cpu().reshape(-1).tolist()
        for labels, value in zip(itertools.product(*(self.labels[a] for a in self.axes)), flat):
            rows.append({**dict(zip(self.axes, labels)), "value": value})
        return pd.DataFrame(rows, columns=[*self.axes, "value"])

    # ------------------------------------------------------------------ plotting
    @staticmethod
    def _fmt(axis: str, label: Any) -> str:
        if axis == "window" and isinstance(label, (tuple, list)) and len(label) == 2:
            return f"[{label[0]:g}, {label[1]:g}) s"
        return str(label)

    def _as_2d(self) -> tuple[np.ndarray, list[str], list[str], str, str]:
        data = self.to_numpy()
        axes = list(self.axes)
        if data.ndim == 0:
            return data.reshape(1, 1), [""], [self.site or "value"], "", ""
        if data.ndim == 1:
            return data.reshape(1, -1), [""], [self._fmt(axes[0], l) for l in self.labels[axes[0]]], "", axes[0]
        # put a position-like axis (else the last) on x, merge all others into rows
        col = next((a for a in reversed(axes) if a in _POS_AXES), axes[-1])
        rows_axes = [a for a in axes if a != col]
        order = [axes.index(a) for a in rows_axes] + [axes.index(col)]
        data = np.transpose(data, order).reshape(-1, data.shape[axes.index(col)])
        short = {"layer": "L", "head": "H", "codebook": "K", "pos": "P", "window": "W", "sender": "", "text_pos": "T"}
        row_labels = [
            "".join(f"{short.get(a, a[:1].upper())}{self._fmt(a, l)}" for a, l in zip(rows_axes, combo))
            for combo in itertools.product(*(self.labels[a] for a in rows_axes))
        ]
        col_labels = [self._fmt(col, l) for l in self.labels[col]]
        return data, row_labels, col_labels, " x ".join(rows_axes), col

    def plot(
        self,
        ax: "Axes | None" = None,
        title: str | None = None,
        cmap: str = "RdBu_r",
        center: float | None = None,
        max_ticks: int = 40,
    ) -> "Figure":
        """A heatmap (rows: all axes but the position-like one; columns: that one). Returns the Figure.

        Colours are centred on ``center`` (default: the unpatched metric for ``quantity="metric"``,
        else 0), so red means the patch raised the metric. Uses ``matplotlib.figure.Figure``
        directly when ``ax`` is None, so it works without a display (Agg) and leaves pyplot alone.
        """
        from matplotlib.colors import CenteredNorm
        from matplotlib.figure import Figure

        data, row_labels, col_labels, ylabel, xlabel = self._as_2d()
        if ax is None:
            width = min(14.0, 3.0 + 0.25 * max(len(col_labels), 8))
            height = min(10.0, 2.0 + 0.3 * max(len(row_labels), 2))
            fig = Figure(figsize=(width, height), layout="constrained")
            ax = fig.add_subplot()
        else:
            fig = ax.figure
        if center is None:
            center = self.baseline if self.quantity == "metric" and self.baseline is not None else 0.0
        finite = data[np.isfinite(data)]
        span = float(np.abs(finite - center).max()) if finite.size else 1.0
        norm = CenteredNorm(vcenter=center, halfrange=span if span > 0 else 1.0)
        image = ax.imshow(data, cmap=cmap, norm=norm, aspect="auto", interpolation="nearest")
        fig.colorbar(image, ax=ax, label=f"{self.metric_name} ({self.quantity})")

        def ticks(n: int, labels: list[str]) -> tuple[list[int], list[str]]:
            step = max(1, math.ceil(n / max_ticks))
            idx = list(range(0, n, step))
            return idx, [labels[i] for i in idx]

        xt, xl = ticks(data.shape[1], col_labels)
        ax.set_xticks(xt, xl, rotation=90 if any(len(s) > 3 for s in xl) else 0, fontsize=8)
        yt, yl = ticks(data.shape[0], row_labels)
        ax.set_yticks(yt, yl, fontsize=8)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title if title is not None else f"{self.site} patching ({self.direction})")
        return fig


# ============================================================================ metrics


def _metric_hook(metric: Callable) -> str | None:
    name = getattr(metric, "hook_name", None)
    return name if isinstance(name, str) else None


def _eval_metric(metric: Callable, logits: torch.Tensor, activation: torch.Tensor | None = None) -> torch.Tensor:
    out = metric(logits, activation) if _metric_hook(metric) is not None else metric(logits)
    out = torch.as_tensor(out)
    if out.numel() != 1:
        raise ValueError(
            f"the metric must return a scalar, got shape {tuple(out.shape)}; reduce over the batch "
            "(e.g. .mean()) inside the metric"
        )
    return out.reshape(())


def _name(metric: Callable) -> str:
    return getattr(metric, "name", None) or getattr(metric, "__name__", None) or type(metric).__name__


def _logit_mask(shape: tuple[int, int, int], codebook: int | Sequence[int] | None, positions: Any, device: torch.device) -> torch.Tensor:
    """[batch, n_codebooks, n] bool: which (codebook, logit position) cells a metric reads."""
    b, k, n = shape
    mask = torch.ones(b, k, n, dtype=torch.bool, device=device)
    if codebook is not None:
        keep = torch.zeros(k, dtype=torch.bool, device=device)
        cbs = [codebook] if isinstance(codebook, int) else list(codebook)
        for c in cbs:
            if not -k <= c < k:
                raise ValueError(f"codebook {c} out of range for {k} codebooks")
            keep[c] = True
        mask &= keep[None, :, None]
    if positions is not None:
        keep = torch.zeros(n, dtype=torch.bool, device=device)
        keep[torch.as_tensor(positions, device=device).long()] = True
        mask &= keep[None, None, :]
    return mask


def _upcast(x: torch.Tensor) -> torch.Tensor:
    """float32 for half precisions, else unchanged (float64 stays float64)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _check_logits(logits: torch.Tensor, codes: torch.Tensor, what: str) -> None:
    if logits.ndim != 4 or logits.shape[:3] != codes.shape:
        raise ValueError(
            f"{what}: logits must be [batch, n_codebooks, pos, d_vocab] matching codes {tuple(codes.shape)}, "
            f"got {tuple(logits.shape)}"
        )


class LogitDiff:
    """Mean of logit(clean next code) - logit(corrupted next code), where the two differ."""

    name = "logit_diff"

    def __init__(self, clean_codes: torch.Tensor, corrupted_codes: torch.Tensor, codebook: int | Sequence[int] | None = None, positions: Any = None):
        if clean_codes.shape != corrupted_codes.shape:
            raise ValueError(f"clean_codes {tuple(clean_codes.shape)} and corrupted_codes {tuple(corrupted_codes.shape)} differ in shape")
        if clean_codes.ndim != 3:
            raise ValueError(f"codes must be [batch, n_codebooks, pos], got {tuple(clean_codes.shape)}")
        self.clean, self.corrupted = clean_codes[..., 1:].long(), corrupted_codes[..., 1:].long()
        self.codebook, self.positions = codebook, positions
        mask = _logit_mask(tuple(self.clean.shape), codebook, positions, self.clean.device)
        if not (mask & (self.clean != self.corrupted)).any():
            raise ValueError("logit_diff: clean and corrupted codes agree at every target it reads; nothing to compare")

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        _check_logits(logits[..., :-1, :], self.clean, "logit_diff")
        v = logits.shape[-1]
        clean, corrupted = self.clean.to(logits.device), self.corrupted.to(logits.device)
        valid = (clean != corrupted) & (clean < v) & (corrupted < v)
        valid &= _logit_mask(tuple(clean.shape), self.codebook, self.positions, logits.device)
        if not valid.any():
            raise ValueError("logit_diff: no position where clean and corrupted next codes differ (pads excluded)")
        lg = logits[..., :-1, :]
        diff = lg.gather(-1, clean.clamp(max=v - 1)[..., None]) - lg.gather(-1, corrupted.clamp(max=v - 1)[..., None])
        return diff[..., 0][valid].mean()


class CodeLogProb:
    """Mean log-probability of the given next codes: per codebook over non-pad targets, then over codebooks."""

    name = "code_logprob"

    def __init__(self, codes: torch.Tensor, codebook: int | Sequence[int] | None = None, positions: Any = None):
        if codes.ndim != 3:
            raise ValueError(f"codes must be [batch, n_codebooks, pos], got {tuple(codes.shape)}")
        self.targets = codes[..., 1:].long()
        self.codebook, self.positions = codebook, positions

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        _check_logits(logits[..., :-1, :], self.targets, "code_logprob")
        v = logits.shape[-1]
        targets = self.targets.to(logits.device)
        valid = (targets < v) & _logit_mask(tuple(targets.shape), self.codebook, self.positions, logits.device)
        logp = torch.log_softmax(_upcast(logits[..., :-1, :]), dim=-1).gather(-1, targets.clamp(max=v - 1)[..., None])[..., 0]
        per_k_sum = (logp * valid).sum(dim=(0, 2))
        per_k_n = valid.sum(dim=(0, 2))
        used = per_k_n > 0
        if not used.any():
            raise ValueError("code_logprob: every target it reads is the pad/BOS code")
        return (per_k_sum[used] / per_k_n[used]).mean().to(logits.dtype)


class KLTo:
    """KL(clean || patched) of the next-code distributions, mean over batch, codebooks and positions."""

    name = "kl_to_clean"

    def __init__(self, clean_logits: torch.Tensor, codebook: int | Sequence[int] | None = None, positions: Any = None):
        if clean_logits.ndim != 4:
            raise ValueError(f"clean_logits must be [batch, n_codebooks, pos, d_vocab], got {tuple(clean_logits.shape)}")
        self.clean_logp = torch.log_softmax(_upcast(clean_logits.detach()), dim=-1)
        self.codebook, self.positions = codebook, positions

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        if logits.shape != self.clean_logp.shape:
            raise ValueError(f"kl_to: logits {tuple(logits.shape)} do not match the clean logits {tuple(self.clean_logp.shape)}")
        p = self.clean_logp.to(device=logits.device, dtype=_upcast(logits).dtype)
        kl = (p.exp() * (p - torch.log_softmax(_upcast(logits), dim=-1))).sum(-1)  # [batch, k, pos]
        mask = _logit_mask(tuple(kl.shape), self.codebook, self.positions, logits.device)
        return kl[mask].mean().to(logits.dtype)


class ProbeScore:
    """A probe's score of the (patched) activation at ``hook_name``; see :func:`probe_score`."""

    name = "probe_score"

    def __init__(self, probe: Any, hook_name: str, pool: str = "none", positions: Any = None, output: int | None = None):
        if pool not in ("none", "mean", "last"):
            raise ValueError(f"pool must be 'none', 'mean' or 'last', got {pool!r}")
        self.is_vector = isinstance(probe, (torch.Tensor, np.ndarray))
        if not self.is_vector and not callable(getattr(probe, "decision_function", None)):
            raise TypeError(
                "probe must have a decision_function(X [n, d]) method (e.g. LinearProbe, a scikit-learn "
                f"classifier) or be a direction vector (torch tensor / numpy array), got {type(probe).__name__}"
            )
        self.probe = torch.as_tensor(probe) if self.is_vector else probe
        if self.is_vector and self.probe.ndim != 1:
            raise ValueError(f"a direction probe must be 1-D [d], got shape {tuple(self.probe.shape)}")
        self.hook_name, self.pool, self.positions, self.output = hook_name, pool, positions, output

    def _rows(self, act: torch.Tensor) -> torch.Tensor:
        if act.ndim < 3:
            raise ValueError(f"probe_score reads [batch, pos, ...] activations, got shape {tuple(act.shape)} at {self.hook_name}")
        if self.positions is not None:
            act = act[:, torch.as_tensor(self.positions, device=act.device).long().reshape(-1)]
        act = act.flatten(2)  # [batch, pos, features]
        if self.pool == "mean":
            return act.mean(1)
        if self.pool == "last":
            return act[:, -1]
        return act.flatten(0, 1)

    def __call__(self, logits: torch.Tensor, activation: torch.Tensor | None = None) -> torch.Tensor:
        if activation is None:
            raise ValueError(
                f"probe_score needs the activation at {self.hook_name}; it works with the musicgen_lens.patching "
                "functions (which cache it during each patched run), not with transformer_lens.patching"
            )
        rows = self._rows(activation)
        if self.is_vector:
            direction = self.probe.to(device=rows.device, dtype=rows.dtype)
            if direction.shape[0] != rows.shape[-1]:
                raise ValueError(f"probe direction has {direction.shape[0]} dims, activations at {self.hook_name} have {rows.shape[-1]}")
            return (rows @ direction).mean()
        scores = np.asarray(self.probe.decision_function(_upcast(rows.detach()).cpu().numpy()))
        if scores.ndim == 2:
            if self.output is None:
                raise ValueError(f"the probe returns {scores.shape[1]} scores per row; pick one with output=<column>")
            scores = scores[:, self.output]
        return torch.as_tensor(float(scores.mean()), dtype=logits.dtype, device=logits.device)


def logit_diff(clean_codes: Int[torch.Tensor, "batch k pos"], corrupted_codes: Int[torch.Tensor, "batch k pos"], codebook: int | Sequence[int] | None = None, positions: Any = None) -> LogitDiff:
    """Metric: mean ``logit[clean next code] - logit[corrupted next code]``.

    Logits at position t predict the codes at t+1. Averaged over the (batch, codebook, position)
    cells where the clean and corrupted next codes differ and neither is the pad/BOS code;
    ``codebook`` and ``positions`` (logit positions) restrict it further.
    """
    return LogitDiff(clean_codes, corrupted_codes, codebook, positions)


def code_logprob(codes: Int[torch.Tensor, "batch k pos"], codebook: int | Sequence[int] | None = None, positions: Any = None) -> CodeLogProb:
    """Metric: mean log-probability of ``codes``' next codes (pad targets ignored).

    Mean per codebook, then over codebooks, so with all codebooks it equals ``-model.loss_fn(logits, codes)``.
    """
    return CodeLogProb(codes, codebook, positions)


def kl_to(clean_logits: Float[torch.Tensor, "batch k pos vocab"], codebook: int | Sequence[int] | None = None, positions: Any = None) -> KLTo:
    """Metric: KL(clean || patched) of next-code distributions, mean over batch, positions and codebooks (0 = clean)."""
    return KLTo(clean_logits, codebook, positions)


def probe_score(probe: Any, hook_name: str, *, pool: Literal["none", "mean", "last"] = "none", positions: Any = None, output: int | None = None) -> ProbeScore:
    """Metric: a probe's mean score of the activation at ``hook_name`` in the (patched) run.

    The patching functions see the metric's ``hook_name`` attribute and cache that hook during
    every patched run (after the patch, so patching and reading the same hook works). ``probe``
    is duck-typed: anything with ``decision_function(np.ndarray [n, d])`` (``LinearProbe``,
    scikit-learn) or a direction vector [d] (score = activation . direction, differentiable, so
    it works with :func:`attribution_patch`). Rows are every (batch, position) (``pool="none"``),
    the mean over positions or the last position per batch item; trailing dims are flattened
    (e.g. ``hook_z``: head x d_head). ``output`` picks a column of a multi-output probe.
    """
    return ProbeScore(probe, hook_name, pool, positions, output)


# ============================================================================ setup


def _resolve_cond(model: "HookedMusicGen", cond: Any, batch: int, what: str) -> Conditioning:
    if isinstance(cond, str):
        cond = [cond]
    if isinstance(cond, (list, tuple)):
        with torch.no_grad():
            cond = model.condition(list(cond))
    if cond is None:
        cond = model._default_cond if model._default_cond is not None else model.null_condition(batch)
    if not isinstance(cond, Conditioning):
        raise TypeError(f"{what} must be a Conditioning, a list of texts or None, got {type(cond).__name__}")
    if cond.batch == 1 and batch > 1:
        cond = cond.repeat(batch)
    try:
        return model.resolve_cond(cond, batch)
    except ValueError as e:
        raise ValueError(f"{what}: {e}") from None


def _pad_cond(cond: Conditioning, width: int) -> Conditioning:
    pad = width - cond.states.shape[1]
    if pad == 0:
        return cond
    return Conditioning(F.pad(cond.states, (0, 0, 0, pad)), F.pad(cond.mask, (0, pad), value=False), list(cond.texts))


@dataclass
class _Setup:
    model: "HookedMusicGen"
    clean_codes: torch.Tensor
    corrupted_codes: torch.Tensor
    clean_cond: Conditioning
    corrupted_cond: Conditioning
    direction: str

    @property
    def denoise(self) -> bool:
        return self.direction == "denoise"

    @property
    def target(self) -> tuple[torch.Tensor, Conditioning]:
        return (self.corrupted_codes, self.corrupted_cond) if self.denoise else (self.clean_codes, self.clean_cond)

    @property
    def source(self) -> tuple[torch.Tensor, Conditioning]:
        return (self.clean_codes, self.clean_cond) if self.denoise else (self.corrupted_codes, self.corrupted_cond)

    @property
    def n_pos(self) -> int:
        return self.clean_codes.shape[-1]

    @property
    def n_text(self) -> int:
        return self.clean_cond.states.shape[1]


def _setup(model: "HookedMusicGen", clean_codes: Any, corrupted_codes: Any, clean_cond: Any, corrupted_cond: Any, direction: str, metric: Any = None) -> _Setup:
    if not hasattr(model, "hook_dict") or not hasattr(model, "check_codes"):
        raise TypeError(f"model must be a HookedMusicGen, got {type(model).__name__}")
    if model.training:
        raise RuntimeError("patching needs the model in eval mode (dropout would make every run different): call model.eval()")
    if direction not in _DIRECTIONS:
        raise ValueError(f"direction must be 'denoise' (patch clean into corrupted) or 'noise' (corrupted into clean), got {direction!r}")
    if metric is not None and not callable(metric):
        raise TypeError(f"metric must be callable (logits -> scalar), got {type(metric).__name__}")
    try:
        clean = model.check_codes(clean_codes)
    except (TypeError, ValueError) as e:
        raise type(e)(f"clean_codes: {e}") from None
    try:
        corrupted = model.check_codes(corrupted_codes)
    except (TypeError, ValueError) as e:
        raise type(e)(f"corrupted_codes: {e}") from None
    if clean.shape != corrupted.shape:
        raise ValueError(
            f"clean_codes {tuple(clean.shape)} and corrupted_codes {tuple(corrupted.shape)} must have the same shape "
            "(same batch, codebooks and positions) for position-wise patching"
        )
    batch = clean.shape[0]
    cc = _resolve_cond(model, clean_cond, batch, "clean_cond")
    xc = _resolve_cond(model, corrupted_cond, batch, "corrupted_cond")
    width = max(cc.states.shape[1], xc.states.shape[1])
    return _Setup(model, clean, corrupted, _pad_cond(cc, width), _pad_cond(xc, width), direction)


def _result_dtype(model: "HookedMusicGen") -> torch.dtype:
    """float32, or float64 for a float64 model."""
    return torch.promote_types(model.cfg.dtype, torch.float32)


def _norm_index(i: Any, n: int, what: str) -> int:
    if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
        raise TypeError(f"{what} must be ints, got {i!r}")
    i = int(i)
    if not -n <= i < n:
        raise ValueError(f"{what} {i} out of range [0, {n})")
    return i % n


def _indices(values: Any, n: int, what: str) -> list[int]:
    if values is None:
        return list(range(n))
    if isinstance(values, (int, np.integer)):
        values = [values]
    if isinstance(values, torch.Tensor):
        values = values.tolist()
    out = [_norm_index(v, n, what) for v in values]
    if not out:
        raise ValueError(f"{what}: empty selection")
    return out


def _as_windows(windows: Any) -> list[Window]:
    if (
        isinstance(windows, (tuple, list))
        and len(windows) == 2
        and all(isinstance(t, (int, float, np.number)) and not isinstance(t, bool) for t in windows)
    ):
        windows = [tuple(windows)]
    out = []
    for w in windows:
        try:
            t0, t1 = (float(t) for t in w)
        except (TypeError, ValueError):
            raise ValueError(f"windows must be (start_s, end_s) pairs, got {w!r}") from None
        if math.isnan(t0) or math.isnan(t1) or not t0 < t1:
            raise ValueError(f"window {w!r} must have start < end (seconds)")
        out.append((t0, t1))
    if not out:
        raise ValueError("windows is empty")
    return out


def position_seconds(model: "HookedMusicGen", n_pos: int) -> torch.Tensor:
    """Time in seconds of each decoder position: (pos - max_delay) / frame_rate (the earliest frame it writes)."""
    return (torch.arange(n_pos, dtype=torch.float64) - model.ctx.max_delay) / model.cfg.frame_rate


def _position_axis(model: "HookedMusicGen", n_pos: int, positions: Any, windows: Any) -> tuple[str, list, list]:
    """(axis name, labels, indices) for a sweep over positions or time windows."""
    if positions is not None and windows is not None:
        raise ValueError("pass positions= or windows=, not both")
    if windows is None:
        pos = _indices(positions, n_pos, "positions")
        return "pos", pos, pos
    seconds = position_seconds(model, n_pos)
    labels, idx = [], []
    for t0, t1 in _as_windows(windows):
        where = torch.nonzero((seconds >= t0) & (seconds < t1)).flatten()
        if where.numel() == 0:
            raise ValueError(
                f"window [{t0:g}, {t1:g}) s contains no position; these codes cover "
                f"{float(seconds[0]):g} to {float(seconds[-1]):g} s (frame_rate={model.cfg.frame_rate:g}, max_delay={model.ctx.max_delay})"
            )
        labels.append((t0, t1))
        idx.append(where.to(model.device))
    return "window", labels, idx


# ============================================================================ grids of cells

_ALL = slice(None)


@dataclass
class _Cell:
    ops: list[tuple[str, tuple]]  # (hook name, index after the batch dim)
    swap_mask: bool = False  # run with the source conditioning's mask (whole-conditioning swap)


@dataclass
class _Grid:
    site: str
    axes: tuple[str, ...]
    labels: dict[str, list]
    cells: list[_Cell]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(self.labels[a]) for a in self.axes)

    @property
    def hooks(self) -> list[str]:
        return sorted({h for c in self.cells for h, _ in c.ops})

    def cell_labels(self) -> list[tuple]:
        return list(itertools.product(*(self.labels[a] for a in self.axes)))


def _unknown_site(site: Any) -> ValueError:
    known = [*RESID_SITES, *(f"{w}.{a}" for w in _WHICH for a in HEAD_ACTS), "codebook_embed", "cond"]
    close = difflib.get_close_matches(str(site), known, n=3)
    return ValueError(f"unknown site {site!r}." + (f" Did you mean {close}?" if close else "") + f" Known sites: {known}")


def _head_act(model: "HookedMusicGen", act: str) -> str:
    if act not in HEAD_ACTS:
        raise ValueError(f"act must be one of {HEAD_ACTS}, got {act!r}")
    # hook_result only fires with cfg.use_attn_result; patching (or differentiating) a head's z is
    # the same intervention, since result = z @ W_O[head].
    return "z" if act == "result" and not model.cfg.use_attn_result else act


def _build_grid(
    setup: _Setup,
    site: str,
    *,
    layers: Any = None,
    heads: Any = None,
    codebooks: Any = None,
    positions: Any = None,
    windows: Any = None,
    per_position: bool | None = None,
) -> _Grid:
    model, cfg = setup.model, setup.model.cfg
    if not isinstance(site, str):
        raise _unknown_site(site)
    site = site.removeprefix("hook_")
    if per_position is None:  # residual sites default to per position, the others to all positions
        per_position = site in RESID_SITES or positions is not None or windows is not None
    elif not per_position and (positions is not None or windows is not None):
        raise ValueError("positions=/windows= need per_position=True (they define the position axis)")

    def pos_axis() -> tuple[str, list, list]:
        return _position_axis(model, setup.n_pos, positions, windows)

    if site in RESID_SITES:
        if heads is not None or codebooks is not None:
            raise ValueError(f"site {site!r} has no heads/codebooks to select")
        ls = _indices(layers, cfg.n_layers, "layers")
        if per_position:
            ax, plabels, pidx = pos_axis()
            cells = [_Cell([(f"blocks.{l}.hook_{site}", (p,))]) for l in ls for p in pidx]
            return _Grid(site, ("layer", ax), {"layer": ls, ax: plabels}, cells)
        return _Grid(site, ("layer",), {"layer": ls}, [_Cell([(f"blocks.{l}.hook_{site}", ())]) for l in ls])

    which, _, act = site.partition(".")
    if which in _WHICH and act in HEAD_ACTS:
        if codebooks is not None:
            raise ValueError(f"site {site!r} has no codebooks to select")
        act = _head_act(model, act)
        ls = _indices(layers, cfg.n_layers, "layers")
        hs = _indices(heads, cfg.n_heads, "heads")
        name = lambda l: f"blocks.{l}.{which}.hook_{act}"  # noqa: E731
        if not per_position:
            index = (lambda h: (h,)) if act == "pattern" else (lambda h: (_ALL, h))
            cells = [_Cell([(name(l), index(h))]) for l in ls for h in hs]
            return _Grid(site, ("layer", "head"), {"layer": ls, "head": hs}, cells)
        if which == "cross_attn" and act in ("k", "v"):
            # cross-attention keys/values live on the text axis
            if windows is not None:
                raise ValueError("cross-attention k/v are indexed by text position: windows (seconds) do not apply")
            ax, plabels = "text_pos", _indices(positions, setup.n_text, "positions (text)")
            pidx = plabels
        else:
            ax, plabels, pidx = pos_axis()
        if act == "pattern":  # [batch, head, query, key]: TransformerLens's (layer, head, dest_pos) layout
            cells = [_Cell([(name(l), (h, p))]) for l in ls for h in hs for p in pidx]
            return _Grid(site, ("layer", "head", ax), {"layer": ls, "head": hs, ax: plabels}, cells)
        cells = [_Cell([(name(l), (p, h))]) for l in ls for p in pidx for h in hs]
        return _Grid(site, ("layer", ax, "head"), {"layer": ls, ax: plabels, "head": hs}, cells)

    if site in ("codebook_embed", "codebook", "codebooks"):
        if layers is not None or heads is not None:
            raise ValueError("codebook embeddings have no layers/heads to select")
        ks = _indices(codebooks, cfg.n_codebooks, "codebooks")
        if not per_position:
            cells = [_Cell([("hook_codebook_embed", (_ALL, k))]) for k in ks]
            return _Grid("codebook_embed", ("codebook",), {"codebook": ks}, cells)
        ax, plabels, pidx = pos_axis()
        cells = [_Cell([("hook_codebook_embed", (p, k))]) for k in ks for p in pidx]
        return _Grid("codebook_embed", ("codebook", ax), {"codebook": ks, ax: plabels}, cells)

    if site == "cond":
        if any(x is not None for x in (layers, heads, codebooks, windows)):
            raise ValueError("site 'cond' has no layers/heads/codebooks/windows; use patch_conditioning(mode='layer') per layer")
        if per_position:
            ts = _indices(positions, setup.n_text, "positions (text)")
            return _Grid("cond", ("text_pos",), {"text_pos": ts}, [_Cell([("hook_cond", (t,))]) for t in ts])
        return _Grid("cond", (), {}, [_Cell([("hook_cond", ())], swap_mask=True)])

    raise _unknown_site(site)


# ============================================================================ the batched engine


@dataclass
class _Op:
    hook: str
    index: tuple
    value: torch.Tensor  # full [batch, ...] activation the index is read from


@dataclass
class _RunCell:
    ops: list[_Op]
    mask: torch.Tensor | None = None  # conditioning mask override [batch, text_pos]


def _run_cells(
    model: "HookedMusicGen",
    codes: torch.Tensor,
    cond: Conditioning,
    cells: Sequence[_RunCell],
    metric: Callable | None,
    *,
    common: Sequence[_Op] = (),
    capture: Sequence[str] = (),
    chunk_size: int = 8,
    progress: bool = True,
    desc: str = "patching",
) -> tuple[list[float], list[dict[str, torch.Tensor]]]:
    """Run every cell's patches on (codes, cond), ``chunk_size`` cells per forward pass.

    ``common`` ops replace whole activations in every cell first (path patching's freezing);
    then each cell's ops overwrite ``act[index]`` with ``value[index]`` in that cell's rows.
    Returns the metric per cell and, per cell, the (post-patch) activations named in ``capture``.
    """
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    b = codes.shape[0]
    metric_hook = _metric_hook(metric) if metric is not None else None
    read = set(capture) | ({metric_hook} if metric_hook else set())
    common_by_hook = {op.hook: op for op in common}
    values: list[float] = []
    captured: list[dict[str, torch.Tensor]] = []
    bar = tqdm(total=len(cells), desc=desc, disable=not progress, leave=False)
    try:
        for start in range(0, len(cells), chunk_size):
            chunk = cells[start : start + chunk_size]
            n = len(chunk)
            big_codes = codes.repeat(n, 1, 1)
            mask = torch.cat([c.mask if c.mask is not None else cond.mask for c in chunk])
            big_cond = Conditioning(cond.states.repeat(n, 1, 1), mask)
            per_hook: dict[str, list[tuple[int, _Op]]] = {}
            for g, cell in enumerate(chunk):
                for op in cell.ops:
                    per_hook.setdefault(op.hook, []).append((g, op))
            store: dict[str, torch.Tensor] = {}

            def hook_fn(act: torch.Tensor, hook: Any) -> torch.Tensor:
                name = hook.name
                if name in common_by_hook:
                    v = common_by_hook[name].value
                    act = v.repeat((n,) + (1,) * (v.ndim - 1))
                elif name in per_hook:
                    act = act.clone()
                for g, op in per_hook.get(name, ()):
                    idx = (_ALL, *op.index)
                    act[g * b : (g + 1) * b][idx] = op.value[idx]
                if name in read:
                    store[name] = act.detach()
                return act

            names = set(per_hook) | set(common_by_hook) | read
            logits = model.run_with_hooks(big_codes, big_cond, fwd_hooks=[(name, hook_fn) for name in sorted(names)])
            for g in range(n):
                rows = slice(g * b, (g + 1) * b)
                if metric is not None:
                    act = store[metric_hook][rows] if metric_hook else None
                    values.append(float(_eval_metric(metric, logits[rows], act)))
                if capture:
                    captured.append({name: store[name][rows].clone() for name in capture})
            bar.update(n)
    finally:
        bar.close()
    return values, captured


def _baseline_runs(setup: _Setup, metric: Callable, source_hooks: Sequence[str], target_hooks: Sequence[str] = ()) -> tuple[dict, dict, float, float]:
    """Unpatched source and target runs: their caches (only the named hooks) and metrics."""
    model = setup.model
    mh = _metric_hook(metric)
    extra = [mh] if mh else []
    out = []
    with torch.no_grad():
        for (codes, cond), hooks in ((setup.source, source_hooks), (setup.target, target_hooks)):
            names = sorted(set(hooks) | set(extra))
            logits, cache = model.run_with_cache(codes, cond, names_filter=names, return_cache_object=False)
            out.append((cache, float(_eval_metric(metric, logits, cache.get(mh) if mh else None))))
    (src_cache, src_metric), (tgt_cache, tgt_metric) = out
    clean_metric, corrupted_metric = (src_metric, tgt_metric) if setup.denoise else (tgt_metric, src_metric)
    return src_cache, tgt_cache, clean_metric, corrupted_metric


def _activation_patch(setup: _Setup, grid: _Grid, metric: Callable, *, normalize: bool, chunk_size: int, progress: bool) -> PatchResult:
    src_cache, _, clean_metric, corrupted_metric = _baseline_runs(setup, metric, grid.hooks)
    codes, cond = setup.target
    source_mask = setup.source[1].mask
    cells = [
        _RunCell([_Op(h, idx, src_cache[h]) for h, idx in cell.ops], source_mask if cell.swap_mask else None) for cell in grid.cells
    ]
    with torch.no_grad():
        values, _ = _run_cells(setup.model, codes, cond, cells, metric, chunk_size=chunk_size, progress=progress, desc=f"patching {grid.site}")
    result = PatchResult(
        torch.tensor(values, dtype=_result_dtype(setup.model)).reshape(grid.shape),
        grid.axes,
        grid.labels,
        clean_metric,
        corrupted_metric,
        setup.direction,
        "metric",
        grid.site,
        _name(metric),
    )
    return result.normalized() if normalize else result


# ============================================================================ TransformerLens backend


def _tl_patch(setup: _Setup, grid: _Grid, metric: Callable, *, normalize: bool) -> PatchResult:
    """Call transformer_lens.patching inside model.conditioning(target_cond)."""
    from transformer_lens import patching as tlp

    if _metric_hook(metric):
        raise ValueError("backend='transformer_lens' passes only logits to the metric; probe_score needs backend='batched'")
    model = setup.model
    site = grid.site
    if site in RESID_SITES and grid.axes == ("layer", "pos"):
        kwargs = dict(patch_setter=tlp.layer_pos_patch_setter, activation_name=site, index_axis_names=("layer", "pos"))
        fn = tlp.generic_activation_patch
        full = {"layer": list(range(model.cfg.n_layers)), "pos": list(range(setup.n_pos))}
    elif site.startswith("attn.") and grid.axes in (("layer", "head"), ("layer", "pos", "head"), ("layer", "head", "pos")):
        act = site.split(".")[1]
        by_pos = "pos" in grid.axes
        tl_act = {"z": "out", "result": "out", "q": "q", "k": "k", "v": "v", "pattern": "pattern"}[act]
        fn = getattr(tlp, f"get_act_patch_attn_head_{tl_act}_{'by_pos' if by_pos else 'all_pos'}")
        kwargs = {}
        full = {"layer": list(range(model.cfg.n_layers)), "head": list(range(model.cfg.n_heads))}
        if by_pos:
            full["pos"] = list(range(setup.n_pos))
    else:
        raise ValueError(
            f"backend='transformer_lens' supports residual sites per (layer, pos) and self-attention heads; "
            f"{site!r} with axes {grid.axes} needs backend='batched'"
        )
    if any(grid.labels[a] != full[a] for a in grid.axes):
        raise ValueError("backend='transformer_lens' sweeps every layer/head/position; drop layers=/heads=/positions=")
    hooks = grid.hooks
    if site.startswith("attn."):  # TransformerLens reads z for "out" (our "result" too)
        hooks = [h.replace("hook_result", "hook_z") for h in hooks]
    src_cache, _, clean_metric, corrupted_metric = _baseline_runs(setup, metric, hooks)
    codes, cond = setup.target
    with torch.no_grad(), model.conditioning(cond):
        values = fn(model, codes, src_cache, metric, **kwargs)
    result = PatchResult(values.to(_result_dtype(model)), grid.axes, grid.labels, clean_metric, corrupted_metric, setup.direction, "metric", site, _name(metric))
    return result.normalized() if normalize else result


# ============================================================================ public sweeps


def patch_site(
    model: "HookedMusicGen",
    clean_codes: Int[torch.Tensor, "batch k pos"],
    corrupted_codes: Int[torch.Tensor, "batch k pos"],
    metric: Callable,
    site: str,
    *,
    clean_cond: Any = None,
    corrupted_cond: Any = None,
    layers: Any = None,
    heads: Any = None,
    codebooks: Any = None,
    positions: Any = None,
    windows: Any = None,
    per_position: bool | None = None,
    direction: Direction = "denoise",
    normalize: bool = False,
    chunk_size: int = 8,
    progress: bool = True,
    backend: Literal["batched", "transformer_lens"] = "batched",
) -> PatchResult:
    """Patch every cell of one site; the general form of the ``patch_*`` functions.

    ``site``: a residual site (:data:`RESID_SITES`: ``"resid_pre"``, ``"attn_out"``, ...),
    ``"attn.<act>"`` / ``"cross_attn.<act>"`` with act in :data:`HEAD_ACTS`, ``"codebook_embed"``
    or ``"cond"``. ``per_position`` adds a position axis (default: on for residual sites, off
    otherwise; implied by ``positions=`` or ``windows=``). ``windows=[(t0, t1), ...]`` patches all
    positions whose time ``(pos - max_delay) / frame_rate`` lies in [t0, t1) together.
    """
    setup = _setup(model, clean_codes, corrupted_codes, clean_cond, corrupted_cond, direction, metric)
    grid = _build_grid(
        setup, site, layers=layers, heads=heads, codebooks=codebooks, positions=positions, windows=windows, per_position=per_position
    )
    if backend == "transformer_lens":
        return _tl_patch(setup, grid, metric, normalize=normalize)
    if backend != "batched":
        raise ValueError(f"backend must be 'batched' or 'transformer_lens', got {backend!r}")
    return _activation_patch(setup, grid, metric, normalize=normalize, chunk_size=chunk_size, progress=progress)


def patch_resid(
    model: "HookedMusicGen",
    clean_codes: Int[torch.Tensor, "batch k pos"],
    corrupted_codes: Int[torch.Tensor, "batch k pos"],
    metric: Callable,
    *,
    clean_cond: Any = None,
    corrupted_cond: Any = None,
    site: str = "resid_pre",
    layers: Any = None,
    positions: Any = None,
    windows: Any = None,
    per_position: bool = True,
    direction: Direction = "denoise",
    normalize: bool = False,
    chunk_size: int = 8,
    progress: bool = True,
    backend: Literal["batched", "transformer_lens"] = "batched",
) -> PatchResult:
    """Layer x position patching of ``blocks.{l}.hook_{site}``: axes ("layer", "pos").

    Sites: resid_pre, resid_mid, resid_mid_cross, resid_post, attn_out, cross_attn_out, mlp_out.
    With ``windows=[(t0, t1), ...]`` (seconds) the axes are ("layer", "window"); with
    ``per_position=False`` each layer is patched at every position at once: ("layer",).
    ``backend="transformer_lens"`` calls ``transformer_lens.patching.generic_activation_patch``
    (as ``get_act_patch_resid_pre`` does) inside ``model.conditioning(...)``.
    """
    if site.removeprefix("hook_") not in RESID_SITES:
        raise ValueError(f"patch_resid site must be one of {RESID_SITES}, got {site!r} (heads: patch_heads)")
    return patch_site(
        model, clean_codes, corrupted_codes, metric, site, clean_cond=clean_cond, corrupted_cond=corrupted_cond,
        layers=layers, positions=positions, windows=windows, per_position=per_position or positions is not None or windows is not None,
        direction=direction, normalize=normalize, chunk_size=chunk_size, progress=progress, backend=backend,
    )


def patch_windows(
    model: "HookedMusicGen",
    clean_codes: Int[torch.Tensor, "batch k pos"],
    corrupted_codes: Int[torch.Tensor, "batch k pos"],
    metric: Callable,
    windows: Sequence[Window] | Window,
    *,
    site: str = "resid_pre",
    **kwargs: Any,
) -> PatchResult:
    """Layer x time-window patching: ``patch_site(..., windows=windows)``, axes ("layer", "window") for
    residual sites (also works for head sites ("attn.z", ...) and "codebook_embed")."""
    return patch_site(model, clean_codes, corrupted_codes, metric, site, windows=windows, **kwargs)


def patch_heads(
    model: "HookedMusicGen",
    clean_codes: Int[torch.Tensor, "batch k pos"],
    corrupted_codes: Int[torch.Tensor, "batch k pos"],
    metric: Callable,
    *,
    clean_cond: Any = None,
    corrupted_cond: Any = None,
    which: Literal["attn", "cross_attn"] = "attn",
    act: Literal["z", "q", "k", "v", "pattern", "result"] = "z",
    per_position: bool = False,
    layers: Any = None,
    heads: Any = None,
    positions: Any = None,
    windows: Any = None,
    direction: Direction = "denoise",
    normalize: bool = False,
    chunk_size: int = 8,
    progress: bool = True,
    backend: Literal["batched", "transformer_lens"] = "batched",
) -> PatchResult:
    """Layer x head patching of self- (``which="attn"``) or cross-attention (``"cross_attn"``) heads.

    Axes: ("layer", "head") over all positions; per position ("layer", "pos", "head") for
    z/q/k/v/result and ("layer", "head", "pos") for the pattern (query position), as
    TransformerLens's ``get_act_patch_attn_head_*_by_pos``. Cross-attention k/v are per *text*
    position: ("layer", "text_pos", "head"). ``act="result"`` without ``cfg.use_attn_result``
    patches z (the same intervention). ``backend="transformer_lens"`` (self-attention only)
    calls ``transformer_lens.patching.get_act_patch_attn_head_{out,q,k,v,pattern}_{all,by}_pos``.
    """
    if which not in _WHICH:
        raise ValueError(f"which must be 'attn' or 'cross_attn', got {which!r}")
    if act not in HEAD_ACTS:
        raise ValueError(f"act must be one of {HEAD_ACTS}, got {act!r}")
    return patch_site(
        model, clean_codes, corrupted_codes, metric, f"{which}.{act}", clean_cond=clean_cond, corrupted_cond=corrupted_cond,
        layers=layers, heads=heads, positions=positions, windows=windows, per_position=per_position or positions is not None or windows is not None,
        direction=direction, normalize=normalize, chunk_size=chunk_size, progress=progress, backend=backend,
    )


def patch_codebooks(
    model: "HookedMusicGen",
    clean_codes: Int[torch.Tensor, "batch k pos"],
    corrupted_codes: Int[torch.Tensor, "batch k pos"],
    metric: Callable,
    *,
    clean_cond: Any = None,
    corrupted_cond: Any = None,
    codebooks: Any = None,
    per_position: bool = False,
    positions: Any = None,
    windows: Any = None,
    direction: Direction = "denoise",
    normalize: bool = False,
    chunk_size: int = 8,
    progress: bool = True,
) -> PatchResult:
    """Patch one codebook's embedding (its slice of ``hook_codebook_embed``, which ``hook_embed`` sums).

    Axes ("codebook",), or ("codebook", "pos") / ("codebook", "window") per position.
    """
    return patch_site(
        model, clean_codes, corrupted_codes, metric, "codebook_embed", clean_cond=clean_cond, corrupted_cond=corrupted_cond,
        codebooks=codebooks, positions=positions, windows=windows, per_position=per_position or positions is not None or windows is not None,
        direction=direction, normalize=normalize, chunk_size=chunk_size, progress=progress,
    )


def patch_conditioning(
    model: "HookedMusicGen",
    codes: Int[torch.Tensor, "batch k pos"],
    clean_cond: Any,
    corrupted_cond: Any,
    metric: Callable,
    *,
    mode: Literal["whole", "layer"] = "whole",
    layers: Any = None,
    corrupted_codes: Int[torch.Tensor, "batch k pos"] | None = None,
    direction: Direction = "denoise",
    normalize: bool = False,
    chunk_size: int = 8,
    progress: bool = True,
) -> PatchResult:
    """Swap the text conditioning between two prompts (e.g. "trumpet" vs "violin").

    ``mode="whole"``: patch ``hook_cond`` (every layer's cross-attention input) and use the
    source prompt's padding mask, so the patched run equals running with the other prompt
    (0-d result). ``mode="layer"``: patch one layer's ``hook_cross_attn_out`` at a time, i.e.
    that layer's cross-attention as if it had read the other prompt: axes ("layer",). Per
    position, use ``patch_resid(site="cross_attn_out", ...)``. Prompts of different text lengths
    are padded to a common length. ``codes`` feed both runs unless ``corrupted_codes`` is given.
    """
    if mode not in ("whole", "layer"):
        raise ValueError(f"mode must be 'whole' or 'layer', got {mode!r}")
    if clean_cond is None or corrupted_cond is None:
        raise ValueError("patch_conditioning needs clean_cond and corrupted_cond (Conditionings or lists of texts)")
    corrupted_codes = codes if corrupted_codes is None else corrupted_codes
    setup = _setup(model, codes, corrupted_codes, clean_cond, corrupted_cond, direction, metric)
    if mode == "whole":
        if layers is not None:
            raise ValueError("layers= applies to mode='layer'")
        grid = _build_grid(setup, "cond")
    else:
        grid = _build_grid(setup, "cross_attn_out", layers=layers, per_position=False)
        grid.site = "cond (cross_attn_out)"
    return _activation_patch(setup, grid, metric, normalize=normalize, chunk_size=chunk_size, progress=progress)


# ============================================================================ attribution patching


def _attribution_values(setup: _Setup, grids: Sequence[_Grid], metric: Callable) -> tuple[list[torch.Tensor], float, float]:
    """Per grid, (source - target activation) . d metric / d activation at the target run, per cell."""
    model = setup.model
    names = sorted({h for g in grids for h in g.hooks})
    src_cache, _, clean_metric, corrupted_metric = _baseline_runs(setup, metric, names)
    codes, cond = setup.target
    mh = _metric_hook(metric)
    deltas: dict[str, torch.Tensor] = {}
    acts: dict[str, torch.Tensor] = {}
    store: dict[str, torch.Tensor] = {}

    def hook_fn(act: torch.Tensor, hook: Any) -> torch.Tensor:
        if hook.name in names:
            delta = torch.zeros_like(act, requires_grad=True)  # d metric / d delta = d metric / d act
            deltas[hook.name], acts[hook.name] = delta, act.detach()
            act = act + delta
        if hook.name == mh:
            store[mh] = act
        return act

    with torch.inference_mode(False), torch.enable_grad():
        codes = codes.clone()
        cond = Conditioning(cond.states.clone(), cond.mask.clone())
        hooked = sorted(set(names) | ({mh} if mh else set()))
        logits = model.run_with_hooks(codes, cond, fwd_hooks=[(n, hook_fn) for n in hooked])
        value = _eval_metric(metric, logits, store.get(mh))
        if not value.requires_grad:
            raise TypeError(
                "attribution patching needs a differentiable metric of the logits/activations; this one is not "
                "(e.g. a probe_score with a numpy probe: pass its direction vector instead)"
            )
        grads = torch.autograd.grad(value, [deltas[n] for n in names], allow_unused=True)
    # (source - target) . grad, summed over the batch and the feature (last) dimension; cell indices
    # never touch the last dimension, so it can be summed first.
    prods = {}
    for n, g in zip(names, grads):
        if g is None:
            g = torch.zeros_like(acts[n])
        prods[n] = ((src_cache[n] - acts[n]) * g).sum(0).sum(-1)
    out = []
    for grid in grids:
        vals = [sum(float(prods[h][idx].sum()) for h, idx in cell.ops) for cell in grid.cells]
        out.append(torch.tensor(vals, dtype=_result_dtype(model)).reshape(grid.shape))
    return out, clean_metric, corrupted_metric


def attribution_patch(
    model: "HookedMusicGen",
    clean_codes: Int[torch.Tensor, "batch k pos"],
    corrupted_codes: Int[torch.Tensor, "batch k pos"],
    metric: Callable,
    sites: str | Sequence[str] = ("resid_pre",),
    *,
    clean_cond: Any = None,
    corrupted_cond: Any = None,
    layers: Any = None,
    positions: Any = None,
    windows: Any = None,
    per_position: bool | None = None,
    direction: Direction = "denoise",
    normalize: bool = False,
) -> "dict[str, PatchResult] | PatchResult":
    """Attribution patching: one forward and one backward pass estimate every cell's patching effect.

    For each cell, ``(source_act - target_act) . d metric / d act`` at the target run (denoise:
    clean - corrupted, gradient at the corrupted run), summed over d_model / d_head and the batch
    (patching changes every batch row at once), over the cell's positions/heads. Cells and axes are
    those of :func:`patch_site` for the same site (e.g. "resid_pre": ("layer", "pos"),
    "attn.z": ("layer", "head"), "cross_attn.pattern", "codebook_embed", "cond").
    Values are estimated *changes* of the metric (``quantity="change"``; ``.normalized()`` works).
    One site (a str) returns a PatchResult, a list returns {site: PatchResult}.
    """
    single = isinstance(sites, str)
    site_list = [sites] if single else list(sites)
    if not site_list:
        raise ValueError("sites is empty")
    setup = _setup(model, clean_codes, corrupted_codes, clean_cond, corrupted_cond, direction, metric)
    grids = []
    for site in site_list:
        base = site.removeprefix("hook_")
        is_resid = base in RESID_SITES
        grids.append(
            _build_grid(
                setup, site, layers=layers if (is_resid or "." in base) else None, positions=positions if base != "cond" else None,
                windows=windows if base != "cond" else None, per_position=per_position,
            )
        )
    values, clean_metric, corrupted_metric = _attribution_values(setup, grids, metric)
    results = {}
    for site, grid, v in zip(site_list, grids, values):
        r = PatchResult(v, grid.axes, grid.labels, clean_metric, corrupted_metric, setup.direction, "change", f"{grid.site} (attribution)", _name(metric))
        results[site] = r.normalized() if normalize else r
    return results[site_list[0]] if single else results


@dataclass
class AttributionCheck:
    """Attribution patching vs real activation patching on a sample of cells of one site."""

    site: str
    correlation: float  # Pearson correlation of the two (nan if either is constant)
    attribution: torch.Tensor  # [n] estimated metric changes
    actual: torch.Tensor  # [n] patched - unpatched metric
    cells: list[tuple]  # [n] cell labels, in the site's axes order
    axes: tuple[str, ...] = ()

    @property
    def max_abs_error(self) -> float:
        return float((self.attribution - self.actual).abs().max())

    def __float__(self) -> float:
        return self.correlation


def check_attribution(
    model: "HookedMusicGen",
    clean_codes: Int[torch.Tensor, "batch k pos"],
    corrupted_codes: Int[torch.Tensor, "batch k pos"],
    metric: Callable,
    site: str = "resid_pre",
    *,
    clean_cond: Any = None,
    corrupted_cond: Any = None,
    n_samples: int = 32,
    seed: int = 0,
    layers: Any = None,
    positions: Any = None,
    windows: Any = None,
    per_position: bool | None = None,
    direction: Direction = "denoise",
    chunk_size: int = 8,
    progress: bool = False,
) -> AttributionCheck:
    """Compare attribution patching with real patching on ``n_samples`` random cells of ``site``.

    Returns an :class:`AttributionCheck` (``float(check)`` is the correlation).
    """
    if not isinstance(n_samples, int) or n_samples < 2:
        raise ValueError(f"n_samples must be an int >= 2, got {n_samples!r}")
    setup = _setup(model, clean_codes, corrupted_codes, clean_cond, corrupted_cond, direction, metric)
    grid = _build_grid(setup, site, layers=layers, positions=positions, windows=windows, per_position=per_position)
    (attr,), _, _ = _attribution_values(setup, [grid], metric)
    n_cells = len(grid.cells)
    gen = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(n_cells, generator=gen)[: min(n_samples, n_cells)].sort().values.tolist()
    src_cache, _, clean_metric, corrupted_metric = _baseline_runs(setup, metric, grid.hooks)
    target_metric = corrupted_metric if setup.denoise else clean_metric
    source_mask = setup.source[1].mask
    cells = [
        _RunCell([_Op(h, idx, src_cache[h]) for h, idx in grid.cells[i].ops], source_mask if grid.cells[i].swap_mask else None) for i in chosen
    ]
    codes, cond = setup.target
    with torch.no_grad():
        patched, _ = _run_cells(model, codes, cond, cells, metric, chunk_size=chunk_size, progress=progress, desc="checking attribution")
    actual = torch.tensor(patched, dtype=torch.float64) - target_metric
    estimate = attr.reshape(-1)[chosen].double()
    if len(chosen) >= 2 and actual.std() > 0 and estimate.std() > 0:
        corr = float(torch.corrcoef(torch.stack([estimate, actual]))[0, 1])
    else:
        corr = float("nan")
    labels = grid.cell_labels()
    dtype = _result_dtype(model)
    return AttributionCheck(grid.site, corr, estimate.to(dtype), actual.to(dtype), [labels[i] for i in chosen], grid.axes)


# ============================================================================ path patching

_RECEIVER_RESID = ("resid_pre", "resid_mid", "resid_mid_cross", "resid_post")


def _component_ops(model: "HookedMusicGen", spec: Any, what: str) -> list[tuple[str, tuple]]:
    """A sender: ("attn"|"cross_attn", layer, head|None), ("mlp", layer) or ("codebook_embed", k)."""
    cfg = model.cfg
    if not isinstance(spec, (tuple, list)) or not spec or not isinstance(spec[0], str):
        raise ValueError(f"{what} must be a tuple like ('attn', layer, head), ('cross_attn', layer, head), ('mlp', layer) or ('codebook_embed', k), got {spec!r}")
    kind = spec[0]
    if kind in _WHICH:
        if len(spec) not in (2, 3):
            raise ValueError(f"{what} {spec!r}: expected ({kind!r}, layer, head or None)")
        layer = _norm_index(spec[1], cfg.n_layers, f"{what} layer")
        head = spec[2] if len(spec) == 3 else None
        index = () if head is None else (_ALL, _norm_index(head, cfg.n_heads, f"{what} head"))
        return [(f"blocks.{layer}.{kind}.hook_z", index)]
    if kind in ("mlp", "mlp_out"):
        if len(spec) != 2:
            raise ValueError(f"{what} {spec!r}: expected ('mlp', layer)")
        return [(f"blocks.{_norm_index(spec[1], cfg.n_layers, f'{what} layer')}.hook_mlp_out", ())]
    if kind in ("codebook_embed", "codebook"):
        if len(spec) != 2:
            raise ValueError(f"{what} {spec!r}: expected ('codebook_embed', codebook)")
        return [("hook_codebook_embed", (_ALL, _norm_index(spec[1], cfg.n_codebooks, f"{what} codebook")))]
    raise ValueError(f"unknown {what} kind {kind!r}: use 'attn', 'cross_attn', 'mlp' or 'codebook_embed'")


def _receiver_op(model: "HookedMusicGen", spec: Any) -> tuple[str, tuple]:
    """A receiver: (resid site, layer) or ("attn"|"cross_attn", layer, head|None, "q"|"k"|"v")."""
    cfg = model.cfg
    if not isinstance(spec, (tuple, list)) or not spec or not isinstance(spec[0], str):
        raise ValueError(f"receiver must be a tuple like ('resid_pre', layer) or ('attn', layer, head, 'q'), got {spec!r}")
    kind = spec[0].removeprefix("hook_")
    if kind in _RECEIVER_RESID:
        if len(spec) != 2:
            raise ValueError(f"receiver {spec!r}: expected ({kind!r}, layer)")
        return f"blocks.{_norm_index(spec[1], cfg.n_layers, 'receiver layer')}.hook_{kind}", ()
    if kind in _WHICH:
        if len(spec) != 4 or spec[3] not in ("q", "k", "v"):
            raise ValueError(f"receiver {spec!r}: expected ({kind!r}, layer, head or None, 'q'|'k'|'v')")
        if kind == "cross_attn" and spec[3] != "q":
            raise ValueError("cross-attention keys/values read the text conditioning, not the residual stream: only 'q' can receive a path")
        layer = _norm_index(spec[1], cfg.n_layers, "receiver layer")
        index = () if spec[2] is None else (_ALL, _norm_index(spec[2], cfg.n_heads, "receiver head"))
        return f"blocks.{layer}.{kind}.hook_{spec[3]}", index
    raise ValueError(
        f"unknown receiver kind {spec[0]!r}: use one of {_RECEIVER_RESID} (with a layer) or "
        "('attn'|'cross_attn', layer, head, 'q'|'k'|'v')"
    )


def _senders(model: "HookedMusicGen", sender: Any) -> tuple[tuple[str, ...], dict[str, list], list[list[tuple[str, tuple]]]]:
    cfg = model.cfg
    if isinstance(sender, str):
        if sender in _WHICH:
            ls, hs = list(range(cfg.n_layers)), list(range(cfg.n_heads))
            ops = [_component_ops(model, (sender, l, h), "sender") for l in ls for h in hs]
            return ("layer", "head"), {"layer": ls, "head": hs}, ops
        if sender in ("mlp", "mlp_out"):
            ls = list(range(cfg.n_layers))
            return ("layer",), {"layer": ls}, [_component_ops(model, ("mlp", l), "sender") for l in ls]
        if sender in ("codebook_embed", "codebook"):
            ks = list(range(cfg.n_codebooks))
            return ("codebook",), {"codebook": ks}, [_component_ops(model, ("codebook_embed", k), "sender") for k in ks]
        raise ValueError(f"sender string must be 'attn', 'cross_attn', 'mlp' or 'codebook_embed', got {sender!r}")
    if isinstance(sender, (tuple, list)) and sender and isinstance(sender[0], str):
        return (), {}, [_component_ops(model, sender, "sender")]
    if isinstance(sender, (tuple, list)) and sender:
        ops = [_component_ops(model, s, "sender") for s in sender]
        return ("sender",), {"sender": [str(tuple(s)) for s in sender]}, ops
    raise ValueError(f"sender must be a component tuple, a list of them, or 'attn'/'cross_attn'/'mlp'/'codebook_embed'; got {sender!r}")


def path_patch(
    model: "HookedMusicGen",
    clean_codes: Int[torch.Tensor, "batch k pos"],
    corrupted_codes: Int[torch.Tensor, "batch k pos"],
    metric: Callable,
    *,
    sender: Any,
    receivers: Any,
    clean_cond: Any = None,
    corrupted_cond: Any = None,
    direction: Direction = "denoise",
    normalize: bool = False,
    chunk_size: int = 8,
    progress: bool = True,
) -> PatchResult:
    """Path patching: the sender's source value reaches the receivers only (TransformerLens tutorials' algorithm).

    1. Cache the source run (sender outputs) and the target run (every component's output).
    2. Run the target input with every component frozen at its target value (each self- and
       cross-attention head's z, each MLP output) except the sender, which gets its source value;
       record the receivers' values.
    3. Run the target input again with only the receivers patched to those values; report the metric.

    Senders: ``("attn"|"cross_attn", layer, head)`` (head None = all heads), ``("mlp", layer)``,
    ``("codebook_embed", k)``; a list of them (axis "sender") or the strings "attn"/"cross_attn"
    (axes layer x head), "mlp" (layer), "codebook_embed" (codebook). Receivers (a tuple or a
    list): ``(resid_site, layer)`` for resid_pre/mid/mid_cross/post (exact: the receiver gets its
    target value plus the sender's direct change) or ``("attn"|"cross_attn", layer, head, "q"|"k"|"v")``
    (cross-attention: "q" only). A sender downstream of every receiver has no effect.
    """
    setup = _setup(model, clean_codes, corrupted_codes, clean_cond, corrupted_cond, direction, metric)
    axes, labels, sender_ops = _senders(model, sender)
    if isinstance(receivers, (tuple, list)) and receivers and isinstance(receivers[0], str):
        receivers = [receivers]
    if not receivers:
        raise ValueError("receivers is empty")
    recv = [_receiver_op(model, r) for r in receivers]
    recv_hooks = sorted({h for h, _ in recv})
    frozen = [n for l in range(model.cfg.n_layers) for n in (f"blocks.{l}.attn.hook_z", f"blocks.{l}.cross_attn.hook_z", f"blocks.{l}.hook_mlp_out")]
    sender_hooks = sorted({h for ops in sender_ops for h, _ in ops})
    src_cache, tgt_cache, clean_metric, corrupted_metric = _baseline_runs(setup, metric, sender_hooks, frozen)
    codes, cond = setup.target
    common = [_Op(n, (), tgt_cache[n]) for n in frozen]
    step2 = [_RunCell([_Op(h, idx, src_cache[h]) for h, idx in ops]) for ops in sender_ops]
    with torch.no_grad():
        _, captured = _run_cells(model, codes, cond, step2, None, common=common, capture=recv_hooks, chunk_size=chunk_size, progress=progress, desc="path patching (senders)")
        step3 = [_RunCell([_Op(h, idx, cap[h]) for h, idx in recv]) for cap in captured]
        values, _ = _run_cells(model, codes, cond, step3, metric, chunk_size=chunk_size, progress=progress, desc="path patching (receivers)")
    shape = tuple(len(labels[a]) for a in axes)
    result = PatchResult(
        torch.tensor(values, dtype=_result_dtype(model)).reshape(shape), axes, labels, clean_metric, corrupted_metric, setup.direction, "metric", "path", _name(metric)
    )
    return result.normalized() if normalize else result
