"""Activation steering: the paper's interventions as one small API.

A `SteeringVector` is a direction in one activation space plus where it came from (site,
layer, head, concept, method, the architecture hash of the model that made it). An
`Intervention` says how to apply it: where (site + layer, or a full hook name; heads for
head sites), how (`mode`), how strongly (`alpha`, optionally scheduled), when (a time window
in seconds, optionally firing only every `every` generation steps) and to which branch of
classifier-free guidance. `steering_hooks` validates a list of interventions up front and
turns them into TransformerLens forward hooks; `steer` is the context-manager form.

    vec = SteeringVector.from_probe(probe, "trumpet", site="resid_post", layer=18, model=model)
    iv = Intervention(vec, alpha=0.5, mode="norm_relative", start=5.0)   # the authors' recipe
    codes = model.generate(["jazz"], duration=10, fwd_hooks=steering_hooks(model, [iv]))
    with steer(model, [iv]):
        logits = model(codes, cond)

Modes (v the vector, v̂ = v / ‖v‖, a the alpha of this step, h one position's activation; on
head sites h is one head's vector at one position, so ‖h‖ is per head):

    add            h + a·v                         (v's norm matters: music-mechint's scaled diff-of-means)
    norm_relative  (h + ‖h‖·a·v̂) / (1 + a)         (the paper's code; ‖h‖ per position)
    clamp          h + (a − h·v̂)·v̂                 (the component along v̂ set to a)
    ablate         h − (h·v̂)·v̂                     (the component along v̂ removed; alpha is ignored)

Time window. `start` / `end` are seconds of audio from the first frame (an audio prompt
included). A decoder position p writes frames p − delay(k); its *earliest* frame is
f(p) = p − max_delay (`hook.ctx.frames`). The intervention applies at the positions with
start·frame_rate <= f(p) < end·frame_rate (None = open), so every codebook of every frame
before `start` is bit-identical to the unsteered run. Positions from `end` on are left
alone, but the audio after `end` may still change: later positions attend to the steered
ones (KV cache), and codebook k of frame f is written at position f + delay(k).

Steps. During generation `hook.ctx.step` is the generation step: 0 is the prefill (BOS plus
any audio prompt, one call over several positions), then one new position per step (without
an audio prompt, step s processes position s; with n prompt frames, position n + s). In a
plain forward (teacher forcing) there are no steps; position p counts as step p, which is
exactly the generation step that processed it when there is no audio prompt, so replaying a
generated sequence through `model(codes, cond)` with the same hooks steers the same positions.

Periodic firing (`every`, `offset`): the intervention fires at step s iff s >= offset and
(s − offset) % every == 0 (the paper: every=25, offset=0, so steps 0, 25, 50, ...); at the
other steps it does nothing (the positions it steered stay in the KV cache). `every=None`
fires at every step s >= offset. Firing and the time window must both hold.

Schedules give the alpha at k = p − p_open, the number of positions (= generation steps,
one position per step) since the window opened; p_open = start_frame + max_delay is the first
position in the window (0 when start is None, so an open window counts from position 0):

    constant   alpha
    linear     alpha_start + (alpha − alpha_start)·min(k / ramp_steps, 1)   (alpha_start at k=0, alpha from k=ramp_steps)
    exp        alpha·gamma**k

k counts steps, not firings: with every=25 the intervention fires at k = 0, 25, 50, ... (when
the window opens at a firing step) and uses alpha_at(k) there. `Intervention.alpha_at(k)` is
the schedule as a plain function.

Branches: `branch="cond"` (default, the paper's) steers only the conditional rows of the CFG
batch (`hook.ctx.cond_rows`); in a plain forward the rows whose conditioning is null count as
unconditional, so `model(codes)` with the default null text and branch="cond" steers nothing.

Vectors are detached (no gradient flows into them); gradients do flow through the steered
activations, so attribution through a steered forward works.

Hot path: the vector is moved to the activation's device/dtype once (cached), the window and
firing are decided from Python ints (ctx.start/length/step), rows are selected with
`torch.where` on a cached [batch] mask, and nothing calls `.item()` or branches on tensor
values, so a generation step never waits on the device.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import torch
from jaxtyping import Float

from musicgen_lens._atomic import atomic_path

if TYPE_CHECKING:
    from musicgen_lens.model import HookedMusicGen

__all__ = [
    "BRANCHES",
    "METHODS",
    "MODES",
    "SCHEDULES",
    "SITES",
    "Intervention",
    "SteeringHook",
    "SteeringVector",
    "hook_name",
    "parse_hook_name",
    "steer",
    "steering_hooks",
]

# site -> (hook name template, width of the vector: "d_model" or "d_head", head site?)
SITES: dict[str, tuple[str, str, bool]] = {
    "resid_pre": ("blocks.{layer}.hook_resid_pre", "d_model", False),
    "resid_mid": ("blocks.{layer}.hook_resid_mid", "d_model", False),
    "resid_mid_cross": ("blocks.{layer}.hook_resid_mid_cross", "d_model", False),
    "resid_post": ("blocks.{layer}.hook_resid_post", "d_model", False),
    "attn_out": ("blocks.{layer}.hook_attn_out", "d_model", False),
    "cross_attn_out": ("blocks.{layer}.hook_cross_attn_out", "d_model", False),
    "mlp_out": ("blocks.{layer}.hook_mlp_out", "d_model", False),
    "z": ("blocks.{layer}.attn.hook_z", "d_head", True),
    "cross_z": ("blocks.{layer}.cross_attn.hook_z", "d_head", True),
    "result": ("blocks.{layer}.attn.hook_result", "d_model", True),
    "cross_result": ("blocks.{layer}.cross_attn.hook_result", "d_model", True),
}
_NAME_TO_SITE = {tmpl.format(layer="{}"): site for site, (tmpl, _, _) in SITES.items()}
_HOOK_RE = re.compile(r"^blocks\.(\d+)\.(.+)$")
MODES = ("add", "norm_relative", "clamp", "ablate")
SCHEDULES = ("constant", "linear", "exp")
BRANCHES = ("cond", "uncond", "both")
METHODS = ("probe", "diff_means", "class_mean", "pca", "combined", "manual")
_FORMAT = "musicgen_lens.SteeringVector/1"


def hook_name(site: str, layer: int) -> str:
    """'resid_post', 18 -> 'blocks.18.hook_resid_post'."""
    if site not in SITES:
        raise ValueError(f"unknown steering site {site!r}; expected one of {list(SITES)} or a full hook name")
    return SITES[site][0].format(layer=layer)


def parse_hook_name(name: str) -> tuple[str, int]:
    """'blocks.18.hook_resid_post' -> ('resid_post', 18); ValueError for anything not steerable."""
    m = _HOOK_RE.match(name)
    site = _NAME_TO_SITE.get(f"blocks.{{}}.{m.group(2)}") if m else None
    if site is None:
        raise ValueError(
            f"{name!r} is not a steerable hook; expected blocks.<layer>.<hook> for one of the sites {list(SITES)} "
            f"(e.g. 'blocks.18.hook_resid_post', 'blocks.3.attn.hook_z')"
        )
    return site, int(m.group(1))


def _is_int(x: Any) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _is_real(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _finite(name: str, x: Any) -> float:
    if isinstance(x, torch.Tensor) and x.numel() == 1:
        x = x.item()
    if not _is_real(x) or not math.isfinite(float(x)):
        raise ValueError(f"{name} must be a finite number, got {x!r}")
    return float(x)


def _flatten_acts(name: str, acts: Any) -> torch.Tensor:
    acts = torch.as_tensor(acts)
    if acts.ndim < 1 or acts.numel() == 0:
        raise ValueError(f"{name} must be activations [..., d] with at least one row, got shape {tuple(acts.shape)}")
    if not acts.dtype.is_floating_point:
        acts = acts.float()
    acts = acts.reshape(-1, acts.shape[-1]) if acts.ndim > 1 else acts[None]
    if not torch.isfinite(acts).all():
        raise ValueError(f"{name} contains NaN or inf")
    return acts


# ============================================================================ SteeringVector


@dataclass(eq=False)
class SteeringVector:
    """A direction [d] in one activation space, with its provenance.

    `site` / `layer` / `head` say where it was read (and are the defaults of an `Intervention`
    built from it); `model_hash` is `model.cfg.hash()` of the model whose activations made it,
    checked against the model it steers. `metadata` must be JSON-serialisable to be saved.
    """

    vector: Float[torch.Tensor, "d"]
    site: str | None = None
    layer: int | None = None
    head: int | None = None
    concept: str | None = None
    method: str = "manual"
    model_hash: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        v = torch.as_tensor(self.vector)
        if v.ndim != 1 or v.numel() == 0:
            raise ValueError(f"SteeringVector.vector must be a 1-D tensor [d], got shape {tuple(v.shape)}")
        if not v.dtype.is_floating_point:
            v = v.float()
        if not torch.isfinite(v).all():
            raise ValueError("SteeringVector.vector contains NaN or inf")
        self.vector = v.detach()
        if self.site is not None and self.site not in SITES:
            self.site, layer = parse_hook_name(self.site)  # a full hook name is accepted too
            if self.layer is not None and self.layer != layer:
                raise ValueError(f"site {self.site!r} is layer {layer} but layer={self.layer} was given")
            self.layer = layer
        for name in ("layer", "head"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or value < 0):
                raise ValueError(f"SteeringVector.{name} must be a non-negative int or None, got {value!r}")
        if self.method not in METHODS:
            raise ValueError(f"SteeringVector.method must be one of {METHODS}, got {self.method!r}")
        if not isinstance(self.metadata, dict):
            raise ValueError(f"SteeringVector.metadata must be a dict, got {type(self.metadata).__name__}")

    # ---------------------------------------------------------------- basics
    @property
    def d(self) -> int:
        return self.vector.shape[0]

    @property
    def norm(self) -> float:
        return float(self.vector.float().norm())

    def __len__(self) -> int:
        return self.d

    def __repr__(self) -> str:
        where = self.site if self.layer is None else f"{self.site}@{self.layer}"
        if self.head is not None:
            where += f".h{self.head}"
        return (
            f"SteeringVector(concept={self.concept!r}, method={self.method!r}, site={where}, d={self.d}, "
            f"norm={self.norm:.4g}, model_hash={self.model_hash!r})"
        )

    def provenance(self) -> dict[str, Any]:
        """Everything but the vector, as plain JSON-able values."""
        return {
            "site": self.site,
            "layer": self.layer,
            "head": self.head,
            "concept": self.concept,
            "method": self.method,
            "model_hash": self.model_hash,
            "metadata": self.metadata,
        }

    def _replace(self, vector: torch.Tensor, **changes: Any) -> "SteeringVector":
        kw = self.provenance()
        kw["metadata"] = dict(self.metadata)
        kw.update(changes)
        return SteeringVector(vector, **kw)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "SteeringVector":
        return self._replace(self.vector.to(device=device, dtype=dtype))

    def normalized(self) -> "SteeringVector":
        """Unit norm (computed in float32 at least); the provenance is kept."""
        n = self.vector.float().norm()
        if n == 0:
            raise ValueError("cannot normalise a zero SteeringVector")
        return self._replace((self.vector.float() / n).to(self.vector.dtype))

    # ---------------------------------------------------------------- arithmetic
    def __mul__(self, scale: Any) -> "SteeringVector":
        if not _is_real(scale):
            return NotImplemented
        s = _finite("scale", scale)
        meta = dict(self.metadata)
        meta["scale"] = float(meta.get("scale", 1.0)) * s
        return self._replace(self.vector * s, metadata=meta)

    __rmul__ = __mul__

    def __truediv__(self, scale: Any) -> "SteeringVector":
        if not _is_real(scale):
            return NotImplemented
        if scale == 0:
            raise ZeroDivisionError("SteeringVector divided by zero")
        return self * (1.0 / float(scale))

    def __neg__(self) -> "SteeringVector":
        return self * -1.0

    def _combine(self, other: "SteeringVector", sign: float, op: str) -> "SteeringVector":
        if not isinstance(other, SteeringVector):
            return NotImplemented
        if other.d != self.d:
            raise ValueError(f"cannot combine SteeringVectors of different sizes: {self.d} and {other.d}")
        if self.model_hash is not None and other.model_hash is not None and self.model_hash != other.model_hash:
            raise ValueError(
                f"cannot combine SteeringVectors from different model architectures: model_hash "
                f"{self.model_hash!r} ({self.concept!r}) vs {other.model_hash!r} ({other.concept!r})"
            )

        def same(a: Any, b: Any) -> Any:
            return a if a == b else None

        dtype = torch.promote_types(self.vector.dtype, other.vector.dtype)
        vector = self.vector.to(dtype) + sign * other.vector.to(device=self.vector.device, dtype=dtype)
        return SteeringVector(
            vector,
            site=same(self.site, other.site),
            layer=same(self.layer, other.layer),
            head=same(self.head, other.head),
            concept=f"{self.concept}{op}{other.concept}",
            method="combined",
            model_hash=self.model_hash or other.model_hash,
            metadata={"components": [self.provenance(), other.provenance()], "op": op},
        )

    def __add__(self, other: Any) -> "SteeringVector":
        return self._combine(other, 1.0, "+")

    def __sub__(self, other: Any) -> "SteeringVector":
        return self._combine(other, -1.0, "-")

    # ---------------------------------------------------------------- save / load
    def save(self, path: str | os.PathLike) -> None:
        """safetensors file: tensor "vector", provenance as JSON in the metadata (no pickle).

        Written to a temporary file in the same directory, then renamed over `path`, so a
        crash never leaves a half-written file.
        """
        from safetensors.torch import save_file

        try:
            provenance = json.dumps(self.provenance(), sort_keys=True)
        except (TypeError, ValueError) as e:
            raise ValueError(f"SteeringVector.metadata must be JSON-serialisable to be saved: {e}") from e
        with atomic_path(path) as tmp:
            save_file({"vector": self.vector.detach().contiguous().cpu()}, str(tmp), metadata={"format": _FORMAT, "provenance": provenance})

    @classmethod
    def load(cls, path: str | os.PathLike, device: torch.device | str | None = None) -> "SteeringVector":
        from safetensors import safe_open

        with safe_open(os.fspath(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            if meta.get("format") != _FORMAT or "vector" not in f.keys():
                raise ValueError(f"{os.fspath(path)!r} is not a SteeringVector file (format {meta.get('format')!r}, expected {_FORMAT!r})")
            vector = f.get_tensor("vector")
        prov = json.loads(meta["provenance"])
        return cls(vector.to(device) if device is not None else vector, **prov)

    # ---------------------------------------------------------------- constructors
    @staticmethod
    def _common(model: "HookedMusicGen | None", model_hash: str | None, site: str | None = None, d: int | None = None) -> str | None:
        """The model hash to record; with a model and a site, also checks the vector's width."""
        if model is None:
            return model_hash
        if site is not None and d is not None:
            key = site if site in SITES else parse_hook_name(site)[0]
            width_name = SITES[key][1]
            width = getattr(model.cfg, width_name)
            if d != width:
                raise ValueError(f"the vector has size {d} but site {key!r} of this model has {width_name}={width}")
        return model.cfg.hash()

    @classmethod
    def from_probe(
        cls,
        probe: Any,
        target: Any = None,
        *,
        site: str,
        layer: int,
        head: int | None = None,
        concept: str | None = None,
        model: "HookedMusicGen | None" = None,
        model_hash: str | None = None,
        metadata: dict[str, Any] | None = None,
        **direction_kwargs: Any,
    ) -> "SteeringVector":
        """The probe's unit direction for `target`: calls `probe.direction(target, **direction_kwargs)`.

        Duck-typed: any object with `direction(target)` returning a vector [d] (a regression
        probe may ignore target; for target=None a `direction()` with no parameters is called
        without arguments). The result is re-normalised to unit norm. `concept` defaults to
        str(target), else `probe.concept`, else "probe". Extra keyword arguments go to
        `direction` (e.g. contrast=True for musicgen_lens.probes.LinearProbe) and are recorded
        in the metadata.
        """
        fn = getattr(probe, "direction", None)
        if not callable(fn):
            raise TypeError(f"from_probe needs an object with a direction(target) method, got {type(probe).__name__}")
        if target is None:
            import inspect

            try:
                takes_arg = len(inspect.signature(fn).parameters) > 0
            except (TypeError, ValueError):
                takes_arg = True
            direction = fn(None, **direction_kwargs) if takes_arg else fn(**direction_kwargs)
        else:
            direction = fn(target, **direction_kwargs)
        v = torch.as_tensor(direction).detach()
        if v.ndim == 2 and 1 in v.shape:
            v = v.reshape(-1)
        if v.ndim != 1:
            raise ValueError(f"probe.direction({target!r}) must return a vector [d], got shape {tuple(v.shape)}")
        v = v.float() if not v.dtype.is_floating_point else v
        n = v.float().norm()
        if n == 0 or not torch.isfinite(n):
            raise ValueError(f"probe.direction({target!r}) returned a zero or non-finite vector")
        v = (v.float() / n).to(v.dtype)
        if concept is None:
            concept = str(target) if target is not None else getattr(probe, "concept", None) or "probe"
        meta: dict[str, Any] = {"probe": type(probe).__name__, **direction_kwargs}
        if target is not None:
            meta["target"] = target if isinstance(target, (str, int, float, bool)) else str(target)
        meta.update(metadata or {})
        return cls(v, site=site, layer=layer, head=head, concept=concept, method="probe", model_hash=cls._common(model, model_hash, site, v.shape[0]), metadata=meta)

    @classmethod
    def from_diff_means(
        cls,
        acts_pos: Float[torch.Tensor, "... d"],
        acts_neg: Float[torch.Tensor, "... d"],
        *,
        site: str | None = None,
        layer: int | None = None,
        head: int | None = None,
        concept: str | None = None,
        model: "HookedMusicGen | None" = None,
        model_hash: str | None = None,
        normalize: bool = False,
        metadata: dict[str, Any] | None = None,
    ) -> "SteeringVector":
        """mean(acts_pos) − mean(acts_neg), means over all leading dims (not normalised unless asked)."""
        pos, neg = _flatten_acts("acts_pos", acts_pos), _flatten_acts("acts_neg", acts_neg)
        if pos.shape[-1] != neg.shape[-1]:
            raise ValueError(f"acts_pos and acts_neg must have the same width, got {pos.shape[-1]} and {neg.shape[-1]}")
        v = pos.double().mean(0) - neg.to(pos.device).double().mean(0)
        meta = {"n_pos": pos.shape[0], "n_neg": neg.shape[0], **(metadata or {})}
        out = cls(v.to(pos.dtype), site=site, layer=layer, head=head, concept=concept, method="diff_means", model_hash=cls._common(model, model_hash, site, v.shape[0]), metadata=meta)
        return out.normalized() if normalize else out

    @classmethod
    def from_class_mean(
        cls,
        acts: Float[torch.Tensor, "n d"],
        labels: Any,
        target: Any,
        *,
        site: str | None = None,
        layer: int | None = None,
        head: int | None = None,
        concept: str | None = None,
        model: "HookedMusicGen | None" = None,
        model_hash: str | None = None,
        normalize: bool = False,
        metadata: dict[str, Any] | None = None,
    ) -> "SteeringVector":
        """mean of the rows labelled `target` − mean of all rows (the overall mean, not the mean of class means).

        acts [..., d] and labels [...] (a tensor or a sequence of any hashable labels).
        """
        x = _flatten_acts("acts", acts)
        if isinstance(labels, torch.Tensor):
            mask = (labels.reshape(-1) == target).to(x.device)
        else:
            labels = list(labels)
            mask = torch.tensor([lab == target for lab in labels], dtype=torch.bool, device=x.device)
        if mask.shape[0] != x.shape[0]:
            raise ValueError(f"{mask.shape[0]} labels for {x.shape[0]} activation rows")
        n_target = int(mask.sum())
        if n_target == 0:
            raise ValueError(f"no activation row has label {target!r}")
        v = x[mask].double().mean(0) - x.double().mean(0)
        concept = concept if concept is not None else str(target)
        meta = {"target": target if isinstance(target, (str, int, float, bool)) else str(target), "n_target": n_target, "n": x.shape[0], **(metadata or {})}
        out = cls(v.to(x.dtype), site=site, layer=layer, head=head, concept=concept, method="class_mean", model_hash=cls._common(model, model_hash, site, v.shape[0]), metadata=meta)
        return out.normalized() if normalize else out

    @classmethod
    def from_pca(
        cls,
        acts_pos: Float[torch.Tensor, "... d"],
        acts_neg: Float[torch.Tensor, "... d"],
        *,
        paired: bool = True,
        site: str | None = None,
        layer: int | None = None,
        head: int | None = None,
        concept: str | None = None,
        model: "HookedMusicGen | None" = None,
        model_hash: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> "SteeringVector":
        """Unit first principal component, signed to point from the negative to the positive examples.

        paired=True (default): acts_pos[i] and acts_neg[i] are a contrastive pair (same shape
        required); the component is the top right-singular vector of the *uncentred* differences
        pos_i − neg_i (as RepE's random-sign PCA: a shift shared by all pairs is the top
        component, not removed by centring). paired=False: the top component of the pooled
        rows of both sets after subtracting the pooled mean. Either way the sign makes
        (mean(pos) − mean(neg))·v >= 0. metadata["explained_variance_ratio"] records the
        fraction of the (uncentred / centred) second moment along it.
        """
        pos, neg = _flatten_acts("acts_pos", acts_pos).double(), _flatten_acts("acts_neg", acts_neg).double()
        neg = neg.to(pos.device)
        if pos.shape[-1] != neg.shape[-1]:
            raise ValueError(f"acts_pos and acts_neg must have the same width, got {pos.shape[-1]} and {neg.shape[-1]}")
        if paired:
            if pos.shape != neg.shape:
                raise ValueError(
                    f"paired PCA needs as many positive as negative rows (pairs pos_i, neg_i), got {pos.shape[0]} and "
                    f"{neg.shape[0]}; pass paired=False for PCA of the pooled, centred data"
                )
            data = pos - neg
        else:
            pooled = torch.cat([pos, neg])
            data = pooled - pooled.mean(0)
        _, s, vh = torch.linalg.svd(data, full_matrices=False)
        v = vh[0]
        shift = pos.mean(0) - neg.mean(0)
        if torch.dot(shift, v) < 0:
            v = -v
        total = float((s**2).sum())
        meta = {
            "paired": paired,
            "n_pos": pos.shape[0],
            "n_neg": neg.shape[0],
            "explained_variance_ratio": float(s[0] ** 2) / total if total > 0 else 0.0,
            **(metadata or {}),
        }
        dtype = torch.as_tensor(acts_pos).dtype
        dtype = dtype if dtype.is_floating_point else torch.float32
        return cls(v.to(dtype), site=site, layer=layer, head=head, concept=concept, method="pca", model_hash=cls._common(model, model_hash, site, v.shape[0]), metadata=meta)


# ============================================================================ Intervention


@dataclass(eq=False)
class Intervention:
    """One steering intervention; see the module docstring for the exact semantics.

    vector   SteeringVector or tensor [d] (d_model; d_head for z / cross_z).
    site     a site name ("resid_post", "z", ...; see SITES) or a full hook name; with layer.
             Default: the vector's own site / layer (/ head for head sites).
    heads    head sites only: the heads to steer (default all); each gets the same vector.
    alpha    strength (a finite float; norm_relative needs alpha > -1); the value a schedule reaches.
    mode     "add" | "norm_relative" | "clamp" | "ablate".
    schedule "constant" | "linear" (alpha_start -> alpha over ramp_steps) | "exp" (alpha·gamma**k).
    start, end  seconds, window [start, end); None = open.
    every, offset  periodic firing at steps s >= offset with (s − offset) % every == 0.
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

    def __post_init__(self) -> None:
        self.validate()

    # ---------------------------------------------------------------- model-free checks
    def validate(self) -> None:
        """Checks that need no model (run again by `steering_hooks`)."""
        if not isinstance(self.vector, (SteeringVector, torch.Tensor)):
            raise TypeError(f"Intervention.vector must be a SteeringVector or a tensor [d], got {type(self.vector).__name__}")
        if isinstance(self.vector, torch.Tensor) and self.vector.ndim != 1:
            raise ValueError(f"Intervention.vector must be 1-D [d], got shape {tuple(self.vector.shape)}")
        if self.mode not in MODES:
            raise ValueError(f"Intervention.mode must be one of {MODES}, got {self.mode!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"Intervention.schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.branch not in BRANCHES:
            raise ValueError(f"Intervention.branch must be one of {BRANCHES}, got {self.branch!r}")
        self.alpha = _finite("Intervention.alpha", self.alpha)
        self.alpha_start = _finite("Intervention.alpha_start", self.alpha_start)
        self.gamma = _finite("Intervention.gamma", self.gamma)
        if self.schedule == "linear":
            if not _is_int(self.ramp_steps) or self.ramp_steps < 1:
                raise ValueError(f"schedule='linear' needs ramp_steps, an int >= 1 (steps from alpha_start to alpha), got {self.ramp_steps!r}")
        if self.schedule == "exp" and not self.gamma > 0:
            raise ValueError(f"schedule='exp' needs gamma > 0 (alpha·gamma**k), got {self.gamma}")
        if self.mode == "norm_relative":
            lows = [self.alpha] + ([self.alpha_start] if self.schedule == "linear" else [])
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
        return self.alpha * self.gamma**k

    def _alpha_tensor(self, k: torch.Tensor) -> torch.Tensor:
        """alpha_at elementwise on a float64 tensor of k (no host sync)."""
        if self.schedule == "linear":
            return self.alpha_start + (self.alpha - self.alpha_start) * (k / self.ramp_steps).clamp(max=1.0)
        return self.alpha * torch.pow(torch.full_like(k, self.gamma), k)

    def window_frames(self, frame_rate: float) -> tuple[int | None, int | None]:
        """[start, end) in frames: the first frame f with f >= start·frame_rate (None = open), likewise end."""

        def to_frame(seconds: float | None) -> int | None:
            if seconds is None:
                return None
            x = seconds * frame_rate
            return math.ceil(x - 1e-9 * max(1.0, abs(x)))  # 0.58 s · 50 = 28.999999999999996 -> 29

        return to_frame(self.start), to_frame(self.end)

    # ---------------------------------------------------------------- resolution against a model
    def resolve(self, model: "HookedMusicGen", *, n_frames: int | None = None, check_hash: bool = True) -> "_Plan":
        """Every model-dependent check; returns what the hook needs."""
        self.validate()
        cfg = model.cfg
        sv = self.vector if isinstance(self.vector, SteeringVector) else None
        site, layer = self.site, self.layer
        if site is None:
            if sv is None or sv.site is None:
                raise ValueError("Intervention needs site= and layer= (the vector is a plain tensor or has no site provenance)")
            site = sv.site
        if site not in SITES:
            if "." not in site:
                raise ValueError(f"unknown steering site {site!r}; expected one of {list(SITES)} or a full hook name like 'blocks.18.hook_resid_post'")
            site, named_layer = parse_hook_name(site)
            if layer is not None and layer != named_layer:
                raise ValueError(f"hook {self.site!r} is layer {named_layer} but layer={layer} was given")
            layer = named_layer
        if layer is None:
            layer = sv.layer if sv is not None else None
            if layer is None:
                raise ValueError(f"Intervention at site {site!r} needs layer= (the vector has no layer provenance)")
        if not _is_int(layer) or not 0 <= layer < cfg.n_layers:
            raise ValueError(f"layer {layer!r} out of range: the model has {cfg.n_layers} layers (0..{cfg.n_layers - 1})")
        template, width_name, head_site = SITES[site]
        name = template.format(layer=layer)
        if site in ("result", "cross_result") and not cfg.use_attn_result:
            raise ValueError(f"site {site!r} ({name}) only runs with model.cfg.use_attn_result = True; set it (costs memory) or steer 'z'")
        heads = self.heads
        if head_site:
            if heads is None and sv is not None and sv.head is not None:
                heads = [sv.head]
            for h in heads or []:
                if not 0 <= h < cfg.n_heads:
                    raise ValueError(f"head {h} out of range: the model has {cfg.n_heads} heads (0..{cfg.n_heads - 1})")
        elif heads is not None:
            raise ValueError(f"heads= only applies to head sites ('z', 'cross_z', 'result', 'cross_result'), not {site!r}")
        width = getattr(cfg, width_name)
        vec = sv.vector if sv is not None else self.vector.detach()
        if not vec.dtype.is_floating_point:
            vec = vec.float()
        if vec.shape[0] != width:
            raise ValueError(
                f"vector has size {vec.shape[0]} but site {site!r} ({name}) needs {width_name}={width}"
                + (f" (concept {sv.concept!r}, made at {sv.site}@{sv.layer})" if sv is not None else "")
            )
        if not torch.isfinite(vec).all():
            raise ValueError("the steering vector contains NaN or inf")
        if check_hash and sv is not None and sv.model_hash is not None and sv.model_hash != cfg.hash():
            raise ValueError(
                f"vector {sv.concept!r} was made on a model with architecture hash {sv.model_hash!r}, but this model's "
                f"cfg.hash() is {cfg.hash()!r}; its activations are not comparable (pass check_hash=False to override)"
            )
        if self.mode != "add" and float(vec.float().norm()) == 0.0:
            raise ValueError(f"mode {self.mode!r} needs a direction, but the vector is zero")
        f0, f1 = self.window_frames(cfg.frame_rate)
        max_delay = model.ctx.max_delay
        longest = cfg.n_ctx - max_delay - 1  # frames the model can generate at most
        limit, what = (n_frames, f"the generation ({n_frames} frames = {n_frames / cfg.frame_rate:g} s)") if n_frames is not None else (
            longest,
            f"the longest audio the model can generate ({longest} frames = {longest / cfg.frame_rate:g} s)",
        )
        if f0 is not None and f0 >= limit:
            raise ValueError(f"window start {self.start} s (frame {f0}) is beyond the end of {what}: the intervention would never fire")
        if f1 is not None and f0 is not None and f1 <= f0:
            raise ValueError(f"window [{self.start}, {self.end}) s contains no frame at {cfg.frame_rate} frames/s")
        if f1 is not None and f1 <= 0:
            raise ValueError(f"window end {self.end} s is before the first frame")
        return _Plan(self, name, site, layer, head_site, heads, vec, f0, f1, max_delay, model.device, cfg.dtype)


@dataclass
class _Plan:
    iv: Intervention
    name: str
    site: str
    layer: int
    head_site: bool
    heads: list[int] | None
    vector: torch.Tensor
    f0: int | None
    f1: int | None
    max_delay: int
    device: torch.device
    dtype: torch.dtype


# ============================================================================ the hook


class SteeringHook:
    """The forward hook of one Intervention (callable as fn(activation, hook)).

    With `record=True` every firing appends a dict to `.log`: step (None in a plain forward),
    start (ctx.start), positions (first, stop, stride: absolute positions steered), alpha (a
    float, or a list per position), rows (branch).
    """

    def __init__(self, plan: _Plan, record: bool = False):
        self.plan = plan
        self.intervention = plan.iv
        self.hook_name = plan.name
        iv = plan.iv
        self.mode, self.branch, self.every, self.offset = iv.mode, iv.branch, iv.every, iv.offset
        self.constant = iv.schedule == "constant"
        self.alpha = iv.alpha
        md = plan.max_delay
        # absolute positions of the window: [p_lo, p_hi)
        self.p_lo = 0 if plan.f0 is None else plan.f0 + md
        self.p_hi = None if plan.f1 is None else plan.f1 + md
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
            if step < self.offset or (self.every is not None and (step - self.offset) % self.every):
                return None
            j0 = i0
        else:
            step = None
            j0 = max(i0, self.offset - s)
            if self.every is not None:
                j0 += (self.offset - s - j0) % self.every
                stride = self.every
            if j0 >= i1:
                return None
        rows = self._rows(ctx, act.ndim)
        if rows is False:
            return None
        n = len(range(j0, i1, stride))
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
        new = self._transform(seg, alpha, v, unit)
        if rows is not None:
            new = torch.where(rows, new, seg)
        if self.record:
            a = alpha if isinstance(alpha, float) else alpha.flatten().tolist()
            self.log.append({"step": step, "start": s, "positions": (s + j0, s + i1, stride), "alpha": a, "rows": self.branch})
        if full:
            return new
        out = act.clone()
        out[index] = new
        return out


# ============================================================================ public entry points


def _as_list(interventions: Intervention | Sequence[Intervention]) -> list[Intervention]:
    if isinstance(interventions, Intervention):
        return [interventions]
    items = list(interventions)
    for i, iv in enumerate(items):
        if not isinstance(iv, Intervention):
            raise TypeError(f"interventions[{i}] must be an Intervention, got {type(iv).__name__}")
    return items


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
    to `model.generate(..., fwd_hooks=...)`, `model.hooks(fwd_hooks=...)` or
    `model.run_with_hooks(..., fwd_hooks=...)`. Hooks on the same point run in list order.
    """
    if n_frames is not None and duration is not None:
        raise ValueError("pass n_frames or duration, not both")
    if duration is not None:
        duration = _finite("duration", duration)
        n_frames = round(duration * model.cfg.frame_rate)
    if n_frames is not None and (not _is_int(n_frames) or n_frames < 1):
        raise ValueError(f"n_frames must be an int >= 1, got {n_frames!r}")
    plans = [iv.resolve(model, n_frames=n_frames, check_hash=check_hash) for iv in _as_list(interventions)]
    return [(p.name, SteeringHook(p, record=record)) for p in plans]


@contextmanager
def steer(
    model: "HookedMusicGen",
    interventions: Intervention | Sequence[Intervention],
    **kwargs: Any,
) -> Iterator["HookedMusicGen"]:
    """Context manager: the interventions are active inside, removed on exit (even on error).

        with steer(model, [Intervention(vec, alpha=0.5, start=5.0)]):
            codes = model.generate(["jazz"], duration=10)

    kwargs go to `steering_hooks` (n_frames, duration, check_hash, record). Yields the model.
    """
    hooks = steering_hooks(model, interventions, **kwargs)
    with model.hooks(fwd_hooks=hooks):
        yield model
