"""Residual-stream decomposition that includes cross-attention.

TransformerLens's `decompose_resid` and `stack_head_results` know self-attention and MLPs
only; in MusicGen every block also adds a cross-attention output (the text), so their
components no longer sum to the residual stream. These functions add the cross-attention
terms (per layer or per head) and sum to `blocks.{layer}.hook_resid_pre` exactly.

A melody model has no cross-attention; its residual stream starts with the conditioning prefix
(chroma, then text), which gets its own component, `prefix`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import einops
import torch
from jaxtyping import Float, Int
from transformer_lens import ActivationCache

if TYPE_CHECKING:
    from musicgen_lens.model import HookedMusicGen


def _head_results(cache: ActivationCache, model: "HookedMusicGen", layer: int, which: str) -> torch.Tensor:
    cached = cache.cache_dict.get(f"blocks.{layer}.{which}.hook_result")
    if cached is not None:
        return cached
    z = cache[f"blocks.{layer}.{which}.hook_z"]
    W_O = getattr(model.blocks[layer], which).W_O
    return einops.einsum(z, W_O, "batch pos head e, head e d -> batch pos head d")


def resid_decomposition(
    cache: ActivationCache,
    layer: int | None = None,
    per_head: bool = False,
    apply_ln: bool = False,
) -> tuple[Float[torch.Tensor, "component batch pos d_model"], list[str]]:
    """Every additive term of the residual stream entering `layer` (None: after the last block).

    Components: `embed`, `pos_embed`, then for each earlier layer l either `{l}_attn_out`,
    `{l}_cross_attn_out`, `{l}_mlp_out`, or with per_head=True the heads `L{l}H{h}` (self),
    `L{l}C{h}` (cross) and `{l}_mlp_out`. MusicGen has no attention/MLP output biases, so the
    components sum to the residual stream exactly. With apply_ln=True each component is
    scaled by the final LayerNorm (TransformerLens's `apply_ln_to_stack`).

    Melody models: components `prefix` (hook_chroma and hook_cond at the prefix positions, zero
    at the codes), `embed` (zero at the prefix), `pos_embed`, then per layer `{l}_attn_out` /
    `L{l}H{h}` and `{l}_mlp_out` (no cross-attention); positions are [prefix + codes].
    """
    model: HookedMusicGen = cache.model
    n_layers = model.cfg.n_layers
    layer = n_layers if layer is None else layer
    if not 0 <= layer <= n_layers:
        raise ValueError(f"layer must be in [0, {n_layers}], got {layer}")
    attns = (("attn", "H"),) if model.cfg.is_melody else (("attn", "H"), ("cross_attn", "C"))
    if model.cfg.is_melody:
        prefix = torch.cat([cache["hook_chroma"], cache["hook_cond"]], dim=1)
        embed = cache["hook_embed"]
        parts = [
            torch.cat([prefix, torch.zeros_like(embed)], dim=1),
            torch.cat([torch.zeros_like(prefix), embed], dim=1),
            cache["hook_pos_embed"],
        ]
        labels = ["prefix", "embed", "pos_embed"]
    else:
        parts = [cache["hook_embed"], cache["hook_pos_embed"]]
        labels = ["embed", "pos_embed"]
    for l in range(layer):
        if per_head:
            for which, tag in attns:
                heads = _head_results(cache, model, l, which)
                parts.extend(heads.unbind(dim=-2))
                labels.extend(f"L{l}{tag}{h}" for h in range(heads.shape[-2]))
        elif model.cfg.is_melody:
            parts.append(cache[f"blocks.{l}.hook_attn_out"])
            labels.append(f"{l}_attn_out")
        else:
            parts += [cache[f"blocks.{l}.hook_attn_out"], cache[f"blocks.{l}.hook_cross_attn_out"]]
            labels += [f"{l}_attn_out", f"{l}_cross_attn_out"]
        parts.append(cache[f"blocks.{l}.hook_mlp_out"])
        labels.append(f"{l}_mlp_out")
    stack = torch.stack(parts)
    if apply_ln:
        stack = cache.apply_ln_to_stack(stack, layer=layer if layer < n_layers else None)
    return stack, labels


def codebook_logit_attrs(
    cache: ActivationCache,
    stack: Float[torch.Tensor, "component batch pos d_model"],
    codes: Int[torch.Tensor, "batch pos"],
    codebook: int,
) -> Float[torch.Tensor, "component batch pos"]:
    """Direct logit attribution of each component to `codes` of one codebook.

    `stack` should come from `resid_decomposition(..., apply_ln=True)`. The final LayerNorm's
    weight is folded into the unembedding (its bias adds the same constant to every component
    set and is left out), so the attributions sum to the logits minus `ln_final.b @ W_U`.
    """
    model: HookedMusicGen = cache.model
    directions = model.tokens_to_residual_directions(codes, codebook=codebook)  # [batch, pos, d_model]
    n_prefix = stack.shape[2] - codes.shape[-1]
    if model.cfg.is_melody and n_prefix > 0:  # a melody prefix has no logits: attribute the codes only
        stack = stack[:, :, n_prefix:]
    return einops.einsum(stack, directions, "component batch pos d, batch pos d -> component batch pos")
