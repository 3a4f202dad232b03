"""Chroma features for MusicGen-melody, without torchaudio or librosa.

Hugging Face's `MusicgenMelodyFeatureExtractor` needs torchaudio; this module computes the same
features with `torch.stft` and the same filter bank (`transformers.audio_utils.chroma_filter_bank`,
librosa's recipe). For each batch row of mono audio at `sample_rate`:

1. truncate to `chunk_length` seconds; right-pad the batch with zeros to its longest row;
   centre-pad a row shorter than `n_fft` with zeros to `n_fft` samples;
2. power spectrogram: Hann window (periodic) of `n_fft` samples, hop `hop_length`, centred
   frames (reflect padding), |STFT|^2 / sum(window^2)  (torchaudio's `normalized=True`);
3. raw chroma = filter bank [n_chroma, n_fft // 2 + 1] @ power spectrum, per frame;
4. normalise each frame by its max (inf-norm, eps 1e-6), then keep only the argmax: a one-hot
   pitch class per frame (audiocraft's "chroma stem"; bin 0 is C). A silent frame has an
   all-zero chroma, whose argmax is bin 0: silence reads as C, the null melody.

What differs from Hugging Face: resampling. HF resamples with torchaudio's sinc filter; here
`musicgen_lens.audio.load_audio` resamples with soxr, so features of audio at another rate can
differ in frames near a pitch boundary. Audio already at the model's rate is bit-for-bit the
same recipe. Demucs stem separation (HF's 4-D input) is not done: pass the stem you want.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float
from transformers.audio_utils import chroma_filter_bank

from musicgen_lens.conditioning import broadcast_melodies

__all__ = ["ChromaExtractor", "load_melody"]


@dataclass(frozen=True)
class ChromaExtractor:
    """The settings of Hugging Face's MusicgenMelodyFeatureExtractor (its defaults are facebook/musicgen-melody's)."""

    sample_rate: int = 32000
    n_fft: int = 16384
    hop_length: int = 4096
    n_chroma: int = 12
    chunk_length: float = 30.0  # seconds of melody used at most

    def __post_init__(self) -> None:
        for name in ("sample_rate", "n_fft", "hop_length", "n_chroma"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"ChromaExtractor.{name} must be a positive integer, got {value!r}")
        if not (self.chunk_length > 0 and math.isfinite(self.chunk_length)):
            raise ValueError(f"ChromaExtractor.chunk_length must be a positive number of seconds, got {self.chunk_length!r}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ChromaExtractor":
        """From a `preprocessor_config.json` dict as Hugging Face writes it (unknown keys ignored)."""
        return cls(
            sample_rate=int(d.get("sampling_rate", cls.sample_rate)),
            n_fft=int(d.get("n_fft", cls.n_fft)),
            hop_length=int(d.get("hop_length", cls.hop_length)),
            n_chroma=int(d.get("num_chroma", d.get("feature_size", cls.n_chroma))),
            chunk_length=float(d.get("chunk_length", cls.chunk_length)),
        )

    def to_hf_dict(self) -> dict[str, Any]:
        """The `preprocessor_config.json` of an equivalent Hugging Face feature extractor."""
        return {
            "feature_extractor_type": "MusicgenMelodyFeatureExtractor",
            "processor_class": "MusicgenMelodyProcessor",
            "feature_size": self.n_chroma,
            "num_chroma": self.n_chroma,
            "sampling_rate": self.sample_rate,
            "n_fft": self.n_fft,
            "hop_length": self.hop_length,
            "chunk_length": int(self.chunk_length) if float(self.chunk_length).is_integer() else self.chunk_length,
            "padding_value": 0.0,
            "padding_side": "right",
            "return_attention_mask": False,
            "stem_indices": [3, 2],
        }

    def save(self, directory: str | os.PathLike) -> None:
        with open(os.path.join(directory, "preprocessor_config.json"), "w") as f:
            json.dump(self.to_hf_dict(), f, indent=2)

    @property
    def frame_rate(self) -> float:
        """Chroma frames per second."""
        return self.sample_rate / self.hop_length

    @cached_property
    def filters(self) -> Float[torch.Tensor, "n_chroma n_freq"]:
        # float32 like HF (it casts the float64 bank with .float())
        bank = chroma_filter_bank(num_frequency_bins=self.n_fft, num_chroma=self.n_chroma, sampling_rate=self.sample_rate, tuning=0)
        return torch.from_numpy(bank).float()

    def power_spectrogram(self, wav: Float[torch.Tensor, "batch samples"]) -> Float[torch.Tensor, "batch n_freq frames"]:
        """torchaudio.transforms.Spectrogram(n_fft, hop_length, power=2, center=True, normalized=True)."""
        window = torch.hann_window(self.n_fft, dtype=wav.dtype, device=wav.device)
        spec = torch.stft(
            wav, self.n_fft, hop_length=self.hop_length, win_length=self.n_fft, window=window,
            center=True, pad_mode="reflect", normalized=False, onesided=True, return_complex=True,
        )
        spec = spec / window.pow(2.0).sum().sqrt()
        return spec.abs().pow(2.0)

    def raw_chroma(self, wav: Float[torch.Tensor, "batch samples"]) -> Float[torch.Tensor, "batch frames n_chroma"]:
        """Chroma energy per frame (steps 1-3), before the normalisation and the argmax."""
        wav = self._pad(wav)
        spec = self.power_spectrogram(wav)
        raw = torch.einsum("cf,bft->bct", self.filters.to(wav.device, wav.dtype), spec)
        return raw.transpose(1, 2)

    def __call__(self, wav: Float[torch.Tensor, "batch samples"]) -> Float[torch.Tensor, "batch frames n_chroma"]:
        """Mono audio at `sample_rate` -> one-hot chroma [batch, frames, n_chroma] (float32)."""
        if wav.ndim != 2:
            raise ValueError(f"ChromaExtractor expects mono audio [batch, samples], got shape {tuple(wav.shape)}")
        raw = self.raw_chroma(wav.float())
        norm = F.normalize(raw, p=float("inf"), dim=-1, eps=1e-6)
        return F.one_hot(norm.argmax(dim=-1), self.n_chroma).float()

    def _pad(self, wav: Float[torch.Tensor, "batch samples"]) -> Float[torch.Tensor, "batch samples"]:
        wav = wav[:, : int(round(self.chunk_length * self.sample_rate))]
        short = self.n_fft - wav.shape[-1]
        if short > 0:  # HF centres a short clip in n_fft samples of silence
            wav = F.pad(wav, (short // 2, short // 2 + short % 2))
        return wav

    def frames_for(self, n_samples: int) -> int:
        """Chroma frames of a clip of n_samples (after truncation and padding)."""
        n = max(min(n_samples, int(round(self.chunk_length * self.sample_rate))), self.n_fft)
        return n // self.hop_length + 1

    def __repr__(self) -> str:
        return f"ChromaExtractor({', '.join(f'{k}={v}' for k, v in asdict(self).items())})"


def load_melody(
    melody: Any,
    extractor: ChromaExtractor,
    *,
    sr: int | None = None,
    batch: int | None = None,
    device: torch.device | str | None = None,
) -> Float[torch.Tensor, "batch frames n_chroma"]:
    """A melody (path, array or tensor; or a list of them) -> one-hot chroma [batch, frames, n_chroma].

    Arrays are [samples], [channels, samples] or [batch, channels, samples] at `sr` (default: the
    extractor's rate). Every clip goes through `musicgen_lens.audio.load_audio` (clear errors for
    missing files, NaN/inf, silence, wrong shapes or rates), is mixed down to mono and resampled
    to the extractor's rate. Clips of different lengths are right-padded with silence like
    Hugging Face pads a batch. One melody is broadcast to `batch` rows.
    """
    from musicgen_lens.audio import _check_sr, load_audio

    if melody is None:
        raise ValueError("melody is None")
    if sr is not None:
        sr = _check_sr(sr, "melody_sr")
    if isinstance(melody, (torch.Tensor, np.ndarray)) and melody.ndim == 3:
        clips: Sequence[Any] = list(melody)
    elif isinstance(melody, (list, tuple)):
        if not melody:
            raise ValueError("melody is an empty list")
        clips = melody
    else:
        clips = [melody]
    wavs = []
    for i, clip in enumerate(clips):
        in_memory = {"sr": extractor.sample_rate if sr is None else sr} if isinstance(clip, (torch.Tensor, np.ndarray)) else {}
        if not in_memory and sr is not None:
            raise ValueError(
                f"melody_sr={sr} is only for in-memory audio; melody {i} is a file ({clip!r}), which knows its own rate"
            )
        wav, _ = load_audio(clip, target_sr=extractor.sample_rate, mono=True, **in_memory)
        wavs.append(wav[0])
    longest = max(w.shape[-1] for w in wavs)
    padded = torch.stack([F.pad(w, (0, longest - w.shape[-1])) for w in wavs])
    chroma = extractor(padded)
    if batch is not None:
        chroma = broadcast_melodies(chroma, batch)
    return chroma.to(device) if device is not None else chroma
