"""Attribution patching: one forward and one backward pass estimate every cell's patching effect.

`attribution_patch` returns, per site, ``(source_act - target_act) . d metric / d act`` at the
target run for each cell of the grid `musicgen_lens.patching.grid` builds for that site (the
same cells and axes as `patch_site`); `check_attribution` compares it with real patching on a
random sample of cells.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch
from jaxtyping import Int

from musicgen_lens.conditioning import Conditioning
from musicgen_lens.patching.engine import Setup, code_part, baseline_runs, make_result, make_setup, result_dtype, run_cells, source_cells
from musicgen_lens.patching.grid import Grid, build_grid, fit_selection
from musicgen_lens.patching.options import RunOptions, Selection, takes_options
from musicgen_lens.patching.metrics import eval_metric, metric_hook
from musicgen_lens.patching.results import PatchResult

if TYPE_CHECKING:
    from musicgen_lens.model import HookedMusicGen

__all__ = ["attribution_patch", "check_attribution", "AttributionCheck"]


def _attribution_values(setup: Setup, grids: Sequence[Grid], metric: Callable) -> tuple[list[torch.Tensor], float, float]:
    """Per grid, (source - target activation) . d metric / d activation at the target run, per cell."""
    model = setup.model
    names = sorted({h for g in grids for h in g.hooks})
    src_cache, _, clean_metric, corrupted_metric = baseline_runs(setup, metric, names)
    codes, cond = setup.target
    mh = metric_hook(metric)
    deltas: dict[str, torch.Tensor] = {}
    acts: dict[str, torch.Tensor] = {}
    store: dict[str, torch.Tensor] = {}

    def hook_fn(act: torch.Tensor, hook: Any) -> torch.Tensor:
        if hook.name in names:
            delta = torch.zeros_like(act, requires_grad=True)  # d metric / d delta = d metric / d act
            deltas[hook.name], acts[hook.name] = delta, act.detach()
            act = act + delta
        if hook.name == mh:
            store[mh] = act
        return act

    with torch.inference_mode(False), torch.enable_grad():
        codes = codes.clone()
        cond = Conditioning(cond.states.clone(), cond.mask.clone(), list(cond.texts), cond.chroma, cond.has_melody)
        hooked = sorted(set(names) | ({mh} if mh else set()))
        logits = model.run_with_hooks(codes, cond, fwd_hooks=[(n, hook_fn) for n in hooked])
        value = eval_metric(metric, logits, code_part(store.get(mh), mh, setup.n_prefix))
        if not value.requires_grad:
            raise TypeError(
                "attribution patching needs a differentiable metric of the logits/activations; this one is not "
                "(e.g. a probe_score with a numpy probe: pass its direction vector instead)"
            )
        grads = torch.autograd.grad(value, [deltas[n] for n in names], allow_unused=True)
    # (source - target) . grad, summed over the batch and the feature (last) dimension; cell indices
    # never touch the last dimension, so it can be summed first.
    prods = {}
    for n, g in zip(names, grads):
        if g is None:
            g = torch.zeros_like(acts[n])
        prods[n] = ((src_cache[n] - acts[n]) * g).sum(0).sum(-1)
    out = []
    for grid in grids:
        vals = [sum(float(prods[h][idx].sum()) for h, idx in cell.ops) for cell in grid.cells]
        out.append(torch.tensor(vals, dtype=result_dtype(model)).reshape(grid.shape))
    return out, clean_metric, corrupted_metric


@takes_options(exclude=("chunk_size", "progress"))
def attribution_patch(
    model: "HookedMusicGen",
    clean_codes: Int[torch.Tensor, "batch k pos"],
    corrupted_codes: Int[torch.Tensor, "batch k pos"],
    metric: Callable,
    sites: str | Sequence[str] = ("resid_pre",),
    *,
    run: RunOptions,
    sel: Selection,
) -> "dict[str, PatchResult] | PatchResult":
    """Attribution patching: one forward and one backward pass estimate every cell's patching effect.

    For each cell, ``(source_act - target_act) . d metric / d act`` at the target run (denoise:
    clean - corrupted, gradient at the corrupted run), summed over d_model / d_head and the batch
    (patching changes every batch row at once), over the cell's positions/heads. Cells and axes are
    those of :func:`patch_site` for the same site (e.g. "resid_pre": ("layer", "pos"),
    "attn.z": ("layer", "head"), "cross_attn.pattern", "codebook_embed", "cond").
    Values are estimated *changes* of the metric (``quantity="change"``; ``.normalized()`` works).
    One site (a str) returns a PatchResult, a list returns {site: PatchResult}. Options: those of
    :func:`generic_patch` but chunk_size/progress; each site takes the selections it has an axis for.
    """
    single = isinstance(sites, str)
    site_list = [sites] if single else list(sites)
    if not site_list:
        raise ValueError("sites is empty")
    setup = make_setup(model, clean_codes, corrupted_codes, run, metric)
    grids = [build_grid(setup, site, fit_selection(sel, site, model.cfg)) for site in site_list]
    values, clean_metric, corrupted_metric = _attribution_values(setup, grids, metric)
    results = {}
    for site, grid, v in zip(site_list, grids, values):
        metrics = (clean_metric, corrupted_metric)
        results[site] = make_result(setup, v, grid.axes, grid.labels, metrics, metric, f"{grid.site} (attribution)", quantity="change", normalize=run.normalize)
    return results[site_list[0]] if single else results


@dataclass
class AttributionCheck:
    """Attribution patching vs real activation patching on a sample of cells of one site."""

    site: str
    correlation: float  # Pearson correlation of the two (nan if either is constant)
    attribution: torch.Tensor  # [n] estimated metric changes
    actual: torch.Tensor  # [n] patched - unpatched metric
    cells: list[tuple]  # [n] cell labels, in the site's axes order
    axes: tuple[str, ...] = ()

    @property
    def max_abs_error(self) -> float:
        return float((self.attribution - self.actual).abs().max())

    def __float__(self) -> float:
        return self.correlation


@takes_options(exclude=("normalize",), progress=False)
def check_attribution(
    model: "HookedMusicGen",
    clean_codes: Int[torch.Tensor, "batch k pos"],
    corrupted_codes: Int[torch.Tensor, "batch k pos"],
    metric: Callable,
    site: str = "resid_pre",
    *,
    n_samples: int = 32,
    seed: int = 0,
    run: RunOptions,
    sel: Selection,
) -> AttributionCheck:
    """Compare attribution patching with real patching on ``n_samples`` random cells of ``site``.

    Returns an :class:`AttributionCheck` (``float(check)`` is the correlation).
    """
    if not isinstance(n_samples, int) or n_samples < 2:
        raise ValueError(f"n_samples must be an int >= 2, got {n_samples!r}")
    setup = make_setup(model, clean_codes, corrupted_codes, run, metric)
    grid = build_grid(setup, site, sel)
    (attr,), _, _ = _attribution_values(setup, [grid], metric)
    n_cells = len(grid.cells)
    gen = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(n_cells, generator=gen)[: min(n_samples, n_cells)].sort().values.tolist()
    src_cache, _, clean_metric, corrupted_metric = baseline_runs(setup, metric, grid.hooks)
    target_metric = corrupted_metric if setup.denoise else clean_metric
    cells = source_cells(setup, grid, src_cache, chosen)
    codes, cond = setup.target
    with torch.no_grad():
        patched, _ = run_cells(model, codes, cond, cells, metric, chunk_size=run.chunk_size, progress=run.progress, desc="checking attribution")
    actual = torch.tensor(patched, dtype=torch.float64) - target_metric
    estimate = attr.reshape(-1)[chosen].double()
    if len(chosen) >= 2 and actual.std() > 0 and estimate.std() > 0:
        corr = float(torch.corrcoef(torch.stack([estimate, actual]))[0, 1])
    else:
        corr = float("nan")
    labels = grid.cell_labels()
    dtype = result_dtype(model)
    return AttributionCheck(grid.site, corr, estimate.to(dtype), actual.to(dtype), [labels[i] for i in chosen], grid.axes)

