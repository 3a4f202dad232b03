"""Path patching: a sender's source value reaches the receivers only, every other component frozen.

Components, senders and receivers are named through the hook-site registry, and only the
sites the architecture has are frozen: each self-attention head's ``attn.z``, each MLP's
``mlp_out`` and, on text models, each cross-attention head's ``cross_attn.z`` (a MusicGen-melody
model has no cross-attention).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import torch
from jaxtyping import Int

from musicgen_lens.hooks import SITES, hook_name
from musicgen_lens.patching.engine import Op, RunCell, baseline_runs, make_result, make_setup, run_cells
from musicgen_lens.patching.grid import ALL, ATTENTION, RESID_SITES, norm_index, patch_site_of
from musicgen_lens.patching.options import RunOptions, takes_options
from musicgen_lens.patching.results import PatchResult

if TYPE_CHECKING:
    from musicgen_lens.model import HookedMusicGen

__all__ = ["path_patch", "frozen_hooks"]

_RECEIVER_RESID = tuple(n for n in RESID_SITES if n.startswith("resid_"))
_FROZEN_SITES = ("attn.z", "cross_attn.z", "mlp_out")


def frozen_hooks(model: "HookedMusicGen") -> list[str]:
    """The component outputs path patching freezes: the sites of `_FROZEN_SITES` this architecture has."""
    sites = [SITES[n] for n in _FROZEN_SITES if SITES[n].available(model.cfg)]
    return [s.hook_name(layer) for layer in range(model.cfg.n_layers) for s in sites]


def _attn_hook(model: "HookedMusicGen", kind: str, act: str, layer: Any, what: str) -> str:
    """The hook of `kind` attention's `act` at `layer` (a clear error where the architecture lacks it)."""
    return patch_site_of(f"{kind}.{act}", model.cfg).hook_name(norm_index(layer, model.cfg.n_layers, f"{what} layer"))


def _component_ops(model: "HookedMusicGen", spec: Any, what: str) -> list[tuple[str, tuple]]:
    """A sender: ("attn"|"cross_attn", layer, head|None), ("mlp", layer) or ("codebook_embed", k)."""
    cfg = model.cfg
    if not isinstance(spec, (tuple, list)) or not spec or not isinstance(spec[0], str):
        raise ValueError(f"{what} must be a tuple like ('attn', layer, head), ('cross_attn', layer, head), ('mlp', layer) or ('codebook_embed', k), got {spec!r}")
    kind = spec[0]
    if kind in ATTENTION:
        if len(spec) not in (2, 3):
            raise ValueError(f"{what} {spec!r}: expected ({kind!r}, layer, head or None)")
        hook = _attn_hook(model, kind, "z", spec[1], what)
        head = spec[2] if len(spec) == 3 else None
        index = () if head is None else (ALL, norm_index(head, cfg.n_heads, f"{what} head"))
        return [(hook, index)]
    if kind in ("mlp", "mlp_out"):
        if len(spec) != 2:
            raise ValueError(f"{what} {spec!r}: expected ('mlp', layer)")
        return [(hook_name("mlp_out", norm_index(spec[1], cfg.n_layers, f"{what} layer")), ())]
    if kind in ("codebook_embed", "codebook"):
        if len(spec) != 2:
            raise ValueError(f"{what} {spec!r}: expected ('codebook_embed', codebook)")
        return [(hook_name("codebook_embed"), (ALL, norm_index(spec[1], cfg.n_codebooks, f"{what} codebook")))]
    raise ValueError(f"unknown {what} kind {kind!r}: use 'attn', 'cross_attn', 'mlp' or 'codebook_embed'")


def _receiver_op(model: "HookedMusicGen", spec: Any) -> tuple[str, tuple]:
    """A receiver: (resid site, layer) or ("attn"|"cross_attn", layer, head|None, "q"|"k"|"v")."""
    cfg = model.cfg
    if not isinstance(spec, (tuple, list)) or not spec or not isinstance(spec[0], str):
        raise ValueError(f"receiver must be a tuple like ('resid_pre', layer) or ('attn', layer, head, 'q'), got {spec!r}")
    kind = spec[0].removeprefix("hook_")
    if kind in _RECEIVER_RESID:
        if len(spec) != 2:
            raise ValueError(f"receiver {spec!r}: expected ({kind!r}, layer)")
        return patch_site_of(kind, cfg).hook_name(norm_index(spec[1], cfg.n_layers, "receiver layer")), ()
    if kind in ATTENTION:
        if len(spec) != 4 or spec[3] not in ("q", "k", "v"):
            raise ValueError(f"receiver {spec!r}: expected ({kind!r}, layer, head or None, 'q'|'k'|'v')")
        hook = _attn_hook(model, kind, spec[3], spec[1], "receiver")
        if kind == "cross_attn" and spec[3] != "q":
            raise ValueError("cross-attention keys/values read the text conditioning, not the residual stream: only 'q' can receive a path")
        index = () if spec[2] is None else (ALL, norm_index(spec[2], cfg.n_heads, "receiver head"))
        return hook, index
    raise ValueError(
        f"unknown receiver kind {spec[0]!r}: use one of {_RECEIVER_RESID} (with a layer) or "
        "('attn'|'cross_attn', layer, head, 'q'|'k'|'v')"
    )


def _senders(model: "HookedMusicGen", sender: Any) -> tuple[tuple[str, ...], dict[str, list], list[list[tuple[str, tuple]]]]:
    cfg = model.cfg
    if isinstance(sender, str):
        if sender in ATTENTION:
            ls, hs = list(range(cfg.n_layers)), list(range(cfg.n_heads))
            ops = [_component_ops(model, (sender, l, h), "sender") for l in ls for h in hs]
            return ("layer", "head"), {"layer": ls, "head": hs}, ops
        if sender in ("mlp", "mlp_out"):
            ls = list(range(cfg.n_layers))
            return ("layer",), {"layer": ls}, [_component_ops(model, ("mlp", l), "sender") for l in ls]
        if sender in ("codebook_embed", "codebook"):
            ks = list(range(cfg.n_codebooks))
            return ("codebook",), {"codebook": ks}, [_component_ops(model, ("codebook_embed", k), "sender") for k in ks]
        raise ValueError(f"sender string must be 'attn', 'cross_attn', 'mlp' or 'codebook_embed', got {sender!r}")
    if isinstance(sender, (tuple, list)) and sender and isinstance(sender[0], str):
        return (), {}, [_component_ops(model, sender, "sender")]
    if isinstance(sender, (tuple, list)) and sender:
        ops = [_component_ops(model, s, "sender") for s in sender]
        return ("sender",), {"sender": [str(tuple(s)) for s in sender]}, ops
    raise ValueError(f"sender must be a component tuple, a list of them, or 'attn'/'cross_attn'/'mlp'/'codebook_embed'; got {sender!r}")


@takes_options(selection=False)
def path_patch(
    model: "HookedMusicGen",
    clean_codes: Int[torch.Tensor, "batch k pos"],
    corrupted_codes: Int[torch.Tensor, "batch k pos"],
    metric: Callable,
    *,
    sender: Any,
    receivers: Any,
    run: RunOptions,
    sel: Any = None,
) -> PatchResult:
    """Path patching: the sender's source value reaches the receivers only (TransformerLens tutorials' algorithm).

    1. Cache the source run (sender outputs) and the target run (every component's output).
    2. Run the target input with every component frozen at its target value (each self- and
       cross-attention head's z, each MLP output) except the sender, which gets its source value;
       record the receivers' values.
    3. Run the target input again with only the receivers patched to those values; report the metric.

    Senders: ``("attn"|"cross_attn", layer, head)`` (head None = all heads), ``("mlp", layer)``,
    ``("codebook_embed", k)``; a list of them (axis "sender") or the strings "attn"/"cross_attn"
    (axes layer x head), "mlp" (layer), "codebook_embed" (codebook). Receivers (a tuple or a
    list): ``(resid_site, layer)`` for resid_pre/mid/mid_cross/post (exact: the receiver gets its
    target value plus the sender's direct change) or ``("attn"|"cross_attn", layer, head, "q"|"k"|"v")``
    (cross-attention: "q" only). A sender downstream of every receiver has no effect.

    Melody models have no cross-attention: nothing of it is frozen, and a cross-attention sender
    or receiver (or ``resid_mid_cross``) is refused, naming the architecture. Senders and
    receivers are whole activations (every position, the conditioning prefix included).
    """
    setup = make_setup(model, clean_codes, corrupted_codes, run, metric)
    axes, labels, sender_ops = _senders(model, sender)
    if isinstance(receivers, (tuple, list)) and receivers and isinstance(receivers[0], str):
        receivers = [receivers]
    if not receivers:
        raise ValueError("receivers is empty")
    recv = [_receiver_op(model, r) for r in receivers]
    recv_hooks = sorted({h for h, _ in recv})
    frozen = frozen_hooks(model)
    sender_hooks = sorted({h for ops in sender_ops for h, _ in ops})
    src_cache, tgt_cache, clean_metric, corrupted_metric = baseline_runs(setup, metric, sender_hooks, frozen)
    codes, cond = setup.target
    common = [Op(n, (), tgt_cache[n]) for n in frozen]
    step2 = [RunCell([Op(h, idx, src_cache[h]) for h, idx in ops]) for ops in sender_ops]
    with torch.no_grad():
        _, captured = run_cells(model, codes, cond, step2, None, common=common, capture=recv_hooks, chunk_size=run.chunk_size, progress=run.progress, desc="path patching (senders)")
        step3 = [RunCell([Op(h, idx, cap[h]) for h, idx in recv]) for cap in captured]
        values, _ = run_cells(model, codes, cond, step3, metric, chunk_size=run.chunk_size, progress=run.progress, desc="path patching (receivers)")
    return make_result(setup, values, axes, labels, (clean_metric, corrupted_metric), metric, "path", normalize=run.normalize)
