"""`LinearProbe`: a scikit-learn estimator with a scikit-learn and a torch (the paper's) back end.

`LinearProbe.paper()` is the paper's probe trained to convergence (see its docstring). Saved
probes are safetensors files whose header carries the hyperparameters, the fit record and the
SHA-256 of the weights, verified on load (no pickle).
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from jaxtyping import Float
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import accuracy_score, r2_score
from sklearn.preprocessing import StandardScaler
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted

from musicgen_lens._atomic import atomic_path
from musicgen_lens.provenance import tensor_checksum, verify_checksum

__all__ = ["LinearProbe", "PRESETS"]

ArrayLike = np.ndarray | torch.Tensor | Sequence[Any]

_TASKS = ("classification", "regression")
_METHODS = ("sklearn", "torch")
_NORMALIZE = ("l2", "standardize", None)
_LOSSES = ("mse", "ce")
_FORMAT = "musicgen_lens.probe"
_FORMAT_VERSION = 1

# Named settings for `LinearProbe.preset(name)`.
PRESETS: dict[str, dict[str, Any]] = {
    # arXiv 2506.10225's probe (bias-free nn.Linear, L2-normalised rows, MSE, full-batch Adam at
    # lr 5e-3), trained until the loss improves by less than 1e-5 (relative) over 100 epochs
    # instead of for a fixed 250 epochs, which stops short on L2-normalised inputs.
    "paper": {"method": "torch", "bias": False, "normalize": "l2", "loss": "mse", "lr": 5e-3, "epochs": 20_000, "tol": 1e-5, "patience": 100},
}


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
    lr, epochs : Adam learning rate and number of full-batch steps (torch only); with ``tol``,
        ``epochs`` is the most it may take.
    tol, patience : stop training (torch only) once the loss has improved by less than ``tol``
        (relative) over the last ``patience`` epochs: ``(L[t - patience] - L[t]) / L[t - patience]
        < tol``. ``None`` (the default) trains exactly ``epochs`` epochs. A fit that reaches
        ``epochs`` without meeting the criterion warns (``ConvergenceWarning``).
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
    n_epochs_, converged_, loss_ : epochs trained, whether the ``tol`` criterion was met (None
        without ``tol``, and for the sklearn back end) and the final training loss (torch only).

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
      direction, versus ~0.95 at ``lr=5e-2``). Accuracy is barely affected; when the direction
      itself matters, train to convergence (``tol``, or ``LinearProbe.paper()``): converged
      probes at learning rates 10x apart agree (cos > 0.99).
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
        tol: float | None = None,
        patience: int = 100,
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
        self.tol = tol
        self.patience = patience
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
        if self.tol is not None and not (isinstance(self.tol, (int, float)) and self.tol >= 0):
            raise ValueError(f"tol must be None or a number >= 0, got {self.tol!r}")
        if not (isinstance(self.patience, (int, np.integer)) and self.patience >= 1):
            raise ValueError(f"patience must be a positive int, got {self.patience!r}")

    @classmethod
    def preset(cls, name: str, task: Literal["classification", "regression"] = "classification", **overrides: Any) -> "LinearProbe":
        """A probe with named settings (`PRESETS`), e.g. ``LinearProbe.preset("paper")``."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; expected one of {sorted(PRESETS)}")
        return cls(task=task, **{**PRESETS[name], **overrides})

    @classmethod
    def paper(cls, task: Literal["classification", "regression"] = "classification", **overrides: Any) -> "LinearProbe":
        """The paper's MSE probe (bias-free, L2-normalised rows, MSE, Adam lr 5e-3), trained to
        convergence: until the loss improves by less than 1e-5 (relative) over 100 epochs, at
        most 20000 epochs; ``n_epochs_`` / ``converged_`` record how it went."""
        return cls.preset("paper", task, **overrides)

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
        if self.method == "sklearn":
            self.n_epochs_, self.converged_, self.loss_ = None, None, None
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
        epochs, window = int(self.epochs), int(self.patience)
        losses = torch.empty(epochs, device=device)  # read back every `window` epochs only (one sync)
        converged = None if self.tol is None else False
        with torch.inference_mode(False), torch.enable_grad():
            for epoch in range(epochs):
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
                losses[epoch] = loss.detach()
                if self.tol is not None and epoch >= window and (epoch + 1) % window == 0:
                    before, now = losses[epoch - window].item(), losses[epoch].item()
                    if (before - now) < self.tol * max(abs(before), 1e-12):
                        converged = True
                        break
        self.n_epochs_, self.converged_, self.loss_ = epoch + 1, converged, float(losses[epoch])
        if converged is False:
            warnings.warn(
                f"LinearProbe did not converge in {epochs} epochs (loss still improving by more than tol={self.tol:g} "
                f"over {window} epochs; final loss {self.loss_:.4g}); raise epochs or lr", ConvergenceWarning, stacklevel=3,
            )
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
            "fit": {"n_epochs": self.n_epochs_, "converged": self.converged_, "loss": self.loss_} if hasattr(self, "n_epochs_") else None,
        }
        if self.task == "classification":
            header["classes"] = self.classes_.tolist()
            header["classes_dtype"] = self.classes_.dtype.str
        tensors = {"coef": np.ascontiguousarray(self.coef_), "intercept": np.ascontiguousarray(self.intercept_)}
        if self.normalize == "standardize":
            tensors.update(mean=np.ascontiguousarray(self.mean_), scale=np.ascontiguousarray(self.scale_))
        header["checksum"] = _checksum(tensors)
        try:
            text = json.dumps(header)
        except TypeError as e:
            raise ValueError(f"probe metadata must be JSON-serialisable (str/int/float/bool/list/dict): {e}") from e
        with atomic_path(path) as tmp:
            save_file(tensors, os.fspath(tmp), metadata={_FORMAT: text})
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
        try:
            header = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: the probe header is damaged (not valid JSON: {e}); save the probe again") from e
        if header.get("format_version") != _FORMAT_VERSION:
            raise ValueError(f"{path}: unsupported probe format version {header.get('format_version')!r}; expected {_FORMAT_VERSION}")
        verify_checksum(_as_torch(tensors), header.get("checksum"), path)
        probe = cls(**header["params"])
        probe.coef_, probe.intercept_ = tensors["coef"], tensors["intercept"]
        if "mean" in tensors:
            probe.mean_, probe.scale_ = tensors["mean"], tensors["scale"]
        if "classes" in header:
            probe.classes_ = np.array(header["classes"], dtype=np.dtype(header["classes_dtype"]))
        probe.n_features_in_ = header["n_features_in"]
        probe._y_ndim = header["y_ndim"]
        probe.metadata_ = header["metadata"]
        fit = header.get("fit") or {}
        probe.n_epochs_, probe.converged_, probe.loss_ = fit.get("n_epochs"), fit.get("converged"), fit.get("loss")
        return probe


def _as_torch(arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}


def _checksum(arrays: dict[str, np.ndarray]) -> str:
    return tensor_checksum(_as_torch(arrays))
