"""The named sweeps: thin entry points over the one engine, `generic_patch`.

As TransformerLens's ``get_act_patch_resid_pre = partial(generic_activation_patch, ...)``, each
is a ``functools.partial`` of `generic_patch` or a few lines that name its site; the run options
(``clean_cond``, ``corrupted_cond``, ``layers``, ``positions``, ``windows``, ``direction``,
``normalize``, ``chunk_size``, ``progress``, ``backend``, ...) are `generic_patch`'s, declared
there once, and each entry point's signature shows them.
"""

from __future__ import annotations

import inspect
from functools import partial
from typing import TYPE_CHECKING, Any, Callable, Literal, Sequence

import torch
from jaxtyping import Int

from musicgen_lens.patching.engine import generic_patch
from musicgen_lens.patching.grid import ATTENTION, CONDITIONING, HEAD_ACTS, Window
from musicgen_lens.patching.results import PatchResult

if TYPE_CHECKING:
    from musicgen_lens.model import HookedMusicGen

__all__ = ["patch_site", "patch_resid", "patch_windows", "patch_heads", "patch_codebooks", "patch_conditioning"]

_ENGINE = inspect.signature(generic_patch)


def _engine_options(fn: Callable) -> Callable:
    """Give `fn` (which forwards ``**options`` to generic_patch) the engine's options in its signature."""
    own = inspect.signature(fn)
    params = [p for p in own.parameters.values() if p.kind != p.VAR_KEYWORD]
    names = {p.name for p in params} | {"site", "sweep"}
    params += [p for p in _ENGINE.parameters.values() if p.kind == p.KEYWORD_ONLY and p.name not in names]
    fn.__signature__ = own.replace(parameters=params)  # type: ignore[attr-defined]
    return fn


def _partial(name: str, doc: str, **fixed: Any) -> partial:
    p = partial(generic_patch, sweep=name, **fixed)
    p.__name__ = p.__qualname__ = name  # type: ignore[attr-defined]
    p.__doc__ = doc
    p.__module__ = __name__  # type: ignore[attr-defined]
    return p


patch_site = generic_patch

patch_resid = _partial(
    "patch_resid",
    """Layer x position patching of ``blocks.{l}.hook_{site}``: axes ("layer", "pos").

    Sites: :data:`RESID_SITES` (resid_pre, attn_out, resid_mid, cross_attn_out, resid_mid_cross,
    mlp_out, resid_post; no cross-attention sites on melody). With ``windows=[(t0, t1), ...]``
    (seconds) the axes are ("layer", "window"); with ``per_position=False`` each layer is patched at
    every position at once: ("layer",). ``backend="transformer_lens"`` calls
    ``transformer_lens.patching.generic_activation_patch`` (as ``get_act_patch_resid_pre`` does)
    inside ``model.conditioning(...)``. Options: see :func:`generic_patch`.
    """,
    site="resid_pre",
    per_position=True,
)

patch_codebooks = _partial(
    "patch_codebooks",
    """Patch one codebook's embedding (its slice of ``hook_codebook_embed``, which ``hook_embed`` sums).

    Axes ("codebook",), or ("codebook", "pos") / ("codebook", "window") per position.
    Options: see :func:`generic_patch`.
    """,
    site="codebook_embed",
)


@_engine_options
def patch_windows(
    model: "HookedMusicGen",
    clean_codes: Int[torch.Tensor, "batch k pos"],
    corrupted_codes: Int[torch.Tensor, "batch k pos"],
    metric: Callable,
    windows: Sequence[Window] | Window,
    *,
    site: str = "resid_pre",
    **options: Any,
) -> PatchResult:
    """Layer x time-window patching: ``patch_site(..., windows=windows)``, axes ("layer", "window") for
    residual sites (also works for head sites ("attn.z", ...) and "codebook_embed")."""
    return generic_patch(model, clean_codes, corrupted_codes, metric, site, windows=windows, sweep="patch_windows", **options)


@_engine_options
def patch_heads(
    model: "HookedMusicGen",
    clean_codes: Int[torch.Tensor, "batch k pos"],
    corrupted_codes: Int[torch.Tensor, "batch k pos"],
    metric: Callable,
    *,
    which: Literal["attn", "cross_attn"] = "attn",
    act: Literal["z", "q", "k", "v", "attn_scores", "pattern", "result"] = "z",
    **options: Any,
) -> PatchResult:
    """Layer x head patching of self- (``which="attn"``) or cross-attention (``"cross_attn"``) heads.

    Axes: ("layer", "head") over all positions; per position ("layer", "pos", "head") for
    z/q/k/v/result and ("layer", "head", "pos") for the pattern (query position), as
    TransformerLens's ``get_act_patch_attn_head_*_by_pos``. Cross-attention k/v are per *text*
    position: ("layer", "text_pos", "head"); melody models have no cross-attention.
    ``act="result"`` without ``cfg.use_attn_result`` patches z (the same intervention).
    ``backend="transformer_lens"`` (self-attention only) calls
    ``transformer_lens.patching.get_act_patch_attn_head_{out,q,k,v,pattern}_{all,by}_pos``.
    """
    if which not in ATTENTION:
        raise ValueError(f"which must be one of {ATTENTION}, got {which!r}")
    if act not in HEAD_ACTS:
        raise ValueError(f"act must be one of {HEAD_ACTS}, got {act!r}")
    return generic_patch(model, clean_codes, corrupted_codes, metric, f"{which}.{act}", sweep="patch_heads", **options)


@_engine_options
def patch_conditioning(
    model: "HookedMusicGen",
    codes: Int[torch.Tensor, "batch k pos"],
    clean_cond: Any,
    corrupted_cond: Any,
    metric: Callable,
    *,
    mode: Literal["whole", "layer"] = "whole",
    corrupted_codes: Int[torch.Tensor, "batch k pos"] | None = None,
    **options: Any,
) -> PatchResult:
    """Swap the conditioning between two prompts (e.g. "trumpet" vs "violin").

    ``mode="whole"``: patch ``hook_cond`` (every layer's cross-attention input; on melody the
    prepended text) and, on melody, ``hook_chroma``, and use the source prompt's padding mask, so
    the patched run equals running with the other conditioning (0-d result). ``mode="layer"``
    (text models): patch one layer's ``hook_cross_attn_out`` at a time, i.e. that layer's
    cross-attention as if it had read the other prompt: axes ("layer",). Per position, use
    ``patch_resid(site="cross_attn_out", ...)``. Prompts of different text lengths are padded to a
    common length. ``codes`` feed both runs unless ``corrupted_codes`` is given.
    """
    if mode not in ("whole", "layer"):
        raise ValueError(f"mode must be 'whole' or 'layer', got {mode!r}")
    if clean_cond is None or corrupted_cond is None:
        raise ValueError("patch_conditioning needs clean_cond and corrupted_cond (Conditionings or lists of texts)")
    if mode == "whole" and options.get("layers") is not None:
        raise ValueError("layers= applies to mode='layer'")
    if mode == "layer" and model.cfg.is_melody:
        raise ValueError(
            "patch_conditioning(mode='layer') patches each layer's hook_cross_attn_out, but a MusicGen-melody model "
            "(architecture 'melody') has no cross-attention: its chroma and text are a prefix read by self-attention. "
            "Use mode='whole' (hook_cond + hook_chroma), or patch_site(site='cond' / 'chroma')"
        )
    corrupted_codes = codes if corrupted_codes is None else corrupted_codes
    site = CONDITIONING if mode == "whole" else "cross_attn_out"
    options.setdefault("per_position", False)
    result = generic_patch(
        model, codes, corrupted_codes, metric, site, clean_cond=clean_cond, corrupted_cond=corrupted_cond, sweep="patch_conditioning", **options
    )
    if mode == "layer":
        result.site = "cond (cross_attn_out)"
    return result
