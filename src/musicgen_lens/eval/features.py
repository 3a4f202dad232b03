"""Audio features of the synthetic world: the judges' feature vector, onsets, chroma, tempo, and
`fidelity` between two renderings (chroma and onset correlation, tempo kept), and `beat_rank` /
`on_tempo`: whether the onsets follow one known tempo.

Everything is computed with librosa (STFT, mel and chroma filter banks, MFCC, onset strength,
tempo) on 16 kHz mono. The judges' front end is deliberately *independent* of the model's own:
MusicGen hears audio only through EnCodec codes, and a judge that used the codec (or the model's
activations) would reward steering that moves the codes toward whatever the codec maps to a
label, not toward audio a listener hears as that label. A fixed, textbook spectral front end
cannot be gamed by the model it judges; `codec_classifier` is the one judge that is trained on
codec reconstructions on purpose (it is keyed by the codec's fingerprint and reported beside the
clean judge, never alone).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

FEATURE_SR = 16000
_N_FFT, _HOP, _N_MELS, _N_MFCC = 1024, 256, 64, 20
_FMIN = 30.0


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
def _filters() -> tuple[np.ndarray, np.ndarray]:
    """(mel [bins, 64], chroma [bins, 12]) filter banks, transposed so `power @ bank` applies them."""
    import librosa

    mel = librosa.filters.mel(sr=FEATURE_SR, n_fft=_N_FFT, n_mels=_N_MELS, fmin=_FMIN, fmax=FEATURE_SR / 2, norm="slaney", htk=False)
    chroma = librosa.filters.chroma(sr=FEATURE_SR, n_fft=_N_FFT, n_chroma=12)
    return mel.T.astype(np.float32), chroma.T.astype(np.float32)


def power_spectrogram(audio: np.ndarray) -> np.ndarray:
    """|STFT|^2 [frames, bins] of 16 kHz mono audio: librosa.stft, Hann window n_fft 1024, hop 256, centred."""
    import librosa

    a = np.asarray(audio, dtype=np.float32)
    pad = "constant" if len(a) <= _N_FFT // 2 else "reflect"  # reflect padding needs more samples than the pad
    return (np.abs(librosa.stft(a, n_fft=_N_FFT, hop_length=_HOP, window="hann", center=True, pad_mode=pad)) ** 2).T


def mel_power(audio: np.ndarray) -> np.ndarray:
    """Mel band power [frames, 64] of 16 kHz mono audio (slaney mel, 30 Hz - 8 kHz)."""
    return power_spectrogram(audio) @ _filters()[0]


def _spectrum(audio: Any, sr: int) -> np.ndarray:
    return power_spectrogram(_resample(_as_mono(audio), sr))


def _onset_from_mel(mel: np.ndarray) -> np.ndarray:
    """librosa's onset strength (half-wave rectified dB flux, mean over bands) per STFT frame."""
    import librosa

    db = librosa.power_to_db(mel.T, ref=np.max) if mel.size else mel.T
    return librosa.onset.onset_strength(S=db, sr=FEATURE_SR, hop_length=_HOP, center=False).astype(np.float32)


def _onset_from_spec(spec: np.ndarray) -> np.ndarray:
    return _onset_from_mel(spec @ _filters()[0])


def _chroma_from_spec(spec: np.ndarray) -> np.ndarray:
    c = spec @ _filters()[1]
    return c / (c.sum(1, keepdims=True) + 1e-9)


def _tempo_from_onset(env: np.ndarray, lo: float, hi: float) -> float:
    """librosa.feature.tempo on an onset envelope with a flat prior over [lo, hi] BPM."""
    import librosa
    import scipy.stats

    if len(env) < 4 or not np.any(env > 0):
        return float("nan")
    bpm = librosa.feature.tempo(onset_envelope=np.asarray(env, dtype=np.float32), sr=FEATURE_SR, hop_length=_HOP,
                                prior=scipy.stats.uniform(lo, hi - lo), max_tempo=hi)
    return float(bpm[0])


def onset_envelope(audio: Any, sr: int) -> np.ndarray:
    """librosa onset strength of the log-mel spectrogram per STFT frame (hop 256 at 16 kHz)."""
    return _onset_from_spec(_spectrum(audio, sr))


def chromagram(audio: Any, sr: int) -> np.ndarray:
    """[frames, 12] energy-normalised chroma (librosa's chroma filter bank on the power STFT)."""
    return _chroma_from_spec(_spectrum(audio, sr))


def tempo(audio: Any, sr: int, lo: float = 55.0, hi: float = 190.0) -> float:
    """BPM by librosa.feature.tempo on the onset envelope, restricted to [lo, hi] BPM."""
    return _tempo_from_onset(onset_envelope(audio, sr), lo, hi)


# `on_tempo`'s threshold on `beat_rank`, measured on the world's codec-reconstructed flute + tabla
# clips (2-s windows from second 2, the toy codec): 12 clips at 100 BPM rank 0.96-0.98, 12 at
# 70 / 83 / 122 / 140 BPM rank 0.52-0.94 (AUC 1.00); clean renderings 0.98 vs 0.70-0.88. A free
# tempo estimate (`tempo`) gets the 100 BPM of those reconstructions in 1 of 8 (67 or 188 BPM).
ON_TEMPO_RANK = 0.95


def min_beat_seconds(lo: float = 55.0) -> float:
    """The shortest audio `beat_rank` tests down to `lo` BPM (its onset envelope must span the slowest beat's lag)."""
    fps = FEATURE_SR / _HOP
    return (int(fps * 60 / lo) + 3) * _HOP / FEATURE_SR


def beat_rank(audio: Any, sr: int, bpm: float, lo: float = 55.0, hi: float = 190.0) -> float:
    """How well the onsets of `audio` fit a beat of `bpm`: the onset envelope's autocorrelation at
    the beat's lag (the best of half, one and two beats, as tempo estimators confuse octaves; +-1
    frame) as a percentile among its autocorrelations at every lag of a tempo in [lo, hi] BPM.
    1.0: no lag in that range fits better. Unlike `tempo` (a free estimate, which errs on
    2-s codec windows), this tests one known tempo, e.g. the melody's when a tabla is added."""
    import librosa

    if not lo <= bpm <= hi:
        raise ValueError(f"bpm must be in [{lo:g}, {hi:g}], got {bpm}")
    env = onset_envelope(audio, sr).astype(np.float64)
    fps = FEATURE_SR / _HOP
    lags = np.arange(int(np.ceil(fps * 60 / hi)), int(fps * 60 / lo) + 1)
    if len(env) < lags[-1] + 2:
        raise ValueError(f"audio is too short for a beat test down to {lo:g} BPM: {len(env) / fps:.2f} s, needs at least "
                         f"{min_beat_seconds(lo):.2f} s")
    if env.std() == 0:  # no onsets (silence, a held tone): nothing follows any beat
        return 0.0
    ac = librosa.autocorrelate(env - env.mean())
    ac = ac / ac[0]
    beat = fps * 60 / bpm
    cands = [int(round(beat * k)) for k in (0.5, 1.0, 2.0) if round(beat * k) + 1 < len(ac)]
    score = max(ac[max(c - 1, 1):c + 2].max() for c in cands)
    return float(np.mean(ac[lags] < score))


def on_tempo(audio: Any, sr: int, bpm: float, threshold: float = ON_TEMPO_RANK) -> bool:
    """The onsets follow a beat of `bpm` (`beat_rank` >= `threshold`)."""
    return beat_rank(audio, sr, bpm) >= threshold


def features(audio: Any, sr: int) -> np.ndarray:
    """One feature vector per clip, length-independent and loudness-invariant (the clip is scaled
    to RMS 0.1): log-mel (dB/10) band means and stds, 20 MFCCs (of the dB mel) mean and std, the
    mean |delta| and std of the MFCC deltas, spectral centroid (kHz) mean/std, flatness mean/std,
    onset strength (/10) mean, std and 90th percentile. The /10 keeps every group near unit scale
    for the judges' covariance-based out-of-distribution score."""
    import librosa

    a = _resample(_as_mono(audio), sr)
    if np.abs(a).max() < 1e-6:
        raise ValueError("audio is silent; there is nothing to classify")
    a = a / (np.sqrt(np.mean(a**2)) + 1e-9) * 0.1
    spec = power_spectrogram(a)
    mel = spec @ _filters()[0]
    db = librosa.power_to_db(mel.T, ref=1.0, amin=1e-10)  # [64, frames], absolute: the clip is already normalised
    mfcc = librosa.feature.mfcc(S=db, n_mfcc=_N_MFCC)  # [20, frames]
    d_mfcc = np.diff(mfcc, axis=1)
    centroid = librosa.feature.spectral_centroid(S=np.sqrt(spec.T), sr=FEATURE_SR, n_fft=_N_FFT)[0] / 1000
    flatness = librosa.feature.spectral_flatness(S=spec.T, power=1.0)[0]
    onset = librosa.onset.onset_strength(S=db, sr=FEATURE_SR, hop_length=_HOP, center=False) / 10
    return np.concatenate([
        db.mean(1) / 10, db.std(1) / 10, mfcc.mean(1) / 10, mfcc.std(1) / 10, np.abs(d_mfcc).mean(1) / 10, d_mfcc.std(1) / 10,
        [centroid.mean(), centroid.std(), flatness.mean(), flatness.std(), onset.mean(), onset.std(), np.percentile(onset, 90)],
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
