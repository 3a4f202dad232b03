"""MusicGenConfig: one flat dataclass with TransformerLens field names.

TransformerLens utilities (ActivationCache, patching) read a handful of `cfg` fields by
their TL names (n_layers, n_heads, d_model, d_head, d_mlp, n_ctx, d_vocab, device,
normalization_type, attn_only, n_key_value_heads, use_split_qkv_input, ...), so the config
keeps those names and adds the MusicGen-specific ones (n_codebooks, audio_channels, ...).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

import torch


MELODY_FIELDS = ("is_melody", "n_chroma", "chroma_length", "has_chroma_proj")


@dataclass
class MusicGenConfig:
    # --- TransformerLens names -------------------------------------------------------
    n_layers: int
    d_model: int
    n_heads: int
    d_mlp: int
    n_ctx: int
    d_vocab: int  # codebook size; the pad/BOS code is d_vocab itself (one extra embedding row)
    n_codebooks: int
    d_head: int = -1  # derived from d_model // n_heads when left at -1
    act_fn: str = "gelu"
    eps: float = 1e-5  # torch.nn.LayerNorm's default, which Hugging Face's MusicGen uses
    normalization_type: str = "LN"
    attn_only: bool = False
    use_attn_result: bool = False
    use_split_qkv_input: bool = False
    n_key_value_heads: int | None = None
    positional_embedding_type: str = "sinusoidal"
    final_rms: bool = False
    gated_mlp: bool = False
    default_prepend_bos: bool = False
    device: str | None = None
    dtype: torch.dtype = torch.float32
    model_name: str = "musicgen"
    # --- MusicGen ---------------------------------------------------------------------
    d_cond: int = -1  # text-encoder width (input of the conditioning projection)
    has_cond_proj: bool = True  # Hugging Face adds enc_to_dec_proj only when widths differ
    audio_channels: int = 1
    sample_rate: int = 32000
    frame_rate: float = 50.0
    pad_token_id: int = -1  # defaults to d_vocab
    bos_token_id: int = -1  # defaults to d_vocab
    # --- MusicGen-melody ----------------------------------------------------------------
    # A melody checkpoint is decoder-only: no cross-attention; the projected chroma (always
    # `chroma_length` positions) and the projected text are *prepended* to the codes.
    is_melody: bool = False
    n_chroma: int = 12  # chroma bins (pitch classes): input width of the chroma projection
    chroma_length: int = 235  # chroma positions prepended (the melody is tiled / cut to this)
    has_chroma_proj: bool = True  # Hugging Face adds audio_enc_to_dec_proj only when n_chroma != d_model

    def __post_init__(self) -> None:
        if self.d_head == -1:
            if self.d_model % self.n_heads:
                raise ValueError(
                    f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})"
                )
            self.d_head = self.d_model // self.n_heads
        if self.d_cond == -1:
            self.d_cond = self.d_model
        if self.pad_token_id == -1:
            self.pad_token_id = self.d_vocab
        if self.bos_token_id == -1:
            self.bos_token_id = self.d_vocab
        if self.audio_channels not in (1, 2):
            raise ValueError(f"audio_channels must be 1 or 2, got {self.audio_channels}")
        if self.audio_channels == 2 and self.n_codebooks % 2:
            raise ValueError(
                f"a stereo model interleaves left/right codebooks, so n_codebooks must be even "
                f"(got {self.n_codebooks})"
            )
        if self.is_melody and self.chroma_length < 1:
            raise ValueError(f"chroma_length must be >= 1 for a melody model, got {self.chroma_length}")
        if isinstance(self.dtype, str):
            self.dtype = getattr(torch, self.dtype.replace("torch.", ""))

    @property
    def n_codebooks_per_channel(self) -> int:
        return self.n_codebooks // self.audio_channels

    @classmethod
    def from_hf(cls, hf_config: Any, **overrides: Any) -> "MusicGenConfig":
        """Build from a Hugging Face `MusicgenConfig` / `MusicgenMelodyConfig` (or a decoder config)."""
        dec = getattr(hf_config, "decoder", hf_config)
        text = getattr(hf_config, "text_encoder", None)
        audio = getattr(hf_config, "audio_encoder", None)
        d_text = text.d_model if text is not None else dec.hidden_size
        is_melody = "melody" in (getattr(hf_config, "model_type", "") or "")
        if is_melody:
            # mirrors MusicgenMelodyForConditionalGeneration.__init__ (no cross_attention_hidden_size there)
            has_cond_proj = d_text != dec.hidden_size
        else:
            # mirrors MusicgenForConditionalGeneration.__init__
            has_cond_proj = d_text != dec.hidden_size and getattr(dec, "cross_attention_hidden_size", None) is None
        kwargs: dict[str, Any] = dict(
            n_layers=dec.num_hidden_layers,
            d_model=dec.hidden_size,
            n_heads=dec.num_attention_heads,
            d_mlp=dec.ffn_dim,
            n_ctx=dec.max_position_embeddings,
            d_vocab=dec.vocab_size,
            n_codebooks=dec.num_codebooks,
            act_fn=dec.activation_function,
            d_cond=d_text,
            has_cond_proj=has_cond_proj,
            audio_channels=dec.audio_channels,
            pad_token_id=dec.pad_token_id,
            bos_token_id=dec.bos_token_id,
            model_name=getattr(hf_config, "_name_or_path", "") or "musicgen",
        )
        if is_melody:
            n_chroma = getattr(hf_config, "num_chroma", 12)
            kwargs.update(
                is_melody=True,
                n_chroma=n_chroma,
                chroma_length=getattr(hf_config, "chroma_length", 235),
                has_chroma_proj=n_chroma != dec.hidden_size,
            )
        if audio is not None:
            kwargs["sample_rate"] = audio.sampling_rate
            hop = 1
            for r in audio.upsampling_ratios:
                hop *= r
            kwargs["frame_rate"] = audio.sampling_rate / hop
        kwargs.update(overrides)
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["dtype"] = str(self.dtype).replace("torch.", "")
        return d

    def hash(self) -> str:
        """Short hash of the architecture: what makes activations of two models comparable.

        Device, dtype and name are left out so that a vector made on GPU in bf16 is accepted
        on CPU in fp32 for the same architecture.
        """
        d = self.to_dict()
        for k in ("device", "dtype", "model_name", "use_attn_result", "use_split_qkv_input"):
            d.pop(k, None)
        if not self.is_melody:
            # the melody fields mean nothing without a melody architecture; leaving them out keeps
            # the hashes of text-only models (and the vectors saved with them) what they were
            for k in MELODY_FIELDS:
                d.pop(k)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]
