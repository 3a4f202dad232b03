"""RFM / AGOP directions (MusicRFM, arXiv 2510.19127) and multi-concept, layer-weighted steering.

MusicRFM trains a Recursive Feature Machine (RFM; Radhakrishnan et al., Science 2024) on the
activations of each layer and steers along the top eigenvectors of the predictor's Average
Gradient Outer Product (AGOP): the directions in activation space along which the learned
(nonlinear) concept detector changes most. The authors' code (astradzhao/music-rfm) fits
`xrfm.xRFM` and takes the AGOP's top eigenvectors with `torch.lobpcg`.

`RFMProbe` has two back ends:

- ``backend="xrfm"`` (the ``rfm`` extra: ``pip install musicgen-lens[rfm]``, xrfm 0.4.x): one
  xRFM leaf with a Laplace ("l2") kernel; `.agop` is its best model's AGOP, `.M` its feature matrix.
- ``backend="torch"`` (always available; ``"auto"`` picks xrfm when installed, else torch): a
  small Recursive Feature Machine in plain torch, the algorithm of the RFM paper:

      K_M(x, z) = exp(−‖x − z‖_M / L),  ‖u‖_M = sqrt(uᵀ M u)        (Laplace kernel, bandwidth L)
      f(x)      = Σ_j a_j K_M(x, z_j),   a = (K_M(Z, Z) + reg·I)⁻¹ Y   (kernel ridge regression)
      ∇f(x)     = −(1/L) Σ_j a_j K_M(x, z_j) M (x − z_j) / ‖x − z_j‖_M
      AGOP      = (1/n) Σ_i Σ_c ∇f_c(x_i) ∇f_c(x_i)ᵀ                   (over the training rows, outputs c)
      M         ← AGOP / (tr(AGOP) / d)                                 (rescaled to trace d), repeat `iters` times

  starting from M = I; Z are the training rows (a seeded subset of at most `max_centers`). `.M`
  is the feature matrix the final predictor used, `.agop` the AGOP of that final predictor.

Both back ends fit on standardised rows (x' = (x − μ)/σ, statistics of the training rows), and
`.agop` is reported in the raw activation space: ∇_x f = diag(1/σ) ∇_x' f, so
AGOP_raw = diag(1/σ) AGOP' diag(1/σ). Classification targets are ±1 (binary: classes_[1] is +1)
or one-hot (several classes; `agops_[c]` is class c's AGOP); regression targets are centred.

`directions(k, target)` are the top-k eigenvectors of the AGOP (`torch.linalg.eigh`, exact for
the small d of a layer), each signed to agree with the concept: v·(mean(x | target) − mean(x |
rest)) >= 0 for classification, v·cov(x, y) >= 0 for regression. `rfm_directions` /
`SteeringVector.from_rfm` turn them into SteeringVectors (method="rfm", with provenance).

Steering several layers and concepts at once, as MusicRFM does: `layer_weights` turns per-layer
probe scores into weights (top-k or exponential) and `multi_concept_interventions` turns
{concept: {layer: direction}} plus scores into one list of Interventions for `generate(steering=)`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from musicgen_lens.model import HookedMusicGen
    from musicgen_lens.steering import Intervention, SteeringVector

__all__ = ["RFMProbe", "xrfm_available", "rfm_directions", "layer_weights", "multi_concept_interventions"]

_BACKENDS = ("auto", "torch", "xrfm")


def xrfm_available() -> bool:
    try:
        import xrfm  # noqa: F401
    except ImportError:
        return False
    return True


def _as_float_tensor(X: Any, what: str) -> torch.Tensor:
    t = torch.as_tensor(np.array(X) if not isinstance(X, torch.Tensor) else X).detach()
    if t.ndim != 2 or t.shape[0] == 0:
        raise ValueError(f"{what} must be 2-D [n, d] with at least one row, got shape {tuple(t.shape)}")
    t = t.to(torch.float64)
    if not torch.isfinite(t).all():
        raise ValueError(f"{what} contains NaN or inf")
    return t


def _laplace(X: torch.Tensor, Z: torch.Tensor, M: torch.Tensor, L: float) -> tuple[torch.Tensor, torch.Tensor]:
    """K [n, m] and the Mahalanobis distances [n, m]."""
    XM, ZM = X @ M, Z @ M
    d2 = (XM * X).sum(1, keepdim=True) - 2 * XM @ Z.T + (ZM * Z).sum(1)[None]
    dist = d2.clamp_min(0).sqrt()
    return torch.exp(-dist / L), dist


class RFMProbe:
    """A Recursive Feature Machine probe whose AGOP gives steering directions (module docstring).

    task        "classification" | "regression".
    iters       RFM iterations (torch back end; xrfm: its `iters`).
    bandwidth   L of the Laplace kernel (on standardised rows).
    reg         ridge of the kernel regression.
    max_centers at most this many training rows are kernel centres (a seeded subset).
    backend     "auto" (xrfm if installed) | "torch" | "xrfm".
    seed        seeds the centre subset and xrfm's split (no global RNG is touched by the torch back end).
    """

    def __init__(
        self, task: str = "classification", *, iters: int = 5, bandwidth: float = 10.0, reg: float = 1e-3,
        max_centers: int = 2000, backend: str = "auto", seed: int = 0, concept: str | None = None,
    ):
        if task not in ("classification", "regression"):
            raise ValueError(f"task must be 'classification' or 'regression', got {task!r}")
        if backend not in _BACKENDS:
            raise ValueError(f"backend must be one of {_BACKENDS}, got {backend!r}")
        if backend == "xrfm" and not xrfm_available():
            raise ImportError("backend='xrfm' needs the xrfm package: pip install 'musicgen-lens[rfm]' (or backend='torch')")
        if not (isinstance(iters, int) and iters >= 1):
            raise ValueError(f"iters must be an int >= 1, got {iters!r}")
        if not (bandwidth > 0 and reg >= 0 and max_centers >= 1):
            raise ValueError("bandwidth must be > 0, reg >= 0 and max_centers >= 1")
        self.task, self.iters, self.bandwidth, self.reg = task, iters, float(bandwidth), float(reg)
        self.max_centers, self.seed, self.concept = int(max_centers), int(seed), concept
        self.backend = ("xrfm" if xrfm_available() else "torch") if backend == "auto" else backend

    # ------------------------------------------------------------------ fitting
    def _targets(self, y: Any, n: int) -> torch.Tensor:
        y = np.asarray(y)
        if y.shape[0] != n:
            raise ValueError(f"{y.shape[0]} labels for {n} rows")
        if self.task == "classification":
            self.classes_ = np.unique(y)
            if len(self.classes_) < 2:
                raise ValueError("classification needs at least two classes")
            if len(self.classes_) == 2:
                Y = np.where(y == self.classes_[1], 1.0, -1.0)[:, None]
            else:
                Y = (y[:, None] == self.classes_[None]).astype(np.float64)
        else:
            Y = y.astype(np.float64).reshape(n, -1)
        self._y_raw = y
        return torch.from_numpy(np.asarray(Y, dtype=np.float64))

    def fit(self, X: Any, y: Any) -> "RFMProbe":
        Xr = _as_float_tensor(X, "X")
        Y = self._targets(y, Xr.shape[0])
        self.mean_ = Xr.mean(0)
        self.scale_ = Xr.std(0).clamp_min(1e-8)
        Xs = (Xr - self.mean_) / self.scale_
        self.y_mean_ = Y.mean(0) if self.task == "regression" else torch.zeros(Y.shape[1], dtype=torch.float64)
        Yc = Y - self.y_mean_
        self.n_features_in_ = Xr.shape[1]
        if self.backend == "xrfm":
            agops, M = self._fit_xrfm(Xs, Yc)
        else:
            agops, M = self._fit_torch(Xs, Yc)
        inv = 1.0 / self.scale_
        self.M_std_ = M
        self.agops_std_ = agops
        self.agops_ = agops * inv[None, :, None] * inv[None, None, :]  # raw activation space
        self._X_train, self._Y_train = Xr, Y
        return self

    def _fit_torch(self, Xs: torch.Tensor, Y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, d = Xs.shape
        gen = torch.Generator().manual_seed(self.seed)
        idx = torch.randperm(n, generator=gen)[: self.max_centers] if n > self.max_centers else torch.arange(n)
        Z, YZ = Xs[idx], Y[idx]
        M = torch.eye(d, dtype=torch.float64)
        for it in range(self.iters):
            a = self._solve(Z, YZ, M)
            agops = self._agop(Xs, Z, a, M)
            if it < self.iters - 1:
                total = agops.sum(0)
                tr = float(torch.trace(total))
                if tr <= 0:
                    break
                M = total / (tr / d)
        self.centers_, self.weights_, self.M_final_ = Z, a, M
        return agops, M

    def _solve(self, Z: torch.Tensor, Y: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
        K, _ = _laplace(Z, Z, M, self.bandwidth)
        K.diagonal().add_(self.reg)
        return torch.linalg.solve(K, Y)

    def _agop(self, X: torch.Tensor, Z: torch.Tensor, a: torch.Tensor, M: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
        """Per-output AGOP [c, d, d] of f(x) = K_M(x, Z) a over the rows of X."""
        c, d = a.shape[1], X.shape[1]
        out = torch.zeros(c, d, d, dtype=X.dtype)
        for i in range(0, X.shape[0], chunk):
            x = X[i : i + chunk]
            K, dist = _laplace(x, Z, M, self.bandwidth)
            W = torch.where(dist > 0, K / dist.clamp_min(1e-12), torch.zeros_like(K))  # [n, m]
            for j in range(c):
                A = W * a[:, j][None]  # [n, m]
                G = -(A.sum(1, keepdim=True) * x - A @ Z) @ M / self.bandwidth  # [n, d]
                out[j] += G.T @ G
        return out / X.shape[0]

    def _fit_xrfm(self, Xs: torch.Tensor, Y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        import contextlib
        import io

        from xrfm import xRFM

        n = Xs.shape[0]
        gen = torch.Generator().manual_seed(self.seed)
        perm = torch.randperm(n, generator=gen)
        n_val = max(1, n // 5)
        val, tr = perm[:n_val], perm[n_val:]
        params = {
            "model": {"kernel": "l2", "bandwidth": self.bandwidth, "exponent": 1.0, "diag": False, "bandwidth_mode": "constant"},
            "fit": {"reg": self.reg, "iters": self.iters, "return_best_params": True, "get_agop_best_model": True, "early_stop_rfm": False},
        }
        model = xRFM(rfm_params=params, device=torch.device("cpu"), tuning_metric="mse", max_leaf_size=max(n, 60_000), verbose=False)
        X32, Y32 = Xs.float(), Y.float()
        with contextlib.redirect_stdout(io.StringIO()):
            model.fit(X32[tr], Y32[tr], X32[val], Y32[val])
        agops = [torch.as_tensor(a).double().cpu() for a in model.collect_best_agops() if a is not None]
        Ms = [torch.as_tensor(m).double().cpu() for m in model.collect_Ms() if m is not None]
        if not agops:
            raise RuntimeError("xrfm returned no AGOP (get_agop_best_model)")
        agop = torch.stack(agops).mean(0)
        self._xrfm = model
        # xrfm returns one AGOP summed over outputs
        return agop[None], (torch.stack(Ms).mean(0) if Ms else torch.eye(Xs.shape[1], dtype=torch.float64))

    # ------------------------------------------------------------------ prediction
    def _check_fitted(self) -> None:
        if not hasattr(self, "agops_"):
            raise RuntimeError("this RFMProbe is not fitted; call fit(X, y) first")

    def decision_function(self, X: Any) -> np.ndarray:
        """The predictor's raw outputs [n] (binary / one regression target) or [n, c]."""
        self._check_fitted()
        Xs = (_as_float_tensor(X, "X") - self.mean_) / self.scale_
        if self.backend == "xrfm":
            out = torch.as_tensor(self._xrfm.predict(Xs.float())).double().reshape(Xs.shape[0], -1)
        else:
            out = torch.cat([_laplace(Xs[i : i + 2048], self.centers_, self.M_final_, self.bandwidth)[0] @ self.weights_ for i in range(0, Xs.shape[0], 2048)])
        out = out + self.y_mean_
        out = out.numpy()
        return out[:, 0] if out.shape[1] == 1 else out

    def predict(self, X: Any) -> np.ndarray:
        f = self.decision_function(X)
        if self.task == "regression":
            return f
        if f.ndim == 1:
            return np.where(f > 0, self.classes_[1], self.classes_[0])
        return self.classes_[np.argmax(f, axis=1)]

    def score(self, X: Any, y: Any) -> float:
        """Accuracy (classification) or R² (regression)."""
        y = np.asarray(y)
        pred = self.predict(X)
        if self.task == "classification":
            return float(np.mean(pred == y))
        y2, p2 = y.reshape(len(y), -1).astype(np.float64), np.asarray(pred).reshape(len(y), -1)
        ss = ((y2 - y2.mean(0)) ** 2).sum()
        return float(1 - ((y2 - p2) ** 2).sum() / ss) if ss > 0 else 0.0

    # ------------------------------------------------------------------ AGOP and directions
    @property
    def agop(self) -> torch.Tensor:
        """The AGOP [d, d] of the fitted predictor in the raw activation space (summed over outputs)."""
        self._check_fitted()
        return self.agops_.sum(0)

    @property
    def M(self) -> torch.Tensor:
        """The feature matrix [d, d] of the final kernel (in the standardised space it was fitted in)."""
        self._check_fitted()
        return self.M_std_

    def _output(self, target: Any) -> int | None:
        if self.agops_.shape[0] == 1 or target is None:
            return None
        if self.task == "classification":
            hits = [i for i, c in enumerate(self.classes_.tolist()) if c == target]
            if not hits:
                raise ValueError(f"target {target!r} is not one of the classes {self.classes_.tolist()}")
            return hits[0]
        return int(target)

    def _reference(self, target: Any) -> torch.Tensor:
        """The vector a direction must agree with: class-mean difference, or cov(x, y)."""
        X, y = self._X_train, self._y_raw
        if self.task == "classification":
            pos_class = target if target is not None else self.classes_[-1]
            mask = torch.from_numpy(np.asarray(y == pos_class))
            if mask.all() or not mask.any():
                raise ValueError(f"target {pos_class!r} has no rows (or all of them)")
            return X[mask].mean(0) - X[~mask].mean(0)
        Y = self._Y_train[:, 0 if target is None else int(target)]
        return ((X - X.mean(0)) * (Y - Y.mean())[:, None]).mean(0)

    def directions(self, k: int = 1, target: Any = None) -> torch.Tensor:
        """Top-k unit eigenvectors [k, d] of the AGOP (of `target`'s output for one-hot classes),
        each signed so that it points towards the concept (module docstring). Binary
        classification: target None / classes_[1] is the positive class, classes_[0] flips signs."""
        self._check_fitted()
        out = self._output(target)
        G = self.agops_.sum(0) if out is None else self.agops_[out]
        evals, evecs = torch.linalg.eigh(G)
        order = torch.argsort(evals, descending=True)[:k]
        V = evecs[:, order].T.clone()
        ref = self._reference(target if (self.task == "regression" or len(self.classes_) > 2) else None)
        if self.task == "classification" and len(self.classes_) == 2 and target is not None and target == self.classes_[0]:
            ref = -ref
        signs = torch.where(V @ ref < 0, -1.0, 1.0).to(V.dtype)
        self.eigenvalues_ = evals[order]
        return (V * signs[:, None]).float()

    def direction(self, target: Any = None) -> torch.Tensor:
        """The top AGOP eigenvector (so `SteeringVector.from_probe` accepts an RFMProbe too)."""
        return self.directions(1, target)[0]


def rfm_directions(
    probe: "RFMProbe | None" = None,
    acts: Any = None,
    labels: Any = None,
    *,
    k: int = 1,
    target: Any = None,
    site: str,
    layer: int,
    head: int | None = None,
    concept: str | None = None,
    model: "HookedMusicGen | None" = None,
    model_hash: str | None = None,
    metadata: dict[str, Any] | None = None,
    **probe_kwargs: Any,
) -> "list[SteeringVector]":
    """Top-k AGOP eigenvectors as SteeringVectors (method="rfm"); fits an RFMProbe on
    (acts, labels) first when no fitted `probe` is given. metadata records the rank, eigenvalue,
    back end and iterations."""
    from musicgen_lens.steering.vector import SteeringVector

    if probe is None:
        if acts is None or labels is None:
            raise ValueError("pass a fitted RFMProbe, or acts and labels to fit one")
        probe = RFMProbe(**probe_kwargs).fit(acts, labels)
    elif probe_kwargs:
        raise ValueError(f"probe_kwargs {sorted(probe_kwargs)} apply only when fitting a new RFMProbe")
    V = probe.directions(k, target)
    evals = probe.eigenvalues_.tolist()
    if concept is None:
        concept = str(target) if target is not None else probe.concept or "rfm"
    out = []
    for rank, v in enumerate(V):
        meta = {"rank": rank, "eigenvalue": float(evals[rank]), "backend": probe.backend, "iters": probe.iters, "task": probe.task,
                "bandwidth": probe.bandwidth, **(metadata or {})}
        if target is not None:
            meta["target"] = target if isinstance(target, (str, int, float, bool)) else str(target)
        out.append(SteeringVector._made(v, "rfm", model, model_hash, site=site, layer=layer, head=head, concept=concept, metadata=meta))
    return out


def layer_weights(scores: Mapping[int, float], *, top_k: int | None = None, temperature: float | None = None,
                  baseline: float = 0.0) -> dict[int, float]:
    """Per-layer weights from probe scores (accuracy, R², ...), summing to 1.

    top_k        keep the k best layers, equal weights 1/k (ties broken by the lower layer).
    temperature  exponential weighting w_l ∝ exp((s_l − max s) / temperature) over all layers
                 (with top_k too: over the kept layers).
    neither      w_l ∝ max(s_l − baseline, 0) (all zero: equal weights).
    """
    if not scores:
        raise ValueError("scores is empty")
    items = sorted(scores.items(), key=lambda kv: (-float(kv[1]), kv[0]))
    if top_k is not None:
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        items = items[:top_k]
    if temperature is not None:
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        best = max(float(s) for _, s in items)
        raw = {layer: math.exp((float(s) - best) / temperature) for layer, s in items}
    elif top_k is not None:
        raw = {layer: 1.0 for layer, _ in items}
    else:
        raw = {layer: max(float(s) - baseline, 0.0) for layer, s in items}
        if sum(raw.values()) == 0:
            raw = {layer: 1.0 for layer, _ in items}
    total = sum(raw.values())
    return {layer: w / total for layer, w in sorted(raw.items())}


def multi_concept_interventions(
    concepts: Mapping[str, Mapping[str, Any]],
    *,
    alpha: float = 0.5,
    top_k: int | None = None,
    temperature: float | None = None,
    **intervention_kwargs: Any,
) -> "list[Intervention]":
    """Interventions steering several concepts over several layers in one list.

    concepts: {name: {"directions": {layer: SteeringVector}, "scores": {layer: score},
    "alpha": float (optional, overrides `alpha`), plus any Intervention option (start, end,
    schedule, inject_chance, ...) for this concept}}. Each concept's layers get
    `layer_weights(scores, top_k=, temperature=)` and layer l steers with alpha_c·w_l (layers
    with weight 0 are left out). Without "scores" the layers share alpha equally. The remaining
    keyword arguments are Intervention options shared by all (mode, schedule, every, ...).
    """
    from musicgen_lens.steering.intervention import Intervention
    from musicgen_lens.steering.vector import SteeringVector

    out = []
    for name, spec in concepts.items():
        spec = dict(spec)
        directions = spec.pop("directions", None)
        if not isinstance(directions, Mapping) or not directions:
            raise ValueError(f"concept {name!r} needs 'directions': {{layer: SteeringVector}}")
        scores = spec.pop("scores", None)
        a = float(spec.pop("alpha", alpha))
        kt, tt = spec.pop("top_k", top_k), spec.pop("temperature", temperature)
        weights = layer_weights(scores, top_k=kt, temperature=tt) if scores else {layer: 1.0 / len(directions) for layer in directions}
        missing = [layer for layer in weights if layer not in directions]
        if missing:
            raise ValueError(f"concept {name!r} has scores for layers {missing} but no direction there")
        for layer, w in weights.items():
            if w == 0:
                continue
            vec = directions[layer]
            if not isinstance(vec, SteeringVector):
                raise TypeError(f"concept {name!r}, layer {layer}: expected a SteeringVector, got {type(vec).__name__}")
            kw = {**intervention_kwargs, **spec}
            if vec.layer is None:
                kw.setdefault("layer", layer)
            out.append(Intervention(vec, alpha=a * w, **kw))
    return out
