"""`reproduce`: arXiv 2506.10225 end to end, stage by stage, resumable.

Stages (each one's outputs live under a folder or file named by a hash of its inputs, written
atomically; a finished stage is skipped when run again, a changed input makes a new key):

1. segments    labelled audio -> `seconds`-long segments (`paper.data`), `segments.json`
2. activations continuation activations of every decoder layer output (`Pooling.paper`: prompt =
               segment, text "Generate {genre} music continuing the given audio", `new_frames`
               sampled frames, CFG, last step, conditional branch) in an ActivationStore
               (itself resumable shard by shard)
3. probes      every probe kind per layer (`paper.probes.compare_probes`: held-out accuracy and
               direction agreement), plot, and the steering directions of `steer_kind`
4. steer       for each genre, steering layer and alpha: `n_steer` clips from `steer_prompt`
               steered with h <- (h + |h|·a·w)/(1+a) on the conditional branch, and the
               unsteered clips with the same seeds; codes (.npz) and audio (.wav) per cell
5. judge       AST AudioSet tagger (the genre's label, `judges.CONCEPT_LABELS`), CLAP prompt
               adherence and concept similarity, FAD on CLAP and on EnCodec embeddings
               (steered vs unsteered), quality guard (code entropy, stationarity)
6. report      `report.md` (tables, plots, links to the audio)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from musicgen_lens._atomic import atomic_path, atomic_write_text

__all__ = ["PaperSettings", "reproduce"]


@dataclass
class PaperSettings:
    """Everything `reproduce` does, with the paper's values as defaults (musicgen-small)."""

    genres: Sequence[str] | None = ("classical", "electronic", "rock", "jazz")
    segment_seconds: float = 10.0
    max_segments_per_track: int | None = None
    max_per_genre: int | None = None
    new_frames: int = 512
    guidance_scale: float = 3.0
    batch_size: int = 8
    pooling_steps: str = "last"  # or "mean" over the new frames
    seed: int = 0
    probe_layers: Sequence[int] | None = None  # default: every layer
    probe_kinds: Sequence[str] = ("mse", "ordinal", "ce", "logistic")
    probe_seeds: Sequence[int] = (0, 1, 2)
    probe_lrs: Sequence[float] = (5e-3, 5e-2)
    probe_epochs: int = 250
    steer_kind: str = "mse"
    steer_layers: Sequence[int] = (17, 18, 19, 20, 21)
    alphas: Sequence[float] = (0.3, 0.5, 0.7)
    steer_prompt: str = "a piece of music"
    n_steer: int = 8
    steer_seconds: float = 10.0
    every: int | None = None  # the authors: every=25, count="calls"
    count: str = "steps"
    tagger: str = "MIT/ast-finetuned-audioset-10-10-0.4593"
    clap: str = "laion/clap-htsat-unfused"

    def as_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}


def _key(**what: Any) -> str:
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(obj, indent=1, default=str))


def _save_npz(path: Path, **arrays: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


def _save_fig(fig: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)


def _log(progress: bool, msg: str) -> None:
    if progress:
        print(f"[reproduce] {msg}", flush=True)


def _load_model(model: Any, device: Any, dtype: Any) -> Any:
    from musicgen_lens import HookedMusicGen

    if not isinstance(model, (str, os.PathLike)):
        return model
    if isinstance(dtype, str):
        dtype = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16,
                 "fp32": torch.float32, "float32": torch.float32}[dtype]
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return HookedMusicGen.from_pretrained(str(model), device=device, dtype=dtype)


def reproduce(
    data: Any,
    model: Any = "facebook/musicgen-small",
    out: str | os.PathLike = "paper_out",
    settings: PaperSettings | None = None,
    *,
    device: Any = None,
    dtype: Any = None,
    judge_device: Any = None,
    progress: bool = True,
    stages: Sequence[str] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Run the paper's protocol; returns a summary (paths, tables). `overrides` set PaperSettings
    fields (e.g. ``steer_layers=(1,), alphas=(0.5,)``). `stages` stops early (e.g. up to "probes")."""
    from musicgen_lens.activations import Pooling, cache_activations
    from musicgen_lens.activations.sources import item_digest
    from musicgen_lens.paper.data import load_tracks, segment_items
    from musicgen_lens.provenance import weights_fingerprint

    s = dataclasses.replace(settings or PaperSettings(), **overrides)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    wanted = set(stages) if stages is not None else {"segments", "activations", "probes", "steer", "judge", "report"}
    m = _load_model(model, device, dtype)
    model_id = {"config": m.cfg.hash(), "weights": weights_fingerprint(m), "dtype": str(m.dtype)}
    summary: dict[str, Any] = {"out": str(out), "settings": s.as_dict(), "model": {"name": m.cfg.model_name, **model_id}}

    # 1. segments
    tracks = load_tracks(data, s.genres)
    items = segment_items(tracks, m.sample_rate, seconds=s.segment_seconds, max_segments_per_track=s.max_segments_per_track,
                          max_per_genre=s.max_per_genre, channels=m.cfg.audio_channels)
    seg_key = _key(items=[(it.id, it.text, item_digest(it)) for it in items])
    _write_json(out / "segments.json", {"key": seg_key, "items": [{"id": it.id, **it.labels} for it in items]})
    genres = sorted({it.labels["genre"] for it in items})
    summary["segments"] = {"n": len(items), "genres": genres, "key": seg_key}
    _log(progress, f"segments: {len(items)} from {len(tracks)} tracks, genres {genres}")
    if wanted <= {"segments"}:
        return summary

    # 2. activations
    layers = list(range(m.cfg.n_layers)) if s.probe_layers is None else list(s.probe_layers)
    hooks = [f"blocks.{l}.hook_resid_post" for l in layers]
    pooling = Pooling.paper(s.new_frames, steps=s.pooling_steps, guidance_scale=s.guidance_scale, seed=s.seed, batch_size=s.batch_size)
    act_key = _key(model=model_id, segments=seg_key, hooks=hooks, pooling=pooling.as_dict())
    store = cache_activations(m, items, out / "activations" / act_key, hooks, pooling=pooling, shard_size=max(64, s.batch_size), progress=progress)
    y = np.asarray(store.labels("genre"))
    summary["activations"] = {"path": str(store.path), "key": act_key}
    _log(progress, f"activations: {store.path}")
    if wanted <= {"segments", "activations"}:
        return summary

    # 3. probes
    from musicgen_lens.paper.probes import compare_probes

    kinds = list(dict.fromkeys([*s.probe_kinds, s.steer_kind]))
    probe_key = _key(acts=act_key, kinds=kinds, steer_kind=s.steer_kind, seeds=list(s.probe_seeds), lrs=list(s.probe_lrs), epochs=s.probe_epochs)
    pdir = out / "probes" / probe_key
    if not (pdir / "directions.npz").exists():
        res = compare_probes({h: store[h] for h in hooks}, y, kinds=kinds, seeds=s.probe_seeds, lrs=s.probe_lrs, epochs=s.probe_epochs)
        pdir.mkdir(parents=True, exist_ok=True)
        _save_fig(res.plot(), pdir / "probes.png")
        dirs = {f"L{l}:{g}": res.probes[(f"blocks.{l}.hook_resid_post", s.steer_kind)].direction(g).numpy()
                for l in layers for g in genres}
        _write_json(pdir / "table.json", {"table": res.table, "chance": res.chance, "classes": res.classes})
        _save_npz(pdir / "directions.npz", **dirs)  # last: marks the stage done
    table = json.loads((pdir / "table.json").read_text())
    summary["probes"] = {"path": str(pdir), "key": probe_key, **table}
    _log(progress, f"probes: {pdir}")
    if wanted <= {"segments", "activations", "probes"}:
        return summary

    # 4. steer
    from musicgen_lens.audio import save_audio
    from musicgen_lens.steering import Intervention

    directions = dict(np.load(pdir / "directions.npz"))
    steer_layers = [l for l in s.steer_layers if l in layers]
    if not steer_layers:
        raise ValueError(f"none of steer_layers {list(s.steer_layers)} was probed (probe_layers: {layers}); the model has {m.cfg.n_layers} layers")
    gen_kw = dict(duration=s.steer_seconds, guidance_scale=s.guidance_scale, seed=s.seed, progress=False)
    steer_key = _key(probes=probe_key, model=model_id, prompt=s.steer_prompt, n=s.n_steer, seconds=s.steer_seconds, seed=s.seed,
                     guidance=s.guidance_scale, every=s.every, count=s.count)
    sdir = out / "steer" / steer_key
    prompts = [s.steer_prompt] * s.n_steer

    def run(name: str, steering: Any) -> np.ndarray:
        file = sdir / f"{name}.npz"
        if not file.exists():
            codes = m.generate(prompts, steering=steering, **gen_kw)
            with torch.no_grad():
                audio = m.decode(codes).float().cpu().numpy()
            for i, clip in enumerate(audio):
                save_audio(sdir / "audio" / f"{name}_{i}.wav", clip, m.sample_rate)
            _save_npz(file, codes=codes.cpu().numpy(), audio=audio)
        return file

    (sdir / "audio").mkdir(parents=True, exist_ok=True)
    cells = [{"name": "base", "genre": None, "layer": None, "alpha": 0.0, "file": str(run("base", None))}]
    for g in genres:
        for l in steer_layers:
            for a in s.alphas:
                iv = Intervention(torch.as_tensor(directions[f"L{l}:{g}"]).to(m.device, m.dtype), site="resid_post", layer=l, alpha=float(a),
                                  mode="norm_relative", branch="cond", every=s.every, count=s.count)
                name = f"{g.replace(' ', '_')}_L{l}_a{a:g}"
                cells.append({"name": name, "genre": g, "layer": l, "alpha": float(a), "file": str(run(name, [iv]))})
    _write_json(sdir / "cells.json", cells)
    summary["steer"] = {"path": str(sdir), "key": steer_key, "cells": len(cells)}
    _log(progress, f"steer: {len(cells)} cells in {sdir}")
    if "judge" not in wanted and "report" not in wanted:
        return summary

    # 5. judge
    judge_file = out / "judge" / f"{_key(steer=steer_key, cells=[c['name'] for c in cells], tagger=s.tagger, clap=s.clap)}.json"
    if not judge_file.exists():
        rows = _judge(m, cells, s, genres, judge_device)
        _write_json(judge_file, rows)
    rows = json.loads(judge_file.read_text())
    summary["judge"] = {"path": str(judge_file), "rows": rows}
    _log(progress, f"judge: {judge_file}")

    # 6. report
    if "report" in wanted:
        from musicgen_lens.paper.report import write_report

        summary["report"] = str(write_report(out, summary, cells))
        _log(progress, f"report: {summary['report']}")
    _write_json(out / "summary.json", summary)
    return summary


def _judge(m: Any, cells: list[dict[str, Any]], s: PaperSettings, genres: Sequence[str], device: Any) -> list[dict[str, Any]]:
    from musicgen_lens.paper.judges import AudioTagger, ClapJudge, audioset_label, encodec_embeddings, fad, quality_guard

    tagger = AudioTagger.from_pretrained(s.tagger, device=device)
    clap = ClapJudge.from_pretrained(s.clap, device=device)
    sr = m.sample_rate
    concept_text = {g: f"{g} music" for g in genres}
    loaded = {c["name"]: np.load(c["file"]) for c in cells}
    base_audio, base_codes = loaded["base"]["audio"], loaded["base"]["codes"]
    base_probs = tagger.probs(list(base_audio), sr)
    base_clap = clap.audio_embeddings(list(base_audio), sr)
    base_enc = encodec_embeddings(m, torch.as_tensor(base_codes))
    base_prompt = float(clap.adherence(None, sr, s.steer_prompt, audio_embeddings=base_clap).mean())
    idx = {g: tagger.labels.index(audioset_label(g, tagger.labels)) for g in genres}
    rows = []
    for c in cells:
        audio, codes = loaded[c["name"]]["audio"], loaded[c["name"]]["codes"]
        probs = tagger.probs(list(audio), sr) if c["name"] != "base" else base_probs
        emb = clap.audio_embeddings(list(audio), sr) if c["name"] != "base" else base_clap
        q = quality_guard(codes, [a[0] for a in audio], sr).summary()
        row = {"name": c["name"], "genre": c["genre"], "layer": c["layer"], "alpha": c["alpha"],
               "clap_prompt": float(clap.adherence(None, sr, s.steer_prompt, audio_embeddings=emb).mean()), "clap_prompt_base": base_prompt,
               "fad_clap": fad(emb, base_clap), "fad_encodec": fad(encodec_embeddings(m, torch.as_tensor(codes)), base_enc), **q}
        if c["genre"] is not None:
            k = idx[c["genre"]]
            row.update({"tag_label": tagger.labels[k], "tag_prob": float(probs[:, k].mean()), "tag_prob_base": float(base_probs[:, k].mean()),
                        "success": float(np.mean(probs[:, k] > base_probs[:, k])),
                        "clap_concept": float(clap.adherence(None, sr, concept_text[c["genre"]], audio_embeddings=emb).mean()),
                        "clap_concept_base": float(clap.adherence(None, sr, concept_text[c["genre"]], audio_embeddings=base_clap).mean())})
        rows.append(row)
    return rows
