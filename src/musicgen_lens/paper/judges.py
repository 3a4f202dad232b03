"""Real-audio judges through `transformers`: an AudioSet tagger (AST), CLAP, Fréchet distances, a quality guard.

- :class:`AudioTagger` — ``ASTForAudioClassification`` + ``ASTFeatureExtractor`` (default
  ``MIT/ast-finetuned-audioset-10-10-0.4593``, 527 AudioSet labels, sigmoid scores). Steering
  success for a concept is judged on the AudioSet label that `CONCEPT_LABELS` maps it to.
- :class:`ClapJudge` — ``ClapModel`` + ``ClapProcessor`` (default ``laion/clap-htsat-unfused``):
  prompt adherence as the cosine between a clip's and a text's CLAP embeddings (MusicRFM
  reports 0.315 unsteered -> 0.303 steered), and CLAP audio embeddings for a Fréchet distance.
- :func:`fad` — Fréchet distance between two embedding sets (``musicgen_lens.eval.frechet_distance``);
  :func:`encodec_embeddings` is the codec-space alternative (mean and std over frames of the
  model's dequantised EnCodec latents).
- :func:`quality_guard` — code entropy of codebook 0 and spectral stationarity
  (``musicgen_lens.eval.code_entropy`` / ``audio_quality``): a steered run that collapsed into
  a held texture shows low entropy and stationarity near 1.

Every judge loads with ``from_pretrained(name_or_path)`` (a hub name or a local directory written
by ``save_pretrained``); the tests build tiny random ones (`save_tiny_ast`, `save_tiny_clap`).
Audio goes in as arrays ``[samples]`` / ``[channels, samples]`` at ``sr`` and is resampled
(soxr) to the judge's rate, mono.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

__all__ = [
    "CONCEPT_LABELS", "DEFAULT_AST", "DEFAULT_CLAP", "AudioTagger", "ClapJudge", "QualityGuard",
    "audioset_label", "encodec_embeddings", "fad", "quality_guard", "save_tiny_ast", "save_tiny_clap",
]

DEFAULT_AST = "MIT/ast-finetuned-audioset-10-10-0.4593"
DEFAULT_CLAP = "laion/clap-htsat-unfused"

# Our concept names -> AudioSet label names (the `id2label` values of the AST checkpoint).
CONCEPT_LABELS: dict[str, str] = {
    # instruments (the paper's steering concepts)
    "trumpet": "Trumpet",
    "violin": "Violin, fiddle",
    "fiddle": "Violin, fiddle",
    "xylophone": "Marimba, xylophone",
    "marimba": "Marimba, xylophone",
    "tabla": "Tabla",
    # genres (the paper's probing classes, and MusicRFM's)
    "classical": "Classical music",
    "electronic": "Electronic music",
    "rock": "Rock music",
    "jazz": "Jazz",
    "pop": "Pop music",
    "hip hop": "Hip hop music",
    "hiphop": "Hip hop music",
    "hip-hop": "Hip hop music",
    "folk": "Folk music",
}


def audioset_label(concept: str, labels: Sequence[str] | None = None) -> str:
    """The AudioSet label for `concept` (`CONCEPT_LABELS`, case-insensitive; a label name itself
    is accepted too). With `labels` (the tagger's), the result is checked to be one of them."""
    key = concept.strip().lower()
    label = CONCEPT_LABELS.get(key)
    if label is None and labels is not None:
        label = next((l for l in labels if l.lower() == key), None)
    if label is None:
        raise KeyError(f"no AudioSet label for concept {concept!r}; known concepts: {sorted(CONCEPT_LABELS)} (or pass a label name)")
    if labels is not None and label not in labels:
        raise KeyError(f"concept {concept!r} maps to {label!r}, which this tagger does not have")
    return label


def _mono(audio: Any, sr: int, to: int) -> np.ndarray:
    from musicgen_lens.audio import resample

    a = torch.as_tensor(np.asarray(audio.detach().cpu() if isinstance(audio, torch.Tensor) else audio, dtype=np.float32))
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim == 1:
        a = a[None]
    if a.ndim != 2:
        raise ValueError(f"audio must be [samples] or [channels, samples], got shape {tuple(a.shape)}")
    return resample(a.mean(0, keepdim=True), int(sr), int(to))[0].numpy()


def _device(device: Any) -> torch.device:
    return torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _pooled(out: Any) -> torch.Tensor:
    """get_*_features returns a tensor, or (transformers 5) an output whose pooler_output is the embedding."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class AudioTagger:
    """AudioSet tagging with AST: ``probs(audios, sr)`` -> ``[n, n_labels]`` sigmoid scores."""

    def __init__(self, model: Any, feature_extractor: Any, batch_size: int = 8):
        self.model, self.feature_extractor, self.batch_size = model.eval(), feature_extractor, batch_size
        self.labels = [model.config.id2label[i] for i in range(len(model.config.id2label))]

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike = DEFAULT_AST, device: Any = None, dtype: torch.dtype | None = None, **kw: Any) -> "AudioTagger":
        from transformers import ASTFeatureExtractor, ASTForAudioClassification

        model = ASTForAudioClassification.from_pretrained(str(name_or_path), dtype=dtype).to(_device(device))
        return cls(model, ASTFeatureExtractor.from_pretrained(str(name_or_path)), **kw)

    @property
    def sample_rate(self) -> int:
        return int(self.feature_extractor.sampling_rate)

    @torch.no_grad()
    def probs(self, audios: Sequence[Any], sr: int) -> np.ndarray:
        p = next(self.model.parameters())
        out = []
        for lo in range(0, len(audios), self.batch_size):
            clips = [_mono(a, sr, self.sample_rate) for a in audios[lo : lo + self.batch_size]]
            x = self.feature_extractor(clips, sampling_rate=self.sample_rate, return_tensors="pt")
            logits = self.model(input_values=x["input_values"].to(p.device, p.dtype)).logits
            out.append(torch.sigmoid(logits.float()).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.labels)))

    def concept_probs(self, audios: Sequence[Any], sr: int, concept: str) -> np.ndarray:
        """[n] score of the concept's AudioSet label (`CONCEPT_LABELS`)."""
        return self.probs(audios, sr)[:, self.labels.index(audioset_label(concept, self.labels))]

    def top(self, audio: Any, sr: int, k: int = 5) -> list[tuple[str, float]]:
        p = self.probs([audio], sr)[0]
        return [(self.labels[i], float(p[i])) for i in np.argsort(-p)[:k]]


class ClapJudge:
    """CLAP embeddings (unit norm): ``audio_embeddings``, ``text_embeddings``, ``adherence`` (cosine)."""

    def __init__(self, model: Any, processor: Any, batch_size: int = 8):
        self.model, self.processor, self.batch_size = model.eval(), processor, batch_size

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike = DEFAULT_CLAP, device: Any = None, dtype: torch.dtype | None = None, **kw: Any) -> "ClapJudge":
        from transformers import ClapModel, ClapProcessor

        model = ClapModel.from_pretrained(str(name_or_path), dtype=dtype).to(_device(device))
        return cls(model, ClapProcessor.from_pretrained(str(name_or_path)), **kw)

    @property
    def sample_rate(self) -> int:
        return int(self.processor.feature_extractor.sampling_rate)

    @torch.no_grad()
    def audio_embeddings(self, audios: Sequence[Any], sr: int) -> np.ndarray:
        p = next(self.model.parameters())
        n_max = int(self.processor.feature_extractor.nb_max_samples)
        out = []
        for lo in range(0, len(audios), self.batch_size):
            # cut to the extractor's window first, so its (random) truncation never runs
            clips = [_mono(a, sr, self.sample_rate)[:n_max] for a in audios[lo : lo + self.batch_size]]
            x = self.processor(audio=clips, sampling_rate=self.sample_rate, return_tensors="pt")
            kw = {"input_features": x["input_features"].to(p.device, p.dtype)}
            if "is_longer" in x:
                kw["is_longer"] = x["is_longer"].to(p.device)
            e = _pooled(self.model.get_audio_features(**kw)).float()
            out.append(torch.nn.functional.normalize(e, dim=-1).cpu().numpy())
        return np.concatenate(out)

    @torch.no_grad()
    def text_embeddings(self, texts: Sequence[str]) -> np.ndarray:
        p = next(self.model.parameters())
        x = self.processor(text=list(texts), padding=True, return_tensors="pt")
        e = _pooled(self.model.get_text_features(input_ids=x["input_ids"].to(p.device), attention_mask=x["attention_mask"].to(p.device))).float()
        return torch.nn.functional.normalize(e, dim=-1).cpu().numpy()

    def adherence(self, audios: Sequence[Any], sr: int, texts: Sequence[str] | str, audio_embeddings: np.ndarray | None = None) -> np.ndarray:
        """[n] cosine between each clip and its text (one text for all, or one per clip)."""
        A = self.audio_embeddings(audios, sr) if audio_embeddings is None else audio_embeddings
        texts = [texts] * len(A) if isinstance(texts, str) else list(texts)
        T = self.text_embeddings(texts)
        return (A * T).sum(-1)


def fad(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between embedding sets [n, d] (FAD's formula; `musicgen_lens.eval.frechet_distance`)."""
    from musicgen_lens.eval import frechet_distance

    return frechet_distance(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))


@torch.no_grad()
def encodec_embeddings(model: Any, codes: torch.Tensor) -> np.ndarray:
    """Codec-space embeddings of codes [n, n_codebooks, frames]: mean and std over frames of the
    model's dequantised EnCodec latents -> [n, 2 * d_latent]."""
    codec = model._need_codec()
    latent = codec._dequantize(torch.as_tensor(codes).to(model.device).long()).float()  # [n, d_latent, frames]
    return torch.cat([latent.mean(-1), latent.std(-1)], dim=-1).cpu().numpy()


@dataclass
class QualityGuard:
    entropy: np.ndarray  # [n] bits of codebook 0 over the clip
    stationarity: np.ndarray  # [n] 1 = one held texture
    flux: np.ndarray  # [n]

    def summary(self) -> dict[str, float]:
        return {"code_entropy": float(self.entropy.mean()), "stationarity": float(self.stationarity.mean()), "flux": float(self.flux.mean())}


def quality_guard(codes: torch.Tensor | np.ndarray, audios: Sequence[Any], sr: int, start: int = 0) -> QualityGuard:
    """Code entropy (codebook 0, frames from `start`) and stationarity/flux of each clip."""
    from musicgen_lens.eval import audio_quality, code_entropy

    ent = np.asarray(code_entropy(codes, start=start))[:, 0]
    aq = [audio_quality(np.asarray(a).reshape(-1) if np.asarray(a).ndim > 1 and np.asarray(a).shape[0] == 1 else a, sr) for a in audios]
    return QualityGuard(ent, np.array([q.stationarity for q in aq]), np.array([q.flux for q in aq]))


# ------------------------------------------------------------------ tiny random judges (tests, CI)

TINY_AST_LABELS = ("Music", "Trumpet", "Violin, fiddle", "Marimba, xylophone", "Tabla", "Classical music", "Electronic music",
                   "Rock music", "Jazz", "Pop music", "Hip hop music", "Folk music")


def save_tiny_ast(path: str | os.PathLike, labels: Sequence[str] = TINY_AST_LABELS, seed: int = 0) -> Path:
    """A tiny random AST tagger (and its feature extractor) that `AudioTagger.from_pretrained(path)` loads."""
    from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification

    torch.manual_seed(seed)
    cfg = ASTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, num_mel_bins=32, max_length=64,
                    patch_size=16, frequency_stride=16, time_stride=16, id2label=dict(enumerate(labels)), label2id={l: i for i, l in enumerate(labels)})
    path = Path(path)
    ASTForAudioClassification(cfg).eval().save_pretrained(path)
    ASTFeatureExtractor(num_mel_bins=32, max_length=64).save_pretrained(path)
    return path


def _tiny_clap_tokenizer(words: Sequence[str]) -> Any:
    """A word-level RoBERTa-style tokenizer (<s> ... </s>, pad 1) built with `tokenizers`."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for w in words:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def save_tiny_clap(path: str | os.PathLike, seed: int = 0) -> Path:
    """A tiny random CLAP (HTSAT audio tower, 2 s at 48 kHz; tiny text tower and local tokenizer)
    that `ClapJudge.from_pretrained(path)` loads."""
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor

    from musicgen_lens.tiny import WORDS

    torch.manual_seed(seed)
    tok = _tiny_clap_tokenizer(WORDS)
    cfg = ClapConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                         max_position_embeddings=64, pad_token_id=1, type_vocab_size=1),
        audio_config=dict(spec_size=64, num_mel_bins=16, patch_size=4, patch_stride=[4, 4], window_size=4, depths=[1, 1],
                          num_attention_heads=[1, 2], patch_embeds_hidden_size=16, hidden_size=32, enable_fusion=False),
        projection_dim=16,
    )
    path = Path(path)
    ClapModel(cfg).eval().save_pretrained(path)
    fe = ClapFeatureExtractor(feature_size=16, max_length_s=2, sampling_rate=48000, truncation="rand_trunc")
    ClapProcessor(feature_extractor=fe, tokenizer=tok).save_pretrained(path)
    return path
