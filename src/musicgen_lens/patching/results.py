"""`PatchResult`: the result of every patching sweep (named, labelled axes) and its heatmap."""

from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["PatchResult"]

# axes a heatmap puts on x (the position-like ones)
_POS_AXES = ("pos", "window", "text_pos", "chroma_pos")


@dataclass(eq=False)
class PatchResult:
    """Patching results: ``values`` with one named axis per swept dimension.

    ``axes`` name the dimensions (``"layer"``, ``"pos"``, ``"window"``, ``"head"``,
    ``"codebook"``, ``"text_pos"``, ``"sender"``) and ``labels[axis]`` lists what each index is
    (layer numbers, positions, ``(t0, t1)`` windows in seconds, ...).

    ``quantity`` says what the values are: ``"metric"`` (the metric of the patched run),
    ``"change"`` (patched minus unpatched run; attribution patching returns this) or
    ``"normalized"`` (``(patched - corrupted) / (clean - corrupted)``: 0 = the corrupted metric,
    1 = the clean metric, whatever the direction). ``clean_metric`` / ``corrupted_metric`` are the
    metrics of the two unpatched runs.
    """

    values: torch.Tensor
    axes: tuple[str, ...]
    labels: dict[str, list] = field(default_factory=dict)
    clean_metric: float | None = None
    corrupted_metric: float | None = None
    direction: str = "denoise"
    quantity: str = "metric"
    site: str = ""
    metric_name: str = "metric"

    def __post_init__(self) -> None:
        self.values = torch.as_tensor(self.values).detach()
        self.axes = tuple(self.axes)
        if self.values.ndim != len(self.axes):
            raise ValueError(f"values have {self.values.ndim} dims but axes are {self.axes}")
        labels = dict(self.labels)
        for axis, n in zip(self.axes, self.values.shape):
            labels.setdefault(axis, list(range(n)))
            if len(labels[axis]) != n:
                raise ValueError(f"axis {axis!r} has {n} entries but {len(labels[axis])} labels")
        self.labels = labels

    # ------------------------------------------------------------------ basics
    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.values.shape)

    @property
    def baseline(self) -> float | None:
        """The metric of the run being patched, unpatched (corrupted when denoising, clean when noising)."""
        return self.corrupted_metric if self.direction == "denoise" else self.clean_metric

    def to_numpy(self) -> np.ndarray:
        return self.values.detach().float().cpu().numpy()

    def item(self) -> float:
        return float(self.values.item())

    def __float__(self) -> float:
        return self.item()

    def __repr__(self) -> str:
        dims = ", ".join(f"{a}={n}" for a, n in zip(self.axes, self.shape))
        return (
            f"PatchResult({self.site or 'patch'}, {self.direction}, {self.quantity}, [{dims}], "
            f"clean={self.clean_metric}, corrupted={self.corrupted_metric})"
        )

    def _replace(self, values: torch.Tensor, quantity: str) -> "PatchResult":
        return PatchResult(
            values, self.axes, dict(self.labels), self.clean_metric, self.corrupted_metric, self.direction, quantity, self.site, self.metric_name
        )

    def normalized(self) -> "PatchResult":
        """``(patched - corrupted) / (clean - corrupted)`` (TransformerLens tutorials' recovery score)."""
        if self.quantity == "normalized":
            return self
        if self.clean_metric is None or self.corrupted_metric is None:
            raise ValueError("normalized() needs clean_metric and corrupted_metric")
        patched = self.values.double()
        if self.quantity == "change":
            patched = patched + self.baseline
        scale = self.clean_metric - self.corrupted_metric
        if scale == 0:
            warnings.warn("clean and corrupted metrics are equal: normalized values are inf/nan", stacklevel=2)
        values = (patched - self.corrupted_metric) / scale
        return self._replace(values.to(self.values.dtype), "normalized")

    def effect(self) -> "PatchResult":
        """Patched minus unpatched metric of the patched run."""
        if self.quantity == "change":
            return self
        if self.quantity != "metric" or self.baseline is None:
            raise ValueError("effect() needs quantity='metric' and the unpatched metrics")
        return self._replace(self.values - self.baseline, "change")

    def to_dataframe(self) -> Any:
        """Long form (pandas): one row per cell with its labels and value."""
        import pandas as pd

        rows = []
        flat = self.values.detach().cpu().reshape(-1).tolist()
        for labels, value in zip(itertools.product(*(self.labels[a] for a in self.axes)), flat):
            rows.append({**dict(zip(self.axes, labels)), "value": value})
        return pd.DataFrame(rows, columns=[*self.axes, "value"])

    # ------------------------------------------------------------------ plotting
    @staticmethod
    def _fmt(axis: str, label: Any) -> str:
        if axis == "window" and isinstance(label, (tuple, list)) and len(label) == 2:
            return f"[{label[0]:g}, {label[1]:g}) s"
        return str(label)

    def _as_2d(self) -> tuple[np.ndarray, list[str], list[str], str, str]:
        data = self.to_numpy()
        axes = list(self.axes)
        if data.ndim == 0:
            return data.reshape(1, 1), [""], [self.site or "value"], "", ""
        if data.ndim == 1:
            return data.reshape(1, -1), [""], [self._fmt(axes[0], l) for l in self.labels[axes[0]]], "", axes[0]
        # put a position-like axis (else the last) on x, merge all others into rows
        col = next((a for a in reversed(axes) if a in _POS_AXES), axes[-1])
        rows_axes = [a for a in axes if a != col]
        order = [axes.index(a) for a in rows_axes] + [axes.index(col)]
        data = np.transpose(data, order).reshape(-1, data.shape[axes.index(col)])
        short = {"layer": "L", "head": "H", "codebook": "K", "pos": "P", "window": "W", "sender": "", "text_pos": "T"}
        row_labels = [
            "".join(f"{short.get(a, a[:1].upper())}{self._fmt(a, l)}" for a, l in zip(rows_axes, combo))
            for combo in itertools.product(*(self.labels[a] for a in rows_axes))
        ]
        col_labels = [self._fmt(col, l) for l in self.labels[col]]
        return data, row_labels, col_labels, " x ".join(rows_axes), col

    def plot(
        self,
        ax: "Axes | None" = None,
        title: str | None = None,
        cmap: str = "RdBu_r",
        center: float | None = None,
        max_ticks: int = 40,
    ) -> "Figure":
        """A heatmap (rows: all axes but the position-like one; columns: that one). Returns the Figure.

        Colours are centred on ``center`` (default: the unpatched metric for ``quantity="metric"``,
        else 0), so red means the patch raised the metric. Uses ``matplotlib.figure.Figure``
        directly when ``ax`` is None, so it works without a display (Agg) and leaves pyplot alone.
        """
        from matplotlib.colors import CenteredNorm
        from matplotlib.figure import Figure

        data, row_labels, col_labels, ylabel, xlabel = self._as_2d()
        if ax is None:
            width = min(14.0, 3.0 + 0.25 * max(len(col_labels), 8))
            height = min(10.0, 2.0 + 0.3 * max(len(row_labels), 2))
            fig = Figure(figsize=(width, height), layout="constrained")
            ax = fig.add_subplot()
        else:
            fig = ax.figure
        if center is None:
            center = self.baseline if self.quantity == "metric" and self.baseline is not None else 0.0
        finite = data[np.isfinite(data)]
        span = float(np.abs(finite - center).max()) if finite.size else 1.0
        norm = CenteredNorm(vcenter=center, halfrange=span if span > 0 else 1.0)
        image = ax.imshow(data, cmap=cmap, norm=norm, aspect="auto", interpolation="nearest")
        fig.colorbar(image, ax=ax, label=f"{self.metric_name} ({self.quantity})")

        def ticks(n: int, labels: list[str]) -> tuple[list[int], list[str]]:
            step = max(1, math.ceil(n / max_ticks))
            idx = list(range(0, n, step))
            return idx, [labels[i] for i in idx]

        xt, xl = ticks(data.shape[1], col_labels)
        ax.set_xticks(xt, xl, rotation=90 if any(len(s) > 3 for s in xl) else 0, fontsize=8)
        yt, yl = ticks(data.shape[0], row_labels)
        ax.set_yticks(yt, yl, fontsize=8)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title if title is not None else f"{self.site} patching ({self.direction})")
        return fig
