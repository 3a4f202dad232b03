"""The README's measurements: the codec (`eval_codec`), prompt adherence (`eval_prompts`) and
timbre steering (`eval_steering`), each judged with the quality-guarded verdict."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from musicgen_lens.eval.features import fidelity
from musicgen_lens.eval.judges import clean_classifier, codec_classifier, reconstruct
from musicgen_lens.eval.quality import _clip_quality, _Featurized, _quality_summary, audio_quality, code_entropy, reference_clips
from musicgen_lens.eval.verdict import Tolerance, steering_verdict, summarize_verdicts

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


def eval_prompts(model: Any, seeds_per_prompt: int = 16, duration: float = 4.0, style: str = "classical", codec_judge: bool = True,
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
    frame = model.pattern.frame_at(start)  # the steering window's first frame
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
