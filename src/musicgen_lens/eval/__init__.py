"""Measuring the synthetic world: a concept classifier, and fidelity between two renderings.

`ConceptClassifier` is a scikit-learn pipeline on librosa audio features (log-mel band
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

`steering_sweep` measures a grid of steering settings (layer, site, heads, method, alpha) with
that verdict, `recommend` picks the setting to use, `sweep_figure` plots success against
quality; the toy model's defaults (`recipes.stored_recommendation`) come from it.

Layout: `features` (audio features, fidelity), `judges` (classifiers, abstain, disk cache),
`quality` (entropy, flux, stationarity, Fréchet, reference clips), `verdict`, `measure`
(eval_codec, eval_prompts, eval_steering), `sweep`, `cli` (`main`, run by `__main__`; the paper's demos `DEMOS`, one setting of one: `demo_row`).
Every public name is importable from `musicgen_lens.eval`.

    python -m musicgen_lens.eval --help     # the measurements reported in the README
"""

from musicgen_lens.eval.features import (
    FEATURE_SR, ON_TEMPO_RANK, Fidelity, _as_mono, _chroma_from_spec, _filters, _onset_from_spec, _resample, _spectrum, _tempo_from_onset,
    beat_rank, chromagram, features, fidelity, mel_power, min_beat_seconds, on_tempo, onset_envelope, power_spectrogram, tempo,
)
from musicgen_lens.eval.judges import (
    ABSTAIN, JUDGE_VERSION, ConceptClassifier, _cached_judge, _clean_features, _features_or_none, _fit_judge, _judge_clips,
    _judge_features, _mahalanobis_min, clean_classifier, codec_classifier, degrade, judge_cache_dir, judge_key, load_judge,
    reconstruct, save_judge, weights_fingerprint,
)
from musicgen_lens.eval.quality import (
    AudioQuality, Reference, _clip_quality, _Featurized, _quality_summary, _resample_to, audio_quality, code_entropy,
    frechet_distance, gaussian_stats, reference_clips, spectral_flux, stationarity,
)
from musicgen_lens.eval.verdict import OUTCOMES, Tolerance, Verdict, _rate, steering_verdict, summarize_verdicts
from musicgen_lens.eval.measure import _generate, _generate_audio, eval_codec, eval_prompts, eval_steering
from musicgen_lens.eval.sweep import recommend, steering_sweep, sweep_figure, sweep_table_markdown, toward_target
from musicgen_lens.eval.cli import DEMOS, demo_row, main

__all__ = [
    "FEATURE_SR", "ON_TEMPO_RANK", "Fidelity", "beat_rank", "min_beat_seconds", "on_tempo", "chromagram", "features", "fidelity", "mel_power", "onset_envelope", "power_spectrogram", "tempo",
    "ABSTAIN", "JUDGE_VERSION", "ConceptClassifier", "clean_classifier", "codec_classifier", "degrade", "judge_cache_dir",
    "judge_key", "load_judge", "reconstruct", "save_judge", "weights_fingerprint",
    "AudioQuality", "Reference", "audio_quality", "code_entropy", "frechet_distance", "gaussian_stats", "reference_clips",
    "spectral_flux", "stationarity",
    "OUTCOMES", "Tolerance", "Verdict", "steering_verdict", "summarize_verdicts",
    "eval_codec", "eval_prompts", "eval_steering",
    "recommend", "steering_sweep", "sweep_figure", "sweep_table_markdown", "toward_target",
    "DEMOS", "demo_row", "main",
]
