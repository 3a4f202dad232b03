"""Linear probes on cached activations, and probe directions as steering vectors.

This follows arXiv 2506.10225 ("Fine-Grained Control over Music Generation with Activation
Steering"): one activation vector per example and layer (decoder layer output, conditional CFG
branch, last generation step), rows L2-normalised, a linear probe trained on them, and the unit
probe row for the target class used as the steering vector. In the authors' code the probe is
a bias-free ``nn.Linear(d_model, n_classes)`` (or ``-> 1`` for a binary ±1 target) trained
full-batch with Adam (lr 5e-3, 250 epochs) on an MSE loss; ``LinearProbe(method="torch",
bias=False, normalize="l2")`` is that probe.

- :class:`LinearProbe` is a scikit-learn estimator (``clone``, ``cross_val_score`` and
  ``GridSearchCV`` work) with two back ends: ``method="sklearn"`` (``LogisticRegression`` /
  ``Ridge``) and ``method="torch"`` (the paper's MSE probe). :meth:`LinearProbe.direction`
  returns the steering direction in the model's residual basis; :meth:`LinearProbe.save` /
  :meth:`LinearProbe.load` use safetensors (no pickle).
- :func:`probe_sweep` cross-validates one probe per hook (or per head) and returns a
  :class:`SweepResult` with a table, ``best()`` and a plot of the metric against layer.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from jaxtyping import Float
from sklearn.base import BaseEstimator
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import KFold, StratifiedKFold, cross_val_score
from sklearn.preprocessing import StandardScaler
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["LinearProbe", "SweepResult", "probe_sweep"]

ArrayLike = np.ndarray | torch.Tensor | Sequence[Any]

_TASKS = ("classification", "regression")
_METHODS = ("sklearn", "torch")
_NORMALIZE = ("l2", "standardize", None)
_LOSSES = ("mse", "ce")
_FORMAT = "musicgen_lens.probe"
_FORMAT_VERSION = 1


def _to_numpy(a: ArrayLike, what: str) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        # numpy has no bfloat16; float64 also makes fits on half-precision caches well-conditioned.
        return a.detach().to("cpu", torch.float64 if a.is_floating_point() else a.dtype).numpy()
    try:
        return np.asarray(a)
    except Exception as e:  # ragged lists and the like
        raise ValueError(f"{what} could not be converted to an array: {e}") from e


def _check_X(X: ArrayLike, n_features: int | None = None) -> np.ndarray:
    X = _to_numpy(X, "X")
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D [n_samples, n_features] (one activation vector per example), got shape {X.shape}")
    if X.shape[0] == 0:
        raise ValueError("X has no rows (expected at least one example)")
    if not np.issubdtype(X.dtype, np.number) or np.issubdtype(X.dtype, np.complexfloating):
        raise ValueError(f"X must be real-valued, got dtype {X.dtype}")
    X = X.astype(np.float64, copy=False)
    if not np.isfinite(X).all():
        bad = int((~np.isfinite(X)).any(axis=1).sum())
        raise ValueError(f"X contains NaN or infinite values in {bad} row(s); expected finite activations")
    if n_features is not None and X.shape[1] != n_features:
        raise ValueError(f"X has {X.shape[1]} features, but this probe was fitted on {n_features} (d_model of the hook it was trained on)")
    return X


class LinearProbe(BaseEstimator):
    """A linear probe on activation vectors, usable as a scikit-learn estimator.

    Parameters
    ----------
    task : ``"classification"`` (labels: strings, ints, ...) or ``"regression"`` (float target
        ``[n]`` or ``[n, n_targets]``). Classification scores with accuracy, regression with R².
    method : ``"sklearn"`` (``LogisticRegression(C=C)`` / ``Ridge(alpha=alpha)``) or ``"torch"``
        (the paper's probe: a linear layer trained full-batch with Adam).
    bias : fit an intercept. The paper's probe has none (``bias=False``).
    normalize : ``"l2"`` (each row divided by its L2 norm, the paper's choice), ``"standardize"``
        (per-feature z-score with a ``StandardScaler`` fitted on the training rows) or ``None``.
        Applied inside ``fit``/``predict``, so raw activations go in.
    C : inverse L2 strength of ``LogisticRegression`` (sklearn classification only).
    alpha : L2 strength of ``Ridge`` (sklearn regression only).
    lr, epochs : Adam learning rate and number of full-batch steps (torch only).
    loss : ``"mse"`` (paper default: one-hot targets, or ±1 with one output for two classes) or
        ``"ce"`` (cross-entropy; with two classes a logistic loss on the single output). Torch
        classification only; regression always uses MSE.
    seed : seeds the probe's own ``torch.Generator`` for the weight init; the global RNGs are
        never touched, so equal seeds give identical weights (on the same device).
    device : torch device for fitting (torch only); ``None`` picks CUDA when available. Prediction
        always runs in numpy float64 on CPU from the stored weights.
    max_iter : iteration cap of ``LogisticRegression``.

    Attributes after ``fit``
    ------------------------
    coef_ : ``[n_outputs, d]`` weights *in the normalised input space* (after ``normalize``).
        One row for regression with a 1-D target and for binary classification (positive class
        ``classes_[1]``, like scikit-learn), else one row per class / target.
    intercept_ : ``[n_outputs]`` (zeros when ``bias=False``).
    classes_ : sorted class labels (classification).
    mean_, scale_ : the standardisation statistics (``normalize="standardize"`` only).
    n_features_in_ : d.

    Notes on the torch back end:

    - When ``bias=True`` the inputs (and MSE targets) are centred during optimisation and the
      means folded back into ``intercept_``; regression targets are also scaled to unit RMS and
      the scale folded back into ``coef_``. Same model class and same optimum, but a different
      Adam trajectory: it lets 250 steps of 5e-3 get there from activations with large offsets or
      targets in large units (BPM). Bias-free classification probes and ±1 regression targets
      (RMS 1) are trained as in the authors' code.
    - With ``normalize="l2"`` the concept is a small part of each unit-norm row, so the weights
      must grow large; 250 steps of 5e-3 may stop short, and Adam's early, sign-like updates then
      tilt the direction towards ``sign(w)`` (on synthetic data: cos ~0.8 with the planted
      direction, versus ~0.95 at ``lr=5e-2``). Accuracy is barely affected; raise ``lr`` or
      ``epochs`` when the direction itself matters.
    """

    def __init__(
        self,
        task: Literal["classification", "regression"] = "classification",
        method: Literal["sklearn", "torch"] = "sklearn",
        bias: bool = True,
        normalize: Literal["l2", "standardize"] | None = "l2",
        C: float = 1.0,
        alpha: float = 1.0,
        lr: float = 5e-3,
        epochs: int = 250,
        loss: Literal["mse", "ce"] = "mse",
        seed: int = 0,
        device: str | torch.device | None = None,
        max_iter: int = 1000,
    ) -> None:
        self.task = task
        self.method = method
        self.bias = bias
        self.normalize = normalize
        self.C = C
        self.alpha = alpha
        self.lr = lr
        self.epochs = epochs
        self.loss = loss
        self.seed = seed
        self.device = device
        self.max_iter = max_iter
        # Validate early for a clear error at construction; fit validates again because
        # set_params bypasses __init__. Nothing is modified, as scikit-learn's clone requires.
        self._validate_params()

    # -- scikit-learn plumbing -------------------------------------------------------------

    def _validate_params(self) -> None:
        if self.task not in _TASKS:
            raise ValueError(f"unknown task {self.task!r}; expected one of {_TASKS}")
        if self.method not in _METHODS:
            raise ValueError(f"unknown method {self.method!r}; expected one of {_METHODS}")
        if self.normalize not in _NORMALIZE:
            raise ValueError(f"unknown normalize {self.normalize!r}; expected one of {_NORMALIZE}")
        if self.loss not in _LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; expected one of {_LOSSES}")
        if self.loss == "ce" and self.task == "regression":
            raise ValueError("loss='ce' needs task='classification'; regression probes use MSE")
        if not (isinstance(self.epochs, (int, np.integer)) and self.epochs >= 1):
            raise ValueError(f"epochs must be a positive int, got {self.epochs!r}")

    @property
    def _estimator_type(self) -> str:  # scikit-learn < 1.6 reads this instead of tags
        return "classifier" if self.task == "classification" else "regressor"

    def __sklearn_tags__(self):  # noqa: ANN204 - sklearn.utils.Tags
        # Classifier or regressor depends on a parameter, so the tags are set here rather than
        # by inheriting ClassifierMixin/RegressorMixin. is_classifier() is what makes
        # cross_val_score use stratified folds for classification.
        from sklearn.utils import ClassifierTags, RegressorTags

        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        if self.task == "classification":
            tags.estimator_type = "classifier"
            tags.classifier_tags = ClassifierTags()
        else:
            tags.estimator_type = "regressor"
            tags.regressor_tags = RegressorTags()
            tags.target_tags.multi_output = True
        return tags

    # -- preprocessing -----------------------------------------------------------------------

    def _transform(self, X: np.ndarray) -> np.ndarray:
        if self.normalize == "l2":
            # Zero rows stay zero instead of becoming NaN.
            return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
        if self.normalize == "standardize":
            return (X - self.mean_) / self.scale_
        return X

    def _check_y(self, y: ArrayLike, n: int) -> np.ndarray:
        y = _to_numpy(y, "y")
        if y.shape[:1] != (n,):
            raise ValueError(f"X and y have different numbers of samples: X has {n} rows, y has shape {y.shape}")
        if self.task == "classification":
            if y.ndim != 1:
                raise ValueError(f"classification needs 1-D labels y [n_samples], got shape {y.shape}")
            return y
        if y.ndim not in (1, 2) or not np.issubdtype(y.dtype, np.number):
            raise ValueError(f"regression needs a numeric target y [n_samples] or [n_samples, n_targets], got shape {y.shape}, dtype {y.dtype}")
        y = y.astype(np.float64)
        if not np.isfinite(y).all():
            raise ValueError("y contains NaN or infinite values; expected finite regression targets")
        return y

    # -- fitting ---------------------------------------------------------------------------

    def fit(self, X: Float[ArrayLike, "n d"], y: ArrayLike) -> "LinearProbe":
        """Fit the probe on raw activations ``X [n, d]`` (normalisation is applied here)."""
        self._validate_params()
        X = _check_X(X)
        y = self._check_y(y, X.shape[0])
        self.n_features_in_ = X.shape[1]
        if self.normalize == "standardize":
            scaler = StandardScaler().fit(X)
            self.mean_, self.scale_ = scaler.mean_, scaler.scale_
        Xn = self._transform(X)

        if self.task == "classification":
            self.classes_, y_idx = np.unique(y, return_inverse=True)
            if len(self.classes_) < 2:
                raise ValueError(f"classification needs at least 2 classes in y, got only {self.classes_.tolist()}")
            self._y_ndim = 1
            coef, intercept = self._fit_sklearn_clf(Xn, y_idx) if self.method == "sklearn" else self._fit_torch(Xn, self._clf_targets(y_idx))
        else:
            self._y_ndim = y.ndim
            y2 = y.reshape(len(y), -1)
            coef, intercept = self._fit_sklearn_reg(Xn, y2) if self.method == "sklearn" else self._fit_torch(Xn, y2)
        self.coef_ = np.array(coef, dtype=np.float64)  # copies: sklearn's arrays may be read-only views
        self.intercept_ = np.array(intercept, dtype=np.float64)
        return self

    def _fit_sklearn_clf(self, Xn: np.ndarray, y_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lr = LogisticRegression(C=self.C, fit_intercept=self.bias, max_iter=self.max_iter).fit(Xn, y_idx)
        return lr.coef_, np.broadcast_to(lr.intercept_, (lr.coef_.shape[0],))

    def _fit_sklearn_reg(self, Xn: np.ndarray, y2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ridge = Ridge(alpha=self.alpha, fit_intercept=self.bias).fit(Xn, y2)
        return ridge.coef_.reshape(y2.shape[1], -1), np.broadcast_to(ridge.intercept_, (y2.shape[1],))

    def _clf_targets(self, y_idx: np.ndarray) -> np.ndarray:
        k = len(self.classes_)
        if k == 2:  # one output: ±1 for MSE (paper), 0/1 for the logistic loss
            pos = (y_idx == 1).astype(np.float64)[:, None]
            return 2 * pos - 1 if self.loss == "mse" else pos
        if self.loss == "ce":
            return y_idx  # class indices for cross_entropy
        return np.eye(k)[y_idx]

    def _fit_torch(self, Xn: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        device = torch.device(self.device) if self.device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
        multiclass_ce = self.loss == "ce" and target.ndim == 1
        n_out = len(self.classes_) if multiclass_ce else target.shape[1]
        d = Xn.shape[1]
        x = torch.as_tensor(Xn, dtype=torch.float32, device=device)
        t = torch.as_tensor(target, dtype=torch.long if multiclass_ce else torch.float32, device=device)

        x_mean = x.mean(0) if self.bias else torch.zeros(d, device=device)
        x = x - x_mean
        # MSE targets: centre (only with a bias, where it is exact) and, for regression, scale to
        # unit RMS so that Adam's ~lr-sized steps suffice whatever the target's units are.
        t_shift = torch.zeros(n_out, device=device)
        t_scale = torch.ones(n_out, device=device)
        if self.loss == "mse":
            if self.bias:
                t_shift = t.mean(0)
            if self.task == "regression":
                t_scale = (t - t_shift).pow(2).mean(0).sqrt().clamp_min(1e-12)
            t = (t - t_shift) / t_scale

        # nn.Linear's default init, drawn from the probe's own generator (global RNG untouched).
        gen = torch.Generator(device="cpu").manual_seed(int(self.seed))
        bound = 1.0 / math.sqrt(d)
        W = ((torch.rand(n_out, d, generator=gen, dtype=torch.float32) * 2 - 1) * bound).to(device).requires_grad_(True)
        b = torch.zeros(n_out, device=device, requires_grad=self.bias)
        params = [W, b] if self.bias else [W]
        opt = torch.optim.Adam(params, lr=self.lr)
        with torch.inference_mode(False), torch.enable_grad():
            for _ in range(int(self.epochs)):
                opt.zero_grad(set_to_none=True)
                out = x @ W.T + b
                if self.loss == "mse":
                    loss = torch.nn.functional.mse_loss(out, t)
                elif multiclass_ce:
                    loss = torch.nn.functional.cross_entropy(out, t)
                else:
                    loss = torch.nn.functional.binary_cross_entropy_with_logits(out, t)
                loss.backward()
                opt.step()
        with torch.no_grad():
            coef = W * t_scale[:, None]
            intercept = b * t_scale + t_shift - coef @ x_mean
        return coef.double().cpu().numpy(), intercept.double().cpu().numpy()

    # -- prediction ------------------------------------------------------------------------

    def decision_function(self, X: Float[ArrayLike, "n d"]) -> np.ndarray:
        """Raw probe scores ``normalize(X) @ coef_.T + intercept_``: ``[n]`` for one output, else ``[n, k]``."""
        check_is_fitted(self, "coef_")
        scores = self._transform(_check_X(X, self.n_features_in_)) @ self.coef_.T + self.intercept_
        return scores[:, 0] if scores.shape[1] == 1 and self._y_ndim == 1 else scores

    def predict(self, X: Float[ArrayLike, "n d"]) -> np.ndarray:
        """Class labels (classification) or predicted targets (regression)."""
        scores = self.decision_function(X)
        if self.task == "regression":
            return scores
        idx = (scores > 0).astype(int) if scores.ndim == 1 else scores.argmax(axis=1)
        return self.classes_[idx]

    @available_if(lambda self: self.task == "classification")
    def predict_proba(self, X: Float[ArrayLike, "n d"]) -> np.ndarray:
        """Class probabilities ``[n, n_classes]``: sigmoid (two classes) or softmax of the scores.

        Exact for the logistic-regression and ``loss="ce"`` probes; for MSE probes it is only a
        monotone squashing of the scores, not a calibrated probability.
        """
        scores = self.decision_function(X)
        if scores.ndim == 1:
            p = 1.0 / (1.0 + np.exp(-scores))
            return np.stack([1 - p, p], axis=1)
        z = np.exp(scores - scores.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)

    def score(self, X: Float[ArrayLike, "n d"], y: ArrayLike, sample_weight: ArrayLike | None = None) -> float:
        """Accuracy (classification) or R², uniformly averaged over targets (regression)."""
        y = self._check_y(y, _check_X(X).shape[0])
        if self.task == "classification":
            return float(accuracy_score(y, self.predict(X), sample_weight=sample_weight))
        return float(r2_score(y, self.predict(X), sample_weight=sample_weight))

    # -- steering direction ------------------------------------------------------------------

    def direction(self, target: Any = None, *, contrast: bool = False) -> Float[torch.Tensor, " d"]:
        """Unit steering vector in the model's residual basis, pointing towards ``target``.

        - Binary classification: ``target`` is a class label (``None`` = the positive class
          ``classes_[1]``); the direction for ``classes_[0]`` is the negated row.
        - Multi-class: ``target`` (required) is a class label. By default this is the raw probe
          row of that class, as in the paper; ``contrast=True`` uses the row minus the mean of the
          other rows (what raises this class's score relative to the others). The two differ only
          by a component shared by all rows: none for multinomial logistic regression (its rows
          sum to zero); a bias-free one-hot MSE probe (the paper's) can carry one (its rows must
          sum to a vector whose product with every normalised input is 1), which
          ``contrast=True`` removes.
        - Regression: the direction of increasing prediction; with several targets, ``target``
          is the output index (``None`` allowed for a single target).

        The direction is the gradient of the probe score with respect to the raw activation,
        normalised. With ``normalize="standardize"`` the probe saw ``x' = (x - mean_) / scale_``,
        so ``w . x' = (w / scale_) . x + const`` and the model-space direction is ``w / scale_``
        (not ``w``). With ``normalize="l2"`` the score ``w . x / |x|`` is not linear in ``x``, but
        it is a positive rescaling of ``w . x``, so ``w`` is still the direction that raises it.
        """
        check_is_fitted(self, "coef_")
        W = self.coef_
        sign = 1.0
        if self.task == "classification":
            if target is None:
                if len(self.classes_) > 2:
                    raise ValueError(f"target is required for a {len(self.classes_)}-class probe; expected one of {self.classes_.tolist()}")
                target = self.classes_[1]
            # Compare as Python objects: numpy's elementwise == between str and int arrays warns.
            hits = [i for i, c in enumerate(self.classes_.tolist()) if c == target]
            if not hits:
                raise ValueError(f"target {target!r} is not a class this probe was fitted on; expected one of {self.classes_.tolist()}")
            k = hits[0]
            if W.shape[0] == 1:  # binary: a single row for the positive class
                row, sign = W[0], (1.0 if k == 1 else -1.0)
            else:
                row = W[k] - np.delete(W, k, axis=0).mean(axis=0) if contrast else W[k]
        else:
            if target is None:
                if W.shape[0] > 1:
                    raise ValueError(f"target (an output index in [0, {W.shape[0]})) is required for a {W.shape[0]}-target regression probe")
                target = 0
            if not isinstance(target, (int, np.integer)) or not 0 <= target < W.shape[0]:
                raise ValueError(f"target for a regression probe must be an output index in [0, {W.shape[0]}), got {target!r}")
            row = W[int(target)]
        if self.normalize == "standardize":
            row = row / self.scale_  # undo the z-scoring: w.x' = (w/scale).x + const
        norm = np.linalg.norm(row)
        if norm == 0:
            raise ValueError("the probe weights for this target are all zero; there is no direction")
        return torch.from_numpy(sign * row / norm).float()

    # -- persistence -------------------------------------------------------------------------

    def save(self, path: str | os.PathLike, metadata: dict[str, Any] | None = None) -> None:
        """Write the probe to one safetensors file: weights as tensors, hyperparameters, classes
        and ``metadata`` (JSON-serialisable, e.g. hook name, layer, model config hash) as JSON in
        the file's metadata header. Nothing is pickled. ``metadata=None`` keeps ``metadata_``."""
        from safetensors.numpy import save_file

        check_is_fitted(self, "coef_")
        metadata = dict(getattr(self, "metadata_", {}) if metadata is None else metadata)
        params = self.get_params()
        if params["device"] is not None:
            params["device"] = str(params["device"])
        header = {
            "format_version": _FORMAT_VERSION,
            "params": params,
            "n_features_in": int(self.n_features_in_),
            "y_ndim": int(self._y_ndim),
            "metadata": metadata,
        }
        if self.task == "classification":
            header["classes"] = self.classes_.tolist()
            header["classes_dtype"] = self.classes_.dtype.str
        try:
            text = json.dumps(header)
        except TypeError as e:
            raise ValueError(f"probe metadata must be JSON-serialisable (str/int/float/bool/list/dict): {e}") from e
        tensors = {"coef": np.ascontiguousarray(self.coef_), "intercept": np.ascontiguousarray(self.intercept_)}
        if self.normalize == "standardize":
            tensors.update(mean=np.ascontiguousarray(self.mean_), scale=np.ascontiguousarray(self.scale_))
        save_file(tensors, os.fspath(path), metadata={_FORMAT: text})
        self.metadata_ = metadata

    @classmethod
    def load(cls, path: str | os.PathLike) -> "LinearProbe":
        """Read a probe written by :meth:`save`; it predicts exactly like the saved one."""
        from safetensors import safe_open

        with safe_open(os.fspath(path), framework="numpy") as f:
            text = (f.metadata() or {}).get(_FORMAT)
            if text is None:
                raise ValueError(f"{path} is a safetensors file but not a saved LinearProbe (no {_FORMAT!r} metadata)")
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        header = json.loads(text)
        if header.get("format_version") != _FORMAT_VERSION:
            raise ValueError(f"{path}: unsupported probe format version {header.get('format_version')!r}; expected {_FORMAT_VERSION}")
        probe = cls(**header["params"])
        probe.coef_, probe.intercept_ = tensors["coef"], tensors["intercept"]
        if "mean" in tensors:
            probe.mean_, probe.scale_ = tensors["mean"], tensors["scale"]
        if "classes" in header:
            probe.classes_ = np.array(header["classes"], dtype=np.dtype(header["classes_dtype"]))
        probe.n_features_in_ = header["n_features_in"]
        probe._y_ndim = header["y_ndim"]
        probe.metadata_ = header["metadata"]
        return probe


# --------------------------------------------------------------------------------------------
# Sweeps
# --------------------------------------------------------------------------------------------

_LAYER_RE = re.compile(r"^blocks\.(\d+)\.(.+)$")


def _parse_hook(name: str) -> tuple[int | None, str]:
    """``"blocks.3.attn.hook_z"`` -> ``(3, "attn.hook_z")``; hooks outside blocks -> ``(None, name)``."""
    m = _LAYER_RE.match(name)
    return (int(m.group(1)), m.group(2)) if m else (None, name)


@dataclass
class SweepResult:
    """Cross-validated probe scores, one row per (hook, head).

    ``table`` rows are dicts with keys ``hook``, ``component`` (hook name without
    ``blocks.{l}.``), ``layer`` (None outside blocks), ``head`` (None unless per-head),
    ``metric`` (``"accuracy"`` or ``"r2"``), ``mean``, ``std`` (over CV folds), ``n`` (examples).
    ``chance`` is the majority-class rate for classification, 0 for R².
    """

    table: list[dict[str, Any]]
    metric: str
    chance: float | None = None
    task: str = "classification"
    probe_kwargs: dict[str, Any] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.table)

    def best(self) -> dict[str, Any]:
        """The row with the highest mean score (first one on ties)."""
        if not self.table:
            raise ValueError("empty sweep: no probes were fitted")
        return dict(max(self.table, key=lambda r: r["mean"]))

    def to_pandas(self):  # noqa: ANN201 - pandas is optional
        """The table as a ``pandas.DataFrame`` (needs pandas)."""
        try:
            import pandas as pd
        except ImportError as e:
            raise ImportError("to_pandas() needs pandas (pip install pandas); .table has the same rows as dicts") from e
        return pd.DataFrame(self.table)

    def plot(self, ax: "Axes | None" = None) -> "Figure":
        """Metric against layer: one line per hook type with ±std error bars and a dashed chance
        line; per-head rows become a layer x head heatmap per hook type (one panel each).
        Hooks outside ``blocks.{l}`` have no layer and are left out of the plot (not the table).
        ``ax`` can only be given when a single panel is needed."""
        from matplotlib.figure import Figure

        line_rows = [r for r in self.table if r["head"] is None and r["layer"] is not None]
        head_rows = [r for r in self.table if r["head"] is not None and r["layer"] is not None]
        head_components = sorted({r["component"] for r in head_rows})
        n_panels = int(bool(line_rows)) + len(head_components)
        if n_panels == 0:
            raise ValueError("nothing to plot: no row has a layer parsed from a 'blocks.{l}.' hook name")
        if ax is not None and n_panels > 1:
            raise ValueError(f"this sweep needs {n_panels} panels (lines + one heatmap per per-head hook type); call plot() without ax")
        if ax is None:
            # A bare Figure (not pyplot) so sweeps in a loop do not pile up in pyplot's registry.
            fig = Figure(figsize=(5.5 * n_panels, 3.8), layout="constrained")
            axes = list(fig.subplots(1, n_panels, squeeze=False)[0])
        else:
            fig, axes = ax.figure, [ax]
        label = {"accuracy": "accuracy", "r2": "R²"}.get(self.metric, self.metric)
        if line_rows:
            a = axes.pop(0)
            for comp in sorted({r["component"] for r in line_rows}):
                rows = sorted((r for r in line_rows if r["component"] == comp), key=lambda r: r["layer"])
                a.errorbar([r["layer"] for r in rows], [r["mean"] for r in rows], yerr=[r["std"] for r in rows], marker="o", capsize=3, label=comp)
            if self.chance is not None:
                a.axhline(self.chance, color="gray", linestyle="--", linewidth=1, label="chance")
            a.set(xlabel="layer", ylabel=f"{label} (CV mean ± std)", title=f"probe {label} by layer")
            a.legend(fontsize="small")
        for comp, a in zip(head_components, axes):
            rows = [r for r in head_rows if r["component"] == comp]
            layers = sorted({r["layer"] for r in rows})
            n_heads = max(r["head"] for r in rows) + 1
            grid = np.full((len(layers), n_heads), np.nan)
            for r in rows:
                grid[layers.index(r["layer"]), r["head"]] = r["mean"]
            im = a.imshow(grid, aspect="auto", origin="lower", cmap="viridis")
            a.set(xlabel="head", ylabel="layer", title=f"{comp}: probe {label}", yticks=range(len(layers)), yticklabels=layers)
            fig.colorbar(im, ax=a, label=label)
        return fig


def _store_hooks(activations: Any) -> list[str]:
    if isinstance(activations, Mapping):
        return list(activations.keys())
    if hasattr(activations, "hooks") and hasattr(activations, "__getitem__"):
        hooks = activations.hooks
        return list(hooks() if callable(hooks) else hooks)
    raise ValueError(
        f"activations must be a mapping hook_name -> array [n, d] or an ActivationStore-like object "
        f"with .hooks, [hook] and .labels(name); got {type(activations).__name__}"
    )


def probe_sweep(
    activations: Mapping[str, ArrayLike] | Any,
    labels: ArrayLike | str,
    hooks: Sequence[str] | None = None,
    *,
    task: Literal["classification", "regression"] = "classification",
    cv: int | Any = 5,
    probe_kwargs: dict[str, Any] | None = None,
    per_head: bool = False,
    progress: bool = True,
) -> SweepResult:
    """Cross-validate one :class:`LinearProbe` per hook (or per head) on the same labels.

    Parameters
    ----------
    activations : a mapping ``hook_name -> [n, d]`` (numpy or torch; ``[n, heads, d_head]`` for
        ``hook_z``, ``[n, heads, d_model]`` for ``hook_result``), or an ActivationStore-like object
        (duck-typed): ``.hooks`` (list of names, or a method returning it), ``store[hook]`` -> array
        and ``.labels(name)`` -> the label array called ``name``.
    labels : ``[n]`` labels / targets, or (with a store) the name passed to ``store.labels``.
    hooks : the hooks to probe (default: all).
    task : as in :class:`LinearProbe`; the metric is accuracy or R².
    cv : number of folds (shuffled, ``random_state=0``; stratified for classification) or any
        scikit-learn splitter.
    probe_kwargs : extra :class:`LinearProbe` arguments (method, normalize, C, ...).
    per_head : 3-D activations get one probe per head; otherwise heads are concatenated
        (``[n, heads * d_head]``).
    progress : show a tqdm bar over the probes.

    To steer with the winner, refit ``LinearProbe(task=task, **probe_kwargs)`` on the best hook's
    activations and take :meth:`LinearProbe.direction`.
    """
    from tqdm.auto import tqdm

    probe_kwargs = dict(probe_kwargs or {})
    probe_kwargs.pop("task", None)
    template = LinearProbe(task=task, **probe_kwargs)  # validates task and kwargs up front
    available = _store_hooks(activations)
    if isinstance(labels, str):
        if not hasattr(activations, "labels"):
            raise ValueError(f"labels={labels!r} is a name, which needs an activation store with .labels(name); pass the label array instead")
        labels = activations.labels(labels)
    y_arr = _to_numpy(labels, "labels")
    y = template._check_y(y_arr, y_arr.shape[0] if y_arr.ndim else -1)
    n = len(y)
    if hooks is None:
        hooks = available
    else:
        hooks = [hooks] if isinstance(hooks, str) else list(hooks)
        unknown = [h for h in hooks if h not in set(available)]
        if unknown:
            shown = ", ".join(available[:8]) + (", ..." if len(available) > 8 else "")
            raise ValueError(f"unknown hook(s) {unknown}; the activations have {len(available)} hooks: {shown}")
    if not hooks:
        raise ValueError("no hooks to probe: the activations are empty")

    # Build the list of (hook, head, X) jobs first so the progress bar knows its total.
    jobs: list[tuple[str, int | None, np.ndarray]] = []
    for hook in hooks:
        A = _to_numpy(activations[hook], f"activations[{hook!r}]")
        if A.shape[:1] != (n,):
            raise ValueError(f"activations[{hook!r}] has shape {A.shape} but there are {n} labels; expected [n, d] with n = {n}")
        if A.ndim == 2:
            jobs.append((hook, None, A))
        elif A.ndim == 3 and per_head:
            jobs.extend((hook, h, A[:, h, :]) for h in range(A.shape[1]))
        elif A.ndim == 3:
            jobs.append((hook, None, A.reshape(n, -1)))
        else:
            raise ValueError(f"activations[{hook!r}] has shape {A.shape}; expected [n, d] or [n, heads, d_head]")

    if isinstance(cv, (int, np.integer)):
        splitter_cls = StratifiedKFold if task == "classification" else KFold
        cv = splitter_cls(n_splits=int(cv), shuffle=True, random_state=0)
    metric = "accuracy" if task == "classification" else "r2"
    if task == "classification":
        _, counts = np.unique(y, return_counts=True)
        chance = float(counts.max() / n)
    else:
        chance = 0.0

    table = []
    for hook, head, X in tqdm(jobs, desc="probes", disable=not progress):
        scores = cross_val_score(LinearProbe(task=task, **probe_kwargs), X, y, cv=cv)
        layer, component = _parse_hook(hook)
        table.append(
            {"hook": hook, "component": component, "layer": layer, "head": head, "metric": metric, "mean": float(scores.mean()), "std": float(scores.std()), "n": n}
        )
    return SweepResult(table=table, metric=metric, chance=chance, task=task, probe_kwargs=probe_kwargs)
