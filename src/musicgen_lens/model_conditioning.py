"""Conditioning of HookedMusicGen: text (T5), melody (chroma), and the one rule that resolves them.

A mixin of `HookedMusicGen`: `condition` runs the text encoder (`text_encoder.hook_out`) and the
chroma extractor, `resolve_cond` is the one conditioning rule forward, generate and patching
share, and `project_cond` / `prefix` turn a Conditioning into what the decoder reads
(cross-attention states, or a melody model's prepended [chroma; text]).
"""

from __future__ import annotations

import math
import warnings
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import torch
from jaxtyping import Float, Int

from musicgen_lens.conditioning import Conditioning, broadcast_melodies

__all__ = ["ConditioningMixin"]


class ConditioningMixin:
    """Text and melody conditioning (needs the model's cfg, text_encoder, tokenizer, projections)."""

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        if self.tokenizer is None:
            raise RuntimeError("This model has no tokenizer: pass input_ids= and attention_mask= to condition()")
        if isinstance(texts, str) or not texts:
            raise ValueError(f"texts must be a non-empty list of strings, got {texts!r}")
        if not all(isinstance(t, str) for t in texts):
            raise TypeError(f"texts must be strings, got {[type(t).__name__ for t in texts]}")
        enc = self.tokenizer(list(texts), padding=True, return_tensors="pt")
        return {"input_ids": enc["input_ids"].to(self.device), "attention_mask": enc["attention_mask"].to(self.device)}

    def condition(
        self,
        texts: Sequence[str] | None = None,
        *,
        input_ids: Int[torch.Tensor, "batch text_pos"] | None = None,
        attention_mask: Int[torch.Tensor, "batch text_pos"] | None = None,
        melody: Any = None,
        melody_sr: int | None = None,
        chroma: Float[torch.Tensor, "batch chroma_frames n_chroma"] | None = None,
        requires_grad: bool = False,
    ) -> Conditioning:
        """Run the text encoder (hook `text_encoder.hook_out`) on texts or on token ids.

        The states are detached from T5 unless `requires_grad=True` (gradients into the text
        encoder): a Conditioning is reused across calls, and a kept graph would make a second
        `.backward()` through it fail.

        Melody models also take `melody` (a path, or audio [channels, samples] /
        [batch, channels, samples] at `melody_sr`, default the model's rate), turned into
        chroma by `model.chroma_extractor`, or ready-made `chroma` features
        [batch, chroma_frames, n_chroma] (what Hugging Face calls `input_features`). A melody
        without texts gives a melody-only conditioning (no text positions).
        """
        if melody is not None or chroma is not None or melody_sr is not None:
            chroma = self.melody_chroma(melody, melody_sr, chroma)
            if texts is None and input_ids is None:
                empty = torch.zeros(chroma.shape[0], 0, self.cfg.d_cond, device=self.device, dtype=self.dtype)
                return Conditioning(empty, torch.zeros(chroma.shape[0], 0, dtype=torch.bool, device=self.device), [], chroma)
            cond = self.condition(texts, input_ids=input_ids, attention_mask=attention_mask, requires_grad=requires_grad)
            return cond.with_chroma(broadcast_melodies(chroma, cond.batch))
        if self.text_encoder is None:
            raise RuntimeError("This model has no text encoder; build Conditioning(states, mask) yourself")
        if texts is not None:
            if input_ids is not None:
                raise ValueError("pass texts or input_ids, not both")
            enc = self.tokenize(texts)
            input_ids, attention_mask = enc["input_ids"], enc["attention_mask"]
        elif input_ids is None:
            raise ValueError("condition() needs texts or input_ids")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        with torch.set_grad_enabled(requires_grad and torch.is_grad_enabled()):
            states = self.text_encoder(input_ids.to(self.device), attention_mask.to(self.device))
        return Conditioning(states.to(self.dtype), attention_mask.to(self.device).bool(), list(texts) if texts is not None else [])

    def null_condition(self, batch: int) -> Conditioning:
        """The unconditional (no text) input of classifier-free guidance.

        For a melody model: one zero text position and the null melody (Hugging Face's
        unconditional branch, whose zero text has as many positions as the conditional one:
        `cond.null_like()` builds exactly that).
        """
        return Conditioning.null(batch, self.cfg.d_cond, self.device, self.dtype)

    def melody_chroma(
        self, melody: Any = None, melody_sr: int | None = None, chroma: torch.Tensor | None = None
    ) -> Float[torch.Tensor, "batch chroma_frames n_chroma"]:
        """Melody audio (or ready-made chroma features) -> checked chroma [batch, frames, n_chroma] on the model's device."""
        from musicgen_lens.chroma import load_melody

        if not self.cfg.is_melody:
            raise ValueError(
                f"melody conditioning needs a MusicGen-melody checkpoint (e.g. facebook/musicgen-melody); "
                f"{self.cfg.model_name!r} is a text-only MusicGen"
            )
        if (melody is None) == (chroma is None):
            raise ValueError("pass melody= (audio) or chroma= (features), exactly one")
        if chroma is None:
            return load_melody(melody, self.chroma_extractor, sr=melody_sr, device=self.device).to(self.dtype)
        if melody_sr is not None:
            raise ValueError("melody_sr= is the sample rate of melody audio; ready-made chroma= features have none")
        if not isinstance(chroma, torch.Tensor) or chroma.ndim != 3 or chroma.shape[-1] != self.cfg.n_chroma or chroma.shape[1] == 0:
            shape = tuple(chroma.shape) if isinstance(chroma, torch.Tensor) else type(chroma).__name__
            raise ValueError(f"chroma must be a tensor [batch, chroma_frames>=1, n_chroma={self.cfg.n_chroma}], got {shape}")
        if not torch.isfinite(chroma).all():
            raise ValueError("chroma contains NaN or inf")
        return chroma.to(device=self.device, dtype=self.dtype)

    def n_prefix(self, cond: Conditioning) -> int:
        """Positions prepended to the codes: chroma_length + text positions (melody), else 0."""
        return self.cfg.chroma_length + cond.states.shape[1] if self.cfg.is_melody else 0

    @contextmanager
    def conditioning(self, cond: Conditioning) -> Iterator[Any]:
        """Default conditioning for calls that pass only codes (e.g. `transformer_lens.patching`).

        On a melody model this warns: TransformerLens's patching indexes positions 0..pos-1 of
        every hook, which there are the chroma + text prefix, not the codes; use
        `musicgen_lens.patching`, which knows the prefix.
        """
        if self.cfg.is_melody:
            warnings.warn(
                "model.conditioning() on a MusicGen-melody model: transformer_lens.patching would patch the conditioning "
                "prefix positions instead of the codes; use musicgen_lens.patching (positions are code positions there)",
                stacklevel=3,
            )
        previous, self._default_cond = self._default_cond, cond
        try:
            yield self
        finally:
            self._default_cond = previous

    def project_cond(self, cond: Conditioning) -> Float[torch.Tensor, "batch text_pos d_model"]:
        # Hugging Face zeroes padded text positions after the projection (bias included).
        return self.hook_cond(self.cond_proj(cond.states) * cond.mask[..., None].to(cond.states.dtype))

    def project_chroma(self, cond: Conditioning) -> Float[torch.Tensor, "batch chroma_length d_model"]:
        """The melody prefix: projected chroma, tiled then cut to chroma_length (as Hugging Face)."""
        projected = self.chroma_proj(cond.chroma_or_null(self.cfg.n_chroma, self.dtype))
        reps = math.ceil(self.cfg.chroma_length / projected.shape[1])
        return self.hook_chroma(projected.repeat(1, reps, 1)[:, : self.cfg.chroma_length])

    def prefix(self, cond: Conditioning) -> Float[torch.Tensor, "batch prefix_pos d_model"]:
        """What a melody model prepends to the codes: [chroma; text] (Hugging Face's order)."""
        return torch.cat([self.project_chroma(cond), self.project_cond(cond)], dim=1)

    def resolve_cond(
        self, cond: "Conditioning | Sequence[str] | str | None", batch: int | None = None, *, what: str = "cond"
    ) -> Conditioning:
        """The one conditioning rule, used by forward, generate and patching.

        - a Conditioning (from `model.condition(...)`) is used as it is;
        - a str is one text, a list/tuple of str runs the text encoder here (so
          `text_encoder.hook_out` fires inside the caller's forward pass);
        - None is the conditioning set by `with model.conditioning(...)`, else the null text
          (the unconditional branch of classifier-free guidance) for `batch` rows (1 if None);
        - a conditioning of batch 1 is broadcast to `batch`; any other mismatch raises.

        `what` names the argument in error messages (e.g. "clean_cond").
        """
        if isinstance(cond, str):
            cond = [cond]
        if isinstance(cond, (list, tuple)):
            cond = self.condition(list(cond))
        if cond is None:
            cond = self._default_cond if self._default_cond is not None else self.null_condition(batch or 1)
        if not isinstance(cond, Conditioning):
            raise TypeError(
                f"{what} must be a Conditioning (from model.condition(texts)), a text, a list of texts or None, got {type(cond).__name__}"
            )
        if batch is not None and cond.batch != batch:
            if cond.batch != 1:
                raise ValueError(f"{what}: codes have batch {batch} but the conditioning has batch {cond.batch}; they must match (or be 1)")
            cond = cond.repeat(batch)
        if cond.states.shape[-1] != self.cfg.d_cond:
            raise ValueError(f"{what}: conditioning width is {cond.states.shape[-1]}, the model expects d_cond={self.cfg.d_cond}")
        if cond.states.device != self.device:
            raise ValueError(f"{what}: conditioning is on {cond.states.device} but the model is on {self.device}; use cond.to(model.device)")
        if cond.chroma is not None:
            if not self.cfg.is_melody:
                raise ValueError(f"{what}: this conditioning carries a melody (chroma), but the model is a text-only MusicGen")
            if cond.chroma.shape[-1] != self.cfg.n_chroma:
                raise ValueError(f"{what}: conditioning chroma has {cond.chroma.shape[-1]} bins, the model expects n_chroma={self.cfg.n_chroma}")
        return cond
