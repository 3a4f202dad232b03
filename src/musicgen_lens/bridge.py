"""A TransformerLens 4 ``TransformerBridge`` adapter for MusicGen.

TransformerLens 4 wraps Hugging Face models with per-architecture ``ArchitectureAdapter``
classes; none ships for MusicGen. Importing this module registers
:class:`MusicgenArchitectureAdapter` for ``MusicgenForConditionalGeneration`` and
:func:`boot_musicgen_bridge` boots a bridge around a checkpoint (a Hub name, a local
directory, or an already loaded ``MusicgenForConditionalGeneration``)::

    from musicgen_lens.bridge import boot_musicgen_bridge, bridge_forward, bridge_inputs
    bridge = boot_musicgen_bridge("facebook/musicgen-small")
    # codes: delayed [batch, K, pos], as HookedMusicGen takes; logits [batch, K, pos, vocab]
    logits, cache = bridge_forward(bridge, codes, ["lofi piano"], cache=True)
    kw = bridge_inputs(bridge, codes, ["lofi piano"])   # or HF's raw kwargs, for any bridge method
    bridge.run_with_hooks(kw.pop("input_ids"), **kw, fwd_hooks=[...])

The bridge wraps the *Hugging Face* modules in place and runs HF's own forward, so it is
exactly HF numerically; :class:`~musicgen_lens.HookedMusicGen` is our readable
re-implementation with the same numbers (tested). Use the bridge for TransformerLens 4
tooling that expects a ``TransformerBridge``; use ``HookedMusicGen`` for generation,
steering, the KV cache, per-step hook context and the rest of this library. Names of the
residual stream and sub-layer outputs are mapped by :data:`HOOK_MAP` (bridge -> ours).

MusicGen's decoder differs from a text decoder in two places, both given their own bridge
components here:

- the input is the **sum of K per-codebook embeddings** (``embed_tokens`` is a ModuleList):
  :class:`CodebookEmbeddingBridge` wraps each table (``embed.{k}.hook_out``), and the sum is
  visible as the block-0 input (``blocks.0.hook_in`` == our ``hook_embed + hook_pos_embed``);
- the output has **K lm_heads** (``lm_heads`` ModuleList): :class:`CodebookUnembeddingBridge`
  wraps each head (``unembed.{k}.hook_out`` == our ``hook_logits[:, k]``).

Two snags in TransformerLens 4.3 are worked around (see :func:`register`):
``ArchitectureAdapterFactory.register_adapter`` and the ``transformer_lens.architectures``
entry point do not reach ``boot_transformers`` (which first looks the architecture up in the
module-level ``SUPPORTED_ARCHITECTURES`` dict), so that dict is set too; and the default
HF model class (an ``AutoModelFor...``) does not load a ``MusicgenConfig``, so the MusicGen
class is passed explicitly. Generation is not supported by the bridge
(``supports_generation=False``): generate with ``HookedMusicGen``.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import torch

from transformer_lens.model_bridge.architecture_adapter import ArchitectureAdapter
from transformer_lens.model_bridge.generalized_components import (
    AttentionBridge,
    BlockBridge,
    EmbeddingBridge,
    LinearBridge,
    MLPBridge,
    NormalizationBridge,
    UnembeddingBridge,
)
from transformer_lens.model_bridge.generalized_components.base import GeneralizedComponent

ARCHITECTURE = "MusicgenForConditionalGeneration"

__all__ = [
    "ARCHITECTURE",
    "HOOK_MAP",
    "RESID_HOOK_MAP",
    "CodebookEmbeddingBridge",
    "CodebookUnembeddingBridge",
    "MusicgenArchitectureAdapter",
    "boot_musicgen_bridge",
    "bridge_hook_name",
    "bridge_forward",
    "bridge_inputs",
    "bridge_logits",
    "ours_hook_name",
    "register",
]


class CodebookEmbeddingBridge(EmbeddingBridge):
    """One of MusicGen's K per-codebook embedding tables (``decoder...embed_tokens[k]``).

    A list item: the adapter maps ``embed`` to the ModuleList, so the bridge has
    ``embed[0] .. embed[K-1]`` (hooks ``embed.{k}.hook_in`` / ``embed.{k}.hook_out``) and HF's
    ``sum(embed_tokens[k](ids[:, k]) for k in range(K))`` runs through them unchanged.
    """

    is_list_item: bool = True


class CodebookUnembeddingBridge(UnembeddingBridge):
    """One of MusicGen's K lm_heads (``decoder.lm_heads[k]``), a list item like the embeddings:
    ``unembed.{k}.hook_out`` is codebook k's logits ``[batch, pos, vocab]``."""

    is_list_item: bool = True


class MusicgenArchitectureAdapter(ArchitectureAdapter):
    """Adapter for ``MusicgenForConditionalGeneration`` (text-conditioned MusicGen).

    Only the LM decoder is mapped (the part MusicGen interpretability is about); the T5 text
    encoder and the EnCodec codec stay plain HF modules inside ``bridge.original_model``.
    The decoder block is pre-LN like BART's decoder: ``ln1 -> attn`` (causal self-attention),
    ``ln_cross -> cross_attn`` (over the projected T5 states), ``ln2 -> mlp`` (fc1/fc2).
    """

    supports_generation = False
    supports_causal_loss = False

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.cfg.normalization_type = "LN"
        self.cfg.positional_embedding_type = "standard"  # sinusoidal, computed by HF's module
        self.cfg.final_rms = False
        self.cfg.gated_mlp = False
        self.cfg.attn_only = False
        self.cfg.d_head = self.cfg.d_model // self.cfg.n_heads
        # Pre-LN, but the K embeddings/K heads sit outside the folding machinery.
        self.supports_fold_ln = False
        self.supports_center_writing_weights = False
        self.weight_processing_conversions = {}
        self.component_mapping = self._build_component_mapping()

    def _norm(self, name: str) -> NormalizationBridge:
        return NormalizationBridge(name=name, config=self.cfg, use_native_layernorm_autograd=True)

    def _attention(self, name: str, *, is_cross_attention: bool = False) -> AttentionBridge:
        return AttentionBridge(
            name=name,
            config=self.cfg,
            submodules={
                "q": LinearBridge(name="q_proj"),
                "k": LinearBridge(name="k_proj"),
                "v": LinearBridge(name="v_proj"),
                "o": LinearBridge(name="out_proj"),
            },
            is_cross_attention=is_cross_attention,
        )

    def _build_component_mapping(self) -> dict[str, GeneralizedComponent]:
        decoder = "decoder.model.decoder"
        return {
            "embed": CodebookEmbeddingBridge(name=f"{decoder}.embed_tokens"),
            "blocks": BlockBridge(
                name=f"{decoder}.layers",
                hook_alias_overrides={
                    "hook_attn_in": "attn.hook_attn_in",
                    "hook_attn_out": "attn.hook_out",
                    "hook_mlp_in": "mlp.in.hook_in",
                    "hook_mlp_out": "mlp.out.hook_out",
                },
                submodules={
                    "ln1": self._norm("self_attn_layer_norm"),
                    "attn": self._attention("self_attn"),
                    "ln_cross": self._norm("encoder_attn_layer_norm"),
                    "cross_attn": self._attention("encoder_attn", is_cross_attention=True),
                    "ln2": self._norm("final_layer_norm"),
                    # fc1/fc2 sit directly on the block (no MLP container), as in BART.
                    "mlp": MLPBridge(
                        name=None,
                        config=self.cfg,
                        submodules={"in": LinearBridge(name="fc1"), "out": LinearBridge(name="fc2")},
                    ),
                },
            ),
            "ln_final": self._norm(f"{decoder}.layer_norm"),
            "unembed": CodebookUnembeddingBridge(name="decoder.lm_heads"),
        }


def register() -> None:
    """Make ``TransformerBridge.boot_transformers`` find the adapter (idempotent).

    Sets both the factory's registry (``register_adapter``) and the module-level
    ``SUPPORTED_ARCHITECTURES`` dict that ``determine_architecture_from_hf_config`` reads.
    """
    from transformer_lens.factories import architecture_adapter_factory as factory

    factory.ArchitectureAdapterFactory.register_adapter(ARCHITECTURE, MusicgenArchitectureAdapter)
    factory.SUPPORTED_ARCHITECTURES[ARCHITECTURE] = MusicgenArchitectureAdapter


register()


def boot_musicgen_bridge(
    path_or_hf_model: Any,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    tokenizer: Any = None,
    **kwargs: Any,
) -> Any:
    """Boot a ``TransformerBridge`` around MusicGen.

    `path_or_hf_model`: a Hub name (``"facebook/musicgen-small"``), a local checkpoint
    directory (e.g. one written by :func:`musicgen_lens.tiny.save_tiny_checkpoint`), or a
    loaded ``MusicgenForConditionalGeneration`` (wrapped in place: its modules become bridge
    components). Attention runs eagerly so ``hook_pattern`` fires. Extra keyword arguments
    go to ``TransformerBridge.boot_transformers``.
    """
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import MusicgenForConditionalGeneration

    register()
    if isinstance(path_or_hf_model, torch.nn.Module) and type(path_or_hf_model).__name__ != ARCHITECTURE:
        raise TypeError(
            f"boot_musicgen_bridge wraps a {ARCHITECTURE}, got {type(path_or_hf_model).__name__} "
            "(MusicGen-melody has no adapter yet)"
        )
    name = None if isinstance(path_or_hf_model, torch.nn.Module) else os.fspath(path_or_hf_model)
    if tokenizer is None:
        # TransformerLens's own tokenizer setup drops T5's appended </s>; MusicGen (and
        # HookedMusicGen) condition on the text *with* it, so load the checkpoint's as is.
        tokenizer = _checkpoint_tokenizer(name or getattr(path_or_hf_model.config, "_name_or_path", None))
    if isinstance(path_or_hf_model, torch.nn.Module):
        hf_model = path_or_hf_model
        name = getattr(hf_model.config, "_name_or_path", None) or "musicgen"
        hf_model.eval()
        return TransformerBridge.boot_transformers(
            name, hf_model=hf_model, device=device, dtype=dtype, tokenizer=tokenizer,
            model_class=MusicgenForConditionalGeneration, **kwargs,
        )
    bridge = TransformerBridge.boot_transformers(
        name, device=device, dtype=dtype, tokenizer=tokenizer, model_class=MusicgenForConditionalGeneration, **kwargs,
    )
    bridge.original_model.eval()
    return bridge


def _checkpoint_tokenizer(name: str | None) -> Any:
    if not name:
        return None
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError):
        return None


# --------------------------------------------------------------------------- inputs / outputs
def bridge_inputs(
    bridge: Any,
    codes: torch.Tensor,
    texts: Sequence[str] | str | None = None,
    *,
    input_ids: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Keyword arguments for ``bridge(**kw)`` / ``bridge.run_with_cache(kw.pop("input_ids"), **kw)``.

    `codes` are delayed codes ``[batch, K, pos]`` (what ``HookedMusicGen.forward`` takes);
    HF wants them as ``decoder_input_ids`` ``[batch * K, pos]``. Texts are tokenized with
    the bridge's tokenizer (the checkpoint's T5 tokenizer), padded to the longest.
    """
    if codes.ndim != 3:
        raise ValueError(f"codes must be [batch, n_codebooks, pos], got shape {tuple(codes.shape)}")
    batch, k, pos = codes.shape
    if input_ids is None:
        if texts is None:
            raise ValueError("give texts or input_ids (the bridge runs the text encoder)")
        if isinstance(texts, str):
            texts = [texts]
        tok = bridge.tokenizer(list(texts), return_tensors="pt", padding=True)
        input_ids, attention_mask = tok["input_ids"], tok["attention_mask"]
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    if input_ids.shape[0] != batch:
        raise ValueError(f"{input_ids.shape[0]} texts for a batch of {batch} code sequences")
    device = next(bridge.original_model.parameters()).device
    return {
        "input_ids": input_ids.to(device),
        "attention_mask": attention_mask.to(device),
        "decoder_input_ids": codes.reshape(batch * k, pos).to(device),
    }


def bridge_forward(
    bridge: Any, codes: torch.Tensor, texts: Sequence[str] | str | None = None, *, cache: bool = False, **kwargs: Any
) -> Any:
    """Run the bridge on delayed codes ``[batch, K, pos]`` and texts, as ``HookedMusicGen(codes, texts)``.

    Returns logits ``[batch, K, pos, vocab]``, or with ``cache=True`` ``(logits, cache)``
    from ``bridge.run_with_cache`` (extra keyword arguments go to it, e.g. ``names_filter``).
    """
    kw = bridge_inputs(bridge, codes, texts)
    input_ids = kw.pop("input_ids")
    k = codes.shape[1]
    if cache:
        logits, act_cache = bridge.run_with_cache(input_ids, **kw, **kwargs)
        return bridge_logits(logits, k), act_cache
    return bridge_logits(bridge(input_ids, **kw, **kwargs), k)


def bridge_logits(logits: torch.Tensor, n_codebooks: int) -> torch.Tensor:
    """HF's MusicGen logits ``[batch * K, pos, vocab]`` -> ours ``[batch, K, pos, vocab]``."""
    if logits.ndim == 4:
        return logits
    bk, pos, vocab = logits.shape
    return logits.reshape(bk // n_codebooks, n_codebooks, pos, vocab)


# --------------------------------------------------------------------------- hook names
#: Bridge hook name -> HookedMusicGen hook name ("{i}" is the layer, "{last}" the last one).
#: Each pair holds the same tensor with the same shape (tested): decoder activations are
#: [batch, pos, ...], per-head q/k/v/z [batch, pos, heads, d_head], patterns and scores
#: [batch, heads, q_pos, k_pos]. Not mapped: the bridge's ``attn.hook_attn_scores``, which
#: on a wrapped HF attention holds HF's returned *post-softmax* weights (the same tensor as
#: its ``hook_pattern``), not our pre-softmax ``hook_attn_scores``. Beware the bridge's *alias*
#: ``blocks.{i}.hook_resid_mid``: it is ``ln2.hook_in``, i.e. the residual stream after the
#: cross-attention (our ``hook_resid_mid_cross``), not after self-attention (our
#: ``hook_resid_mid`` == the bridge's ``ln_cross.hook_in``).
#: Not in the table because they are slices of one of our hooks: ``embed.{k}.hook_out`` is
#: ``hook_codebook_embed[:, :, k]`` and ``unembed.{k}.hook_out`` is ``hook_logits[:, k]``.
HOOK_MAP: dict[str, str] = {
    "blocks.{i}.hook_in": "blocks.{i}.hook_resid_pre",
    "blocks.{i}.ln1.hook_out": "blocks.{i}.ln1.hook_normalized",
    "blocks.{i}.attn.hook_q": "blocks.{i}.attn.hook_q",
    "blocks.{i}.attn.hook_k": "blocks.{i}.attn.hook_k",
    "blocks.{i}.attn.hook_v": "blocks.{i}.attn.hook_v",
    "blocks.{i}.attn.hook_pattern": "blocks.{i}.attn.hook_pattern",
    "blocks.{i}.attn.hook_z": "blocks.{i}.attn.hook_z",
    "blocks.{i}.attn.hook_out": "blocks.{i}.hook_attn_out",
    "blocks.{i}.ln_cross.hook_in": "blocks.{i}.hook_resid_mid",
    "blocks.{i}.ln_cross.hook_out": "blocks.{i}.ln_cross.hook_normalized",
    "blocks.{i}.cross_attn.k.hook_in": "hook_cond",
    "blocks.{i}.cross_attn.hook_q": "blocks.{i}.cross_attn.hook_q",
    "blocks.{i}.cross_attn.hook_k": "blocks.{i}.cross_attn.hook_k",
    "blocks.{i}.cross_attn.hook_v": "blocks.{i}.cross_attn.hook_v",
    "blocks.{i}.cross_attn.hook_pattern": "blocks.{i}.cross_attn.hook_pattern",
    "blocks.{i}.cross_attn.hook_z": "blocks.{i}.cross_attn.hook_z",
    "blocks.{i}.cross_attn.hook_out": "blocks.{i}.hook_cross_attn_out",
    "blocks.{i}.ln2.hook_in": "blocks.{i}.hook_resid_mid_cross",
    "blocks.{i}.ln2.hook_out": "blocks.{i}.ln2.hook_normalized",
    "blocks.{i}.mlp.in.hook_out": "blocks.{i}.mlp.hook_pre",
    "blocks.{i}.mlp.out.hook_in": "blocks.{i}.mlp.hook_post",
    "blocks.{i}.mlp.out.hook_out": "blocks.{i}.hook_mlp_out",
    "blocks.{i}.hook_out": "blocks.{i}.hook_resid_post",
    "ln_final.hook_in": "blocks.{last}.hook_resid_post",
    "ln_final.hook_out": "ln_final.hook_normalized",
}

#: The residual-stream subset of :data:`HOOK_MAP` (bridge -> ours).
RESID_HOOK_MAP: dict[str, str] = {
    k: v for k, v in HOOK_MAP.items() if "resid" in v
}


def _expand(table: dict[str, str], n_layers: int) -> dict[str, str]:
    out: dict[str, str] = {}
    for a, b in table.items():
        layers = range(n_layers) if "{i}" in a or "{i}" in b else [None]
        for i in layers:
            fill = {"i": i, "last": n_layers - 1}
            out[a.format(**fill)] = b.format(**fill)
    return out


def bridge_hook_name(ours: str, n_layers: int) -> str:
    """Our hook name -> the bridge's (first match in :data:`HOOK_MAP`)."""
    for a, b in _expand(HOOK_MAP, n_layers).items():
        if b == ours:
            return a
    raise KeyError(f"{ours!r} has no bridge counterpart in HOOK_MAP")


def ours_hook_name(bridge_name: str, n_layers: int) -> str:
    """The bridge's hook name -> ours."""
    table = _expand(HOOK_MAP, n_layers)
    if bridge_name not in table:
        raise KeyError(f"{bridge_name!r} has no HookedMusicGen counterpart in HOOK_MAP")
    return table[bridge_name]
