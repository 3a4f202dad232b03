"""Audio features of the synthetic world: the judges' feature vector, onsets, chroma, tempo, and
`fidelity` between two renderings (chroma and onset correlation, tempo kept)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

FEATURE_SR = 16000
_N_FFT, _HOP, _N_MELS, _N_MFCC = 1024, 256, 64, 20


def _as_mono(audio: Any) -> np.ndarray:
    a = audio.detach().float().cpu().numpy() if hasattr(audio, "detach") else np.asarray(audio, dtype=np.float32)
    if a.ndim == 2:
        a = a.mean(0) if a.shape[0] <= 2 else a.mean(1)
    if a.ndim != 1:
        raise ValueError(f"audio must be [samples] or [channels, samples], got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError("audio contains NaN or inf")
    return a.astype(np.float32)


def _resample(a: np.ndarray, sr: int) -> np.ndarray:
    if sr == FEATURE_SR:
        return a
    import soxr

    return soxr.resample(a, sr, FEATURE_SR, quality="HQ").astype(np.float32)


@functools.lru_cache(maxsize=None)
def _filters() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from scipy.fft import dct
    from transformers.audio_utils import chroma_filter_bank, mel_filter_bank

    mel = mel_filter_bank(num_frequency_bins=_N_FFT // 2 + 1, num_mel_filters=_N_MELS, min_frequency=30.0, max_frequency=FEATURE_SR / 2,
                          sampling_rate=FEATURE_SR, norm="slaney", mel_scale="slaney")
    chroma = chroma_filter_bank(num_frequency_bins=_N_FFT, num_chroma=12, sampling_rate=FEATURE_SR)
    dct_m = dct(np.eye(_N_MELS), type=2, norm="ortho", axis=0)[:_N_MFCC]
    return mel.astype(np.float32), chroma.T.astype(np.float32), dct_m.astype(np.float32)


def _power_spec(a: np.ndarray) -> np.ndarray:
    """|STFT|^2 [frames, bins], Hann window, centred like librosa."""
    a = np.pad(a, _N_FFT // 2, mode="reflect") if len(a) > _N_FFT // 2 else np.pad(a, (_N_FFT // 2, _N_FFT // 2))
    n = 1 + max(0, (len(a) - _N_FFT) // _HOP)
    frames = np.lib.stride_tricks.as_strided(a, (n, _N_FFT), (a.strides[0] * _HOP, a.strides[0]))
    return np.abs(np.fft.rfft(frames * np.hanning(_N_FFT + 1)[:-1].astype(np.float32), axis=1)) ** 2


def _spectrum(audio: Any, sr: int) -> np.ndarray:
    return _power_spec(_resample(_as_mono(audio), sr))


def _flux(logmel: np.ndarray) -> np.ndarray:
    """Half-wave rectified log-mel flux per STFT frame (0 for the first)."""
    return np.concatenate([[0.0], np.maximum(np.diff(logmel, axis=0), 0).mean(1)])


def _onset_from_spec(spec: np.ndarray) -> np.ndarray:
    return _flux(np.log(spec @ _filters()[0] + 1e-6))


def _chroma_from_spec(spec: np.ndarray) -> np.ndarray:
    c = spec @ _filters()[1]
    return c / (c.sum(1, keepdims=True) + 1e-9)


def _tempo_from_onset(env: np.ndarray, lo: float, hi: float) -> float:
    env = env - env.mean()
    ac = np.correlate(env, env, "full")[len(env) - 1 :]
    fps = FEATURE_SR / _HOP
    lags = np.arange(len(ac))
    ok = (lags >= fps * 60 / hi) & (lags <= fps * 60 / lo)
    if not ok.any():
        return float("nan")
    return float(60 * fps / lags[ok][np.argmax(ac[ok])])


def onset_envelope(audio: Any, sr: int) -> np.ndarray:
    """Half-wave rectified log-mel flux per STFT frame (hop 256 at 16 kHz)."""
    return _onset_from_spec(_spectrum(audio, sr))


def chromagram(audio: Any, sr: int) -> np.ndarray:
    """[frames, 12] energy-normalised chroma."""
    return _chroma_from_spec(_spectrum(audio, sr))


def tempo(audio: Any, sr: int, lo: float = 55.0, hi: float = 190.0) -> float:
    """BPM from the onset envelope's autocorrelation (peak lag within [lo, hi] BPM)."""
    return _tempo_from_onset(onset_envelope(audio, sr), lo, hi)


def features(audio: Any, sr: int) -> np.ndarray:
    """One feature vector per clip (see module docstring); length-independent."""
    a = _resample(_as_mono(audio), sr)
    if np.abs(a).max() < 1e-6:
        raise ValueError("audio is silent; there is nothing to classify")
    a = a / (np.sqrt(np.mean(a**2)) + 1e-9) * 0.1  # loudness-invariant
    mel_fb, _, dct_m = _filters()
    spec = _power_spec(a)
    logmel = np.log(spec @ mel_fb + 1e-6)
    mfcc = logmel @ dct_m.T
    d_mfcc = np.diff(mfcc, axis=0)
    freqs = np.linspace(0, FEATURE_SR / 2, spec.shape[1])
    p = spec / (spec.sum(1, keepdims=True) + 1e-12)
    centroid = (p * freqs).sum(1)
    flatness = np.exp(np.log(spec + 1e-12).mean(1)) / (spec.mean(1) + 1e-12)
    onset = _flux(logmel)
    return np.concatenate([
        logmel.mean(0), logmel.std(0), mfcc.mean(0), mfcc.std(0), np.abs(d_mfcc).mean(0), d_mfcc.std(0),
        [centroid.mean() / 1000, centroid.std() / 1000, flatness.mean(), flatness.std(), onset.mean(), onset.std(),
         np.percentile(onset, 90)],
    ]).astype(np.float32)


@dataclass
class Fidelity:
    chroma_corr: float  # mean per-frame correlation of chroma (pitch content kept)
    onset_corr: float  # correlation of onset envelopes (rhythm kept)
    tempo_reference: float
    tempo_other: float

    @property
    def tempo_kept(self) -> bool:
        """Within 4%, or an octave error of the estimator (double/half)."""
        r = self.tempo_other / self.tempo_reference
        return any(abs(r - m) <= 0.04 * m for m in (0.5, 1.0, 2.0))

    @property
    def score(self) -> float:
        return 0.5 * (self.chroma_corr + self.onset_corr)


def fidelity(reference: Any, other: Any, sr: int) -> Fidelity:
    """How much of `reference` (e.g. the unsteered generation) survives in `other`."""
    spec_a, spec_b = _spectrum(reference, sr), _spectrum(other, sr)  # one STFT each, shared below
    ca, cb = _chroma_from_spec(spec_a), _chroma_from_spec(spec_b)
    n = min(len(ca), len(cb))
    ca, cb = ca[:n] - ca[:n].mean(1, keepdims=True), cb[:n] - cb[:n].mean(1, keepdims=True)
    per_frame = (ca * cb).sum(1) / (np.linalg.norm(ca, axis=1) * np.linalg.norm(cb, axis=1) + 1e-9)
    oa, ob = _onset_from_spec(spec_a), _onset_from_spec(spec_b)
    n = min(len(oa), len(ob))
    onset_corr = float(np.corrcoef(oa[:n], ob[:n])[0, 1]) if n > 2 and oa[:n].std() > 0 and ob[:n].std() > 0 else 0.0
    return Fidelity(float(per_frame.mean()), onset_corr, _tempo_from_onset(oa, 55.0, 190.0), _tempo_from_onset(ob, 55.0, 190.0))
