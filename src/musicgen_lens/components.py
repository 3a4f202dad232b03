"""The MusicGen decoder, one idea per class, in TransformerLens layout.

Weights are stored the way TransformerLens stores them (W_Q [n_heads, d_model, d_head], ...),
so that circuit analysis (OV/QK circuits, logit attribution) reads the same as on GPT-2.
Every activation passes through a named HookPoint.

Speed: hot paths use views (the einops strings stay as comments giving the shapes). Attention
runs `F.scaled_dot_product_attention` unless a hook is live on that layer's `hook_attn_scores`
or `hook_pattern` (run_with_cache on them counts: caching the pattern takes the explicit path,
which materialises scores and pattern); LayerNorm runs `F.layer_norm` unless `hook_scale` is
live. Both paths agree within fp32 rounding; the hooks, when live, see exactly what they did.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator

import einops
import torch
import torch.nn as nn
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from transformers.activations import ACT2FN

from musicgen_lens.config import MusicGenConfig
from musicgen_lens.hook_point import HookPoint
from musicgen_lens.kv_cache import LayerKVCache

_FUSED = [True]  # False: always the explicit paths (see `fused_kernels`)


@contextmanager
def fused_kernels(enabled: bool = True) -> Iterator[None]:
    """`with fused_kernels(False):` runs every attention and LayerNorm on the explicit path (scores,
    pattern and scale materialised), whatever hooks are live: bit-identical runs with and without
    hooks, or a reference for the fused path."""
    previous, _FUSED[0] = _FUSED[0], bool(enabled)
    try:
        yield
    finally:
        _FUSED[0] = previous


class Embed(nn.Module):
    """One embedding table per codebook; MusicGen reads all K codebooks at each position.

    Returns the per-codebook embeddings [batch, pos, n_codebooks, d_model]; the model hooks
    them (`hook_codebook_embed`) and sums them over codebooks (`hook_embed`).
    """

    def __init__(self, cfg: MusicGenConfig):
        super().__init__()
        self.cfg = cfg
        # d_vocab + 1 rows: the last one is the pad/BOS code of the delay pattern
        self.W_E = nn.Parameter(torch.empty(cfg.n_codebooks, cfg.d_vocab + 1, cfg.d_model, dtype=cfg.dtype))

    def forward(self, codes: Int[torch.Tensor, "batch n_codebooks pos"]) -> Float[torch.Tensor, "batch pos n_codebooks d_model"]:
        K, V1, _ = self.W_E.shape
        # one gather over the flattened tables instead of K separate lookups
        offsets = torch.arange(K, device=codes.device).view(1, K, 1) * V1
        per_codebook = self.W_E.view(K * V1, -1)[codes + offsets]
        return per_codebook.permute(0, 2, 1, 3)  # "batch k pos d -> batch pos k d"


def sinusoidal_table(n_pos: int, d_model: int) -> Float[torch.Tensor, "n_pos d_model"]:
    """Hugging Face MusicGen's table (tensor2tensor layout: all cosines, then all sines)."""
    half = d_model // 2
    freq = torch.exp(torch.arange(half, dtype=torch.int64).float() * -(math.log(10000) / (half - 1)))
    angles = torch.arange(n_pos, dtype=torch.int64).float().unsqueeze(1) * freq.unsqueeze(0)
    table = torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)
    if d_model % 2:
        table = torch.cat([table, torch.zeros(n_pos, 1)], dim=1)
    return table


class PosEmbed(nn.Module):
    """Fixed sinusoidal positions; `start` lets a KV-cached step embed its absolute position."""

    def __init__(self, cfg: MusicGenConfig):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("W_pos", sinusoidal_table(cfg.n_ctx, cfg.d_model).to(cfg.dtype), persistent=False)

    def forward(self, batch: int, pos: int, start: int = 0) -> Float[torch.Tensor, "batch pos d_model"]:
        # "pos d -> batch pos d" (a broadcast view, as einops.repeat gave)
        return self.W_pos[start : start + pos].unsqueeze(0).expand(batch, -1, -1)


class LayerNorm(nn.Module):
    """LayerNorm with TransformerLens's hooks: `hook_scale` = sqrt(var + eps), `hook_normalized` = output."""

    def __init__(self, cfg: MusicGenConfig):
        super().__init__()
        self.cfg = cfg
        self.w = nn.Parameter(torch.ones(cfg.d_model, dtype=cfg.dtype))
        self.b = nn.Parameter(torch.zeros(cfg.d_model, dtype=cfg.dtype))
        self.hook_scale = HookPoint()  # [batch, pos, 1]
        self.hook_normalized = HookPoint()  # [batch, pos, d_model]

    def forward(self, x: Float[torch.Tensor, "batch pos d_model"]) -> Float[torch.Tensor, "batch pos d_model"]:
        if _FUSED[0] and not self.hook_scale.is_live():
            # fused (one kernel instead of nine); the scale exists only for its hook
            return self.hook_normalized(F.layer_norm(x, (x.shape[-1],), self.w, self.b, self.cfg.eps))
        x = x - x.mean(-1, keepdim=True)
        scale = self.hook_scale((x.pow(2).mean(-1, keepdim=True) + self.cfg.eps).sqrt())
        return self.hook_normalized(x / scale * self.w + self.b)


def _heads_first(x: Float[torch.Tensor, "batch pos head_index d_head"]) -> Float[torch.Tensor, "batch head_index pos d_head"]:
    return x.transpose(1, 2)


def per_head_matmul(x: Float[torch.Tensor, "batch pos d_in"], W: Float[torch.Tensor, "head d_in d_out"]) -> Float[torch.Tensor, "batch pos head d_out"]:
    """x @ W[h] for every h as one batched matmul over heads, reading W in place.

    Batch and position are folded into the rows first: broadcasting a batch axis against W
    would make torch.matmul expand (copy) the weights once per batch row.
    """
    b, p, d = x.shape
    out = torch.matmul(x.reshape(1, b * p, d), W)  # [head, b*p, d_out]
    return out.view(W.shape[0], b, p, -1).permute(1, 2, 0, 3)  # "head (batch pos) e -> batch pos head e"


class Attention(nn.Module):
    """Multi-head attention, used both as causal self-attention and as cross-attention.

    Cross-attention reads keys/values from the conditioning (text states projected to d_model)
    and masks padded text. MusicGen's attention has no biases.

    Weights are stored as torch.nn.Linear stores them and exposed in TransformerLens layout
    (`W_Q` [head, d_model, d_head], `W_O` [head, d_head, d_model]) as views; hooks see
    TransformerLens's [batch, pos, head_index, d_head] layout.
    """

    def __init__(self, cfg: MusicGenConfig, cross: bool = False):
        super().__init__()
        self.cfg = cfg
        self.cross = cross
        h, d, e = cfg.n_heads, cfg.d_model, cfg.d_head
        # Stored [out, in] like torch.nn.Linear (fastest for generation's one-row matmuls);
        # W_Q/W_K/W_V/W_O below are the TransformerLens-layout views of these.
        self.W_Q_T = nn.Parameter(torch.empty(h * e, d, dtype=cfg.dtype))
        self.W_K_T = nn.Parameter(torch.empty(h * e, d, dtype=cfg.dtype))
        self.W_V_T = nn.Parameter(torch.empty(h * e, d, dtype=cfg.dtype))
        self.W_O_T = nn.Parameter(torch.empty(d, h * e, dtype=cfg.dtype))
        self.hook_q = HookPoint()  # [batch, pos, head_index, d_head]
        self.hook_k = HookPoint()  # [batch, key_pos, head_index, d_head]
        self.hook_v = HookPoint()
        self.hook_attn_scores = HookPoint()  # [batch, head_index, query_pos, key_pos]
        self.hook_pattern = HookPoint()
        self.hook_z = HookPoint()  # [batch, pos, head_index, d_head]
        self.hook_result = HookPoint()  # [batch, pos, head_index, d_model], only with use_attn_result

    @property
    def W_Q(self) -> Float[torch.Tensor, "head_index d_model d_head"]:
        return einops.rearrange(self.W_Q_T, "(head e) d -> head d e", head=self.cfg.n_heads)

    @property
    def W_K(self) -> Float[torch.Tensor, "head_index d_model d_head"]:
        return einops.rearrange(self.W_K_T, "(head e) d -> head d e", head=self.cfg.n_heads)

    @property
    def W_V(self) -> Float[torch.Tensor, "head_index d_model d_head"]:
        return einops.rearrange(self.W_V_T, "(head e) d -> head d e", head=self.cfg.n_heads)

    @property
    def W_O(self) -> Float[torch.Tensor, "head_index d_head d_model"]:
        return einops.rearrange(self.W_O_T, "d (head e) -> head e d", head=self.cfg.n_heads)

    def _linear(self, x: torch.Tensor, name: str) -> torch.Tensor:
        """x @ W.T for the weight called `name` (`musicgen_lens.fast.quantize_int8` swaps in int8 kernels here)."""
        return F.linear(x, getattr(self, name))

    def _project(self, x: Float[torch.Tensor, "batch pos d_model"], name: str, hook: HookPoint) -> Float[torch.Tensor, "batch head_index pos d_head"]:
        b, p, _ = x.shape
        heads = self._linear(x, name).view(b, p, self.cfg.n_heads, -1)  # "batch pos (head e) -> batch pos head e"
        return _heads_first(hook(heads))

    def forward(
        self,
        x: Float[torch.Tensor, "batch pos d_model"],
        kv_input: Float[torch.Tensor, "batch kv_pos d_model"] | None = None,
        key_mask: Bool[torch.Tensor, "batch kv_pos"] | None = None,
        cache: LayerKVCache | None = None,
    ) -> Float[torch.Tensor, "batch pos d_model"]:
        q = self._project(x, "W_Q_T", self.hook_q)
        if cache is not None and cache.frozen:
            k, v = cache.read()
        else:
            source = x if kv_input is None else kv_input
            k = self._project(source, "W_K_T", self.hook_k)
            v = self._project(source, "W_V_T", self.hook_v)
            if cache is not None:
                k, v = cache.append(k, v)
                cache.frozen = self.cross
        masks = _cross_masks(key_mask) if self.cross and key_mask is not None else None
        if not _FUSED[0] or self.hook_attn_scores.is_live() or self.hook_pattern.is_live():
            z = self._explicit(q, k, v, masks)
        else:
            z = self._fused(q, k, v, masks)
        return self._output(z)

    def _output(self, z: Float[torch.Tensor, "batch head_index pos d_head"]) -> Float[torch.Tensor, "batch pos d_model"]:
        z = self.hook_z(_heads_first(z))  # [batch, pos, head, e]
        if self.cfg.use_attn_result:
            result = self.hook_result(einops.einsum(z, self.W_O, "batch q head e, head e d -> batch q head d"))
            return result.sum(dim=-2)
        b, n_q = z.shape[:2]
        return self._linear(z.reshape(b, n_q, -1), "W_O_T")  # "batch q head e -> batch q (head e)"

    def _explicit(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, masks: "_CrossMasks | None") -> torch.Tensor:
        """Scores and pattern materialised for their hooks: z [batch, head, q, e]."""
        scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(self.cfg.d_head)  # [batch, head, q, k]
        scores = self.hook_attn_scores(self._mask(scores, masks))
        if masks is None:
            pattern = torch.softmax(scores, dim=-1)
        else:
            # The null text of classifier-free guidance masks every key. Such rows attend nowhere
            # (pattern 0, output 0, as in Hugging Face where the masked values are zero); softmax
            # runs on finite zeros there so that gradients stay finite.
            pattern = torch.softmax(torch.where(masks.any_key, scores, 0.0), dim=-1) * masks.any_key
        pattern = self.hook_pattern(pattern)
        return torch.matmul(pattern, v)

    def _fused(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, masks: "_CrossMasks | None") -> torch.Tensor:
        """SDPA (no scores or pattern in memory): z [batch, head, q, e]."""
        if self.cross:
            if masks is None or masks.sdpa is None:
                return F.scaled_dot_product_attention(q, k, v)
            # rows with no key at all get an all-True mask (SDPA would give NaN) and are zeroed after
            z = F.scaled_dot_product_attention(q, k, v, attn_mask=masks.sdpa)
            return z if masks.all_rows_have_keys else z * masks.any_key
        n_q, n_k = q.shape[-2], k.shape[-2]
        if n_q == 1:
            return F.scaled_dot_product_attention(q, k, v)  # one new position sees the whole cache
        if n_q == n_k:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=~_future_mask(n_q, n_k, q.device))

    def _mask(self, scores: torch.Tensor, masks: "_CrossMasks | None") -> torch.Tensor:
        if self.cross:
            if masks is None:
                return scores
            return scores.masked_fill(masks.masked, float("-inf"))
        n_q, n_k = scores.shape[-2:]
        if n_q == 1:
            return scores  # one new position sees the whole cache
        # queries are the last n_q of n_k positions (the earlier ones may come from a cache)
        return scores.masked_fill(_future_mask(n_q, n_k, scores.device), float("-inf"))


_FUTURE: dict[tuple[int, int, torch.device], torch.Tensor] = {}


def _future_mask(n_q: int, n_k: int, device: torch.device) -> Bool[torch.Tensor, "n_q n_k"]:
    """True above the causal diagonal (queries are the last n_q of n_k positions); built once per
    shape and shared by every layer and call (it was allocated per layer per call)."""
    key = (n_q, n_k, device)
    mask = _FUTURE.get(key)
    if mask is None:
        if len(_FUTURE) >= 16:
            _FUTURE.clear()
        mask = _FUTURE[key] = torch.ones(n_q, n_k, dtype=torch.bool, device=device).triu(diagonal=n_k - n_q + 1)
    return mask


class _CrossMasks:
    """What cross-attention derives from a text key mask, computed once per mask rather than per
    layer per step: the masked keys, the rows with any key, and SDPA's mask."""

    __slots__ = ("source", "version", "masked", "any_key", "sdpa", "all_rows_have_keys")

    def __init__(self, key_mask: Bool[torch.Tensor, "batch kv_pos"]):
        self.source, self.version = key_mask, key_mask._version
        self.masked = ~key_mask[:, None, None, :]  # [batch, 1, 1, kv_pos]
        any_key = key_mask.any(dim=-1)
        self.any_key = any_key[:, None, None, None]
        # one host sync per conditioning (not per step): can SDPA skip the mask / the zeroing?
        self.all_rows_have_keys = bool(any_key.all())
        if self.all_rows_have_keys and bool(key_mask.all()):
            self.sdpa = None
        else:
            self.sdpa = (key_mask | ~any_key[:, None])[:, None, None, :]


_CROSS: list[_CrossMasks] = []


def _cross_masks(key_mask: torch.Tensor) -> _CrossMasks:
    # one slot: every layer of a forward, and every step of a generation, pass the same mask tensor
    if _CROSS and _CROSS[0].source is key_mask and _CROSS[0].version == key_mask._version:
        return _CROSS[0]
    masks = _CrossMasks(key_mask)
    _CROSS[:] = [masks]
    return masks


class MLP(nn.Module):
    """Two bias-free linear maps around the activation, as in MusicGen.

    `W_in` [d_model, d_mlp] and `W_out` [d_mlp, d_model] are TransformerLens-layout views of
    parameters stored [out, in] (`W_in_T`, `W_out_T`, as torch.nn.Linear and Hugging Face store
    them): at generation's batch of one or two rows, CPU matmul kernels read that layout about
    twice as fast, and the MLP holds two thirds of the decoder's weights.
    """

    def __init__(self, cfg: MusicGenConfig):
        super().__init__()
        self.cfg = cfg
        self.W_in_T = nn.Parameter(torch.empty(cfg.d_mlp, cfg.d_model, dtype=cfg.dtype))
        self.W_out_T = nn.Parameter(torch.empty(cfg.d_model, cfg.d_mlp, dtype=cfg.dtype))
        self.act = ACT2FN[cfg.act_fn]
        self.hook_pre = HookPoint()  # [batch, pos, d_mlp]
        self.hook_post = HookPoint()

    @property
    def W_in(self) -> Float[torch.Tensor, "d_model d_mlp"]:
        return self.W_in_T.T

    @property
    def W_out(self) -> Float[torch.Tensor, "d_mlp d_model"]:
        return self.W_out_T.T

    def forward(self, x: Float[torch.Tensor, "batch pos d_model"]) -> Float[torch.Tensor, "batch pos d_model"]:
        pre = self.hook_pre(self._linear(x, "W_in_T"))
        post = self.hook_post(self.act(pre))
        return self._linear(post, "W_out_T")

    def _linear(self, x: torch.Tensor, name: str) -> torch.Tensor:
        """x @ W.T for the weight called `name` (`musicgen_lens.fast.quantize_int8` swaps in int8 kernels here)."""
        return F.linear(x, getattr(self, name))


class TransformerBlock(nn.Module):
    """Pre-LN block: causal self-attention, then cross-attention to the text, then the MLP.

    A melody model (`cfg.is_melody`) has no cross-attention: its conditioning is prepended to
    the sequence and read by self-attention, so the block has neither `ln_cross`/`cross_attn`
    nor the `hook_cross_attn_out`/`hook_resid_mid_cross` hook points (the MLP reads resid_mid).
    """

    def __init__(self, cfg: MusicGenConfig, layer: int):
        super().__init__()
        self.cfg = cfg
        self.layer = layer
        self.has_cross_attn = not cfg.is_melody
        self.ln1 = LayerNorm(cfg)
        self.attn = Attention(cfg)
        if self.has_cross_attn:
            self.ln_cross = LayerNorm(cfg)
            self.cross_attn = Attention(cfg, cross=True)
        self.ln2 = LayerNorm(cfg)
        self.mlp = MLP(cfg)
        self.hook_resid_pre = HookPoint()
        self.hook_attn_out = HookPoint()
        self.hook_resid_mid = HookPoint()
        if self.has_cross_attn:
            self.hook_cross_attn_out = HookPoint()
            self.hook_resid_mid_cross = HookPoint()
        self.hook_mlp_out = HookPoint()
        self.hook_resid_post = HookPoint()

    def forward(
        self,
        resid_pre: Float[torch.Tensor, "batch pos d_model"],
        cond: Float[torch.Tensor, "batch text_pos d_model"] | None,
        cond_mask: Bool[torch.Tensor, "batch text_pos"] | None,
        self_cache: LayerKVCache | None = None,
        cross_cache: LayerKVCache | None = None,
    ) -> Float[torch.Tensor, "batch pos d_model"]:
        resid_pre = self.hook_resid_pre(resid_pre)
        attn_out = self.hook_attn_out(self.attn(self.ln1(resid_pre), cache=self_cache))
        resid = self.hook_resid_mid(resid_pre + attn_out)
        if self.has_cross_attn:
            cross_out = self.hook_cross_attn_out(
                self.cross_attn(self.ln_cross(resid), kv_input=cond, key_mask=cond_mask, cache=cross_cache)
            )
            resid = self.hook_resid_mid_cross(resid + cross_out)
        mlp_out = self.hook_mlp_out(self.mlp(self.ln2(resid)))
        return self.hook_resid_post(resid + mlp_out)


class Unembed(nn.Module):
    """One linear head per codebook: logits [batch, n_codebooks, pos, d_vocab]."""

    def __init__(self, cfg: MusicGenConfig):
        super().__init__()
        self.cfg = cfg
        self.W_U = nn.Parameter(torch.empty(cfg.n_codebooks, cfg.d_model, cfg.d_vocab, dtype=cfg.dtype))

    def forward(self, x: Float[torch.Tensor, "batch pos d_model"]) -> Float[torch.Tensor, "batch n_codebooks pos d_vocab"]:
        b, p, d = x.shape
        out = torch.matmul(x.reshape(1, b * p, d), self.W_U)  # [k, b*p, v]
        # per_head_matmul, then "batch pos k v -> batch k pos v", in one view
        return out.view(self.W_U.shape[0], b, p, -1).transpose(0, 1)


class CondProjection(nn.Module):
    """Text-encoder states -> d_model (Hugging Face's `enc_to_dec_proj`; identity when widths match)."""

    def __init__(self, cfg: MusicGenConfig):
        super().__init__()
        self.cfg = cfg
        if cfg.has_cond_proj:
            self.W_cond = nn.Parameter(torch.empty(cfg.d_cond, cfg.d_model, dtype=cfg.dtype))
            self.b_cond = nn.Parameter(torch.zeros(cfg.d_model, dtype=cfg.dtype))

    def forward(self, text_states: Float[torch.Tensor, "batch text_pos d_cond"]) -> Float[torch.Tensor, "batch text_pos d_model"]:
        if not self.cfg.has_cond_proj:
            return text_states
        return text_states @ self.W_cond + self.b_cond


class ChromaProjection(nn.Module):
    """Chroma [.., n_chroma] -> d_model (Hugging Face's `audio_enc_to_dec_proj`; identity when widths match)."""

    def __init__(self, cfg: MusicGenConfig):
        super().__init__()
        self.cfg = cfg
        if cfg.has_chroma_proj:
            self.W_chroma = nn.Parameter(torch.empty(cfg.n_chroma, cfg.d_model, dtype=cfg.dtype))
            self.b_chroma = nn.Parameter(torch.zeros(cfg.d_model, dtype=cfg.dtype))

    def forward(self, chroma: Float[torch.Tensor, "batch chroma_pos n_chroma"]) -> Float[torch.Tensor, "batch chroma_pos d_model"]:
        if not self.cfg.has_chroma_proj:
            return chroma
        return chroma @ self.W_chroma + self.b_chroma
