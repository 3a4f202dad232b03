"""`SteeringVector`: a direction in one activation space, with where it came from.

Provenance: the site (a canonical name of `musicgen_lens.hooks.SITES`; old spellings such as
"z" / "cross_z" resolve to "attn.z" / "cross_attn.z", so vectors saved before the registry keep
loading), layer, head, concept, method, and two fingerprints of the model whose activations
made it: `model_hash` (`cfg.hash()`, the architecture) and `weights_hash`
(`provenance.weights_fingerprint`, the trained weights). `Intervention.resolve` checks both
(`provenance.check_model`); a vector from before weights hashes has none and is accepted.

Saved as safetensors (tensor "vector"; provenance JSON and a SHA-256 `tensor_checksum` of the
payload in the metadata; no pickle). Loading verifies the checksum, so a damaged or edited file
is refused instead of steering with garbage.
"""

from __future__ import annotations

import json
import math
import numbers
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float

from musicgen_lens._atomic import atomic_path
from musicgen_lens.hooks import SITES, Site, parse_hook_name
from musicgen_lens.hooks import site as lookup_site
from musicgen_lens.provenance import tensor_checksum, verify_checksum, weights_fingerprint

if TYPE_CHECKING:
    from musicgen_lens.model import HookedMusicGen

__all__ = ["METHODS", "SteeringVector", "steerable_site"]

METHODS = ("probe", "diff_means", "class_mean", "pca", "combined", "manual", "rfm", "sae")
_FORMAT = "musicgen_lens.SteeringVector/1"


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


def _flatten_pair(acts_pos: Any, acts_neg: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Positive and negative activations as [n, d] rows of one width, on the positives' device."""
    pos, neg = _flatten_acts("acts_pos", acts_pos), _flatten_acts("acts_neg", acts_neg)
    if pos.shape[-1] != neg.shape[-1]:
        raise ValueError(f"acts_pos and acts_neg must have the same width, got {pos.shape[-1]} and {neg.shape[-1]}")
    return pos, neg.to(pos.device)


def steerable_site(name: str) -> tuple[Site, int | None]:
    """A site name, alias or full hook name -> (registry Site, layer or None); ValueError unless
    the site is steerable (`Site.is_vector`: a feature vector at each decoder position)."""
    try:
        s, layer = parse_hook_name(name) if name.startswith("blocks.") else (lookup_site(name), None)
    except ValueError as e:
        if "." in name and name.startswith("blocks."):
            raise ValueError(f"{name!r} is not a steerable hook: {e}") from None
        raise ValueError(f"unknown steering site {name!r}: {e}") from None
    if not s.is_vector:
        raise ValueError(
            f"{name!r} is not a steerable hook: site {s.name!r} {list(s.shape)} holds no feature vector per decoder "
            f"position; steerable sites: {sorted(n for n, x in SITES.items() if x.is_vector)}"
        )
    return s, layer




@dataclass(eq=False)
class SteeringVector:
    """A direction [d] in one activation space, with its provenance.

    `site` / `layer` / `head` say where it was read (and are the defaults of an `Intervention`
    built from it); `site` is stored as the registry's canonical name (a full hook name sets the
    layer too). `model_hash` is `model.cfg.hash()` and `weights_hash` is
    `weights_fingerprint(model)` of the model whose activations made it, both checked against
    the model it steers. `metadata` must be JSON-serialisable to be saved.
    """

    vector: Float[torch.Tensor, "d"]
    site: str | None = None
    layer: int | None = None
    head: int | None = None
    concept: str | None = None
    method: str = "manual"
    model_hash: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    weights_hash: str | None = None

    def __post_init__(self) -> None:
        v = torch.as_tensor(self.vector)
        if v.ndim != 1 or v.numel() == 0:
            raise ValueError(f"SteeringVector.vector must be a 1-D tensor [d], got shape {tuple(v.shape)}")
        if not v.dtype.is_floating_point:
            v = v.float()
        if not torch.isfinite(v).all():
            raise ValueError("SteeringVector.vector contains NaN or inf")
        self.vector = v.detach()
        if self.site is not None:
            s, layer = steerable_site(self.site)  # a full hook name is accepted too
            if layer is not None:
                if self.layer is not None and self.layer != layer:
                    raise ValueError(f"site {self.site!r} is layer {layer} but layer={self.layer} was given")
                self.layer = layer
            self.site = s.name
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
            f"norm={self.norm:.4g}, model_hash={self.model_hash!r}, weights_hash={self.weights_hash!r})"
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
            "weights_hash": self.weights_hash,
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
        for attr, what in (("model_hash", "model architectures"), ("weights_hash", "trained weights")):
            mine, theirs = getattr(self, attr), getattr(other, attr)
            if mine is not None and theirs is not None and mine != theirs:
                raise ValueError(
                    f"cannot combine SteeringVectors from different {what}: {attr} "
                    f"{mine!r} ({self.concept!r}) vs {theirs!r} ({other.concept!r})"
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
            weights_hash=self.weights_hash or other.weights_hash,
            metadata={"components": [self.provenance(), other.provenance()], "op": op},
        )

    def __add__(self, other: Any) -> "SteeringVector":
        return self._combine(other, 1.0, "+")

    def __sub__(self, other: Any) -> "SteeringVector":
        return self._combine(other, -1.0, "-")

    # ---------------------------------------------------------------- save / load
    def save(self, path: str | os.PathLike) -> None:
        """safetensors file: tensor "vector"; provenance as JSON and the payload's SHA-256
        (`provenance.tensor_checksum`) in the metadata (no pickle).

        Written to a temporary file in the same directory, then renamed over `path`, so a
        crash never leaves a half-written file.
        """
        from safetensors.torch import save_file

        try:
            provenance = json.dumps(self.provenance(), sort_keys=True)
        except (TypeError, ValueError) as e:
            raise ValueError(f"SteeringVector.metadata must be JSON-serialisable to be saved: {e}") from e
        tensors = {"vector": self.vector.detach().contiguous().cpu()}
        meta = {"format": _FORMAT, "provenance": provenance, "checksum": tensor_checksum(tensors)}
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=meta)

    @classmethod
    def load(cls, path: str | os.PathLike, device: torch.device | str | None = None) -> "SteeringVector":
        from safetensors import safe_open

        with safe_open(os.fspath(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            if meta.get("format") != _FORMAT or "vector" not in f.keys():
                raise ValueError(f"{os.fspath(path)!r} is not a SteeringVector file (format {meta.get('format')!r}, expected {_FORMAT!r})")
            vector = f.get_tensor("vector")
        verify_checksum({"vector": vector}, meta.get("checksum"), os.fspath(path))  # files from before checksums have none
        prov = json.loads(meta["provenance"])
        return cls(vector.to(device) if device is not None else vector, **prov)

    # ---------------------------------------------------------------- constructors
    @classmethod
    def _made(
        cls, v: torch.Tensor, method: str, model: "HookedMusicGen | None", model_hash: str | None, *,
        site: str | None, layer: int | None, head: int | None, concept: str | None, metadata: dict[str, Any],
    ) -> "SteeringVector":
        """A constructor's result: with a model, the width is checked against the site and both
        of the model's hashes are recorded."""
        weights_hash = None
        if model is not None:
            if site is not None:
                s = steerable_site(site)[0]
                width = s.width(model.cfg)
                if v.shape[0] != width:
                    raise ValueError(f"the vector has size {v.shape[0]} but site {s.name!r} of this model has {s.width_axis}={width}")
            model_hash, weights_hash = model.cfg.hash(), weights_fingerprint(model)
        return cls(v, site=site, layer=layer, head=head, concept=concept, method=method, model_hash=model_hash,
                   weights_hash=weights_hash, metadata=metadata)

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
        return cls._made(v, "probe", model, model_hash, site=site, layer=layer, head=head, concept=concept, metadata=meta)

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
        pos, neg = _flatten_pair(acts_pos, acts_neg)
        v = pos.double().mean(0) - neg.double().mean(0)
        meta = {"n_pos": pos.shape[0], "n_neg": neg.shape[0], **(metadata or {})}
        out = cls._made(v.to(pos.dtype), "diff_means", model, model_hash, site=site, layer=layer, head=head, concept=concept, metadata=meta)
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
        out = cls._made(v.to(x.dtype), "class_mean", model, model_hash, site=site, layer=layer, head=head, concept=concept, metadata=meta)
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
        pos, neg = (x.double() for x in _flatten_pair(acts_pos, acts_neg))
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
        return cls._made(v.to(dtype), "pca", model, model_hash, site=site, layer=layer, head=head, concept=concept, metadata=meta)

    @classmethod
    def from_rfm(cls, probe: Any = None, acts: Any = None, labels: Any = None, *, rank: int = 0, **kwargs: Any) -> "SteeringVector":
        """The AGOP eigenvector of rank `rank` (0 = top) of a fitted `musicgen_lens.rfm.RFMProbe`
        (or of one fitted on acts, labels), signed towards the concept; method="rfm". Keyword
        arguments as `musicgen_lens.rfm.rfm_directions` (site, layer, target, model, ...)."""
        from musicgen_lens.rfm import rfm_directions

        return rfm_directions(probe, acts, labels, k=rank + 1, **kwargs)[rank]

    @classmethod
    def from_sae(cls, sae: Any, feature: int, *, site: str, layer: int, head: int | None = None, concept: str | None = None,
                 model: "HookedMusicGen | None" = None, model_hash: str | None = None, normalize: bool = True,
                 metadata: dict[str, Any] | None = None) -> "SteeringVector":
        """A sparse autoencoder feature's decoder direction W_dec[feature] (unit norm unless
        normalize=False); method="sae". `sae` is a `musicgen_lens.sae.SAE` (or anything with a
        W_dec [d_sae, d_in])."""
        W = torch.as_tensor(sae.W_dec).detach()
        if W.ndim != 2 or not (_is_int(feature) and 0 <= feature < W.shape[0]):
            raise ValueError(f"feature must be an int in [0, {W.shape[0]}) (the SAE's latents), got {feature!r}")
        v = W[int(feature)].float()
        norm = float(v.norm())
        if normalize:
            if norm == 0:
                raise ValueError(f"feature {feature} has a zero decoder row")
            v = v / norm
        meta = {"feature": int(feature), "decoder_norm": norm, "d_sae": int(W.shape[0]), **dict(getattr(sae, "metadata", {}) or {}), **(metadata or {})}
        return cls._made(v, "sae", model, model_hash, site=site, layer=layer, head=head,
                         concept=concept if concept is not None else f"sae_feature_{int(feature)}", metadata=meta)
