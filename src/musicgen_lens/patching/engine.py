"""The one activation patcher: set up two runs, build a grid of cells, run it in batches.

`generic_patch` is the engine every named sweep calls (``patch_resid``, ``patch_heads``, ... in
`musicgen_lens.patching.sweeps` are partials of it or a few lines each, as TransformerLens's
``get_act_patch_resid_pre`` is a partial of ``generic_activation_patch``). Its keyword arguments
are declared here once.

Each forward pass runs ``chunk_size`` patched copies of the batch side by side (batch
``chunk_size * batch``), so a 24-layer x 1500-position sweep costs about
``24 * 1500 / chunk_size`` forward passes and ``chunk_size`` bounds the memory. Only the hooks a
sweep patches are cached from the source run (``names_filter``), nothing else.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Literal, Sequence

import torch
import torch.nn.functional as F
from jaxtyping import Int
from tqdm.auto import tqdm

from musicgen_lens.conditioning import Conditioning
from musicgen_lens.hooks import parse_hook_name
from musicgen_lens.patching.grid import ALL, RESID_SITES, Grid, build_grid, patch_site_of
from musicgen_lens.patching.metrics import eval_metric, metric_hook, metric_name
from musicgen_lens.patching.options import RunOptions, Selection, takes_options
from musicgen_lens.patching.results import PatchResult

if TYPE_CHECKING:
    from musicgen_lens.model import HookedMusicGen

__all__ = ["generic_patch", "Setup", "make_setup", "code_part", "Op", "RunCell", "run_cells", "baseline_runs", "source_cells"]

Backend = Literal["batched", "transformer_lens"]
# sweeps that accept only some sites: name -> (sites, hint)
_SWEEP_SITES = {"patch_resid": (RESID_SITES, "heads: patch_heads"), "patch_codebooks": (("codebook_embed",), "")}


# ============================================================================ setup


def pad_cond(cond: Conditioning, width: int) -> Conditioning:
    """Right-pad the text axis to `width` (padding is masked; chroma is kept)."""
    pad = width - cond.states.shape[1]
    if pad == 0:
        return cond
    states, mask = F.pad(cond.states, (0, 0, 0, pad)), F.pad(cond.mask, (0, pad), value=False)
    return Conditioning(states, mask, list(cond.texts), cond.chroma, cond.has_melody)


def _tile(cond: Conditioning, n: int, mask: torch.Tensor) -> Conditioning:
    """`cond` tiled n times along the batch (copy 0, copy 1, ...) with the given mask."""
    chroma = None if cond.chroma is None else cond.chroma.repeat(n, 1, 1)
    has_melody = None if cond.has_melody is None else cond.has_melody.repeat(n)
    return Conditioning(cond.states.repeat(n, 1, 1), mask, [], chroma, has_melody)


@dataclass
class Setup:
    model: "HookedMusicGen"
    clean_codes: torch.Tensor
    corrupted_codes: torch.Tensor
    clean_cond: Conditioning
    corrupted_cond: Conditioning
    direction: str
    n_prefix: int = 0  # melody: conditioning positions before the codes in every decoder hook

    @property
    def denoise(self) -> bool:
        return self.direction == "denoise"

    @property
    def target(self) -> tuple[torch.Tensor, Conditioning]:
        return (self.corrupted_codes, self.corrupted_cond) if self.denoise else (self.clean_codes, self.clean_cond)

    @property
    def source(self) -> tuple[torch.Tensor, Conditioning]:
        return (self.clean_codes, self.clean_cond) if self.denoise else (self.corrupted_codes, self.corrupted_cond)

    @property
    def n_pos(self) -> int:
        return self.clean_codes.shape[-1]

    @property
    def n_text(self) -> int:
        return self.clean_cond.states.shape[1]


def _codes(model: "HookedMusicGen", codes: Any, what: str) -> torch.Tensor:
    try:
        return model.check_codes(codes)
    except (TypeError, ValueError) as e:
        raise type(e)(f"{what}: {e}") from None


def make_setup(model: "HookedMusicGen", clean_codes: Any, corrupted_codes: Any, run: RunOptions, metric: Any = None) -> Setup:
    """Validate the two runs; conditionings follow ``model.resolve_cond`` and are padded to one text length."""
    if not hasattr(model, "hook_dict") or not hasattr(model, "check_codes"):
        raise TypeError(f"model must be a HookedMusicGen, got {type(model).__name__}")
    if model.training:
        raise RuntimeError("patching needs the model in eval mode (dropout would make every run different): call model.eval()")
    if metric is not None and not callable(metric):
        raise TypeError(f"metric must be callable (logits -> scalar), got {type(metric).__name__}")
    clean, corrupted = _codes(model, clean_codes, "clean_codes"), _codes(model, corrupted_codes, "corrupted_codes")
    if clean.shape != corrupted.shape:
        raise ValueError(
            f"clean_codes {tuple(clean.shape)} and corrupted_codes {tuple(corrupted.shape)} must have the same shape "
            "(same batch, codebooks and positions) for position-wise patching"
        )
    batch = clean.shape[0]
    with torch.no_grad():
        cc = model.resolve_cond(run.clean_cond, batch, what="clean_cond")
        xc = model.resolve_cond(run.corrupted_cond, batch, what="corrupted_cond")
    widths = (cc.states.shape[1], xc.states.shape[1])
    if model.cfg.is_melody and widths[0] != widths[1]:
        warnings.warn(
            f"MusicGen-melody: the clean and corrupted texts have {widths[0]} and {widths[1]} positions; the shorter is "
            f"padded to {max(widths)} so that both prefixes (chroma_length + text positions) line up. Self-attention reads "
            "padded prefix positions, so both runs (and their metrics) are those of the padded conditionings, as in a "
            "batched Hugging Face run",
            stacklevel=3,
        )
    cc, xc = pad_cond(cc, max(widths)), pad_cond(xc, max(widths))
    n_prefix = model.n_prefix(cc)
    if n_prefix != model.n_prefix(xc):  # cannot happen after padding; the decoder indices depend on it
        raise ValueError(f"clean and corrupted conditionings have prefixes of {n_prefix} and {model.n_prefix(xc)} positions")
    return Setup(model, clean, corrupted, cc, xc, run.direction, n_prefix)


def code_part(act: torch.Tensor | None, hook: str | None, n_prefix: int) -> torch.Tensor | None:
    """What an activation-reading metric sees: a decoder hook's activation at the code positions
    only (a melody model's first `n_prefix` decoder positions are its conditioning)."""
    if act is None or not n_prefix:
        return act
    site, _ = parse_hook_name(hook)
    if site.positions != "decoder":
        return act
    return act.narrow(site.pos_axis, n_prefix, act.shape[site.pos_axis] - n_prefix)


def result_dtype(model: "HookedMusicGen") -> torch.dtype:
    """float32, or float64 for a float64 model."""
    return torch.promote_types(model.cfg.dtype, torch.float32)


# ============================================================================ the batched loop


@dataclass
class Op:
    hook: str
    index: tuple
    value: torch.Tensor  # full [batch, ...] activation the index is read from


@dataclass
class RunCell:
    ops: list[Op]
    mask: torch.Tensor | None = None  # conditioning mask override [batch, text_pos]


def run_cells(
    model: "HookedMusicGen",
    codes: torch.Tensor,
    cond: Conditioning,
    cells: Sequence[RunCell],
    metric: Callable | None,
    *,
    common: Sequence[Op] = (),
    capture: Sequence[str] = (),
    chunk_size: int = 8,
    progress: bool = True,
    desc: str = "patching",
) -> tuple[list[float], list[dict[str, torch.Tensor]]]:
    """Run every cell's patches on (codes, cond), ``chunk_size`` cells per forward pass.

    ``common`` ops replace whole activations in every cell first (path patching's freezing);
    then each cell's ops overwrite ``act[index]`` with ``value[index]`` in that cell's rows.
    Returns the metric per cell and, per cell, the (post-patch) activations named in ``capture``.
    """
    b, n_prefix = codes.shape[0], model.n_prefix(cond)
    mh = metric_hook(metric) if metric is not None else None
    read = set(capture) | ({mh} if mh else set())
    common_by_hook = {op.hook: op for op in common}
    values: list[float] = []
    captured: list[dict[str, torch.Tensor]] = []
    bar = tqdm(total=len(cells), desc=desc, disable=not progress, leave=False)
    try:
        for start in range(0, len(cells), chunk_size):
            chunk = cells[start : start + chunk_size]
            n = len(chunk)
            big_cond = _tile(cond, n, torch.cat([c.mask if c.mask is not None else cond.mask for c in chunk]))
            per_hook: dict[str, list[tuple[int, Op]]] = {}
            for g, cell in enumerate(chunk):
                for op in cell.ops:
                    per_hook.setdefault(op.hook, []).append((g, op))
            store: dict[str, torch.Tensor] = {}

            def hook_fn(act: torch.Tensor, hook: Any) -> torch.Tensor:
                name = hook.name
                if name in common_by_hook:
                    v = common_by_hook[name].value
                    act = v.repeat((n,) + (1,) * (v.ndim - 1))
                elif name in per_hook:
                    act = act.clone()
                for g, op in per_hook.get(name, ()):
                    idx = (ALL, *op.index)
                    act[g * b : (g + 1) * b][idx] = op.value[idx]
                if name in read:
                    store[name] = act.detach()
                return act

            names = set(per_hook) | set(common_by_hook) | read
            logits = model.run_with_hooks(codes.repeat(n, 1, 1), big_cond, fwd_hooks=[(name, hook_fn) for name in sorted(names)])
            for g in range(n):
                rows = slice(g * b, (g + 1) * b)
                if metric is not None:
                    values.append(float(eval_metric(metric, logits[rows], code_part(store[mh][rows], mh, n_prefix) if mh else None)))
                if capture:
                    captured.append({name: store[name][rows].clone() for name in capture})
            bar.update(n)
    finally:
        bar.close()
    return values, captured


def baseline_runs(setup: Setup, metric: Callable, source_hooks: Sequence[str], target_hooks: Sequence[str] = ()) -> tuple[dict, dict, float, float]:
    """Unpatched source and target runs: their caches (only the named hooks) and metrics."""
    mh = metric_hook(metric)
    out = []
    with torch.no_grad():
        for (codes, cond), hooks in ((setup.source, source_hooks), (setup.target, target_hooks)):
            names = sorted(set(hooks) | ({mh} if mh else set()))
            logits, cache = setup.model.run_with_cache(codes, cond, names_filter=names, return_cache_object=False)
            out.append((cache, float(eval_metric(metric, logits, code_part(cache.get(mh), mh, setup.n_prefix)))))
    (src_cache, src_metric), (tgt_cache, tgt_metric) = out
    clean_metric, corrupted_metric = (src_metric, tgt_metric) if setup.denoise else (tgt_metric, src_metric)
    return src_cache, tgt_cache, clean_metric, corrupted_metric


def source_cells(setup: Setup, grid: Grid, src_cache: dict, which: Sequence[int] | None = None) -> list[RunCell]:
    """The grid's cells (all, or those at `which`) as patches with the source run's values."""
    mask = setup.source[1].mask
    chosen = grid.cells if which is None else [grid.cells[i] for i in which]
    return [RunCell([Op(h, idx, src_cache[h]) for h, idx in c.ops], mask if c.swap_mask else None) for c in chosen]


def make_result(setup: Setup, values: Any, axes: tuple, labels: dict, metrics: tuple[float, float], metric: Callable, site: str, *, quantity: str = "metric", normalize: bool = False) -> PatchResult:
    shape = tuple(len(labels[a]) for a in axes)
    values = torch.as_tensor(values, dtype=result_dtype(setup.model)).reshape(shape)
    result = PatchResult(values, axes, labels, metrics[0], metrics[1], setup.direction, quantity, site, metric_name(metric))
    return result.normalized() if normalize else result


def _activation_patch(setup: Setup, grid: Grid, metric: Callable, run: RunOptions) -> PatchResult:
    src_cache, _, clean_metric, corrupted_metric = baseline_runs(setup, metric, grid.hooks)
    codes, cond = setup.target
    with torch.no_grad():
        values, _ = run_cells(
            setup.model, codes, cond, source_cells(setup, grid, src_cache), metric, chunk_size=run.chunk_size, progress=run.progress, desc=f"patching {grid.site}"
        )
    return make_result(setup, values, grid.axes, grid.labels, (clean_metric, corrupted_metric), metric, grid.site, normalize=run.normalize)


# ============================================================================ TransformerLens backend


def _tl_patch(setup: Setup, grid: Grid, metric: Callable, *, normalize: bool) -> PatchResult:
    """Call transformer_lens.patching inside model.conditioning(target_cond)."""
    from transformer_lens import patching as tlp

    if metric_hook(metric):
        raise ValueError("backend='transformer_lens' passes only logits to the metric; probe_score needs backend='batched'")
    model, site = setup.model, grid.site
    if model.cfg.is_melody:
        raise ValueError(
            "backend='transformer_lens' indexes the decoder's positions as code positions, but a MusicGen-melody model "
            "(architecture 'melody') prepends its conditioning prefix to them: use backend='batched'"
        )
    full = {"layer": list(range(model.cfg.n_layers)), "head": list(range(model.cfg.n_heads)), "pos": list(range(setup.n_pos))}
    if site in RESID_SITES and grid.axes == ("layer", "pos"):
        fn = tlp.generic_activation_patch
        kwargs = dict(patch_setter=tlp.layer_pos_patch_setter, activation_name=site, index_axis_names=("layer", "pos"))
    elif site.startswith("attn.") and grid.axes in (("layer", "head"), ("layer", "pos", "head"), ("layer", "head", "pos")):
        tl_act = {"z": "out", "result": "out", "q": "q", "k": "k", "v": "v", "pattern": "pattern"}.get(site.split(".")[1])
        if tl_act is None:
            raise ValueError(f"transformer_lens.patching has no per-head patcher for {site!r}; use backend='batched'")
        fn = getattr(tlp, f"get_act_patch_attn_head_{tl_act}_{'by_pos' if 'pos' in grid.axes else 'all_pos'}")
        kwargs = {}
    else:
        raise ValueError(
            f"backend='transformer_lens' supports residual sites per (layer, pos) and self-attention heads; "
            f"{site!r} with axes {grid.axes} needs backend='batched'"
        )
    if any(grid.labels[a] != full[a] for a in grid.axes):
        raise ValueError("backend='transformer_lens' sweeps every layer/head/position; drop layers=/heads=/positions=")
    hooks = [h.replace("hook_result", "hook_z") for h in grid.hooks]  # TransformerLens reads z for "out"
    src_cache, _, clean_metric, corrupted_metric = baseline_runs(setup, metric, hooks)
    codes, cond = setup.target
    with torch.no_grad(), model.conditioning(cond):
        values = fn(model, codes, src_cache, metric, **kwargs)
    return make_result(setup, values, grid.axes, grid.labels, (clean_metric, corrupted_metric), metric, site, normalize=normalize)


# ============================================================================ the engine


@takes_options()
def generic_patch(
    model: "HookedMusicGen",
    clean_codes: Int[torch.Tensor, "batch k pos"],
    corrupted_codes: Int[torch.Tensor, "batch k pos"],
    metric: Callable,
    site: str,
    *,
    backend: Backend = "batched",
    sweep: str = "patch_site",
    run: RunOptions,
    sel: Selection,
) -> PatchResult:
    """Patch every cell of one site (``patch_site``; every named sweep calls this).

    ``site``: any decoder site of `musicgen_lens.hooks.SITES` this architecture has (canonical
    name or alias): residual sites (:data:`RESID_SITES`), ``"attn.<act>"`` / ``"cross_attn.<act>"``
    (:data:`HEAD_ACTS`), ``"mlp.post"``, ``"codebook_embed"``, ``"cond"`` (the text),
    ``"chroma"`` (melody), ... Axes: see `musicgen_lens.patching.grid`.

    Keyword options (`musicgen_lens.patching.options`, declared there once): which cells
    (`Selection`: ``layers``, ``heads``, ``codebooks``, ``positions`` (code positions; on melody
    the decoder index is ``model.n_prefix(cond) + position``), ``windows`` in seconds,
    ``per_position``) and how to run (`RunOptions`: ``clean_cond``, ``corrupted_cond``,
    ``direction``, ``normalize``, ``chunk_size``, ``progress``). ``backend="transformer_lens"``
    calls ``transformer_lens.patching`` (residual sites per layer and position, self-attention
    heads; text models). ``sweep`` names the calling entry point (it restricts the sites
    ``patch_resid`` and ``patch_codebooks`` accept).
    """
    if backend not in ("batched", "transformer_lens"):
        raise ValueError(f"backend must be 'batched' or 'transformer_lens', got {backend!r}")
    setup = make_setup(model, clean_codes, corrupted_codes, run, metric)
    if sweep in _SWEEP_SITES:
        allowed, hint = _SWEEP_SITES[sweep]
        if patch_site_of(site, model.cfg).name not in allowed:
            raise ValueError(f"{sweep} site must be one of {allowed}, got {site!r}" + (f" ({hint})" if hint else ""))
    grid = build_grid(setup, site, sel)
    if backend == "transformer_lens":
        return _tl_patch(setup, grid, metric, normalize=run.normalize)
    return _activation_patch(setup, grid, metric, run)
