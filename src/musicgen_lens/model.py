"""HookedMusicGen: the MusicGen decoder as a TransformerLens `HookedRootModule`.

One class for both architectures, chosen by `cfg.is_melody`:

- text-to-music MusicGen: the decoder reads the text through cross-attention;
- MusicGen-melody: decoder-only. The projected chroma (`hook_chroma`, `cfg.chroma_length`
  positions) and the projected text (`hook_cond`) are *prepended* to the codes, in that order,
  and read by causal self-attention. Decoder hooks (`blocks.*`, `hook_pos_embed`,
  `ln_final.*`) then cover [prefix + codes] positions; the first `model.n_prefix(cond)` of them
  are the conditioning (`hook.ctx.positions` are negative there), and `hook_logits` covers
  the codes only, as Hugging Face's logits do once the prefix is dropped.
"""

from __future__ import annotations

import os
import warnings
from contextlib import contextmanager
from typing import Any, Iterator, Literal, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from jaxtyping import Float, Int
from transformer_lens import HookedRootModule

from musicgen_lens.chroma import ChromaExtractor
from musicgen_lens.components import (
    ChromaProjection,
    CondProjection,
    Embed,
    LayerNorm,
    PosEmbed,
    TransformerBlock,
    Unembed,
)
from musicgen_lens.conditioning import Conditioning, TextEncoder
from musicgen_lens.config import MusicGenConfig
from musicgen_lens.delay_pattern import DelayPattern
from musicgen_lens.hook_context import HookContext
from musicgen_lens.hook_point import HookPoint
from musicgen_lens.kv_cache import KVCache
from musicgen_lens.model_conditioning import ConditioningMixin
from musicgen_lens.model_hooks import HooksMixin
from musicgen_lens.model_weights import WeightsMixin

ReturnType = Literal["logits", "loss", "both"] | None


class HookedMusicGen(ConditioningMixin, HooksMixin, WeightsMixin, HookedRootModule):
    """MusicGen with a HookPoint at every activation.

    `forward(codes, cond)` takes codes in the *delayed* layout the decoder reads,
    [batch, n_codebooks, pos] (use `musicgen_lens.generation.apply_delay_pattern` to go from
    audio frames to that layout), and returns logits [batch, n_codebooks, pos, d_vocab]: the
    prediction for the next position of each codebook.
    """

    def __init__(
        self,
        cfg: MusicGenConfig,
        text_encoder: TextEncoder | None = None,
        codec: nn.Module | None = None,
        tokenizer: Any = None,
        init: bool = True,
        chroma_extractor: ChromaExtractor | None = None,
    ):
        super().__init__()
        self.cfg = cfg
        self.embed = Embed(cfg)
        self.hook_codebook_embed = HookPoint()  # [batch, pos, n_codebooks, d_model]
        self.hook_embed = HookPoint()  # [batch, pos, d_model]: sum over codebooks
        self.pos_embed = PosEmbed(cfg)
        self.hook_pos_embed = HookPoint()  # [batch, pos, d_model] (melody: prefix + codes positions)
        self.cond_proj = CondProjection(cfg)
        self.hook_cond = HookPoint()  # [batch, text_pos, d_model]: what cross-attention reads (melody: prepended text)
        self.chroma_extractor: ChromaExtractor | None = None
        if cfg.is_melody:
            self.chroma_proj = ChromaProjection(cfg)
            self.hook_chroma = HookPoint()  # [batch, chroma_length, d_model]: the prepended melody
            self.chroma_extractor = chroma_extractor or ChromaExtractor(sample_rate=cfg.sample_rate, n_chroma=cfg.n_chroma)
            if self.chroma_extractor.n_chroma != cfg.n_chroma:
                raise ValueError(
                    f"the chroma extractor makes {self.chroma_extractor.n_chroma} bins but the model reads n_chroma={cfg.n_chroma}"
                )
        self.blocks = nn.ModuleList([TransformerBlock(cfg, layer) for layer in range(cfg.n_layers)])
        self.ln_final = LayerNorm(cfg)
        self.unembed = Unembed(cfg)
        self.hook_logits = HookPoint()  # [batch, n_codebooks, pos, d_vocab]
        self.text_encoder = text_encoder
        self.codec = codec
        self.tokenizer = tokenizer
        self._default_cond: Conditioning | None = None
        self.active_codebook = 0  # which codebook TransformerLens's logit_attrs reads
        # The delay layout and time model (position <-> frame <-> second), and the one context object
        # shared by every HookPoint (`hook.ctx`), which forward updates in place per call.
        self.pattern = DelayPattern(cfg.n_codebooks, cfg.audio_channels, cfg.frame_rate)
        self.ctx = HookContext(self.pattern)
        if init:
            self.init_weights()
        self.setup()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pretrained(
        cls, name_or_path: str | os.PathLike | None = None, device: str | torch.device | None = None, dtype: torch.dtype | None = None, **cfg_overrides: Any
    ) -> "HookedMusicGen":
        """A hub name ("facebook/musicgen-small"), a local directory written by `save_pretrained`,
        or "toy" / no name: the embedded toy model trained on the synthetic world."""
        from musicgen_lens.loading import from_pretrained

        return from_pretrained(name_or_path, device=device, dtype=dtype, **cfg_overrides)

    @classmethod
    def from_hf(cls, hf_model: Any, tokenizer: Any = None, device: str | torch.device | None = None, dtype: torch.dtype | None = None, **cfg_overrides: Any) -> "HookedMusicGen":
        """From an in-memory transformers `MusicgenForConditionalGeneration`."""
        from musicgen_lens.loading import from_hf

        return from_hf(hf_model, tokenizer=tokenizer, device=device, dtype=dtype, **cfg_overrides)

    def init_weights(self, std: float = 0.02, seed: int | None = None) -> None:
        """Random init (MusicGen's: normal(0, 0.02) for matrices, LayerNorm at identity)."""
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        for name, p in self.named_parameters():
            if name.startswith(("text_encoder.", "codec.")):
                continue
            with torch.no_grad():
                if name.endswith(".w"):
                    p.fill_(1.0)
                elif name.endswith((".b", "b_cond", "b_chroma")):
                    p.zero_()
                else:
                    p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float32).to(p.dtype) * std)

    def setup(self) -> None:
        super().setup()
        for hook_point in self.hook_dict.values():
            # plain attribute, not a submodule: bypass nn.Module.__setattr__ (cheap, no registration)
            hook_point.__dict__["ctx"] = self.ctx

    # ------------------------------------------------------------------ properties
    @property
    def device(self) -> torch.device:
        return self.embed.W_E.device

    @property
    def dtype(self) -> torch.dtype:
        """The decoder's floating dtype (follows `.to(dtype)` / `.half()`, unlike cfg.dtype, the loading dtype)."""
        return self.embed.W_E.dtype

    @property
    def sample_rate(self) -> int:
        return self.cfg.sample_rate

    @property
    def frame_rate(self) -> float:
        return self.cfg.frame_rate

    # ------------------------------------------------------------------ forward
    def check_codes(self, codes: torch.Tensor, *, check_values: bool = True) -> torch.Tensor:
        """Validate codes [batch, n_codebooks, pos] in the delayed layout; clear errors otherwise.

        `check_values=False` skips the value range (two host syncs), as cached steps do."""
        cfg = self.cfg
        if not isinstance(codes, torch.Tensor):
            raise TypeError(f"codes must be a torch.LongTensor [batch, n_codebooks, pos], got {type(codes).__name__}")
        if codes.dtype.is_floating_point or codes.dtype == torch.bool or codes.is_complex():
            raise TypeError(f"codes must be an integer tensor (torch.long), got dtype {codes.dtype}")
        if codes.ndim != 3 or codes.shape[1] != cfg.n_codebooks:
            hint = " (for one item, use codes[None])" if codes.ndim == 2 and codes.shape[0] == cfg.n_codebooks else ""
            raise ValueError(
                f"codes must have shape [batch, n_codebooks={cfg.n_codebooks}, pos], got {tuple(codes.shape)}{hint}"
            )
        if codes.shape[-1] == 0:
            raise ValueError("codes has 0 positions")
        if codes.shape[-1] > cfg.n_ctx:
            raise ValueError(f"codes has {codes.shape[-1]} positions but the model supports at most n_ctx={cfg.n_ctx}")
        if codes.device != self.device:
            raise ValueError(f"codes are on {codes.device} but the model is on {self.device}; use codes.to(model.device)")
        if not check_values:
            return codes.long()
        lo, hi = int(codes.min()), int(codes.max())
        if lo < 0 or hi > cfg.d_vocab:
            raise ValueError(
                f"codes must lie in [0, {cfg.d_vocab}] (0..{cfg.d_vocab - 1} are audio codes, {cfg.d_vocab} is the "
                f"pad/BOS code), got values in [{lo}, {hi}]"
            )
        return codes.long()

    def embed_codes(
        self,
        codes: Int[torch.Tensor, "batch n_codebooks pos"],
        start: int = 0,
        prefix: Float[torch.Tensor, "batch prefix_pos d_model"] | None = None,
    ) -> Float[torch.Tensor, "batch seq d_model"]:  # seq = prefix_pos + pos
        """Embedding + positions: the residual stream entering block 0.

        `start` is the index in the decoder's whole sequence (a melody prefix included) of the
        first position passed; `prefix` (melody models) is prepended to the code embeddings.
        """
        per_codebook = self.hook_codebook_embed(self.embed(codes))
        tokens = self.hook_embed(per_codebook.sum(dim=-2))
        if prefix is not None:
            tokens = torch.cat([prefix, tokens], dim=1)
        if start + tokens.shape[1] > self.cfg.n_ctx:
            raise ValueError(
                f"{start + tokens.shape[1]} positions (conditioning prefix included) exceed n_ctx={self.cfg.n_ctx}"
            )
        pos = self.hook_pos_embed(self.pos_embed(codes.shape[0], tokens.shape[1], start))
        return tokens + pos

    def run_blocks(
        self,
        residual: Float[torch.Tensor, "batch pos d_model"],
        cond_states: Float[torch.Tensor, "batch text_pos d_model"] | None,
        cond_mask: torch.Tensor | None,
        kv_cache: KVCache | None = None,
        stop_at_layer: int | None = None,
    ) -> Float[torch.Tensor, "batch pos d_model"]:
        n = self.cfg.n_layers if stop_at_layer is None else stop_at_layer
        for layer in range(n):  # not self.blocks[:n]: slicing a ModuleList builds a new one per call
            self_cache, cross_cache = kv_cache[layer] if kv_cache is not None else (None, None)
            residual = self.blocks[layer](residual, cond_states, cond_mask, self_cache, cross_cache)
        return residual

    def logits_from_resid(self, residual: Float[torch.Tensor, "batch pos d_model"], n_prefix: int = 0) -> Float[torch.Tensor, "batch n_codebooks pos d_vocab"]:
        """Final LayerNorm on every position (so TransformerLens's apply_ln_to_stack lines up with the
        blocks' hooks), unembedding on the codes only: the first `n_prefix` (conditioning) are dropped."""
        return self.hook_logits(self.unembed(self.ln_final(residual)[:, n_prefix:]))

    def forward(
        self,
        codes: Int[torch.Tensor, "batch n_codebooks pos"],
        cond: "Conditioning | Sequence[str] | str | None" = None,
        return_type: ReturnType = "logits",
        *,
        stop_at_layer: int | None = None,
        kv_cache: KVCache | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
    ) -> Any:
        """Logits [batch, n_codebooks, pos, d_vocab] for delayed-layout codes.

        cond follows `resolve_cond`: a Conditioning, a text or list of texts (then
        `text_encoder.hook_out` fires in this call, so run_with_cache sees it), or None for the
        conditioning set by `model.conditioning(...)`, else the null text (the unconditional
        branch of classifier-free guidance). return_type "loss" is the mean over codebooks of
        next-code cross-entropy, ignoring pad/BOS targets (as Hugging Face).
        `stop_at_layer=l` returns the residual stream entering block l (negative l counts from the
        end, as TransformerLens: -1 stops before the last block).

        `kv_cache` (a `KVCache`, e.g. `KVCache.for_model(...)`) makes this one *cached step*, as
        TransformerLens's `forward(..., past_kv_cache=...)`: `codes` are only the new positions,
        which start where the cache ends; keys/values are appended, cross-attention keys/values
        (and a melody prefix, with `hook_cond` / `hook_chroma`) are computed at the first call
        only, and `hook.ctx` says step `kv_cache.step` of `kv_cache.n_steps`. `generate` is a loop
        of these steps. Code values are not range-checked here (that would cost two host syncs per
        step): an out-of-range code fails inside the embedding.

        `decoder_attention_mask` (Hugging Face's argument) is accepted only when it masks nothing:
        padded decoder positions (e.g. left-padded audio prompts of different lengths) are not
        supported, and silently ignoring them would give logits off by ~1e-3.
        """
        if return_type not in ("logits", "loss", "both", None):
            raise ValueError(f"return_type must be 'logits', 'loss', 'both' or None, got {return_type!r}")
        if decoder_attention_mask is not None and not bool(torch.as_tensor(decoder_attention_mask).bool().all()):
            raise NotImplementedError(
                "a decoder_attention_mask with padded (0) positions is not supported: run prompts of different lengths "
                "in separate calls (or trim them to one length); an all-ones mask is accepted"
            )
        if kv_cache is not None and not isinstance(kv_cache, KVCache):
            raise TypeError(f"kv_cache must be a musicgen_lens.KVCache (KVCache.for_model(...)), got {type(kv_cache).__name__}")
        if kv_cache is not None and stop_at_layer is not None:
            raise ValueError("stop_at_layer cannot be combined with kv_cache: the later layers' caches would fall behind")
        if stop_at_layer is not None:
            n_layers = self.cfg.n_layers
            if isinstance(stop_at_layer, bool) or not isinstance(stop_at_layer, int) or not -n_layers <= stop_at_layer <= n_layers:
                raise ValueError(
                    f"stop_at_layer must be an int in [-{n_layers}, {n_layers}] (as TransformerLens: l returns the residual "
                    f"entering block l, negative counts from the end), got {stop_at_layer!r}"
                )
            if stop_at_layer < 0:
                stop_at_layer += n_layers  # blocks[:-1] in TransformerLens
        codes = self.check_codes(codes, check_values=kv_cache is None)
        cond = self.resolve_cond(cond, codes.shape[0])
        n_prefix = self.n_prefix(cond)
        melody = self.cfg.is_melody
        cached = kv_cache.length if kv_cache is not None else 0  # absolute positions already cached
        first = cached == 0  # a melody prefix (and cross-attention K/V) enters at the first call
        if kv_cache is None:
            uncond = cond.is_null
        else:
            if kv_cache.batch != codes.shape[0]:
                raise ValueError(f"kv_cache was made for batch {kv_cache.batch}, but codes have batch {codes.shape[0]}")
            if first:
                kv_cache.uncond = cond.is_null
            uncond = kv_cache.uncond
        start = -n_prefix if first else cached - n_prefix  # position of the first one passed, in codes' numbering
        length = codes.shape[-1] + (n_prefix if first else 0)
        self.ctx.enter(
            start=start, length=length, uncond=uncond, prefix=n_prefix,
            step=kv_cache.step if kv_cache is not None else None, n_steps=kv_cache.n_steps if kv_cache is not None else 0,
        )
        try:
            prefix = self.prefix(cond) if melody and first else None
            residual = self.embed_codes(codes, cached, prefix=prefix)
            cond_states = None if melody or not first else self.project_cond(cond)
            residual = self.run_blocks(residual, cond_states, None if melody else cond.mask, kv_cache, stop_at_layer)
            if kv_cache is not None:
                kv_cache.step += 1
            if stop_at_layer is not None:
                return residual
            logits = self.logits_from_resid(residual, n_prefix if prefix is not None else 0)
        finally:
            if kv_cache is not None:  # between steps no stale step lingers for hooks outside forward
                self.ctx.reset()
        if return_type == "logits":
            return logits
        if return_type is None:
            return None
        loss = self.loss_fn(logits, codes)
        return loss if return_type == "loss" else (logits, loss)

    def loss_fn(self, logits: torch.Tensor, codes: torch.Tensor, per_codebook: bool = False) -> torch.Tensor:
        """Next-code cross-entropy per codebook, ignoring pad/BOS targets; mean over codebooks."""
        targets = codes[..., 1:].masked_fill(codes[..., 1:] == self.cfg.pad_token_id, -100)
        per_k = torch.stack(
            [F.cross_entropy(logits[:, k, :-1].flatten(0, 1), targets[:, k].flatten(), ignore_index=-100) for k in range(self.cfg.n_codebooks)]
        )
        return per_k if per_codebook else per_k.mean()

    # ------------------------------------------------------------------ TransformerLens analysis API
    def accumulated_bias(self, layer: int, mlp_input: bool = False, include_mlp_biases: bool = True) -> Float[torch.Tensor, "d_model"]:
        """MusicGen's attention and MLP have no output biases, so nothing accumulates."""
        return torch.zeros(self.cfg.d_model, device=self.device, dtype=self.dtype)

    def tokens_to_residual_directions(self, tokens: Int[torch.Tensor, "..."] | int, codebook: int | None = None) -> Float[torch.Tensor, "... d_model"]:
        """Unembedding directions of codes of one codebook (default `model.active_codebook`).

        The final LayerNorm's weight is folded in, since TransformerLens's `apply_ln_to_stack`
        only centres and divides by the scale.
        """
        k = self.active_codebook if codebook is None else codebook
        if not 0 <= k < self.cfg.n_codebooks:
            raise ValueError(f"codebook must be in [0, {self.cfg.n_codebooks}), got {k}")
        tokens = torch.as_tensor(tokens, device=self.device)
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.cfg.d_vocab):
            raise ValueError(
                f"codes to attribute must be audio codes in [0, {self.cfg.d_vocab}); got values in "
                f"[{int(tokens.min())}, {int(tokens.max())}] (mask the pad/BOS code {self.cfg.pad_token_id} of the delayed layout first)"
            )
        directions = self.W_U[k].T[tokens]  # [..., d_model]
        return directions * self.ln_final.w

    @contextmanager
    def using_codebook(self, codebook: int) -> Iterator["HookedMusicGen"]:
        """Choose the codebook that TransformerLens's `cache.logit_attrs` attributes to."""
        previous, self.active_codebook = self.active_codebook, codebook
        try:
            yield self
        finally:
            self.active_codebook = previous

    # ------------------------------------------------------------------ audio
    def _need_codec(self) -> nn.Module:
        if self.codec is None:
            raise RuntimeError("This model has no codec (EnCodec); load it with from_pretrained/from_hf")
        return self.codec

    def encode(self, audio: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """Audio [batch, channels, samples] at model.sample_rate -> codes [batch, n_codebooks, frames]."""
        return self._need_codec().encode(audio, **kwargs)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Undelayed codes [batch, n_codebooks, frames] -> audio [batch, channels, samples]."""
        return self._need_codec().decode(codes)

    def encode_prompt(
        self, audio: Any, batch: int = 1, offset: float = 0.0, duration: float | None = None, sr: int | None = None
    ) -> Int[torch.Tensor, "batch n_codebooks frames"]:
        """A waveform prompt (a path, or audio [channels, samples] / [batch, channels, samples]) ->
        codes [batch, n_codebooks, frames] on the model's device.

        In-memory audio is at `sr` (default: the model's sample rate) and is resampled if needed;
        `offset` / `duration` (seconds) cut it first. One clip is broadcast to `batch`.
        """
        import numpy as np

        from musicgen_lens.audio import load_audio

        clips = list(audio) if isinstance(audio, torch.Tensor) and audio.ndim == 3 else [audio]
        items = []
        for clip in clips:
            # arrays carry no sample rate of their own
            in_memory = {"sr": sr or self.sample_rate} if isinstance(clip, (torch.Tensor, np.ndarray)) else {}
            loaded, _ = load_audio(
                clip, target_sr=self.sample_rate, channels=self.cfg.audio_channels, offset=offset, duration=duration, **in_memory
            )
            items.append(loaded)
        codes = self.encode(torch.stack(items).to(self.device))
        if codes.shape[0] == 1 and batch > 1:
            codes = codes.expand(batch, -1, -1)
        if codes.shape[0] != batch:
            raise ValueError(f"the audio prompt has batch {codes.shape[0]} but there are {batch} prompts")
        return codes

    # ------------------------------------------------------------------ steering and generation
    def steer(self, interventions: Any, **kwargs: Any) -> Any:
        """Deprecated: use `musicgen_lens.steering.steer(model, interventions)` (forward passes) or
        `model.generate(..., steering=interventions)`. Same context manager, one release more."""

        from musicgen_lens.steering import steer

        warnings.warn(
            "model.steer(...) is deprecated; use `with musicgen_lens.steering.steer(model, interventions):` for forward "
            "passes, or model.generate(..., steering=interventions) for generation",
            DeprecationWarning,
            stacklevel=2,
        )
        return steer(self, interventions, **kwargs)

    def generate(self, texts: Sequence[str] | None = None, **kwargs: Any) -> torch.Tensor:
        """See `musicgen_lens.generation.generate`."""
        from musicgen_lens.generation import generate

        return generate(self, texts, **kwargs)

