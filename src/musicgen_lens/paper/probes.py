"""Probes that compare, and the authors' probe files.

`compare_probes` fits, per layer, every probe kind on the same held-out splits and reports the
same two numbers for each: held-out accuracy (stratified 15% split, as the authors) and
*direction agreement*, the mean |cosine| between the steering directions of fits that differ
only in the split seed and the learning rate (1 = the direction does not depend on them).

Kinds (all bias-free on L2-normalised rows, like the authors' probe, except where said):

    mse       one-hot MSE regression (the paper's multi-class probe as we read it; `LinearProbe.paper()` family)
    ordinal   the authors' multi-class "MSE probe": regresses the integer class index (one output,
              one ordinal direction; prediction = nearest index). Its direction for class k is +w
              for classes above the middle index and -w below: it cannot point at a middle class.
    ce        softmax cross-entropy, same optimiser (Adam, full batch)
    logistic  scikit-learn multinomial logistic regression (L2, C=1; lr does not apply)

Layer mapping of the authors' files (`load_authors_probes`): their probe key ``k`` was trained
on ``hidden_states[k]`` of Hugging Face's decoder, i.e. the output of decoder layer ``k - 1``
(our ``blocks.{k-1}.hook_resid_post``; key 0 would be the embeddings), and their notebook hooks
that probe on decoder layer ``k + 1``: probe key L-1 (trained on layer L-2's output) steers
layer L. So the layer they steer is ``PROBE_LAYER_OFFSET = 2`` above the layer the direction
was learnt on. ``match="trained"`` (default) steers where the probe was trained;
``match="authors"`` reproduces their notebook's pairing.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass, field
from itertools import combinations
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import torch

from musicgen_lens.probes import LinearProbe, held_out_split

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "KINDS", "PROBE_LAYER_OFFSET", "AuthorsProbe", "OrdinalProbe", "ProbeComparison", "authors_hook_layer",
    "authors_trained_layer", "compare_probes", "load_authors_probes", "make_probe",
]

KINDS = ("mse", "ordinal", "ce", "logistic")
PROBE_LAYER_OFFSET = 2  # authors' notebook: hooked layer - layer whose output the probe was trained on


def authors_trained_layer(key: int) -> int:
    """Our block index whose ``hook_resid_post`` the authors' probe ``key`` was trained on (key - 1)."""
    if key < 1:
        raise ValueError(f"authors' probe key {key} is hidden_states[{key}] = the embeddings, not a decoder layer output")
    return key - 1


def authors_hook_layer(key: int) -> int:
    """The decoder layer the authors' notebook hooks with probe ``key`` (key + 1)."""
    return authors_trained_layer(key) + PROBE_LAYER_OFFSET


class OrdinalProbe:
    """The authors' multi-class MSE probe: one bias-free output regressing the class index."""

    def __init__(self, **kw: Any):
        self.kw = {"method": "torch", "bias": False, "normalize": "l2", **kw}

    def fit(self, X: np.ndarray, y: np.ndarray) -> "OrdinalProbe":
        self.classes_, idx = np.unique(np.asarray(y), return_inverse=True)
        self.reg_ = LinearProbe(task="regression", **self.kw).fit(X, idx.astype(np.float64))
        self.coef_ = self.reg_.coef_
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        idx = np.clip(np.rint(self.reg_.predict(X)), 0, len(self.classes_) - 1).astype(int)
        return self.classes_[idx]

    def score(self, X: np.ndarray, y: np.ndarray) -> float:
        return float(np.mean(self.predict(X) == np.asarray(y)))

    def direction(self, target: Any) -> torch.Tensor:
        k = [i for i, c in enumerate(self.classes_.tolist()) if c == target]
        if not k:
            raise ValueError(f"target {target!r} is not one of {self.classes_.tolist()}")
        w = self.reg_.direction()
        return w if k[0] >= (len(self.classes_) - 1) / 2 else -w


def make_probe(kind: str, *, lr: float = 5e-3, seed: int = 0, epochs: int = 250, tol: float | None = None, device: Any = None) -> Any:
    """A fresh probe of `kind` (see the module docstring)."""
    torch_kw = dict(lr=lr, seed=seed, epochs=epochs, tol=tol, device=device)
    if kind == "mse":
        return LinearProbe.paper(**torch_kw)
    if kind == "ce":
        return LinearProbe.paper(loss="ce", **torch_kw)
    if kind == "ordinal":
        return OrdinalProbe(loss="mse", **torch_kw)
    if kind == "logistic":
        return LinearProbe(method="sklearn", bias=False, normalize="l2", C=1.0, max_iter=2000)
    raise ValueError(f"unknown probe kind {kind!r}; expected one of {KINDS}")


def _directions(probe: Any, classes: Sequence[Any]) -> np.ndarray:
    return np.stack([np.asarray(probe.direction(c), dtype=np.float64) for c in classes])


def _agreement(dirs: list[np.ndarray]) -> float:
    if len(dirs) < 2:
        return float("nan")
    return float(np.mean([np.abs((a * b).sum(-1)).mean() for a, b in combinations(dirs, 2)]))


@dataclass
class ProbeComparison:
    """One row per (hook, kind): accuracy mean/std over fits, agreement, chance; `probes` holds
    the first fit of each (hook, kind) (split seed seeds[0], lr lrs[0]) for steering."""

    table: list[dict[str, Any]]
    classes: list[Any]
    chance: float
    probes: dict[tuple[str, str], Any] = field(default_factory=dict, repr=False)

    def best(self, kind: str) -> dict[str, Any]:
        rows = [r for r in self.table if r["kind"] == kind]
        return dict(max(rows, key=lambda r: r["accuracy"]))

    def plot(self) -> "Figure":
        from matplotlib.figure import Figure

        fig = Figure(figsize=(10, 3.6), layout="constrained")
        ax_acc, ax_agr = fig.subplots(1, 2)
        for kind in sorted({r["kind"] for r in self.table}, key=KINDS.index):
            rows = sorted((r for r in self.table if r["kind"] == kind), key=lambda r: r["layer"])
            x = [r["layer"] for r in rows]
            ax_acc.errorbar(x, [r["accuracy"] for r in rows], yerr=[r["accuracy_std"] for r in rows], marker="o", capsize=3, label=kind)
            ax_agr.plot(x, [r["agreement"] for r in rows], marker="o", label=kind)
        ax_acc.axhline(self.chance, color="gray", linestyle="--", linewidth=1, label="chance")
        ax_acc.set(xlabel="layer", ylabel="held-out accuracy", title="probe accuracy by layer (15% held out)")
        ax_agr.set(xlabel="layer", ylabel="mean |cos|", title="direction agreement across seeds / lrs", ylim=(0, 1.05))
        ax_acc.legend(fontsize="small")
        ax_agr.legend(fontsize="small")
        return fig


def _layer(hook: str) -> int | None:
    m = re.match(r"blocks\.(\d+)\.", hook)
    return int(m.group(1)) if m else None


def compare_probes(
    activations: Mapping[str, Any],
    labels: Sequence[Any],
    *,
    kinds: Sequence[str] = ("mse", "ce", "logistic"),
    seeds: Sequence[int] = (0, 1, 2),
    lrs: Sequence[float] = (5e-3, 5e-2),
    epochs: int = 250,
    tol: float | None = None,
    test_size: float = 0.15,
    device: Any = None,
) -> ProbeComparison:
    """Per hook and kind: held-out accuracy over len(seeds) stratified splits x lrs, and the
    agreement of the per-class directions across those fits. `activations`: hook -> [n, d]."""
    y = np.asarray(labels)
    classes = np.unique(y).tolist()
    chance = float(np.max(np.unique(y, return_counts=True)[1]) / len(y))
    table, probes = [], {}
    for hook, A in activations.items():
        X = np.asarray(A, dtype=np.float64)
        for kind in kinds:
            if kind not in KINDS:
                raise ValueError(f"unknown probe kind {kind!r}; expected one of {KINDS}")
            accs, dirs = [], []
            for s in seeds:
                Xtr, Xte, ytr, yte = held_out_split(X, y, test_size=test_size, seed=s)
                for lr in (lrs[:1] if kind == "logistic" else lrs):
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        probe = make_probe(kind, lr=lr, seed=s, epochs=epochs, tol=tol, device=device).fit(Xtr, ytr)
                    probes.setdefault((hook, kind), probe)
                    accs.append(probe.score(Xte, yte))
                    dirs.append(_directions(probe, classes))
            table.append({"hook": hook, "layer": _layer(hook), "kind": kind, "accuracy": float(np.mean(accs)),
                          "accuracy_std": float(np.std(accs)), "agreement": _agreement(dirs), "fits": len(accs), "n": len(y)})
    return ProbeComparison(table, classes, chance, probes)


# ------------------------------------------------------------------ the authors' probe files


@dataclass
class AuthorsProbe:
    """A probe saved the authors' way: ``linear.weight`` [n_classes, d_model] (bias-free)."""

    weight: torch.Tensor
    key: int
    classes: list[Any] | None = None
    match: str = "trained"

    @property
    def trained_layer(self) -> int:
        return authors_trained_layer(self.key)

    @property
    def hook_layer(self) -> int:
        return authors_hook_layer(self.key)

    @property
    def layer(self) -> int:
        """The layer to steer: the trained layer (match="trained") or the authors' pairing (match="authors")."""
        return self.trained_layer if self.match == "trained" else self.hook_layer

    def direction(self, target: Any = None) -> torch.Tensor:
        W = self.weight.float()
        if W.shape[0] == 1:
            row = W[0]
        else:
            if target is None:
                raise ValueError(f"target is required for a {W.shape[0]}-class probe")
            k = self.classes.index(target) if self.classes is not None and not isinstance(target, int) else int(target)
            row = W[k]
        return row / row.norm()

    def steering_vector(self, target: Any = None, model: Any = None) -> Any:
        from musicgen_lens.steering import SteeringVector

        return SteeringVector.from_probe(self, target, site="resid_post", layer=self.layer, model=model,
                                         metadata={"authors_key": self.key, "trained_layer": self.trained_layer, "match": self.match})


def _key_of(name: str) -> int:
    m = re.search(r"(\d+)(?!.*\d)", str(name))
    if not m:
        raise ValueError(f"cannot read a layer key from {name!r}; pass key=")
    return int(m.group(1))


def load_authors_probes(
    path: str | os.PathLike, *, key: int | None = None, classes: Sequence[Any] | None = None, match: str = "trained",
) -> dict[int, AuthorsProbe]:
    """Probe weights saved the authors' way (``torch.save(probe.state_dict())``, a dict with
    ``linear.weight`` [classes, d_model]; or a dict of those keyed by layer key, nested or as
    ``"{key}.linear.weight"``), read with ``torch.load(weights_only=True)`` (tensors and plain
    containers only: nothing else is unpickled). A single probe needs `key` (else it is read
    from the file name's last number). Returns {key: AuthorsProbe}; see the module docstring
    for the layer mapping and `match`."""
    if match not in ("trained", "authors"):
        raise ValueError(f"match must be 'trained' or 'authors', got {match!r}")
    state = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict")
    found: dict[int, torch.Tensor] = {}
    if "linear.weight" in state:
        found[_key_of(os.path.basename(os.fspath(path))) if key is None else int(key)] = state["linear.weight"]
    else:
        for name, value in state.items():
            if isinstance(value, Mapping) and "linear.weight" in value:
                found[_key_of(name)] = value["linear.weight"]
            elif isinstance(name, str) and name.endswith("linear.weight") and isinstance(value, torch.Tensor):
                found[_key_of(name[: -len("linear.weight")])] = value
    if not found:
        raise ValueError(f"{path} has no 'linear.weight' (keys: {list(state)[:8]})")
    out = {}
    for k, w in found.items():
        if w.ndim != 2:
            raise ValueError(f"probe {k}: linear.weight must be [n_classes, d_model], got {tuple(w.shape)}")
        if classes is not None and w.shape[0] not in (1, len(classes)):
            raise ValueError(f"probe {k} has {w.shape[0]} rows but {len(classes)} classes were given")
        out[k] = AuthorsProbe(w.detach().clone(), k, list(classes) if classes is not None else None, match)
    return dict(sorted(out.items()))
