"""Verdicts: a steered clip is a success only if the target is heard, it has not collapsed, the
prompted attribute that was not steered is kept and, where the melody's tempo is known (an added
accompaniment), the onsets follow it (`steering_verdict`); `summarize_verdicts`
aggregates over seeds with the set-level Fréchet check."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from musicgen_lens.eval.judges import ABSTAIN

OUTCOMES = ("success", "collapse", "not_heard", "abstain", "attribute_lost", "off_tempo")


@dataclass(frozen=True)
class Tolerance:
    """When a steered run still sounds like music: the issue's defaults.

    entropy_ratio: each clip's codebook-0 code entropy after the steering start must be at least
    this share of the unsteered run's (same seed). Codebook 0 carries the content (notes, onsets);
    the finer codebooks code residual detail and keep their entropy in a collapse (toy model,
    diff_means alpha 1 at the last layer: codebook 0 falls to 0.5-0.8x, the mean over
    codebooks only to ~0.92x). max_stationarity: above it a clip is one held texture; 0.98 is
    the 99th percentile of the codec's reconstructions of real clips of the world (2-s windows;
    clean clips: 0.94), since the toy model's unsteered generations already reach 0.97.
    frechet_ratio: the steered set's Fréchet distance to the real clips at most this multiple
    of the unsteered set's.
    """

    entropy_ratio: float = 0.8
    max_stationarity: float = 0.98
    frechet_ratio: float = 1.2


@dataclass
class Verdict:
    outcome: str  # one of OUTCOMES
    label: str  # the judge's label for the steered attribute ("abstain" when out of distribution)
    target: str
    kept_label: str | None = None  # the other judge's label for the attribute that was not steered
    kept: str | None = None  # what the prompt asked for it
    entropy: float = float("nan")
    entropy_reference: float = float("nan")
    stationarity: float = float("nan")
    collapsed: bool = False
    on_tempo: bool | None = None  # the onsets follow the melody's known tempo (None: not checked)

    @property
    def success(self) -> bool:
        return self.outcome == "success"


def steering_verdict(
    label: str, target: str, *, entropy: float, entropy_reference: float, stationarity: float,
    kept_label: str | None = None, kept: str | None = None, kept_unsteered: str | None = None, on_tempo: bool | None = None,
    tolerance: Tolerance = Tolerance(),
) -> Verdict:
    """One steered clip: "success" only if the target is heard (the judge's label is `target`,
    not "abstain"), the clip has not collapsed (code entropy >= `tolerance.entropy_ratio` x
    `entropy_reference`, the unsteered run's with the same seed, and stationarity <=
    `tolerance.max_stationarity`) and the prompted attribute that was not steered is kept
    (`kept_label == kept`, when given). Failures, first that applies: "collapse" (whatever the
    judge says: a collapsed texture is often labelled the target with confidence), "abstain",
    "not_heard", "attribute_lost", "off_tempo" (`on_tempo` is False: e.g. a tabla heard but not
    at the melody's tempo, `features.on_tempo`; None: not checked). The set-level Fréchet check
    is `summarize_verdicts`'.

    `kept_unsteered`, the judge's label for that attribute on the unsteered run (same seed): when
    the unsteered run already lacks the prompted value, the steered run must keep the unsteered
    run's label instead (steering is not blamed for what the model never gave, but may not change
    it either); when the unsteered run abstained there is nothing to keep and no check."""
    if kept is not None and kept_unsteered is not None and kept_unsteered != kept:
        kept = None if kept_unsteered == ABSTAIN else kept_unsteered
    collapsed = bool(entropy < tolerance.entropy_ratio * entropy_reference or stationarity > tolerance.max_stationarity)
    if collapsed:
        outcome = "collapse"
    elif label == ABSTAIN:
        outcome = "abstain"
    elif label != target:
        outcome = "not_heard"
    elif kept is not None and kept_label != kept:
        outcome = "attribute_lost"
    elif on_tempo is False:
        outcome = "off_tempo"
    else:
        outcome = "success"
    return Verdict(outcome, str(label), target, None if kept_label is None else str(kept_label), kept,
                   float(entropy), float(entropy_reference), float(stationarity), collapsed, on_tempo)


def _rate(k: int, n: int) -> tuple[float, float]:
    p = k / n if n else float("nan")
    return p, float(np.sqrt(p * (1 - p) / n)) if n else float("nan")


def summarize_verdicts(verdicts: Sequence[Verdict], frechet: float | None = None, frechet_reference: float | None = None,
                       tolerance: Tolerance = Tolerance()) -> dict[str, Any]:
    """Counts, rates and binomial standard errors of each outcome over seeds, plus the set check:
    `frechet_ok` when the steered set's Fréchet distance is at most `tolerance.frechet_ratio` x
    the unsteered set's (None when either is missing). `success_rate` is the share of
    successes if the set passes (or is not checked) and 0 if it fails; `success_rate_per_clip`
    ignores the set check."""
    n = len(verdicts)
    counts = {o: sum(v.outcome == o for v in verdicts) for o in OUTCOMES}
    out: dict[str, Any] = {"n": n, "counts": counts}
    for o in OUTCOMES:
        out[f"{o}_rate"], out[f"{o}_rate_se"] = _rate(counts[o], n)
    ok = None if frechet is None or frechet_reference is None else bool(frechet <= tolerance.frechet_ratio * frechet_reference)
    out.update(frechet=frechet, frechet_reference=frechet_reference, frechet_ok=ok, success_rate_per_clip=out["success_rate"],
               success_rate_per_clip_se=out["success_rate_se"])
    if ok is False:
        out["success_rate"], out["success_rate_se"] = 0.0, 0.0
    out["tolerance"] = dataclasses.asdict(tolerance)
    return out
