"""Measuring the synthetic world: a concept classifier, and fidelity between two renderings.

`ConceptClassifier` is a scikit-learn pipeline on hand-made audio features (log-mel band
statistics, MFCCs and their deltas, spectral shape, onset rhythm) trained on *clean* synthetic
clips. It is the judge for everything the toy model does: is a codec reconstruction still a
violin, did the prompt "flute melody" give a flute, did steering turn the trumpet into a
violin? `fidelity` compares a steered generation with the unsteered one (same seed): chroma
and onset-envelope correlation and whether the tempo is kept.

A judge that hears the target is not enough: strong steering can collapse the generation into
one stationary texture that the judges still label with confidence. So the judges abstain on
out-of-distribution clips (`ConceptClassifier.predict`), the quality of a generation is measured
(`code_entropy`, `audio_quality`: flux and stationarity, `frechet_distance` to the world's real
clips in the judge's feature space), and `steering_verdict` calls a steered clip a success only
if the target is heard, it has not collapsed relative to the unsteered run with the same seed
and the prompted attribute that was not steered is kept; `summarize_verdicts` aggregates over
seeds. The fitted judges are cached on disk (`judge_cache_dir`; safetensors + JSON, checked).

    python -m musicgen_lens.eval --help     # the measurements reported in the README
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import warnings
import weakref
from collections.abc import Sequence
import dataclasses
from dataclasses import dataclass
from pathlib import Path
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


ABSTAIN = "abstain"


class ConceptClassifier:
    """scikit-learn classifier of one label (e.g. "instrument") from audio, with the sklearn API,
    plus an out-of-distribution rule: `predict` says "abstain" for a clip far from every class.

    Far is the Mahalanobis distance, in the standardized features the classifier sees, to the
    nearest class mean (pooled within-class covariance, shrunk towards its mean variance by
    `shrinkage`), above `ood_threshold`: the `ood_quantile` (99%) of held-out real clips'
    distances (5-fold, out-of-fold: each clip's distance is measured by means and covariance
    fitted without it, and a clip's degraded copy is in its fold). About 1% of real clips from
    the training distribution abstain by construction; a silent clip always does.
    """

    def __init__(self, concept: str = "instrument", C: float = 1.0, ood_quantile: float = 0.99, shrinkage: float = 0.1):
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        self.concept, self.C, self.ood_quantile, self.shrinkage = concept, C, ood_quantile, shrinkage
        self.pipeline = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=3000))
        self.class_means_: np.ndarray | None = None  # [classes, features], standardized
        self.precision_: np.ndarray | None = None  # [features, features]
        self.ood_threshold: float = float("inf")

    def featurize(self, audios: Sequence[Any], sr: int) -> np.ndarray:
        return np.stack([features(a, sr) for a in audios])

    def fit(self, audios: Sequence[Any], labels: Sequence[str], sr: int = FEATURE_SR) -> "ConceptClassifier":
        return self.fit_features(self.featurize(audios, sr), labels)

    def fit_features(self, X: np.ndarray, labels: Sequence[str], groups: Sequence[int] | None = None) -> "ConceptClassifier":
        """Fit on feature rows (`features`); rows with one `groups` value (a clip and its
        degraded copy) stay in one fold of the OOD calibration."""
        labels = np.asarray(labels)
        self.pipeline.fit(X, list(labels))
        Z = self.standardize(X)
        self.class_means_, self.precision_ = self._gaussians(Z, labels)
        groups = np.arange(len(Z)) if groups is None else np.asarray(groups)
        fold = np.random.default_rng(0).permutation(np.unique(groups).size)[np.unique(groups, return_inverse=True)[1]] % 5
        oof = np.full(len(Z), np.nan)
        for k in range(5):
            held = fold == k
            if held.all() or not held.any() or len(np.unique(labels[~held])) < 2:
                continue
            means, prec = self._gaussians(Z[~held], labels[~held])
            oof[held] = _mahalanobis_min(Z[held], means, prec)
        oof = oof[np.isfinite(oof)]
        self.ood_threshold = float(np.quantile(oof, self.ood_quantile)) if len(oof) else float("inf")
        return self

    def _gaussians(self, Z: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        classes = [c for c in self.classes_ if (labels == c).any()]
        means = np.stack([Z[labels == c].mean(0) for c in classes])
        resid = Z - means[[classes.index(c) for c in labels]]
        cov = resid.T @ resid / max(1, len(Z) - len(classes))
        cov = (1 - self.shrinkage) * cov + self.shrinkage * np.mean(np.diag(cov)) * np.eye(len(cov))
        return means, np.linalg.inv(cov)

    @property
    def classes_(self) -> np.ndarray:
        return self.pipeline.classes_

    def standardize(self, X: np.ndarray) -> np.ndarray:
        """Feature rows as the classifier sees them (the pipeline's StandardScaler)."""
        return self.pipeline[0].transform(np.asarray(X, dtype=np.float64)) if hasattr(self.pipeline[0], "mean_") else np.asarray(X, np.float64)

    def embed(self, audios: Sequence[Any], sr: int = FEATURE_SR) -> np.ndarray:
        """[clips, features]: the standardized features (the space of `frechet_distance`)."""
        return self.standardize(self.featurize(audios, sr))

    def ood_distance(self, X: np.ndarray) -> np.ndarray:
        """Mahalanobis distance of feature rows to the nearest class mean (standardized space)."""
        if self.class_means_ is None or self.precision_ is None:
            return np.zeros(len(X))
        return _mahalanobis_min(self.standardize(X), self.class_means_, self.precision_)

    def predict_features(self, X: np.ndarray, abstain: bool = True) -> np.ndarray:
        pred = np.asarray(self.pipeline.predict(X)).astype(object)
        if abstain:
            pred[self.ood_distance(X) > self.ood_threshold] = ABSTAIN
        return pred

    def predict(self, audios: Sequence[Any], sr: int = FEATURE_SR, abstain: bool = True) -> np.ndarray:
        """One label per clip; with `abstain`, "abstain" for an out-of-distribution or silent clip."""
        if not abstain:
            return self.pipeline.predict(self.featurize(audios, sr))
        feats, silent = _features_or_none(audios, sr)
        out = np.full(len(feats), ABSTAIN, dtype=object)
        if (~silent).any():
            out[~silent] = self.predict_features(np.stack([f for f in feats if f is not None]))
        return out

    def predict_proba(self, audios: Sequence[Any], sr: int = FEATURE_SR) -> np.ndarray:
        return self.pipeline.predict_proba(self.featurize(audios, sr))

    def proba_of(self, audios: Sequence[Any], label: str, sr: int = FEATURE_SR) -> np.ndarray:
        return self.proba_of_features(self.featurize(audios, sr), label)

    def proba_of_features(self, X: np.ndarray, label: str) -> np.ndarray:
        if label not in self.classes_:
            raise ValueError(f"{label!r} is not a class of this classifier; classes: {list(self.classes_)}")
        return self.pipeline.predict_proba(X)[:, list(self.classes_).index(label)]

    def score(self, audios: Sequence[Any], labels: Sequence[str], sr: int = FEATURE_SR) -> float:
        """Accuracy; an abstention counts as wrong."""
        return float(np.mean(self.predict(audios, sr) == np.asarray(labels, dtype=object)))

    # -- state for the disk cache: arrays (safetensors) and JSON, never pickle
    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        scaler, logreg = self.pipeline[0], self.pipeline[-1]
        arrays = {"scaler.mean": scaler.mean_, "scaler.scale": scaler.scale_, "scaler.var": scaler.var_,
                  "logreg.coef": logreg.coef_, "logreg.intercept": logreg.intercept_,
                  "ood.class_means": self.class_means_, "ood.precision": self.precision_}
        meta = {"concept": self.concept, "C": self.C, "ood_quantile": self.ood_quantile, "shrinkage": self.shrinkage,
                "ood_threshold": self.ood_threshold, "classes": [str(c) for c in self.classes_],
                "n_samples_seen": int(scaler.n_samples_seen_), "n_iter": [int(i) for i in logreg.n_iter_]}
        return {k: np.ascontiguousarray(v) for k, v in arrays.items()}, meta  # dtypes as fitted: bit-identical reloads

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> "ConceptClassifier":
        d, k = len(arrays["scaler.mean"]), len(meta["classes"])
        shapes = {"scaler.scale": (d,), "scaler.var": (d,), "logreg.coef": (1 if k == 2 else k, d), "logreg.intercept": (1 if k == 2 else k,),
                  "ood.class_means": (k, d), "ood.precision": (d, d)}
        bad = [name for name, shape in shapes.items() if arrays[name].shape != shape]
        if bad or k < 2:
            raise ValueError(f"inconsistent judge state: {bad or 'fewer than 2 classes'}")
        clf = cls(meta["concept"], C=meta["C"], ood_quantile=meta["ood_quantile"], shrinkage=meta["shrinkage"])
        scaler, logreg = clf.pipeline[0], clf.pipeline[-1]
        scaler.mean_, scaler.scale_, scaler.var_ = arrays["scaler.mean"], arrays["scaler.scale"], arrays["scaler.var"]
        scaler.n_features_in_ = logreg.n_features_in_ = len(scaler.mean_)
        scaler.n_samples_seen_ = np.int64(meta["n_samples_seen"])
        logreg.coef_, logreg.intercept_ = arrays["logreg.coef"], arrays["logreg.intercept"]
        logreg.classes_ = np.asarray(meta["classes"])
        logreg.n_iter_ = np.asarray(meta["n_iter"], dtype=np.int32)
        clf.class_means_, clf.precision_ = arrays["ood.class_means"], arrays["ood.precision"]
        clf.ood_threshold = float(meta["ood_threshold"])
        return clf


def _mahalanobis_min(Z: np.ndarray, means: np.ndarray, precision: np.ndarray) -> np.ndarray:
    diff = Z[:, None, :] - means[None]  # [rows, classes, features]
    return np.sqrt(np.maximum(np.einsum("rcf,fg,rcg->rc", diff, precision, diff), 0)).min(1)


def _features_or_none(audios: Sequence[Any], sr: int) -> tuple[list[np.ndarray | None], np.ndarray]:
    """Each clip's features, or None for a silent clip (`features` refuses those)."""
    out: list[np.ndarray | None] = []
    for a in audios:
        try:
            out.append(features(a, sr))
        except ValueError as e:
            if "silent" not in str(e):
                raise
            out.append(None)
    return out, np.asarray([f is None for f in out], dtype=bool)


@functools.lru_cache(maxsize=2)
def _judge_clips(n: int, seed: int) -> tuple[np.ndarray, tuple[dict[str, Any], ...]]:
    """The judges' training clips: the world's train split under a seed the toy model never saw."""
    from musicgen_lens.data.synth import make_dataset
    from musicgen_lens.training.data import WORLD

    clips = make_dataset(n, **{**WORLD, "seed": seed}, split="train")
    return np.stack([c.audio for c in clips]), tuple(c.labels for c in clips)


def _judge_features(audio: np.ndarray, sr: int, seed: int) -> np.ndarray:
    """Each clip once as is and once through `degrade`."""
    rng = np.random.default_rng(seed)
    return np.stack([features(x, sr) for a in audio for x in (a, degrade(a, sr, rng))])


def _fit_judge(concept: str, X: np.ndarray, labels: Sequence[dict[str, Any]]) -> ConceptClassifier:
    # each clip's two rows (as is, degraded) share a group: one fold of the OOD calibration
    return ConceptClassifier(concept).fit_features(X, [row[concept] for row in labels for _ in range(2)], groups=np.arange(len(X)) // 2)


def degrade(audio: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Generic (not codec-specific) damage for robustness: a random low-pass and noise at
    15-40 dB SNR. The judge sees each clean clip once as is and once degraded, so it keys on
    timbre and rhythm rather than on the exact noise floor or top octave."""
    from scipy.signal import butter, sosfilt

    cutoff = rng.uniform(3000, 7500)
    out = sosfilt(butter(4, min(cutoff, 0.45 * sr), fs=sr, output="sos"), audio)
    noise = rng.standard_normal(len(audio)) * np.sqrt(np.mean(out**2)) * 10 ** (-rng.uniform(15, 40) / 20)
    return (out + noise).astype(np.float32)


@functools.lru_cache(maxsize=4)
def _clean_features(n: int, seed: int) -> np.ndarray:
    from musicgen_lens.training.data import WORLD

    return _judge_features(_judge_clips(n, seed)[0], WORLD["sample_rate"], seed)


# --------------------------------------------------------------------------- the judges' disk cache

# Bump when features(), degrade(), the judge's clips or its fit change: cached judges then rebuild.
JUDGE_VERSION = 1


def judge_cache_dir() -> Path:
    """`$MUSICGEN_LENS_CACHE/judges`, else `~/.cache/musicgen_lens/judges`."""
    root = os.environ.get("MUSICGEN_LENS_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "musicgen_lens") / "judges"


def judge_key(**what: Any) -> tuple[str, dict[str, Any]]:
    """A fingerprint of everything that built a judge: (file stem, the JSON-able description)."""
    from musicgen_lens.training.data import WORLD

    desc = {"version": JUDGE_VERSION, "world": {k: list(v) if isinstance(v, tuple) else v for k, v in WORLD.items()}, **what}
    blob = json.dumps(desc, sort_keys=True, default=str)
    return f"{what.get('kind', 'judge')}-{what.get('concept', '')}-{hashlib.sha256(blob.encode()).hexdigest()[:20]}", json.loads(blob)


def save_judge(clf: ConceptClassifier, stem: str, desc: dict[str, Any], directory: str | os.PathLike | None = None) -> Path:
    """Write `clf` as `<stem>.safetensors` (its arrays) + `<stem>.json` (classes, threshold, what
    built it, and the sha256 of the safetensors file), each atomically; the JSON last, so a
    judge is complete once its JSON exists. Returns the JSON's path."""
    from safetensors.numpy import save

    from musicgen_lens._atomic import atomic_path, atomic_write_text

    directory = Path(directory) if directory is not None else judge_cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    arrays, meta = clf.state()
    blob = save(arrays)
    with atomic_path(directory / f"{stem}.safetensors") as tmp:
        tmp.write_bytes(blob)
    record = {"format": "musicgen_lens.judge", "key": desc, "sha256": hashlib.sha256(blob).hexdigest(), "judge": meta}
    atomic_write_text(directory / f"{stem}.json", json.dumps(record, indent=1, sort_keys=True) + "\n")
    return directory / f"{stem}.json"


def load_judge(stem: str, desc: dict[str, Any], directory: str | os.PathLike | None = None) -> ConceptClassifier:
    """The judge saved under `stem`; raises (FileNotFoundError, ValueError) when it is missing,
    was built from something else than `desc`, or its arrays fail the checksum."""
    from safetensors.numpy import load

    directory = Path(directory) if directory is not None else judge_cache_dir()
    record = json.loads((directory / f"{stem}.json").read_text())
    if record.get("format") != "musicgen_lens.judge" or record.get("key") != desc:
        raise ValueError(f"{directory / stem}.json describes another judge")
    blob = (directory / f"{stem}.safetensors").read_bytes()
    if hashlib.sha256(blob).hexdigest() != record["sha256"]:
        raise ValueError(f"{directory / stem}.safetensors fails its checksum")
    return ConceptClassifier.from_state(load(blob), record["judge"])


def _cached_judge(desc_kw: dict[str, Any], build: Any, cache: bool = True) -> ConceptClassifier:
    """Load the judge `desc_kw` describes from the disk cache, or `build()` it and save it; a
    missing file is built quietly, a corrupt or mismatched one is rebuilt with a warning."""
    if not cache:
        return build()
    stem, desc = judge_key(**desc_kw)
    if (judge_cache_dir() / f"{stem}.json").exists():
        try:
            return load_judge(stem, desc)
        except Exception as e:  # corrupt, tampered, truncated, another version: rebuild
            warnings.warn(f"rebuilding the cached judge {stem}: {e}", RuntimeWarning, stacklevel=3)
    clf = build()
    try:
        save_judge(clf, stem, desc)
    except OSError as e:  # a read-only cache still gives a judge
        warnings.warn(f"could not cache the judge {stem}: {e}", RuntimeWarning, stacklevel=3)
    return clf


@functools.lru_cache(maxsize=8)
def clean_classifier(concept: str = "instrument", n: int = 700, seed: int = 1, cache: bool = True) -> ConceptClassifier:
    """A classifier trained on `n` clean synthetic clips (the world's train split under a seed the
    toy model never saw), each also seen once through `degrade`; never on codec or model output.
    Memoised, and cached on disk (`judge_cache_dir`) unless `cache=False`."""
    return _cached_judge(dict(kind="clean", concept=concept, n=n, seed=seed),
                         lambda: _fit_judge(concept, _clean_features(n, seed), _judge_clips(n, seed)[1]), cache)


def reconstruct(model: Any, audio: np.ndarray, batch_size: int = 50) -> np.ndarray:
    """Mono clips [n, samples] at `model.sample_rate` through the model's codec (encode, decode)."""
    import torch

    out = []
    with torch.no_grad():
        for i in range(0, len(audio), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(audio[i : i + batch_size], dtype=np.float32))[:, None].to(model.device)
            out.append(model.decode(model.encode(x)).float().mean(1)[:, : audio.shape[-1]].cpu().numpy())
    return np.concatenate(out)


# per codec module (weakly held), per (n, seed): the codec judge's training features
_CODEC_FEATURES: "weakref.WeakKeyDictionary[Any, dict[tuple[int, int], np.ndarray]]" = weakref.WeakKeyDictionary()


def codec_classifier(model: Any, concept: str = "instrument", n: int = 700, seed: int = 1, cache: bool = True) -> ConceptClassifier:
    """The same judge trained on the model's codec reconstructions of the same clean clips
    (never on generations): it hears what the codec can express. A generation the clean judge
    gets wrong but this one gets right was spoiled by the codec, not by the language model; the
    two verdicts together tell the codec's share of an error from the decoder's. Cached on disk
    under the model's `weights_fingerprint` (a model without a state_dict is not cached)."""

    def build() -> ConceptClassifier:
        cached = _CODEC_FEATURES.setdefault(model.codec, {})
        if (n, seed) not in cached:
            audio, _ = _judge_clips(n, seed)
            cached[(n, seed)] = _judge_features(reconstruct(model, audio), model.sample_rate, seed)
        return _fit_judge(concept, cached[(n, seed)], _judge_clips(n, seed)[1])

    cache = cache and hasattr(model, "state_dict")
    desc = dict(kind="codec", concept=concept, n=n, seed=seed, weights=weights_fingerprint(model) if cache else None)
    return _cached_judge(desc, build, cache)


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


# ------------------------------------------------------------------------------- quality metrics


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
    mel = _power_spec(a) @ _filters()[0]
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


# -------------------------------------------------------------------------------------- verdicts

OUTCOMES = ("success", "collapse", "not_heard", "abstain", "attribute_lost")


@dataclass(frozen=True)
class Tolerance:
    """When a steered run still sounds like music: the issue's defaults.

    entropy_ratio: each clip's codebook-0 code entropy after the steering start must be at least
    this share of the unsteered run's (same seed). Codebook 0 carries the content (notes, onsets);
    the finer codebooks code residual detail and keep their entropy in a collapse (toy model,
    diff_means alpha 1 at the last layer: codebook 0 falls to 0.5-0.8x, the mean over
    codebooks only to ~0.92x). max_stationarity: above it a clip is one held texture; 0.98 is
    the 99th percentile of the codec's reconstructions of real clips of the world (2-s windows;
    clean clips: 0.94), since the toy model's unsteered generations already reach 0.97.
    frechet_ratio: the steered set's Fréchet distance to the real clips at most this multiple
    of the unsteered set's.
    """

    entropy_ratio: float = 0.8
    max_stationarity: float = 0.98
    frechet_ratio: float = 1.2


@dataclass
class Verdict:
    outcome: str  # one of OUTCOMES
    label: str  # the judge's label for the steered attribute ("abstain" when out of distribution)
    target: str
    kept_label: str | None = None  # the other judge's label for the attribute that was not steered
    kept: str | None = None  # what the prompt asked for it
    entropy: float = float("nan")
    entropy_reference: float = float("nan")
    stationarity: float = float("nan")
    collapsed: bool = False

    @property
    def success(self) -> bool:
        return self.outcome == "success"


def steering_verdict(
    label: str, target: str, *, entropy: float, entropy_reference: float, stationarity: float,
    kept_label: str | None = None, kept: str | None = None, kept_unsteered: str | None = None, tolerance: Tolerance = Tolerance(),
) -> Verdict:
    """One steered clip: "success" only if the target is heard (the judge's label is `target`,
    not "abstain"), the clip has not collapsed (code entropy >= `tolerance.entropy_ratio` x
    `entropy_reference`, the unsteered run's with the same seed, and stationarity <=
    `tolerance.max_stationarity`) and the prompted attribute that was not steered is kept
    (`kept_label == kept`, when given). Failures, first that applies: "collapse" (whatever the
    judge says: a collapsed texture is often labelled the target with confidence), "abstain",
    "not_heard", "attribute_lost". The set-level Fréchet check is `summarize_verdicts`'.

    `kept_unsteered`, the judge's label for that attribute on the unsteered run (same seed): when
    the unsteered run already lacks the prompted value, the steered run must keep the unsteered
    run's label instead (steering is not blamed for what the model never gave, but may not change
    it either); when the unsteered run abstained there is nothing to keep and no check."""
    if kept is not None and kept_unsteered is not None and kept_unsteered != kept:
        kept = None if kept_unsteered == ABSTAIN else kept_unsteered
    collapsed = bool(entropy < tolerance.entropy_ratio * entropy_reference or stationarity > tolerance.max_stationarity)
    if collapsed:
        outcome = "collapse"
    elif label == ABSTAIN:
        outcome = "abstain"
    elif label != target:
        outcome = "not_heard"
    elif kept is not None and kept_label != kept:
        outcome = "attribute_lost"
    else:
        outcome = "success"
    return Verdict(outcome, str(label), target, None if kept_label is None else str(kept_label), kept,
                   float(entropy), float(entropy_reference), float(stationarity), collapsed)


def _rate(k: int, n: int) -> tuple[float, float]:
    p = k / n if n else float("nan")
    return p, float(np.sqrt(p * (1 - p) / n)) if n else float("nan")


def summarize_verdicts(verdicts: Sequence[Verdict], frechet: float | None = None, frechet_reference: float | None = None,
                       tolerance: Tolerance = Tolerance()) -> dict[str, Any]:
    """Counts, rates and binomial standard errors of each outcome over seeds, plus the set check:
    `frechet_ok` when the steered set's Fréchet distance is at most `tolerance.frechet_ratio` x
    the unsteered set's (None when either is missing). `success_rate` is the share of
    successes if the set passes (or is not checked) and 0 if it fails; `success_rate_per_clip`
    ignores the set check."""
    n = len(verdicts)
    counts = {o: sum(v.outcome == o for v in verdicts) for o in OUTCOMES}
    out: dict[str, Any] = {"n": n, "counts": counts}
    for o in OUTCOMES:
        out[f"{o}_rate"], out[f"{o}_rate_se"] = _rate(counts[o], n)
    ok = None if frechet is None or frechet_reference is None else bool(frechet <= tolerance.frechet_ratio * frechet_reference)
    out.update(frechet=frechet, frechet_reference=frechet_reference, frechet_ok=ok, success_rate_per_clip=out["success_rate"],
               success_rate_per_clip_se=out["success_rate_se"])
    if ok is False:
        out["success_rate"], out["success_rate_se"] = 0.0, 0.0
    out["tolerance"] = dataclasses.asdict(tolerance)
    return out


# ---------------------------------------------------------------------------- the README's targets


def eval_codec(model: Any, n_per_instrument: int = 20, seed: int = 3) -> dict[str, float]:
    """Clean-trained classifier accuracy on clean test clips and on their codec reconstructions."""
    from musicgen_lens.data.synth import INSTRUMENTS, make_dataset
    from musicgen_lens.training.data import WORLD

    clips = make_dataset(n_per_instrument * len(INSTRUMENTS), **{**WORLD, "seed": seed}, split="test")
    clean = np.stack([c.audio for c in clips])
    rec = reconstruct(model, clean)
    out: dict[str, float] = {"clips": float(len(clips))}
    for concept in ("instrument", "style"):
        clf = clean_classifier(concept)
        labels = [c.labels[concept] for c in clips]
        out[f"{concept}_clean"] = clf.score(list(clean), labels, sr=model.sample_rate)
        out[f"{concept}_reconstructed"] = clf.score(list(rec), labels, sr=model.sample_rate)
    return out


def _generate_audio(model: Any, prompts: Sequence[str], seeds: Sequence[int], duration: float, **kw: Any) -> list[np.ndarray]:
    return _generate(model, prompts, seeds, duration, **kw)[1]


def _generate(model: Any, prompts: Sequence[str], seeds: Sequence[int], duration: float, **kw: Any) -> tuple[list[Any], list[np.ndarray]]:
    """Codes [n_codebooks, frames] and mono audio per (prompt, seed)."""
    import torch

    codes, audios = [], []
    for prompt, seed in zip(prompts, seeds):
        c = model.generate([prompt], duration=duration, seed=seed, progress=False, **kw)
        with torch.no_grad():
            audios.append(model.decode(c)[0].float().mean(0).cpu().numpy())
        codes.append(c[0].cpu())
    return codes, audios


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


def eval_prompts(model: Any, seeds_per_prompt: int = 8, duration: float = 4.0, style: str = "classical", codec_judge: bool = True,
                 tolerance: Tolerance = Tolerance(), n_reference: int = 100) -> dict[str, Any]:
    """Generate "<style> <instrument> melody" for every instrument; how often the judge agrees.

    `*_accuracy_se` is the binomial standard error: with 4 seeds per prompt, two samplers that
    draw differently gave 0.75 and 0.61 on the same model. `*_accuracy_codec_judge` asks
    `codec_classifier` instead: prompt adherence within what the codec can express. An
    abstention (out-of-distribution clip) counts as wrong.

    `quality_<concept>`: codebook-0 (and per-codebook) code entropy, stationarity and flux of the
    generations, their Fréchet distance to the world's real clips (`reference_clips`) in the
    clean judge's space and to the codec's reconstructions of them in the codec judge's, and the
    same for those real clips' own codes and audio. `verdict_<concept>`: per judge,
    `summarize_verdicts` of each generation with the prompted value as the target, the other
    prompted attribute as the one to keep, and as entropy reference the 10th percentile of the
    real clips' codebook-0 entropy (no unsteered run to compare with; no set-level check).
    """
    from musicgen_lens.data.synth import INSTRUMENTS, STYLES

    ref = reference_clips(model, n_reference).window(0.0, duration)
    sr = model.sample_rate
    ref_clean, ref_rec = _Featurized.of(list(ref.clean), ref.sample_rate).X, _Featurized.of(list(ref.reconstructed), sr).X
    ref_entropy = code_entropy(ref.codes)
    entropy_reference = float(np.quantile(ref_entropy[:, 0], 0.1))
    out: dict[str, Any] = {}
    for concept, other, values, template, keep in (("instrument", "style", INSTRUMENTS, f"{style} {{}} melody", style),
                                                  ("style", "instrument", STYLES, "{} trumpet melody", "trumpet")):
        prompts = [template.format(v) for v in values for _ in range(seeds_per_prompt)]
        labels = np.asarray([v for v in values for _ in range(seeds_per_prompt)])
        codes, audios = _generate(model, prompts, [i % seeds_per_prompt for i in range(len(prompts))], duration)
        feats = _Featurized.of(audios, sr)
        entropy, aq = _clip_quality(codes, audios, 0, sr)
        judges = [("", "clean", clean_classifier(concept), clean_classifier(other), ref_clean)]
        if codec_judge:
            judges.append(("_codec_judge", "codec", codec_classifier(model, concept), codec_classifier(model, other), ref_rec))
        quality = {**_quality_summary(entropy, aq), **_quality_summary(ref_entropy, [audio_quality(a, sr) for a in ref.reconstructed], "_real_reconstructed")}
        verdicts: dict[str, Any] = {}
        for suffix, space, judge, other_judge, ref_X in judges:
            pred = feats.labels(judge)
            acc = float(np.mean(pred == labels))
            out[f"{concept}_accuracy{suffix}"] = acc
            out[f"{concept}_accuracy{suffix}_se"] = float(np.sqrt(acc * (1 - acc) / len(labels)))
            out[f"{concept}_per_class{suffix}"] = {v: float(np.mean(pred[labels == v] == v)) for v in values}
            kept = feats.labels(other_judge)
            quality[f"frechet_{space}"] = feats.frechet(judge, ref_X)
            verdicts[space] = summarize_verdicts([
                steering_verdict(pred[i], labels[i], entropy=entropy[i, 0], entropy_reference=entropy_reference,
                                 stationarity=aq[i].stationarity, kept_label=kept[i], kept=keep, tolerance=tolerance)
                for i in range(len(labels))], tolerance=tolerance)
            verdicts[space]["entropy_reference"] = entropy_reference
        out[f"quality_{concept}"] = quality
        out[f"verdict_{concept}"] = verdicts
    return out


def eval_steering(
    model: Any, source: str = "trumpet", target: str = "violin", *, style: str = "classical", n: int = 10,
    alphas: Sequence[float] = (0.5,), layer: int | None = None, start: float = 2.0, duration: float = 4.0, concept: Any = None,
    method: str = "probe", mode: str | None = None, codec_judge: bool = True, tolerance: Tolerance = Tolerance(), n_reference: int = 100,
) -> list[dict[str, Any]]:
    """Timbre steering source -> target from `start` seconds, judged on the audio after `start`;
    one result per alpha (the unsteered generations and the probe are shared).

    success: the judge hears `target` after `start`; fidelity: what the prompt asked for and the
    unsteered music had - the prompted style's probability (its drop is the "fidelity drop", with
    the standard error of the paired per-seed drops),
    chroma and onset correlation with the unsteered generation, tempo kept; and the codes before
    `start` are bit-identical to the unsteered run. Both runs share their sampling noise (one
    seed, Gumbel-max), so `codes_kept_after_start` is the share of codes the steering left as
    they were: a counterfactual pair, not two unrelated samples. `method` builds the vector
    (`recipes.concept_vector`); `mode` defaults to the one the vector is made for. With
    `codec_judge`, every verdict is also given by `codec_classifier` (`*_codec_judge`). The
    judges abstain on out-of-distribution clips (`target_rate_*` counts only clips labelled
    `target`).

    `quality`: after `start`, codebook-0 and per-codebook code entropy, stationarity, flux, and
    the Fréchet distance to the world's real clips cut to the same window (clean ones in the
    clean judge's space, codec reconstructions in the codec judge's), unsteered and steered.
    `verdict`: per judge ("clean", "codec"), `summarize_verdicts` of `steering_verdict` per seed
    (target heard, codebook-0 entropy >= `tolerance.entropy_ratio` x the same seed's unsteered
    run, stationarity <= `tolerance.max_stationarity`, the prompted style kept - or, where the
    unsteered run was not judged the prompted style, its style label), with the set-level
    Fréchet check against the unsteered set; `style_rate_unsteered`: the share of unsteered
    runs judged the prompted style.
    """
    import torch

    from musicgen_lens.recipes import codes_kept, timbre_concept
    from musicgen_lens.steering import Intervention

    if concept is None:
        concept = timbre_concept(model, source, target, style=style, layer=layer, method=method)
    mode = mode or concept.mode
    prompt = f"{style} {source} melody"
    cut = int(round(start * model.sample_rate))
    frame = int(round(start * model.frame_rate))
    sr = model.sample_rate
    ref = reference_clips(model, n_reference).window(start, duration)
    judges = [("", "clean", clean_classifier("instrument"), clean_classifier("style"), _Featurized.of(list(ref.clean), ref.sample_rate).X)]
    if codec_judge:
        judges.append(("_codec_judge", "codec", codec_classifier(model, "instrument"), codec_classifier(model, "style"),
                       _Featurized.of(list(ref.reconstructed), sr).X))

    def after_start(codes: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return model.decode(codes).float().mean(1).cpu().numpy()[0, cut:]

    runs = [dict(duration=duration, seed=seed, progress=False) for seed in range(n)]
    unsteered = [model.generate([prompt], **kw) for kw in runs]
    originals = [after_start(codes) for codes in unsteered]
    feats_before = _Featurized.of(originals, sr)
    entropy_before, aq_before = _clip_quality([c[0] for c in unsteered], originals, frame, sr)
    # the unsteered verdicts, once per judge: every alpha compares against the same runs
    inst_before = {name: feats_before.labels(i_judge) for name, _, i_judge, _, _ in judges}
    style_before = {name: feats_before.proba_of(s_judge, style) for name, _, _, s_judge, _ in judges}
    style_labels_before = {name: feats_before.labels(s_judge) for name, _, _, s_judge, _ in judges}
    frechet_before = {space: feats_before.frechet(i_judge, ref_X) for _, space, i_judge, _, ref_X in judges}
    results = []
    for alpha in alphas:
        steering = [Intervention(concept.vector, alpha=alpha, start=start, mode=mode)]
        steered = [model.generate([prompt], steering=steering, **kw) for kw in runs]
        compared = [codes_kept(a, b, frame) for a, b in zip(unsteered, steered)]
        steereds = [after_start(codes) for codes in steered]
        feats = _Featurized.of(steereds, sr)
        entropy, aq = _clip_quality([c[0] for c in steered], steereds, frame, sr)
        fid = [fidelity(o, s, sr) for o, s in zip(originals, steereds)]
        verdicts: dict[str, float] = {}
        quality: dict[str, Any] = {**_quality_summary(entropy_before, aq_before, "_unsteered"), **_quality_summary(entropy, aq, "_steered")}
        judged: dict[str, Any] = {}
        for name, space, i_judge, s_judge, ref_X in judges:
            labels, style_labels = feats.labels(i_judge), feats.labels(s_judge)
            drop = style_before[name] - feats.proba_of(s_judge, style)  # paired: one seed per row
            verdicts.update({
                f"target_rate_unsteered{name}": float(np.mean(inst_before[name] == target)),
                f"target_rate_steered{name}": float(np.mean(labels == target)),
                f"source_rate_unsteered{name}": float(np.mean(inst_before[name] == source)),
                f"style_prob_unsteered{name}": float(style_before[name].mean()),
                f"style_prob_steered{name}": float((style_before[name] - drop).mean()),
                f"fidelity_drop{name}": float(drop.mean()),
                f"fidelity_drop{name}_se": float(drop.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan"),
            })
            quality[f"frechet_{space}_unsteered"], quality[f"frechet_{space}_steered"] = frechet_before[space], feats.frechet(i_judge, ref_X)
            per_seed = [steering_verdict(labels[i], target, entropy=entropy[i, 0], entropy_reference=entropy_before[i, 0],
                                         stationarity=aq[i].stationarity, kept_label=style_labels[i], kept=style,
                                         kept_unsteered=style_labels_before[name][i], tolerance=tolerance)
                        for i in range(n)]
            judged[space] = summarize_verdicts(per_seed, quality[f"frechet_{space}_steered"], frechet_before[space], tolerance)
            judged[space]["outcomes"] = [v.outcome for v in per_seed]
            judged[space]["style_rate_unsteered"] = float(np.mean(style_labels_before[name] == style))
        results.append(dict(
            prompt=prompt, target=target, alpha=alpha, method=concept.vector.method, mode=mode, layer=concept.hook, start=start, n=n, probe_accuracy=concept.accuracy,
            **verdicts,
            chroma_corr=float(np.mean([f.chroma_corr for f in fid])), onset_corr=float(np.mean([f.onset_corr for f in fid])),
            tempo_kept=float(np.mean([f.tempo_kept for f in fid])),
            frames_before_start_identical=float(np.mean([same for same, _ in compared])),
            codes_kept_after_start=float(np.mean([kept for _, kept in compared])),
            quality=quality, verdict=judged,
        ))
    return results


def weights_fingerprint(model: Any) -> str:
    """A short hash of every weight (name, shape, sum, first values): a retrained model with the
    same architecture gets another fingerprint, so stale measurements are never reused."""
    import hashlib

    import torch

    h = hashlib.sha256()
    with torch.no_grad():
        for name, t in sorted(model.state_dict().items()):
            flat = t.detach().reshape(-1).double()
            h.update(f"{name}{tuple(t.shape)}{flat.sum().item():.12e}".encode())
            h.update(flat[:64].cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def main(argv: list[str] | None = None) -> int:
    """Print (and save as JSON) the measurements the README reports for the toy model."""
    import argparse
    import json
    from pathlib import Path

    from musicgen_lens import HookedMusicGen
    from musicgen_lens._atomic import atomic_write_text

    p = argparse.ArgumentParser(prog="python -m musicgen_lens.eval", description=main.__doc__)
    p.add_argument("what", nargs="*", help="any of codec, prompts, steering (default: all three)")
    p.add_argument("--model", default="toy")
    p.add_argument("--alpha", type=float, nargs="+", default=[0.5, 1.0], help="steering strength(s); one steering result per value")
    p.add_argument("--method", choices=["probe", "diff_means"], nargs="+", default=["probe", "diff_means"],
                   help="steering vector(s): the paper's probe direction (norm_relative) and/or a difference of means (add)")
    p.add_argument("--mode", default=None, help="intervention mode (default: norm_relative for probe, add for diff_means)")
    p.add_argument("--layer", type=int, default=None)
    p.add_argument("--n", type=int, default=30, help="generations (seeds) per steering setting")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    args = p.parse_args(argv)
    args.what = args.what or ["codec", "prompts", "steering"]
    unknown = set(args.what) - {"codec", "prompts", "steering"}
    if unknown:
        p.error(f"unknown measurement(s) {sorted(unknown)}; choose from codec, prompts, steering")
    model = HookedMusicGen.from_pretrained(args.model)
    out = Path(args.out) if args.out else None
    # parts already measured (same model) are kept: a long evaluation resumes where it stopped
    header = {"model": args.model, "weights": weights_fingerprint(model),
              "settings": dict(alpha=args.alpha, method=args.method, mode=args.mode, layer=args.layer, n=args.n)}
    results: dict[str, Any] = json.loads(out.read_text()) if out is not None and out.exists() else {}
    if {k: results.get(k) for k in header} != header:
        results = dict(header)
    parts = {
        "codec": lambda: eval_codec(model),
        "prompts": lambda: eval_prompts(model),
        "steering": lambda: [r for m in args.method for r in eval_steering(model, alphas=args.alpha, layer=args.layer, n=args.n, method=m, mode=args.mode)],
    }
    for name in args.what:
        if name in results:
            print(f"{name}: kept from {out}")
            continue
        results[name] = parts[name]()
        print(json.dumps({name: results[name]}, indent=2), flush=True)
        if out is not None:
            atomic_write_text(out, json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
