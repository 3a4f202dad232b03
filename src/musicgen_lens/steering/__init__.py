"""Activation steering: the paper's interventions as one small API.

A `SteeringVector` (`steering.vector`) is a direction in one activation space plus where it
came from (site, layer, head, concept, method, the architecture and weights fingerprints of the
model that made it). An `Intervention` (`steering.intervention`, where the exact semantics of
windows, steps, periodic firing and schedules are documented) says how to apply it: where
(site + layer, or a full hook name; heads for head sites), how (`mode`), how strongly
(`alpha`, optionally scheduled), when (a time window in seconds, optionally firing only every
`every` generation steps, or the authors' forward calls) and to which branch of
classifier-free guidance. `SteeringHook` (`steering.hook`) is the forward hook, with the modes. Beyond the paper:
stochastic gating (`inject_chance`, MusicRFM) and logistic / sinusoidal schedules on
`Intervention`, and `ProbeMonitor` (`steering.monitor`, SMITIN): the strength follows a probe's
live reading of the activation it steers.

Two ways to steer:

- generation: `model.generate(..., steering=[iv, ...])`;
- forward passes (and anything else that takes TransformerLens fwd_hooks):
  `steering_hooks(model, [iv, ...])`, or its context-manager form `with steer(model, [iv]):`.

    vec = SteeringVector.from_probe(probe, "trumpet", site="resid_post", layer=18, model=model)
    iv = Intervention(vec, alpha=0.5, mode="norm_relative", start=5.0)
    codes = model.generate(["jazz"], duration=10, steering=[iv])
    with steer(model, [iv]):
        logits = model(codes, cond)

The authors' recipe (arXiv 2506.10225's code: a hook on decoder layer L firing every 25th
forward call of Hugging Face's generate) is
``Intervention(vec, alpha=0.5, mode="norm_relative", every=25, count="calls")``.
(`model.steer` is deprecated: use `steer(model, ...)`.)
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from musicgen_lens.hooks import SITES, hook_name, parse_hook_name  # the registry (re-exported for old imports)
from musicgen_lens.steering.hook import SteeringHook
from musicgen_lens.steering.monitor import ProbeMonitor
from musicgen_lens.steering.intervention import (
    BRANCHES,
    COUNTS,
    MODES,
    SCHEDULES,
    Intervention,
    Plan,
    as_list,
    gate_uniform,
    share_call_counters,
)
from musicgen_lens.steering.vector import METHODS, SteeringVector, _finite, _is_int, steerable_site

if TYPE_CHECKING:
    from musicgen_lens.model import HookedMusicGen

__all__ = [
    "BRANCHES",
    "COUNTS",
    "METHODS",
    "MODES",
    "SCHEDULES",
    "SITES",
    "Intervention",
    "Plan",
    "ProbeMonitor",
    "SteeringHook",
    "SteeringVector",
    "hook_name",
    "parse_hook_name",
    "gate_uniform",
    "steer",
    "steerable_site",
    "steering_hooks",
]


def steering_hooks(
    model: "HookedMusicGen",
    interventions: Intervention | Sequence[Intervention],
    *,
    n_frames: int | None = None,
    duration: float | None = None,
    check_hash: bool = True,
    record: bool = False,
) -> list[tuple[str, SteeringHook]]:
    """Validate every intervention against the model, then return TransformerLens fwd hooks.

    Everything is checked before any hook exists, so a bad intervention raises ValueError with
    nothing attached. `n_frames` (or `duration` in seconds) is the total audio of the
    generation, prompt included: a window starting at or after it is an error. Pass the list
    to `model.hooks(fwd_hooks=...)` or `model.run_with_hooks(..., fwd_hooks=...)` (generation
    takes the interventions themselves: `model.generate(..., steering=[...])`). Hooks on the
    same point run in list order; the count="calls" interventions of one list share one call
    counter (`steering.intervention`). `check_hash=False` accepts vectors made on another
    architecture or other trained weights.
    """
    if n_frames is not None and duration is not None:
        raise ValueError("pass n_frames or duration, not both")
    if duration is not None:
        n_frames = model.pattern.frames_for_seconds(_finite("duration", duration))
    if n_frames is not None and (not _is_int(n_frames) or n_frames < 1):
        raise ValueError(f"n_frames must be an int >= 1, got {n_frames!r}")
    plans = share_call_counters([iv.resolve(model, n_frames=n_frames, check_hash=check_hash) for iv in as_list(interventions)])
    return [(p.name, SteeringHook(p, record=record)) for p in plans]


@contextmanager
def steer(
    model: "HookedMusicGen",
    interventions: Intervention | Sequence[Intervention],
    **kwargs: Any,
) -> Iterator["HookedMusicGen"]:
    """Context manager: `steering_hooks` active inside, removed on exit (even on error).

        with steer(model, [Intervention(vec, alpha=0.5, start=0.2)]):
            logits = model(codes, cond)

    kwargs go to `steering_hooks` (n_frames, duration, check_hash, record). Yields the model.
    """
    hooks = steering_hooks(model, interventions, **kwargs)
    with model.hooks(fwd_hooks=hooks):
        yield model
