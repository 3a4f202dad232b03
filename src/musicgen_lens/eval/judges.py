"""The judges: `ConceptClassifier` (with its out-of-distribution abstain rule), trained on clean
clips (`clean_classifier`) or on the codec's reconstructions of them (`codec_classifier`), and
their disk cache (safetensors + JSON, checksummed; never pickle)."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import warnings
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from musicgen_lens.eval.features import FEATURE_SR, features

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


class FusionJudge:
    """A judge of a genre fusion ("rock+jazz"): a clip is labelled with the fusion when its two
    genres are the judge's two most probable classes (and it does not abstain), else with the
    judge's own label. Everything else (features, standardisation) is the wrapped judge's."""

    def __init__(self, judge: ConceptClassifier, genres: Sequence[str]):
        missing = [g for g in genres if g not in judge.classes_]
        if len(genres) != 2 or missing:
            raise ValueError(f"a fusion is two of the judge's classes {list(judge.classes_)}, got {list(genres)}")
        self.judge, self.genres, self.label = judge, tuple(genres), "+".join(genres)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.judge, name)

    def predict_features(self, X: np.ndarray, abstain: bool = True) -> np.ndarray:
        pred = self.judge.predict_features(X, abstain=abstain)
        top2 = np.argsort(-self.judge.pipeline.predict_proba(X), axis=1)[:, :2]
        classes = list(self.judge.classes_)
        both = np.isin(top2, [classes.index(g) for g in self.genres]).all(axis=1)
        return np.where(both & (pred != ABSTAIN), self.label, pred).astype(object)


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
JUDGE_VERSION = 2  # 2: librosa features (features.py)


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


# Judges shipped with the package (the clean ones of the toy model's world), keyed and checked
# like the cache: a packaged judge is used only when its key (JUDGE_VERSION, the world, n, seed)
# is exactly the one asked for and its safetensors pass the checksum; otherwise it is ignored.
PACKAGED_JUDGES = Path(__file__).resolve().parent.parent / "assets" / "toy" / "judges"


def _cached_judge(desc_kw: dict[str, Any], build: Any, cache: bool = True) -> ConceptClassifier:
    """Load the judge `desc_kw` describes from the package's shipped judges (`PACKAGED_JUDGES`)
    or the disk cache, or `build()` it and save it; a missing file is built quietly, a corrupt
    or mismatched one is rebuilt with a warning."""
    if not cache:
        return build()
    stem, desc = judge_key(**desc_kw)
    if (PACKAGED_JUDGES / f"{stem}.json").exists():
        try:
            return load_judge(stem, desc, PACKAGED_JUDGES)
        except Exception as e:  # another version of the world or a damaged file: fall through to the cache
            warnings.warn(f"ignoring the packaged judge {stem}: {e}", RuntimeWarning, stacklevel=3)
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
    under the codec's `provenance.codec_fingerprint` (it depends on the codec alone: a retrained
    decoder reuses it; a model without a state_dict is not cached)."""

    def build() -> ConceptClassifier:
        cached = _CODEC_FEATURES.setdefault(model.codec, {})
        if (n, seed) not in cached:
            audio, _ = _judge_clips(n, seed)
            cached[(n, seed)] = _judge_features(reconstruct(model, audio), model.sample_rate, seed)
        return _fit_judge(concept, cached[(n, seed)], _judge_clips(n, seed)[1])

    cache = cache and hasattr(model, "state_dict")
    from musicgen_lens.provenance import codec_fingerprint

    desc = dict(kind="codec", concept=concept, n=n, seed=seed, codec=codec_fingerprint(model) if cache else None)
    return _cached_judge(desc, build, cache)


def weights_fingerprint(model: Any) -> str:
    """The fingerprint of every weight the eval depends on, codec included (a retrained model or
    codec gets another one, so stale measurements and codec judges are never reused):
    `provenance.weights_fingerprint(model, include_codec=True)`."""
    from musicgen_lens.provenance import weights_fingerprint as fingerprint

    return fingerprint(model, include_codec=True)
