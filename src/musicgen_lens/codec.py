"""Codec: a hooked wrapper around the EnCodec audio tokenizer that MusicGen checkpoints carry.

MusicGen never sees waveforms: audio is turned into discrete codes by EnCodec
(`MusicgenForConditionalGeneration.audio_encoder`, a Hugging Face `EncodecModel`) and generated
codes are turned back into audio by the same model. `Codec` re-implements the two paths from the
pieces of `EncodecModel` (`encoder`, `quantizer.layers`, `decoder`) so that the continuous latent
can be hooked, and mirrors what Hugging Face's MusicGen does with them
(transformers 5.24, `models/musicgen/modeling_musicgen.py`):

* encode, mono  (`_prepare_audio_encoder_kwargs_for_generation`, lines 1761-1767): one
  `audio_encoder.encode(input_values)` call with `bandwidth=None`, i.e. `target_bandwidths[0]`,
  which for MusicGen's 32 kHz EnCodec (2.2 kbps, 2048 codes, 50 Hz) selects 4 codebooks.
* encode, stereo (same function, lines 1769-1795): the EnCodec model is mono, so the left channel
  `input_values[:, :1]` (line 1775) and the right channel `input_values[:, 1:]` (line 1780) are
  encoded separately and the codebooks are interleaved `[L0, R0, L1, R1, ...]`
  (lines 1789-1790: `audio_codes[:, :, ::2] = left`, `audio_codes[:, :, 1::2] = right`).
* mono audio into a stereo model (`forward`, lines 1558-1560): the mono codes are
  `repeat_interleave`d, i.e. left = right = the mono codes. Encoding the duplicated channel gives
  exactly that, so `Codec` duplicates the channel. (HF is asymmetric here: `forward` only takes
  mono audio for a stereo model, its EnCodec being mono; the generate path only takes stereo,
  line 1770. `Codec` accepts both.)
* decode (`generate`, lines 2107-2119): mono codes go through `audio_encoder.decode`; stereo codes
  are split into even (left) and odd (right) codebooks, decoded separately and concatenated on the
  channel axis. `audio_scales` are `None` there (EnCodec's `normalize` is off for MusicGen).

Hook points (names as seen from `HookedMusicGen`, which holds this module as `codec`):

* `codec.hook_latent`    [batch, audio_channels, d_latent, frames]: encoder output before
  quantisation. Fires on `encode` only; an edit changes the returned codes.
* `codec.hook_quantized` [batch, audio_channels, d_latent, frames]: the quantised latent (sum of
  the selected codebook vectors). On `decode` it is the decoder's input, so an edit changes the
  audio. On `encode` it fires too, after the codes are chosen, for observation only: editing it
  there cannot change the (discrete) codes that `encode` returns.

The channel axis always has the model's `audio_channels` entries (0 = left, 1 = right for stereo,
each a separate mono EnCodec stream); `d_latent` is EnCodec's `hidden_size`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import einops
import torch
from jaxtyping import Float, Int
from torch import Tensor
from musicgen_lens.hook_point import HookPoint


class Codec(torch.nn.Module):
    """Hooked EnCodec for MusicGen: waveform <-> `[batch, n_codebooks, frames]` codes.

    Args:
        encodec: a (mono) Hugging Face `EncodecModel`, e.g. `MusicgenForConditionalGeneration.audio_encoder`.
        audio_channels: 1 for mono MusicGen checkpoints, 2 for the stereo ones.
        n_codebooks: codebooks over all channels (the decoder's `num_codebooks`; for stereo, each
            channel uses `n_codebooks // 2`). Defaults to what Hugging Face's encode picks:
            the quantizers for `config.target_bandwidths[0]`, times `audio_channels`.
    """

    def __init__(self, encodec, audio_channels: int = 1, n_codebooks: int | None = None):
        super().__init__()
        cfg = encodec.config
        if audio_channels not in (1, 2):
            raise ValueError(f"audio_channels must be 1 (mono) or 2 (stereo), got {audio_channels}")
        if cfg.audio_channels != 1:
            # MusicGen's stereo checkpoints use a mono EnCodec once per channel.
            raise NotImplementedError(
                f"only mono EnCodec models are supported (as in MusicGen), got an EnCodec with "
                f"audio_channels={cfg.audio_channels}"
            )
        if cfg.chunk_length_s is not None:
            # Hugging Face's MusicGen refuses chunked codes too (modeling_musicgen.py lines 1552-1556, 1797-1801).
            raise NotImplementedError(
                f"chunked EnCodec (chunk_length_s={cfg.chunk_length_s}) is not supported; MusicGen's "
                f"EnCodec encodes the whole clip at once (chunk_length_s=None)"
            )
        if cfg.normalize:
            # With normalize=True the encoder sees audio / rms and decoding needs that scale back;
            # MusicGen's EnCodec has normalize=False and its generate() passes no scales.
            raise NotImplementedError("EnCodec with normalize=True is not supported (MusicGen uses normalize=False)")

        n_quantizers = len(encodec.quantizer.layers)
        if n_codebooks is None:
            # Same choice as EncodecModel.encode(bandwidth=None), which MusicGen calls.
            per_channel = encodec.quantizer.get_num_quantizers_for_bandwidth(cfg.target_bandwidths[0])
            n_codebooks = per_channel * audio_channels
        if n_codebooks < audio_channels or n_codebooks % audio_channels:
            raise ValueError(
                f"n_codebooks ({n_codebooks}) must be a positive multiple of audio_channels ({audio_channels}): "
                f"stereo codes interleave left and right codebooks"
            )
        if n_codebooks // audio_channels > n_quantizers:
            raise ValueError(
                f"n_codebooks={n_codebooks} needs {n_codebooks // audio_channels} quantizers per channel, "
                f"but this EnCodec has only {n_quantizers}"
            )

        self.encodec = encodec
        self.audio_channels = audio_channels
        self.n_codebooks = n_codebooks
        self.n_codebooks_per_channel = n_codebooks // audio_channels
        self.codebook_size: int = cfg.codebook_size
        self.sample_rate: int = cfg.sampling_rate
        self.hop_length: int = int(math.prod(cfg.upsampling_ratios))  # samples per frame
        self.frame_rate: float = self.sample_rate / self.hop_length  # exact (HF's config.frame_rate rounds up)
        self.d_latent: int = cfg.hidden_size

        self.hook_latent = HookPoint()  # [batch, audio_channels, d_latent, frames]
        self.hook_quantized = HookPoint()  # [batch, audio_channels, d_latent, frames]
        for hook in (self.hook_latent, self.hook_quantized):
            hook.pos_dim = 3  # the frame (time) axis, for TransformerLens utilities that slice positions

    # ------------------------------------------------------------------------------------------
    # sizes

    def frames_for_samples(self, n_samples: int) -> int:
        """Code frames produced for `n_samples` audio samples (the encoder pads up to a whole frame)."""
        return -(-n_samples // self.hop_length)

    def samples_for_frames(self, n_frames: int) -> int:
        """Audio samples produced by decoding `n_frames` code frames."""
        return n_frames * self.hop_length

    def _param(self) -> Tensor:
        # Device and dtype follow the wrapped model, wherever it has been moved.
        return next(self.encodec.parameters())

    # ------------------------------------------------------------------------------------------
    # encode

    def encode(
        self,
        audio: Float[Tensor, "batch channels samples"] | Sequence[Float[Tensor, "channels samples"]],
        padding_mask: Tensor | None = None,
    ) -> Int[Tensor, "batch n_codebooks frames"]:
        """Waveform(s) at `sample_rate` -> codes `[batch, n_codebooks, frames]` (int64).

        `audio` is `[batch, channels, samples]` with channels 1 or `audio_channels` (mono into a
        stereo model is duplicated to both channels, as Hugging Face does), or a list of
        `[channels, samples]` clips of different lengths, which are zero-padded at the end to the
        longest. `padding_mask` (`[batch, samples]` or `[batch, 1 or channels, samples]`, nonzero =
        real audio) zeroes the padded samples, as `EncodecModel.encode` does. Either way the codes
        cover the padded length: item i's valid frames are the first
        `frames_for_samples(length_i)`; the trailing ones encode padding. The last few valid frames
        can also differ slightly from encoding the clip alone, because EnCodec's non-causal
        convolutions see a little past the end.

        For stereo the codebooks are interleaved `[L0, R0, L1, R1, ...]`.
        """
        audio, mask = self._prepare_audio(audio, padding_mask)
        if mask is not None:
            audio = audio * mask  # EncodecModel.encode: `frame = mask * input_values`
        if audio.shape[1] != self.audio_channels:
            # Mono into stereo: duplicate (== HF's repeat_interleave of the mono codes).
            audio = einops.repeat(audio, "b 1 t -> b c t", c=self.audio_channels)

        # One mono EnCodec pass per channel, as HF does for stereo (left, then right).
        latent = torch.stack(
            [self.encodec.encoder(audio[:, c : c + 1]) for c in range(self.audio_channels)], dim=1
        )
        latent = self.hook_latent(latent)

        per_channel = [self._quantize(latent[:, c]) for c in range(self.audio_channels)]
        quantized = torch.stack([self._dequantize(codes) for codes in per_channel], dim=1)
        self.hook_quantized(quantized)  # observation only, see the module docstring

        # [L0, R0, L1, R1, ...]: codebook q of channel c goes to row q * audio_channels + c.
        return einops.rearrange(torch.stack(per_channel, dim=2), "b q c f -> b (q c) f")

    def _quantize(self, latent: Float[Tensor, "batch d_latent frames"]) -> Int[Tensor, "batch n_q frames"]:
        # Residual VQ, step for step as EncodecResidualVectorQuantizer.encode, with the number of
        # quantizers given directly instead of derived from a bandwidth.
        residual = latent
        indices = []
        for layer in self.encodec.quantizer.layers[: self.n_codebooks_per_channel]:
            idx = layer.encode(residual)
            residual = residual - layer.decode(idx)
            indices.append(idx)
        return torch.stack(indices, dim=1)

    def _dequantize(self, codes: Int[Tensor, "batch n_q frames"]) -> Float[Tensor, "batch d_latent frames"]:
        # EncodecModel._decode_frame: the quantizer wants [n_q, batch, frames].
        return self.encodec.quantizer.decode(codes.transpose(0, 1))

    def _prepare_audio(self, audio, padding_mask):
        """Validate, batch and move the input; returns (audio [b, c, t], mask [b, 1 or c, t] or None)."""
        if isinstance(audio, (list, tuple)):
            if padding_mask is not None:
                raise ValueError(
                    "pass either a list of clips (padded for you) or a padded batch with padding_mask, not both"
                )
            audio, padding_mask = self._pad_clips(audio)
        if not isinstance(audio, Tensor):
            raise TypeError(f"audio must be a torch.Tensor [batch, channels, samples], got {type(audio).__name__}")
        if audio.ndim != 3:
            hint = {1: " (use audio[None, None] for a single mono clip)", 2: " (use audio[None] for a single clip)"}
            raise ValueError(
                f"audio must be 3-D [batch, channels, samples], got shape {tuple(audio.shape)}"
                + hint.get(audio.ndim, "")
            )
        if not audio.is_floating_point():
            raise ValueError(
                f"audio must be a floating-point waveform in [-1, 1], got dtype {audio.dtype} (convert with .float())"
            )
        batch, channels, samples = audio.shape
        if channels not in (1, self.audio_channels):
            expected = "1 (mono)" if self.audio_channels == 1 else "1 (mono, duplicated) or 2 (stereo)"
            raise ValueError(
                f"audio has {channels} channels (shape {tuple(audio.shape)}); this "
                f"{'stereo' if self.audio_channels == 2 else 'mono'} model expects {expected} on axis 1"
            )
        if batch == 0 or samples == 0:
            raise ValueError(f"audio is empty: shape {tuple(audio.shape)}")
        bad = (~torch.isfinite(audio)).sum().item()
        if bad:
            raise ValueError(f"audio contains {bad} NaN/inf values")

        param = self._param()
        audio = audio.to(device=param.device, dtype=param.dtype)
        if padding_mask is None:
            return audio, None
        if not isinstance(padding_mask, Tensor):
            raise TypeError(f"padding_mask must be a torch.Tensor, got {type(padding_mask).__name__}")
        mask_shape = tuple(padding_mask.shape)
        if padding_mask.ndim == 2:
            padding_mask = padding_mask[:, None]  # as EncodecModel.encode: one mask for every channel
        if (
            padding_mask.ndim != 3
            or padding_mask.shape[0] != batch
            or padding_mask.shape[1] not in (1, channels)
            or padding_mask.shape[2] != samples
        ):
            raise ValueError(
                f"padding_mask must be [batch, samples] or [batch, 1 or channels, samples] matching audio "
                f"{tuple(audio.shape)}, got shape {mask_shape}"
            )
        return audio, padding_mask.to(audio.device).bool()

    @staticmethod
    def _pad_clips(clips: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        if len(clips) == 0:
            raise ValueError("audio is an empty list")
        for i, clip in enumerate(clips):
            if not isinstance(clip, Tensor) or clip.ndim != 2:
                shape = tuple(clip.shape) if isinstance(clip, Tensor) else type(clip).__name__
                raise ValueError(f"each clip in a list must be a 2-D tensor [channels, samples]; clip {i} is {shape}")
        if len({clip.shape[0] for clip in clips}) > 1:
            raise ValueError(f"clips in a list must have the same channel count, got {[c.shape[0] for c in clips]}")
        longest = max(clip.shape[-1] for clip in clips)
        audio = clips[0].new_zeros(len(clips), clips[0].shape[0], longest)
        mask = torch.zeros(len(clips), longest, dtype=torch.bool, device=audio.device)
        for i, clip in enumerate(clips):
            audio[i, :, : clip.shape[-1]] = clip
            mask[i, : clip.shape[-1]] = True
        return audio, mask

    # ------------------------------------------------------------------------------------------
    # decode

    def decode(self, codes: Int[Tensor, "batch n_codebooks frames"]) -> Float[Tensor, "batch channels samples"]:
        """Codes `[batch, n_codebooks, frames]` -> audio `[batch, audio_channels, samples_for_frames(frames)]`.

        Stereo codes must be interleaved `[L0, R0, L1, R1, ...]` (as `encode` returns and MusicGen
        generates); codes must be delay-pattern-free values in `[0, codebook_size)`.
        """
        codes = self._check_codes(codes)
        quantized = torch.stack(
            # HF generate: left = codes[:, ::2], right = codes[:, 1::2].
            [self._dequantize(codes[:, c :: self.audio_channels]) for c in range(self.audio_channels)],
            dim=1,
        )
        quantized = self.hook_quantized(quantized)
        # One decoder pass per channel, concatenated on the channel axis, as HF generate does.
        return torch.cat([self.encodec.decoder(quantized[:, c]) for c in range(self.audio_channels)], dim=1)

    def _check_codes(self, codes) -> Tensor:
        if not isinstance(codes, Tensor):
            raise TypeError(f"codes must be a torch.Tensor [batch, n_codebooks, frames], got {type(codes).__name__}")
        if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
            raise ValueError(f"codes must be an integer tensor (e.g. torch.long), got dtype {codes.dtype}")
        if codes.ndim != 3:
            hint = ""
            if codes.ndim == 2:
                hint = " (use codes[None] for a single item)"
            elif codes.ndim == 4 and codes.shape[0] == 1:
                hint = " (Hugging Face's EnCodec layout [1, batch, n_codebooks, frames]: use codes[0])"
            raise ValueError(
                f"codes must be 3-D [batch, n_codebooks, frames], got shape {tuple(codes.shape)}{hint}"
            )
        if codes.shape[1] != self.n_codebooks:
            stereo = " (stereo: left/right interleaved [L0, R0, L1, R1, ...])" if self.audio_channels == 2 else ""
            raise ValueError(
                f"codes have {codes.shape[1]} codebooks (shape {tuple(codes.shape)}), "
                f"expected {self.n_codebooks}{stereo} on axis 1"
            )
        if codes.numel() == 0:
            raise ValueError(f"codes are empty: shape {tuple(codes.shape)}")
        low, high = codes.min().item(), codes.max().item()
        if low < 0 or high >= self.codebook_size:
            raise ValueError(
                f"codes must lie in [0, {self.codebook_size}), got values in [{low}, {high}]; "
                f"MusicGen's pad/BOS id ({self.codebook_size}) is not a codec code: undo the delay pattern first"
            )
        return codes.to(device=self._param().device, dtype=torch.long)

    # ------------------------------------------------------------------------------------------

    def forward(
        self, audio: Float[Tensor, "batch channels samples"], padding_mask: Tensor | None = None
    ) -> Float[Tensor, "batch audio_channels samples"]:
        """Round trip `decode(encode(audio))`, so a hooked root holding only a codec can be run directly."""
        return self.decode(self.encode(audio, padding_mask))
