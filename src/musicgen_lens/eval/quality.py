"""Quality of a generation: code entropy, flux and stationarity, Fréchet distance to the world's
real clips (`reference_clips`), and the feature rows of a set of clips (`_Featurized`)."""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from musicgen_lens.eval.features import _as_mono, _resample, mel_power
from musicgen_lens.eval.judges import ABSTAIN, ConceptClassifier, _features_or_none

def code_entropy(codes: Any, start: int = 0, end: int | None = None) -> np.ndarray:
    """Per-codebook entropy in bits of the codes' empirical distribution over frames
    `[start, end)`: codes `[n_codebooks, frames]` -> `[n_codebooks]`, or `[batch, n_codebooks,
    frames]` -> `[batch, n_codebooks]`. 0 for a constant codebook, log2(V) when each of V codes
    is used equally often; a steered run that falls into one stationary texture drops from ~4 to
    ~1 bit on codebook 0 of the toy model. The plug-in estimate is biased low for short windows
    (at most log2(frames)), so compare windows of one length."""
    c = codes.detach().cpu().numpy() if hasattr(codes, "detach") else np.asarray(codes)
    if c.ndim not in (2, 3):
        raise ValueError(f"codes must be [n_codebooks, frames] or [batch, n_codebooks, frames], got shape {c.shape}")
    w = c[..., start:end]
    if w.shape[-1] == 0:
        raise ValueError(f"the window [{start}, {end}) of {c.shape[-1]} frames is empty")
    rows = w.reshape(-1, w.shape[-1])
    out = np.empty(len(rows))
    for i, row in enumerate(rows):
        p = np.unique(row, return_counts=True)[1] / len(row)
        out[i] = max(0.0, float(-(p * np.log2(p)).sum()))
    return out.reshape(w.shape[:-1])


@dataclass
class AudioQuality:
    flux: float  # mean frame-to-frame change of the mel amplitudes relative to their mean norm: ~0 for a held texture
    stationarity: float  # mean cosine of each frame's mel spectrum with the clip's mean spectrum: 1 = one texture


def audio_quality(audio: Any, sr: int) -> AudioQuality:
    """Spectral flux and stationarity of a clip (loudness-normalised, 16 kHz, hop 16 ms).

    `flux` is the mean L2 norm of the frame-to-frame change of the mel amplitudes divided by their
    mean norm (scale-free; a held tone ~0.01, a clean melody of the world ~0.07-0.12, the toy
    model's generations ~0.2: the codec adds frame-to-frame noise).
    `stationarity` uses mel *amplitudes* (sqrt of band power) of the non-silent frames (within
    60 dB of the loudest): a held tone or drone scores ~1, a melody whose notes move its
    harmonics scores lower (real clips of the world: ~0.6-0.85). A silent clip scores 1 (it is
    as stationary as audio gets) with flux 0."""
    a = _resample(_as_mono(audio), sr)
    if np.abs(a).max() < 1e-6:
        return AudioQuality(0.0, 1.0)
    a = a / (np.sqrt(np.mean(a**2)) + 1e-9) * 0.1
    mel = mel_power(a)
    energy = mel.sum(1)
    keep = energy > energy.max() * 1e-6
    amp = np.sqrt(mel[keep])
    flux = float(np.linalg.norm(np.diff(amp, axis=0), axis=1).mean() / (np.linalg.norm(amp, axis=1).mean() + 1e-12)) if len(amp) > 1 else 0.0
    mean = amp.mean(0)
    cos = (amp @ mean) / (np.linalg.norm(amp, axis=1) * np.linalg.norm(mean) + 1e-12)
    return AudioQuality(flux, float(cos.mean()))


def stationarity(audio: Any, sr: int) -> float:
    """`audio_quality(audio, sr).stationarity`."""
    return audio_quality(audio, sr).stationarity


def spectral_flux(audio: Any, sr: int) -> float:
    """`audio_quality(audio, sr).flux`."""
    return audio_quality(audio, sr).flux


def gaussian_stats(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (ddof 1) of embeddings [n, d]."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or len(X) < 2:
        raise ValueError(f"need at least 2 embeddings [n, d], got shape {X.shape}")
    return X.mean(0), np.atleast_2d(np.cov(X, rowvar=False))


def frechet_distance(a: Any, b: Any, eps: float = 1e-6) -> float:
    """Fréchet distance between Gaussians fitted to two embedding sets (FAD's formula):
    |mu_a - mu_b|^2 + tr(S_a + S_b - 2 sqrt(S_a S_b)). `a`, `b`: embeddings [n, d] or
    (mean, covariance) from `gaussian_stats`. Guards: `eps` on the diagonals when the product's
    square root is singular or not finite, the real part of a slightly complex root, and never
    below 0. ~0 for a set against itself; with few clips (n < d) the covariances are singular and
    the value carries a bias that grows as n shrinks, so compare sets of one size."""
    from scipy.linalg import sqrtm

    mu1, s1 = a if isinstance(a, tuple) else gaussian_stats(a)
    mu2, s2 = b if isinstance(b, tuple) else gaussian_stats(b)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        covmean = sqrtm(s1 @ s2)
        if not np.isfinite(covmean).all():
            off = np.eye(len(s1)) * eps
            covmean = sqrtm((s1 + off) @ (s2 + off))
    covmean = np.real(covmean)
    diff = mu1 - mu2
    return float(max(0.0, diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)))


@dataclass
class Reference:
    """The world's real clips for quality comparisons: clean, through the codec, and the codec's codes."""

    clean: np.ndarray  # [n, samples]
    reconstructed: np.ndarray | None  # [n, samples] or None without a model
    codes: np.ndarray | None  # [n, n_codebooks, frames]
    sample_rate: int
    frame_rate: float

    def window(self, start: float = 0.0, end: float | None = None) -> "Reference":
        """The same clips cut to seconds [start, end)."""
        s, e = int(round(start * self.sample_rate)), None if end is None else int(round(end * self.sample_rate))
        fs, fe = int(round(start * self.frame_rate)), None if end is None else int(round(end * self.frame_rate))
        return Reference(self.clean[:, s:e], None if self.reconstructed is None else self.reconstructed[:, s:e],
                         None if self.codes is None else self.codes[..., fs:fe], self.sample_rate, self.frame_rate)


_REFERENCES: "weakref.WeakKeyDictionary[Any, dict[tuple[int, int], Reference]]" = weakref.WeakKeyDictionary()


def _resample_to(a: np.ndarray, sr: int, to: int) -> np.ndarray:
    if sr == to:
        return np.asarray(a, dtype=np.float32)
    import soxr

    return soxr.resample(np.asarray(a, dtype=np.float32), sr, to, quality="HQ").astype(np.float32)


def reference_clips(model: Any, n: int = 100, seed: int = 1) -> Reference:
    """`n` clips of the world's test split (under the judges' seed: clips neither the toy model
    nor the judges trained on) at the model's rate, with their codec reconstructions and codes;
    memoised per codec."""
    import torch

    from musicgen_lens.data.synth import make_dataset
    from musicgen_lens.training.data import WORLD

    memo = _REFERENCES.setdefault(model.codec, {})
    if (n, seed) not in memo:
        clean = np.stack([_resample_to(c.audio, WORLD["sample_rate"], model.sample_rate) for c in make_dataset(n, **{**WORLD, "seed": seed}, split="test")])
        rec, codes = [], []
        with torch.no_grad():
            for i in range(0, n, 50):
                x = torch.from_numpy(np.ascontiguousarray(clean[i : i + 50]))[:, None].to(model.device)
                c = model.encode(x)
                codes.append(c.cpu().numpy())
                rec.append(model.decode(c).float().mean(1)[:, : clean.shape[-1]].cpu().numpy())
        memo[(n, seed)] = Reference(clean, np.concatenate(rec), np.concatenate(codes), model.sample_rate, model.frame_rate)
    return memo[(n, seed)]


@dataclass
class _Featurized:
    """Feature rows of a set of clips (zeros for a silent clip, flagged in `silent`)."""

    X: np.ndarray
    silent: np.ndarray

    @classmethod
    def of(cls, audios: Sequence[Any], sr: int) -> "_Featurized":
        feats, silent = _features_or_none(audios, sr)
        d = next((len(f) for f in feats if f is not None), 1)
        return cls(np.stack([f if f is not None else np.zeros(d, np.float32) for f in feats]), silent)

    def labels(self, judge: ConceptClassifier) -> np.ndarray:
        out = judge.predict_features(self.X) if len(self.X) else np.empty(0, object)
        out[self.silent] = ABSTAIN
        return out

    def proba_of(self, judge: ConceptClassifier, label: str) -> np.ndarray:
        p = judge.proba_of_features(self.X, label)
        p[self.silent] = 0.0
        return p

    def frechet(self, judge: ConceptClassifier, reference: np.ndarray) -> float:
        """Fréchet distance of the non-silent clips to `reference` features, in `judge`'s space."""
        X = self.X[~self.silent]
        return frechet_distance(judge.standardize(X), judge.standardize(reference)) if len(X) >= 2 else float("nan")


def _clip_quality(codes: Sequence[Any], audios: Sequence[np.ndarray], frame: int, sr: int) -> tuple[np.ndarray, list[AudioQuality]]:
    return np.stack([code_entropy(c, start=frame) for c in codes]), [audio_quality(a, sr) for a in audios]


def _quality_summary(entropy: np.ndarray, aq: Sequence[AudioQuality], suffix: str = "") -> dict[str, Any]:
    return {f"entropy_cb0{suffix}": float(entropy[:, 0].mean()), f"entropy_per_codebook{suffix}": [round(float(e), 4) for e in entropy.mean(0)],
            f"stationarity{suffix}": float(np.mean([q.stationarity for q in aq])), f"flux{suffix}": float(np.mean([q.flux for q in aq]))}
