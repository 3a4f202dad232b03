"""Metrics of the (patched) logits or activations: logit_diff, code_logprob, kl_to, probe_score.

A metric is any callable ``logits -> scalar``; one with a ``hook_name`` attribute (`ProbeScore`)
also receives the activation at that hook, read during each patched run.
"""

from __future__ import annotations

from typing import Any, Callable, Literal, Sequence

import numpy as np
import torch
from jaxtyping import Float, Int

__all__ = ["LogitDiff", "CodeLogProb", "KLTo", "ProbeScore", "logit_diff", "code_logprob", "kl_to", "probe_score"]


def metric_hook(metric: Callable) -> str | None:
    name = getattr(metric, "hook_name", None)
    return name if isinstance(name, str) else None


def eval_metric(metric: Callable, logits: torch.Tensor, activation: torch.Tensor | None = None) -> torch.Tensor:
    out = metric(logits, activation) if metric_hook(metric) is not None else metric(logits)
    out = torch.as_tensor(out)
    if out.numel() != 1:
        raise ValueError(
            f"the metric must return a scalar, got shape {tuple(out.shape)}; reduce over the batch "
            "(e.g. .mean()) inside the metric"
        )
    return out.reshape(())


def metric_name(metric: Callable) -> str:
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
    On a MusicGen-melody model it reads the code positions only (the conditioning prefix of the
    decoder's hooks is dropped), so ``positions`` are code positions there too.
    """
    return ProbeScore(probe, hook_name, pool, positions, output)

