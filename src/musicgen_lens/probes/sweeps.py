"""Probe sweeps (one cross-validated probe per hook or head) and held-out splits."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from sklearn.model_selection import KFold, StratifiedKFold, cross_val_score, train_test_split

from musicgen_lens.hooks import parse_hook_name
from musicgen_lens.probes.estimator import ArrayLike, LinearProbe, _to_numpy

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["SweepResult", "probe_sweep", "held_out_split"]


def _hook_layer(name: str) -> tuple[int | None, str]:
    """``"blocks.3.attn.hook_z"`` -> ``(3, "attn.z")`` (layer, site name, from the hook registry);
    a ``@uncond`` suffix (stores' unconditional rows) is kept; names that are not hooks -> ``(None, name)``."""
    base, at, branch = name.partition("@")
    try:
        site, layer = parse_hook_name(base)
    except ValueError:
        return None, name
    return layer, site.name + at + branch


@dataclass
class SweepResult:
    """Cross-validated probe scores, one row per (hook, head).

    ``table`` rows are dicts with keys ``hook``, ``component`` (its site in the hook registry,
    e.g. ``"resid_post"``, ``"attn.z"``), ``layer`` (None outside blocks), ``head`` (None unless per-head),
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
        layer, component = _hook_layer(hook)
        table.append(
            {"hook": hook, "component": component, "layer": layer, "head": head, "metric": metric, "mean": float(scores.mean()), "std": float(scores.std()), "n": n}
        )
    return SweepResult(table=table, metric=metric, chance=chance, task=task, probe_kwargs=probe_kwargs)


def held_out_split(
    X: ArrayLike,
    y: ArrayLike,
    *,
    test_size: float = 0.15,
    stratify: bool = True,
    groups: ArrayLike | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``X_train, X_test, y_train, y_test``: a held-out split, 15% like the paper's authors.

    ``stratify=True`` keeps each class's share in both parts (scikit-learn's
    ``train_test_split(stratify=y)``; use ``False`` for regression targets). ``groups`` (one per
    row, e.g. ``store.groups()`` for a per-frame store) keeps every row of one group on the same
    side, so frames of one clip never appear in both; groups are then stratified by their label
    (the label of their first row).
    """
    X_arr, y_arr = _to_numpy(X, "X"), _to_numpy(y, "y")
    if X_arr.shape[:1] != y_arr.shape[:1]:
        raise ValueError(f"X has {X_arr.shape[0]} rows but y has {y_arr.shape[0]}")
    if groups is None:
        return tuple(train_test_split(X_arr, y_arr, test_size=test_size, random_state=seed, stratify=y_arr if stratify else None))
    g = _to_numpy(groups, "groups")
    if g.shape != y_arr.shape[:1]:
        raise ValueError(f"groups must have one entry per row ({y_arr.shape[0]}), got shape {g.shape}")
    names, first = np.unique(g, return_index=True)
    train_groups, _ = train_test_split(names, test_size=test_size, random_state=seed, stratify=y_arr[first] if stratify else None)
    train = np.isin(g, train_groups)
    return X_arr[train], X_arr[~train], y_arr[train], y_arr[~train]
