"""`steering_sweep`: a grid of steering settings, each judged with the quality-guarded verdict.

One row per setting (site, layer, head, method, alpha): the share of seeds that are a success
(`steering_verdict`: target heard, no collapse, the other prompted attribute kept) with its
binomial standard error, the collapse rate, the heard rate (the judge says `target`, collapsed
or not), the mean codebook-0 entropy ratio steered / unsteered (same seed), the set's Fréchet
ratio to the real clips (steered / unsteered), the tempo kept and, given the melody's tempo, the
share of steered windows on it (`features.on_tempo`). The unsteered runs are made
once (batched: `seed` + i for row i) and shared by every setting, so the rows are paired.
With `prompted=True` the first row is the reference: no steering, the target asked for in the
prompt, judged the same way.

`recommend(table)` picks the setting with the highest success rate among those that pass the
quality tolerance; `sweep_figure` plots success rate against the entropy ratio, one labelled
point per setting.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from musicgen_lens.eval.features import ON_TEMPO_RANK, beat_rank, fidelity, on_tempo
from musicgen_lens.eval.judges import FusionJudge, clean_classifier, codec_classifier
from musicgen_lens.eval.quality import _clip_quality, _Featurized, reference_clips
from musicgen_lens.eval.verdict import Tolerance, _rate, steering_verdict, summarize_verdicts

CONCEPTS = ("instrument", "style", "accompaniment", "fusion")


def setting_key(row: dict[str, Any]) -> str:
    """A row's setting as one string, e.g. "resid_post@3:probe:0.5", "attn.z@2h1:diff_means:1",
    "resid_post@1+2+3:probe:0.25" (one vector per layer, each at that alpha) or
    "cross_attn_out@2+3:diff_means:3:caption" (vectors read with each clip's caption:
    `vector_text`). The prompted reference row (method "prompt") is "prompted: <its prompt>"."""
    if row.get("method") == PROMPTED:
        return f"prompted: {row['prompt']}"
    head = "" if row.get("head") is None else f"h{row['head']}"
    text = "" if row.get("vector_text") is None else f":{row['vector_text']}"
    return f"{row['site']}@{_layer_str(row['layer'])}{head}:{row['method']}:{row['alpha']:g}{text}"


PROMPTED = "prompt"  # the method of the reference row: no steering, the target asked for in the prompt


def target_prompt(task: dict[str, Any], prompt: str, source: str, target: str) -> str | None:
    """The prompt that asks for the target itself: the source's word replaced by the target's
    (instrument, style), or the accompaniment added (" with tabla", as the training captions say);
    None for a fusion (no caption of the world names two styles)."""
    if "genres" in task:  # the captions name one style: there is no prompt for a fusion
        return None
    if task["judged"] == "accompaniment":
        from musicgen_lens.data.vocabulary import _ACCOMPANIMENT_TEXT

        return f"{prompt} with {_ACCOMPANIMENT_TEXT.get(target, target)}"
    words = prompt.split()
    if source not in words:
        raise ValueError(f"the prompted reference needs the source {source!r} as a word of the prompt {prompt!r}")
    return " ".join(target if w == source else w for w in words)


def one_setting(setting: dict[str, Any]) -> dict[str, Any]:
    """`steering_sweep` keywords for exactly one setting, from a row or a `recipes.default_setting`
    (site, layer, head, method, alpha and vector_text)."""
    return dict(sites=(setting["site"],), layers=[setting["layer"]], heads=None if setting["head"] is None else [setting["head"]],
                methods=(setting["method"],), alphas=(setting["alpha"],), vector_text=setting.get("vector_text"))


def _layers_of(layer: Any) -> tuple[int, ...]:
    """A setting's layers: an int is one layer, a list or tuple several steered together."""
    return tuple(int(x) for x in layer) if isinstance(layer, (list, tuple)) else (int(layer),)


def _layer_str(layer: Any) -> str:
    return "+".join(str(x) for x in _layers_of(layer))


def _task(concept: str, source: str, target: str, style: str, instrument: str) -> dict[str, Any]:
    """What to probe, prompt, judge and keep for one kind of concept."""
    if concept == "instrument":
        return dict(pos=dict(instrument=target, style=style), neg=dict(instrument=source, style=style), prompt=f"{style} {source} melody",
                    judged="instrument", kept_concept="style", kept=style)
    if concept == "style":
        return dict(pos=dict(instrument=instrument, style=target), neg=dict(instrument=instrument, style=source),
                    prompt=f"{source} {instrument} melody", judged="style", kept_concept="instrument", kept=instrument)
    if concept == "fusion":  # target "rock+jazz": the mean of each genre's vector against the source style's clips
        genres = target.split("+")
        return dict(pos=[dict(instrument=instrument, style=g) for g in genres], neg=dict(instrument=instrument, style=source),
                    prompt=f"{source} {instrument} melody", judged="style", kept_concept="instrument", kept=instrument, genres=genres)
    if concept == "accompaniment":
        return dict(pos=dict(instrument=instrument, style=style), neg=dict(instrument=instrument, style=style), paired=target,
                    prompt=f"{style} {instrument} melody", judged="accompaniment", kept_concept="instrument", kept=instrument)
    raise ValueError(f"concept must be one of {CONCEPTS}, got {concept!r}")


def steering_sweep(
    model: Any, source: str = "trumpet", target: str = "violin", *, concept: str = "instrument", style: str = "classical",
    instrument: str = "trumpet", layers: Sequence[int] | None = None, alphas: Sequence[float] = (0.25, 0.5, 1.0),
    sites: Sequence[str] = ("resid_post",), heads: Sequence[int] | None = None, methods: Sequence[str] = ("probe", "diff_means"),
    n: int = 8, seed: int = 0, start: float = 2.0, duration: float = 4.0, prompt: str | None = None,
    audio_prompt: Any = None, audio_prompt_sr: int | None = None, n_clips: int = 24, clip_seconds: float = 3.0,
    judge: str = "clean", tempo_bpm: float | None = None, vector_seed: int = 0, tolerance: Tolerance = Tolerance(), n_reference: int = 100, batch_size: int = 16,
    skip: Iterable[str] = (), on_row: Callable[[dict[str, Any]], None] | None = None, progress: bool = False,
    return_audio: bool = False, vector_text: str | None = None, prompted: bool = False, audio_prompt_codes: Any = None,
) -> list[dict[str, Any]]:
    """Measure every (site, layer[, head], method, alpha) steering `source` -> `target` from `start`.

    `concept`: "instrument" (the prompt "<style> <source> melody", vectors from `target` vs
    `source` clips, the style is kept), "style" ("<source> <instrument> melody", target vs
    source style clips, the instrument is kept) or "accompaniment" (target e.g. "tabla": the
    same clips with and without it; the judge's classes are "" and "tabla"; the instrument is
    kept). `layers` default: every layer; an entry that is a tuple of layers (e.g. (1, 2, 3)) is
    one setting that steers all of them at once, each with its own vector at the same alpha
    (the paper steers several layers together). Head sites ("attn.z") get one row per head in `heads`
    (default all). `audio_prompt` (audio at `audio_prompt_sr`) is continued instead of
    generating from the text alone; `start` counts from the prompt's first frame, so a start at
    the prompt's end steers only the continuation. `audio_prompt_codes` [n, n_codebooks, frames]:
    one prompt of codes per seed instead (seed `seed` + i continues row i), e.g. each seed's
    steered codes of a previous step, so that a chain steers what the last step made. The vectors come from `n_clips` clips each side
    (`recipes._specs` under `vector_seed`, `vector_seed` + 1: the recipes' clips). `judge`: "clean" or "codec"
    (`codec_classifier`). `tempo_bpm`: the melody's known tempo (stated in the prompt, or the
    audio prompt's): each steered window must then follow it (`features.on_tempo`) to count as a
    success ("off_tempo" otherwise), and the rows report on_tempo_rate (steered and unsteered) and
    the mean beat_rank. `skip`: setting keys (`setting_key`) already measured; `on_row` is
    called with each new row (a resumable caller saves it there). `return_audio` adds
    "audio_unsteered" / "audio_steered" (mono clips from `start`, [n] lists) and "codes_unsteered"
    / "codes_steered" to each row (not JSON-able; for plots and listening). `vector_text`
    (`recipes.VECTOR_TEXTS`): None, the vectors are read from the clips with the null text (the
    paper's); "caption", each clip with its own caption ("classical violin melody"), which is
    what a site downstream of the text (`"cross_attn_out"`) needs to differ at all.

    `prompted`: a first row with no steering, the target asked for in the prompt
    (`target_prompt`: "classical violin melody" for "classical trumpet melody" -> violin; the
    same seeds and audio prompt), judged by the same verdict against the same unsteered runs:
    what steering is compared with. Its method is "prompt"; `recommend` never picks it. On the
    toy model it shows how much of the verdict the model's own target passes (a prompted
    xylophone has less code entropy than the trumpet it replaces, so the collapse rule that is
    relative to the unsteered source rejects most of it).

    Rows: setting (site, layer, head, method, mode, alpha, key), n, success_rate[_se] (the
    verdict's, 0 when the set fails the Fréchet check), success_rate_per_clip, collapse_rate[_se],
    heard_rate[_se], not_heard/abstain/attribute_lost/off_tempo rates, kept_rate (the other
    attribute as prompted), entropy_ratio (mean per-seed codebook-0 entropy steered / unsteered
    after `start`), stationarity, frechet_ratio, frechet_ok, tempo_kept (a free tempo estimate of
    the steered window within 4% or an octave of the unsteered one's: unreliable on 2-s codec
    windows, reported only), on_tempo_rate[_se] and beat_rank (None without `tempo_bpm`),
    probe_accuracy, the unsteered heard/kept/on-tempo rates, each seed's outcome, and moved /
    moved_successes (`toward_target`: how far the sound went towards the target's real clips,
    mean over all seeds / over the successes; None for a fusion or with no success; per seed in
    moved_per_seed).
    """
    import torch

    from musicgen_lens.recipes import _specs, concept_vector
    from musicgen_lens.recipes import vector_text as _vector_text

    task = _task(concept, source, target, style, instrument)
    prompt = prompt or task["prompt"]
    clip_text = _vector_text(vector_text)
    reference_prompt = target_prompt(task, prompt, source, target) if prompted else None  # None for a fusion
    layers = list(range(model.cfg.n_layers)) if layers is None else list(layers)
    skip = set(skip)
    grid = [(site, layer, head, method) for site in sites for layer in layers
            for head in ([None] if not site.endswith(".z") else list(range(model.cfg.n_heads) if heads is None else heads)) for method in methods]
    prompted_key = None if reference_prompt is None else setting_key(dict(method=PROMPTED, prompt=reference_prompt))
    if (all(setting_key(dict(site=s, layer=la, head=h, method=m, alpha=a, vector_text=vector_text)) in skip
            for s, la, h, m in grid for a in alphas) and (prompted_key is None or prompted_key in skip)):
        return []
    sr, frame = model.sample_rate, model.pattern.frame_at(start)  # the steering window's first frame
    cut = int(round(start * sr))
    judged, kept_judge = ((clean_classifier(task["judged"]), clean_classifier(task["kept_concept"])) if judge == "clean" else
                          (codec_classifier(model, task["judged"]), codec_classifier(model, task["kept_concept"])))
    if "genres" in task:
        judged = FusionJudge(judged, task["genres"])
    gen_kw: dict[str, Any] = dict(duration=duration, seed=seed, progress=False)
    if audio_prompt is not None:
        gen_kw.update(audio_prompt=audio_prompt, audio_prompt_sr=audio_prompt_sr)
    if audio_prompt_codes is not None:
        if audio_prompt is not None:
            raise ValueError("give audio_prompt (one clip for every seed) or audio_prompt_codes (one row per seed), not both")
        audio_prompt_codes = torch.as_tensor(audio_prompt_codes)
        if audio_prompt_codes.ndim != 3 or audio_prompt_codes.shape[0] != n:
            raise ValueError(f"audio_prompt_codes must be [n={n}, n_codebooks, frames] (one row per seed), got {tuple(audio_prompt_codes.shape)}")

    def run(steering: list[Any] | None, text: str = prompt) -> tuple[list[Any], list[np.ndarray]]:
        codes, audios = [], []
        for lo in range(0, n, batch_size):
            rows = min(batch_size, n - lo)
            per_seed = {} if audio_prompt_codes is None else {"audio_prompt_codes": audio_prompt_codes[lo:lo + rows]}
            c = model.generate([text] * rows, **{**gen_kw, "seed": seed + lo}, **per_seed, steering=steering)
            with torch.no_grad():
                audio = model.decode(c).float().mean(1).cpu().numpy()
            codes += list(c.cpu())
            audios += [a[cut:] for a in audio]
        return codes, audios

    codes0, audio0 = run(None)
    # the real clips cut to the steered window's length (from `start`, or their end when they are shorter)
    ref = reference_clips(model, n_reference)
    length = min(len(audio0[0]) / sr, ref.clean.shape[-1] / sr)
    begin = max(0.0, min(start, ref.clean.shape[-1] / sr - length))
    ref = ref.window(begin, begin + length)
    ref_X = _Featurized.of(list(ref.clean if judge == "clean" else ref.reconstructed), sr).X
    feats0 = _Featurized.of(audio0, sr)
    direction = _target_direction(model, task, min(len(a) for a in audio0) / sr)  # `toward_target`'s unit, once per sweep
    entropy0, _ = _clip_quality(codes0, audio0, frame, sr)
    labels0, kept0 = feats0.labels(judged), feats0.labels(kept_judge)
    frechet0 = feats0.frechet(judged, ref_X)
    baseline = dict(heard_rate_unsteered=float(np.mean(labels0 == target)), kept_rate_unsteered=float(np.mean(kept0 == task["kept"])),
                    entropy_cb0_unsteered=float(entropy0[:, 0].mean()), frechet_unsteered=frechet0, tempo_bpm=tempo_bpm,
                    on_tempo_rate_unsteered=None if tempo_bpm is None else float(np.mean([on_tempo(a, sr, tempo_bpm) for a in audio0])))
    rows: list[dict[str, Any]] = []

    def emit(row: dict[str, Any], codes: list[Any], audio: list[np.ndarray]) -> None:
        row["key"] = setting_key(row)
        if return_audio:
            row.update(audio_unsteered=audio0, audio_steered=audio, codes_unsteered=codes0, codes_steered=codes)
        if progress:
            print(f"{row['key']}: success {row['success_rate']:.2f} ± {row['success_rate_se']:.2f}, collapse "
                  f"{row['collapse_rate']:.2f}, heard {row['heard_rate']:.2f}, entropy x{row['entropy_ratio']:.2f}", flush=True)
        rows.append(row)
        if on_row is not None:
            on_row(row)

    common = dict(concept=concept, source=source, target=target, start=start, duration=duration, judge=judge,
                  audio_prompt=audio_prompt is not None or audio_prompt_codes is not None)
    if prompted_key is not None and prompted_key not in skip:
        codes, audio = run(None, reference_prompt)
        row = _row(codes, audio, codes0, audio0, entropy0, labels0, kept0, frechet0, judged, kept_judge, ref_X,
                   target, task["kept"], frame, sr, tolerance, tempo_bpm, direction, feats0.X)
        emit(dict(site=None, layer=None, head=None, method=PROMPTED, mode=None, alpha=0.0, vector_text=None, **common,
                  prompt=reference_prompt, source_prompt=prompt, probe_accuracy=None, **row, **baseline), codes, audio)
    # the vectors' clips, the same for every setting
    neg = _specs(model, n_clips, vector_seed + 1, clip_seconds, **task["neg"])
    if "genres" in task:
        positives = [_specs(model, n_clips, vector_seed + 2 + i, clip_seconds, **p) for i, p in enumerate(task["pos"])]
    else:
        pos = ([dataclasses.replace(s, accompaniment=task["paired"]) for s in neg] if task.get("paired") else
               _specs(model, n_clips, vector_seed, clip_seconds, **task["pos"]))
    vectors: dict[tuple[Any, ...], Any] = {}  # a layer in several settings ((2, 3), (1, 2, 3), ...) is read from the clips once

    def vector(site: str, layer: int, head: int | None, method: str) -> Any:
        key = (site, layer, head, method)
        if key not in vectors:
            kw = dict(layer=layer, site=site, concept=target, method=method, head=head, text=clip_text)
            vectors[key] = _fused_vector(model, positives, neg, **kw) if "genres" in task else concept_vector(model, pos, neg, **kw)
        return vectors[key]

    for site, layer, head, method in grid:
        todo = [a for a in alphas if setting_key(dict(site=site, layer=layer, head=head, method=method, alpha=a, vector_text=vector_text)) not in skip]
        if not todo:
            continue
        cvs = [vector(site, la, head, method) for la in _layers_of(layer)]
        cv = cvs[0]
        for alpha in todo:
            codes, audio = run([c.intervention(alpha, start) for c in cvs])
            row = _row(codes, audio, codes0, audio0, entropy0, labels0, kept0, frechet0, judged, kept_judge, ref_X,
                       target, task["kept"], frame, sr, tolerance, tempo_bpm, direction, feats0.X)
            emit(dict(site=site, layer=layer if len(cvs) == 1 else list(_layers_of(layer)), head=head, method=method, mode=cv.mode,
                      alpha=float(alpha), vector_text=vector_text, **common, prompt=prompt,
                      probe_accuracy=float(np.mean([c.accuracy for c in cvs])), **row, **baseline), codes, audio)
    return rows


def _fused_vector(model: Any, positives: Sequence[Any], negative: Any, *, method: str, **kw: Any) -> Any:
    """A genre fusion's vector: each genre's `concept_vector` against the same source clips,
    combined as `recipes.genre_fusion` does (the normalised sum of the probe directions), or for a
    difference of means their mean (alpha 1 moves the source's mean to the midpoint of the genres')."""
    from musicgen_lens.recipes import ConceptVector, concept_vector, fuse_vectors

    if method not in ("probe", "diff_means"):
        raise ValueError(f"a fusion combines probe or diff_means vectors, not {method!r}")
    parts = [concept_vector(model, pos, negative, method=method, **kw) for pos in positives]
    fused = fuse_vectors([p.vector for p in parts], mean=method == "diff_means")
    return ConceptVector(fused, parts[0].probe, parts[0].hook, float(np.mean([p.accuracy for p in parts])), method)


def _row(codes: list[Any], audio: list[np.ndarray], codes0: list[Any], audio0: list[np.ndarray], entropy0: np.ndarray,
         labels0: np.ndarray, kept0: np.ndarray, frechet0: float, judged: Any, kept_judge: Any, ref_X: np.ndarray,
         target: str, kept: str, frame: int, sr: int, tolerance: Tolerance, tempo_bpm: float | None = None,
         direction: tuple[Any, np.ndarray] | None = None, X_unsteered: np.ndarray | None = None) -> dict[str, Any]:
    n = len(codes)
    ranks = None if tempo_bpm is None else [beat_rank(a, sr, tempo_bpm) for a in audio]
    beat_ok = [None] * n if ranks is None else [r >= ON_TEMPO_RANK for r in ranks]  # features.on_tempo
    feats = _Featurized.of(audio, sr)
    entropy, aq = _clip_quality(codes, audio, frame, sr)
    labels, kept_labels = feats.labels(judged), feats.labels(kept_judge)
    verdicts = [steering_verdict(labels[i], target, entropy=entropy[i, 0], entropy_reference=entropy0[i, 0], stationarity=aq[i].stationarity,
                                 kept_label=kept_labels[i], kept=kept, kept_unsteered=kept0[i], on_tempo=beat_ok[i], tolerance=tolerance)
                for i in range(n)]
    frechet = feats.frechet(judged, ref_X)
    s = summarize_verdicts(verdicts, frechet, frechet0, tolerance)
    moved = None if direction is None else _moved(direction, feats.X, X_unsteered)
    wins = [] if moved is None else [m for m, v in zip(moved, verdicts) if v.outcome == "success"]
    heard, heard_se = _rate(int(np.sum(labels == target)), n)
    kept_rate, kept_se = _rate(int(np.sum(kept_labels == kept)), n)
    tempo_rate, tempo_se = (None, None) if ranks is None else _rate(int(sum(beat_ok)), n)
    tempo_kept = [fidelity(a0, a, sr).tempo_kept for a0, a in zip(audio0, audio)]
    frames_same = [bool(np.array_equal(np.asarray(c0)[..., :frame], np.asarray(c)[..., :frame])) for c0, c in zip(codes0, codes)]
    return dict(
        n=n, success_rate=s["success_rate"], success_rate_se=s["success_rate_se"], success_rate_per_clip=s["success_rate_per_clip"],
        collapse_rate=s["collapse_rate"], collapse_rate_se=s["collapse_rate_se"], heard_rate=heard, heard_rate_se=heard_se,
        not_heard_rate=s["not_heard_rate"], abstain_rate=s["abstain_rate"], attribute_lost_rate=s["attribute_lost_rate"],
        kept_rate=kept_rate, kept_rate_se=kept_se, entropy_cb0=float(entropy[:, 0].mean()),
        entropy_ratio=float(np.mean(entropy[:, 0] / np.maximum(entropy0[:, 0], 1e-9))),
        stationarity=float(np.mean([q.stationarity for q in aq])), frechet=frechet, frechet_ratio=float(frechet / frechet0) if frechet0 > 0 else float("nan"),
        frechet_ok=s["frechet_ok"], tempo_kept=float(np.mean(tempo_kept)), on_tempo_rate=tempo_rate, on_tempo_rate_se=tempo_se,
        off_tempo_rate=s["off_tempo_rate"], beat_rank=None if ranks is None else float(np.mean(ranks)), frames_before_start_identical=float(np.mean(frames_same)),
        counts=s["counts"], outcomes=[v.outcome for v in verdicts], labels=[str(x) for x in labels],
        moved=None if moved is None else float(np.mean(moved)), moved_successes=float(np.mean(wins)) if wins else None,
        moved_per_seed=None if moved is None else [float(m) for m in moved],
    )


def _target_direction(model: Any, task: dict[str, Any], seconds: float, n_clips: int = 24, seed: int = 100) -> tuple[Any, np.ndarray] | None:
    """The clean judge of `task` and its standardized (target clips' mean - source clips' mean):
    `toward_target`'s unit. Real clips of `seconds`, `n_clips` each side under `seed` (not the
    vectors' clips); None for a fusion (two targets)."""
    from musicgen_lens.data.synth import render_clip
    from musicgen_lens.recipes import _specs

    if "genres" in task:
        return None
    sr = model.sample_rate
    neg = _specs(model, n_clips, seed + 1, seconds, **task["neg"])
    pos = [dataclasses.replace(c, accompaniment=task["paired"]) for c in neg] if task.get("paired") else _specs(model, n_clips, seed, seconds, **task["pos"])
    judge = clean_classifier(task["judged"])
    pos_X, neg_X = (judge.standardize(_Featurized.of([np.asarray(render_clip(c), np.float32) for c in clips], sr).X) for clips in (pos, neg))
    return judge, pos_X.mean(0) - neg_X.mean(0)


def _moved(direction: tuple[Any, np.ndarray], X_steered: np.ndarray, X_unsteered: np.ndarray) -> np.ndarray:
    judge, d = direction
    return (judge.standardize(X_steered) - judge.standardize(X_unsteered)) @ d / float(d @ d)


def toward_target(model: Any, audio_steered: Sequence[np.ndarray], audio_unsteered: Sequence[np.ndarray], source: str = "trumpet",
                  target: str = "violin", *, concept: str = "instrument", style: str = "classical", instrument: str = "trumpet",
                  n_clips: int = 24, seed: int = 100) -> np.ndarray:
    """Per seed, how far steering moved the audio towards the target's real clips, in the clean
    judge's standardized feature space: the projection of (steered - unsteered) on (target clips'
    mean - source clips' mean), as a fraction of that difference. 0: no move (or only across it);
    1: as far as a real source clip is from a real target clip, on average. The judge's label can
    flip across its boundary at a small fraction: this says how much of the way the sound went.
    The real clips (`n_clips` each side, seed `seed`: not the vectors' clips) are rendered as long
    as the steered window, as `steering_sweep` builds them for `concept`; not for a fusion.
    `steering_sweep` rows carry it as `moved` (mean over seeds) and `moved_successes`."""
    direction = _target_direction(model, _task(concept, source, target, style, instrument), min(len(a) for a in audio_steered) / model.sample_rate,
                                  n_clips, seed)
    if direction is None:
        raise ValueError("toward_target needs one target: a fusion has two genres")
    sr = model.sample_rate
    return _moved(direction, _Featurized.of(list(audio_steered), sr).X, _Featurized.of(list(audio_unsteered), sr).X)


def passes_quality(row: dict[str, Any], tolerance: Tolerance = Tolerance(), max_collapse_rate: float = 0.25) -> bool:
    """The setting keeps the music: mean entropy ratio >= `tolerance.entropy_ratio`, the set's
    Fréchet check not failed, and at most `max_collapse_rate` of the seeds collapsed."""
    return bool(row["entropy_ratio"] >= tolerance.entropy_ratio and row.get("frechet_ok") is not False
                and row["collapse_rate"] <= max_collapse_rate)


def recommend(table: Sequence[dict[str, Any]], tolerance: Tolerance = Tolerance(), max_collapse_rate: float = 0.25) -> dict[str, Any] | None:
    """The setting with the highest success rate among the rows that pass the quality tolerance
    (`passes_quality`); ties: the lower alpha, then the lower collapse rate, then the lower layer.
    None when no row passes or none has a success."""
    ok = [r for r in table if r.get("method") != PROMPTED and passes_quality(r, tolerance, max_collapse_rate) and r["success_rate"] > 0]
    if not ok:
        return None
    return min(ok, key=lambda r: (-r["success_rate"], r["alpha"], r["collapse_rate"], _layers_of(r["layer"]), str(r.get("key", ""))))


def sweep_figure(table: Sequence[dict[str, Any]], tolerance: Tolerance = Tolerance(), title: str = "") -> Any:
    """Three panels, one point per setting against the codebook-0 entropy ratio: the success rate
    (± SE; labelled when above 0; the recommended setting circled), the heard rate (the judge
    says the target, collapsed or not; labelled from 0.5), so that a sweep with no success still
    shows where the target was heard and at what cost, and how far the sound moved towards the
    target's real clips (`toward_target`, mean over the seeds; rows without it are left out): a
    label can be heard where the sound barely moved. The dashed line is the collapse tolerance."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(17, 5.5), layout="constrained")
    ax_success, ax_heard, ax_moved = fig.subplots(1, 3, sharex=True)
    markers = {"probe": "o", "diff_means": "s", "clamp": "^", PROMPTED: "*"}
    for r in table:
        color = "tab:green" if r["method"] == PROMPTED else "tab:red" if r["collapse_rate"] > 0.25 else "tab:blue"
        style = dict(fmt=markers.get(r["method"], "^"), color=color, alpha=0.8, capsize=2)
        key = r.get("key", setting_key(r))
        ax_success.errorbar(r["entropy_ratio"], r["success_rate"], yerr=r["success_rate_se"], **style)
        ax_heard.errorbar(r["entropy_ratio"], r["heard_rate"], yerr=r.get("heard_rate_se", 0.0), **style)
        if r.get("moved") is not None:
            ax_moved.errorbar(r["entropy_ratio"], r["moved"], **style)
        if r["success_rate"] > 0:  # the rest pile up at 0: unlabelled
            ax_success.annotate(key, (r["entropy_ratio"], r["success_rate"]), fontsize=6, xytext=(3, 3), textcoords="offset points")
        if r["heard_rate"] >= 0.5:
            ax_heard.annotate(key, (r["entropy_ratio"], r["heard_rate"]), fontsize=6, xytext=(3, 3), textcoords="offset points")
    best = recommend(table, tolerance)
    if best is not None:
        ax_success.plot(best["entropy_ratio"], best["success_rate"], "o", ms=16, mfc="none", mec="black")
    for ax, label in ((ax_success, "success rate (verdict)"), (ax_heard, "heard rate (judge's label, collapsed or not)"),
                      (ax_moved, "moved towards real target clips (1 = a whole source-to-target distance)")):
        ax.axvline(tolerance.entropy_ratio, color="grey", ls="--", lw=1)
        ax.set_xlabel("codebook-0 entropy, steered / unsteered (same seed)")
        ax.set_ylabel(label)
        if ax is not ax_moved:  # a move is not a rate: it can pass 1 or go negative
            ax.set_ylim(-0.05, 1.05)
    ax_moved.axhline(1.0, color="grey", ls=":", lw=1)
    fig.suptitle(title or "steering sweep: o probe, s diff_means, ^ clamp, green * the target prompted (no steering); red: > 25% collapse")
    return fig


def sweep_table_markdown(table: Sequence[dict[str, Any]]) -> str:
    """The table as Markdown: one line per setting."""
    lines = ["| setting | n | success | collapse | heard | style/instrument kept | entropy ratio | Fréchet ratio | tempo kept | on tempo | moved (successes) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in table:
        lines.append(f"| `{r.get('key', setting_key(r))}` | {r['n']} | {r['success_rate']:.2f} ± {r['success_rate_se']:.2f} | "
                     f"{r['collapse_rate']:.2f} ± {r['collapse_rate_se']:.2f} | {r['heard_rate']:.2f} | {r['kept_rate']:.2f} | "
                     f"{r['entropy_ratio']:.2f} | {r['frechet_ratio']:.2f} | {r['tempo_kept']:.2f} | "
                     f"{'–' if r.get('on_tempo_rate') is None else format(r['on_tempo_rate'], '.2f')} | "
                     f"{'–' if r.get('moved') is None else format(r['moved'], '.2f')}"
                     f"{'' if r.get('moved_successes') is None else ' (' + format(r['moved_successes'], '.2f') + ')'} |")
    return "\n".join(lines)
