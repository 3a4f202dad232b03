"""`python -m musicgen_lens.eval`: the measurements the README reports, resumable.

Parts: codec, prompts, steering (`eval_steering` at the CLI's alphas), sweep (`steering_sweep`
trumpet -> violin over layers, sites, heads, methods and alphas: `SWEEP`) and demos (the
paper's demos, each a small sweep at n seeds: `DEMOS`). The sweep and the demos save after every
setting, so a stopped run resumes where it stopped; `--markdown` writes the README's tables.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from musicgen_lens.eval.judges import weights_fingerprint
from musicgen_lens.provenance import weights_fingerprint as provenance_fingerprint
from musicgen_lens.eval.measure import eval_codec, eval_prompts, eval_steering
from musicgen_lens.eval.sweep import PROMPTED, one_setting, recommend, steering_sweep, sweep_table_markdown

PARTS = ("codec", "prompts", "steering", "sweep", "demos")

# the cross-attention output, read with each clip's caption (`recipes.VECTOR_TEXTS`): with the null
# text it differs between the clips only by its bias, with the captions it holds what the text changes
_CROSS_GRID = dict(sites=("cross_attn_out",), layers=[(2, 3), (1, 2, 3), (0, 1, 2, 3)], methods=("diff_means",), alphas=(2.0, 3.0),
                   vector_text="caption")

# trumpet -> violin: every layer on the residual stream, the attention output of the last two,
# each head's z of the last layer, several residual layers steered together at lower alphas, and the
# cross-attention output of several layers
SWEEP: list[dict[str, Any]] = [
    dict(sites=("resid_post",), layers=[2, 3, 1, 0], methods=("probe", "diff_means"), alphas=(0.25, 0.5, 1.0)),
    dict(sites=("attn_out",), layers=[2, 3], methods=("probe", "diff_means"), alphas=(0.5, 1.0)),
    dict(sites=("attn.z",), layers=[3], methods=("probe", "diff_means"), alphas=(1.0,)),
    dict(sites=("resid_post",), layers=[(1, 2, 3), (0, 1, 2, 3), (2, 3)], methods=("probe", "diff_means"), alphas=(0.15, 0.3)),
    _CROSS_GRID,
]

TABLA_PROMPT = "classical flute melody at 100 BPM in D major"  # `demo_audio_prompt`'s tempo and key
_DEMO_GRID = dict(sites=("resid_post",), layers=[2, 3], methods=("probe", "diff_means"), alphas=(0.5,))


# the timbre demos also set the projection on the difference of means instead of adding to it
# (recipes "clamp": an affine edit from the trumpet clips' mean projection, alpha 0, to the target's, 1)
_CLAMP_GRID = dict(layers=[1, 2, 3], methods=("clamp",), alphas=(0.5, 1.0, 1.5))

# name -> steering_sweep keywords ("grids": several sweeps, each overriding them); "audio_prompt" renders a clip of the world (`demo_audio_prompt`)
DEMOS: dict[str, dict[str, Any]] = {
    "violin_audio_prompt": dict(source="trumpet", target="violin", audio_prompt="trumpet", start=2.0, duration=2.0, **_DEMO_GRID,
                                grids=[{}, _CLAMP_GRID, _CROSS_GRID]),
    "xylophone_audio_prompt": dict(source="trumpet", target="xylophone", audio_prompt="trumpet", start=2.0, duration=2.0, **_DEMO_GRID,
                                   grids=[{}, _CLAMP_GRID, _CROSS_GRID]),
    "xylophone_text": dict(source="trumpet", target="xylophone", **_DEMO_GRID, grids=[{}, _CROSS_GRID]),
    # the clean judge hears a prompted xylophone in 0-2/16 (the codec loses its bar modes): judged by the codec-aware judge
    "xylophone_text_codec_judge": dict(source="trumpet", target="xylophone", judge="codec", **_DEMO_GRID, grids=[{}, _CROSS_GRID]),
    # the melody's tempo is known, so the tabla must follow it: stated in the prompt (the toy
    # model's training texts name the tempo), or by construction (a rendered 100 BPM flute clip)
    "tabla": dict(concept="accompaniment", source="", target="tabla", instrument="flute", prompt=TABLA_PROMPT, tempo_bpm=100.0,
                  **_DEMO_GRID, grids=[{}, _CROSS_GRID]),
    "tabla_audio_prompt": dict(concept="accompaniment", source="", target="tabla", instrument="flute", audio_prompt="flute",
                               tempo_bpm=100.0, start=2.0, duration=2.0, **_DEMO_GRID, grids=[{}, _CROSS_GRID]),
    "electronic": dict(concept="style", source="classical", target="electronic", instrument="trumpet", **_DEMO_GRID, grids=[{}, _CROSS_GRID]),
    "violin_from_second_5": dict(source="trumpet", target="violin", start=5.0, duration=10.0, sites=("resid_post",), layers=[2],
                                 methods=("probe", "diff_means"), alphas=(0.5,)),
    "rock_after_electronic": dict(concept="style", source="electronic", target="rock", instrument="trumpet", **_DEMO_GRID,
                                  grids=[{}, _CROSS_GRID]),
    # genre fusion: the mean of two genres' vectors (each against the classical clips); heard = both genres the style judge's top two
    "fusion_rock_jazz": dict(concept="fusion", source="classical", target="rock+jazz", instrument="trumpet", **_DEMO_GRID, grids=[{}, _CROSS_GRID]),
    "fusion_electronic_indian": dict(concept="fusion", source="classical", target="electronic+indian", instrument="trumpet", **_DEMO_GRID,
                                     grids=[{}, _CROSS_GRID]),
    # the real chain: each seed's *steered* classical -> electronic generation (the "electronic" demo's recommended
    # setting, 4 s) is continued 2 s and steered towards rock from its end (as `recipes.genre_transfer` chains)
    "chain_electronic_then_rock": dict(concept="style", source="classical", target="rock", instrument="trumpet", chain_from="electronic",
                                       start=4.0, duration=2.0, **_DEMO_GRID, grids=[{}, _CROSS_GRID]),
}


def demo_audio_prompt(model: Any, instrument: str, style: str = "classical", seconds: float = 2.0, seed: int = 7) -> Any:
    """A clip of the world (`instrument`, `style`, with its backing) at the model's rate [1, samples]:
    the source is the source by construction."""
    import numpy as np

    from musicgen_lens.data.synth import ClipSpec, render_clip

    spec = ClipSpec(instrument=instrument, style=style, tempo_bpm=100.0, key="D", seed=seed, duration_s=seconds, sample_rate=model.sample_rate)
    return np.asarray(render_clip(spec), dtype=np.float32)[None]


_GRID_KEYS = ("grids", "sites", "layers", "heads", "methods", "alphas", "vector_text")


def _prepared(model: Any, kw: dict[str, Any]) -> dict[str, Any]:
    """A demo's `steering_sweep` keywords with its named audio prompt rendered (`demo_audio_prompt`)."""
    kw = dict(kw)
    if isinstance(kw.get("audio_prompt"), str):
        kw["audio_prompt"], kw["audio_prompt_sr"] = demo_audio_prompt(model, kw["audio_prompt"]), model.sample_rate
    return kw


def chain_first_step(model: Any, name: str, setting: dict[str, Any], n: int, seed: int = 0) -> tuple[Any, dict[str, Any]]:
    """Each seed's steered codes `[n, n_codebooks, frames]` of demo `name` at `setting` (seeds
    `seed`..`seed + n - 1`): the audio prompt of a chain's next step (one row per seed), and
    what that step was (demo, key, success and heard rates, seeds)."""
    import torch

    kw = _prepared(model, {k: v for k, v in DEMOS[name].items() if k not in _GRID_KEYS})
    (row,) = steering_sweep(model, **kw, **one_setting(setting), n=n, seed=seed, return_audio=True)
    step = dict(demo=name, key=row["key"], success_rate=row["success_rate"], heard_rate=row["heard_rate"], seeds=[seed, seed + n - 1])
    return torch.stack(row["codes_steered"]), step


def _first_setting(name: str, first: dict[str, Any] | None) -> dict[str, Any]:
    """The recommended setting of demo `name`'s part `first` (the step a chain continues)."""
    best = recommend((first or {}).get("rows") or [])
    if best is None:
        raise ValueError(f"the chain continues the {name!r} demo's recommended setting: run that demo first (it has none yet)")
    return best


def demo_row(model: Any, name: str, setting: dict[str, Any], *, n: int, seed: int = 0, first_setting: dict[str, Any] | None = None,
             **kw: Any) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Demo `name` (`DEMOS`) at one `setting` on seeds `seed`..`seed + n - 1`: its `steering_sweep`
    row, and for a chained demo the first step it continued (run first at `first_setting`, the
    `chain_from` demo's setting, on the same seeds), else None. `kw`: more `steering_sweep`
    keywords (`return_audio`, `n_reference`, `batch_size`, ...). What `make demo` runs."""
    if name not in DEMOS:
        raise ValueError(f"unknown demo {name!r}; choose from {', '.join(DEMOS)}")
    common = _prepared(model, {k: v for k, v in DEMOS[name].items() if k not in _GRID_KEYS})
    chain_from, first = common.pop("chain_from", None), None
    if chain_from is not None:
        if first_setting is None:
            raise ValueError(f"demo {name!r} continues the {chain_from!r} demo: pass first_setting= (that demo's setting)")
        common["audio_prompt_codes"], first = chain_first_step(model, chain_from, first_setting, n, seed)
    (row,) = steering_sweep(model, **{**common, **kw, **one_setting(setting)}, n=n, seed=seed)
    return row, first


def _sweep_part(model: Any, save: Any, state: dict[str, Any], n: int, grids: list[dict[str, Any]], previous: dict[str, Any] | None = None,
                **common: Any) -> dict[str, Any]:
    """Rows of several sweeps sharing `common`, resumed from `state["rows"]`; `save()` after each row.
    Settings already measured are skipped (a finished part costs nothing), so settings added to
    a grid later are measured on the next run. A chained demo ("chain_from") continues each
    seed's steered codes of that demo (`previous`: its part)."""
    state.setdefault("rows", [])
    done = {r["key"] for r in state["rows"]}
    kw = _prepared(model, common)
    chain_from = kw.pop("chain_from", None)
    if chain_from is not None and not state.get("done"):
        kw["audio_prompt_codes"], state["first_step"] = chain_first_step(model, chain_from, _first_setting(chain_from, previous), n)

    def add(row: dict[str, Any]) -> None:
        state["rows"].append(row)
        save()

    for i, grid in enumerate(grids):  # a grid's keywords override the common ones; the first also measures the prompted target
        steering_sweep(model, **{**kw, **grid}, n=n, skip=done, on_row=add, progress=True, prompted=i == 0)
    rec = state["recommended"] = recommend(state["rows"])
    # The best of many settings on seeds 0..n-1 is an optimistic estimate of that setting (it was
    # picked on those seeds): measure it again on seeds n..2n-1, which picked nothing. A chained
    # demo first runs its first step again on those seeds, then continues each of them.
    if rec is not None and _held_out(state, rec) is None:
        held_kw, first_step = {k: v for k, v in kw.items() if k != "audio_prompt_codes"}, None
        if chain_from is not None:
            held_kw["audio_prompt_codes"], first_step = chain_first_step(model, chain_from, _first_setting(chain_from, previous), n, seed=n)
        (row,) = steering_sweep(model, **{**held_kw, **one_setting(rec)}, n=n, seed=n, progress=True)
        # with the unsteered rates on those seeds: what the held-out success is to be read against
        unsteered = {k: row.get(k) for k in ("heard_rate_unsteered", "kept_rate_unsteered", "on_tempo_rate_unsteered")}
        state["held_out"] = _compact(row) | unsteered | {"seeds": [n, 2 * n - 1], "counts": row["counts"]} | (
            {"first_step": first_step} if first_step is not None else {})
    elif rec is None:
        state.pop("held_out", None)
    state["done"] = True
    save()
    return state


_COMPACT = ("key", "site", "layer", "head", "method", "mode", "alpha", "vector_text", "n", "success_rate", "success_rate_se", "collapse_rate",
            "collapse_rate_se", "heard_rate", "kept_rate", "entropy_ratio", "frechet_ratio", "tempo_kept", "tempo_bpm", "on_tempo_rate",
            "moved", "moved_successes")


def _held_out(state: dict[str, Any], rec: dict[str, Any] | None) -> dict[str, Any] | None:
    """A part's held-out measurement (`_sweep_part`) when it is of the recommendation `rec`, else None."""
    held = state.get("held_out")
    return held if rec is not None and held is not None and held.get("key") == rec["key"] else None


def _compact(row: dict[str, Any]) -> dict[str, Any]:
    """A sweep row's setting and rates (`_COMPACT`): what the stored defaults and a held-out check keep."""
    return {k: row.get(k) for k in _COMPACT}


def steering_defaults(results: dict[str, Any], fingerprint: str) -> dict[str, Any]:
    """The package asset `assets/toy/steering_defaults.json` from a results JSON: per target, the
    recommended setting of its sweep (`recommend`; the trumpet -> violin sweep for "violin", each
    demo's small sweep for the others), and the compact tables they came from; per demo
    ("demos": what `make demo` runs, `recipes.stored_demo`), its recommended setting with its
    held-out measurement and, for a chain, the first step it continued. `fingerprint`:
    `provenance.weights_fingerprint` of the measured model (what `recipes` checks)."""
    tables: dict[str, list[dict[str, Any]]] = {}
    states: dict[str, dict[str, Any]] = {}
    if (results.get("sweep") or {}).get("rows"):
        tables["violin"], states["violin"] = [r for r in results["sweep"]["rows"] if r["method"] != PROMPTED], results["sweep"]
    for name, d in _in_demo_order(results.get("demos") or {}):
        rows = [r for r in d.get("rows") or [] if r["method"] != PROMPTED]
        # the recipes' own case: a text prompt, steered from second 2, judged by the clean judge
        if rows and rows[0]["target"] not in tables and not rows[0]["audio_prompt"] and rows[0]["start"] == 2.0 and rows[0]["judge"] == "clean":
            tables[rows[0]["target"]], states[rows[0]["target"]] = rows, d

    def entry(target: str, r: dict[str, Any] | None) -> dict[str, Any] | None:
        if r is None:
            return None
        held = _held_out(states[target], r)  # the same setting on seeds it was not picked on
        return _compact(r) | ({"held_out": held} if held is not None else {})

    rec = {t: recommend(rows) for t, rows in tables.items()}
    demos = {}
    for name, d in _in_demo_order(results.get("demos") or {}):
        best = recommend(d.get("rows") or [])
        held = _held_out(d, best)
        demos[name] = None if best is None else _compact(best) | ({"held_out": held} if held is not None else {}) | (
            {"first_step": d["first_step"]} if d.get("first_step") else {})
    return {"format": "musicgen_lens.steering_defaults", "model": results.get("model"), "weights": fingerprint,
            "rule": "highest verdict success rate with mean codebook-0 entropy ratio >= 0.8, Frechet check passed and "
                    "<= 25% of seeds collapsed; ties: lower alpha (musicgen_lens.eval.recommend); held_out: that setting on seeds it was not picked on",
            "recommended": {t: entry(t, r) for t, r in rec.items()},
            "tables": {t: [_compact(r) for r in rows] for t, rows in tables.items()}, "demos": demos}


def _in_demo_order(demos: dict[str, Any]) -> list[tuple[str, Any]]:
    """The measured demos in `DEMOS`' order (a results file keeps them in the order they were first measured), then any others."""
    return [(n, demos[n]) for n in DEMOS if n in demos] + [(n, d) for n, d in demos.items() if n not in DEMOS]


def _first_steered(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The first row that steers (the prompted reference's prompt is the target's, not the source's)."""
    return next((r for r in rows if r["method"] != PROMPTED), rows[0])


def _held_out_note(state: dict[str, Any], best: dict[str, Any] | None) -> str:
    """The best setting re-measured on seeds it was not picked on (`_sweep_part`'s "held_out")."""
    held = _held_out(state, best)
    if held is None:
        return ""
    lo, hi = held["seeds"]
    tempo = "" if held.get("on_tempo_rate") is None else f", on tempo {held['on_tempo_rate']:.2f}"
    first = held.get("first_step")
    chained = "" if first is None else f", continuing the `{first['demo']}` step run on those seeds (its success {first['success_rate']:.2f})"
    unsteered = "" if held.get("heard_rate_unsteered") is None else f", unsteered {held['heard_rate_unsteered']:.2f}"
    return (f"; on held-out seeds {lo}-{hi}{chained}: success {held['success_rate']:.2f} ± {held['success_rate_se']:.2f} "
            f"(heard {held['heard_rate']:.2f}{unsteered}, collapse {held['collapse_rate']:.2f}{tempo})")


def markdown(results: dict[str, Any]) -> str:
    """The README's steering tables from a results JSON (`main`'s `--out`)."""
    out = []
    sweep = results.get("sweep")
    if sweep and sweep.get("rows"):
        r0 = _first_steered(sweep["rows"])
        out += [f"Sweep: `{r0['prompt']}` steered towards {r0['target']} from second {r0['start']:g} of {r0['duration']:g}, "
                f"n = {r0['n']} seeds per setting (unsteered: {r0['target']} heard {r0['heard_rate_unsteered']:.2f}, "
                f"style kept {r0['kept_rate_unsteered']:.2f}); {'complete' if sweep.get('done') else 'INCOMPLETE (resumable)'}.", "",
                sweep_table_markdown(sweep["rows"]), "", f"Recommended: `{(sweep.get('recommended') or {}).get('key')}`" + _held_out_note(sweep, sweep.get("recommended")), ""]
    for name, d in _in_demo_order(results.get("demos") or {}):
        if not d.get("rows"):
            continue
        r0 = _first_steered(d["rows"])
        best = recommend(d["rows"])
        chained = d.get("first_step")
        prompt_note = (f" continuing each seed's steered `{chained['demo']}` step (`{chained['key']}`, success {chained['success_rate']:.2f})"
                       if chained else " + audio prompt" if r0["audio_prompt"] else "")
        out += [f"**{name}** (`{r0['prompt']}`{prompt_note} -> {r0['target'] or 'none'}, "
                f"from second {r0['start']:g}, n = {r0['n']}; unsteered: target heard {r0['heard_rate_unsteered']:.2f}, "
                f"kept {r0['kept_rate_unsteered']:.2f}){'' if d.get('done') else ' INCOMPLETE'}; best: `{best['key'] if best else None}`"
                + _held_out_note(d, best), "", sweep_table_markdown(d["rows"]), ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """Print (and save as JSON) the measurements the README reports for the toy model."""
    import argparse

    from musicgen_lens import HookedMusicGen
    from musicgen_lens._atomic import atomic_write_text

    p = argparse.ArgumentParser(prog="python -m musicgen_lens.eval", description=main.__doc__)
    p.add_argument("what", nargs="*", help=f"any of {', '.join(PARTS)} (default: all)")
    p.add_argument("--model", default="toy")
    p.add_argument("--alpha", type=float, nargs="+", default=[0.5, 1.0], help="steering strength(s); one steering result per value")
    p.add_argument("--method", choices=["probe", "diff_means"], nargs="+", default=["probe", "diff_means"],
                   help="steering vector(s): the paper's probe direction (norm_relative) and/or a difference of means (add)")
    p.add_argument("--mode", default=None, help="intervention mode (default: norm_relative for probe, add for diff_means)")
    p.add_argument("--layer", type=int, default=None)
    p.add_argument("--n", type=int, default=30, help="generations (seeds) per steering setting")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    p.add_argument("--sweep-n", type=int, default=16, help="seeds per setting of the sweep and the demos")
    p.add_argument("--demos", nargs="+", default=None, choices=list(DEMOS), help="only these demos (the others' results are kept)")
    p.add_argument("--figure", default=None, help="also plot the sweep (success vs entropy ratio) to this PNG")
    p.add_argument("--defaults", default=None, help="also write the steering defaults asset (JSON) here")
    p.add_argument("--markdown", default=None, help="also write the README's steering tables (Markdown) here")
    args = p.parse_args(argv)
    args.what = args.what or list(PARTS)
    unknown = set(args.what) - set(PARTS)
    if unknown:
        p.error(f"unknown measurement(s) {sorted(unknown)}; choose from {', '.join(PARTS)}")
    model = HookedMusicGen.from_pretrained(args.model)
    out = Path(args.out) if args.out else None
    # parts already measured (same model) are kept: a long evaluation resumes where it stopped
    header = {"model": args.model, "weights": weights_fingerprint(model),
              "settings": dict(alpha=args.alpha, method=args.method, mode=args.mode, layer=args.layer, n=args.n, sweep_n=args.sweep_n)}
    results: dict[str, Any] = json.loads(out.read_text()) if out is not None and out.exists() else {}
    if {k: results.get(k) for k in header} != header:
        results = dict(header)
    parts = {
        "codec": lambda: eval_codec(model),
        "prompts": lambda: eval_prompts(model),
        "steering": lambda: [r for m in args.method for r in eval_steering(model, alphas=args.alpha, layer=args.layer, n=args.n, method=m, mode=args.mode)],
        "sweep": lambda: _sweep_part(model, save, results.setdefault("sweep", {}), args.sweep_n, SWEEP, source="trumpet", target="violin"),
        "demos": lambda: demos(),
    }

    def demos() -> dict[str, Any]:
        """The selected demos, each resumed in its own state in results["demos"]: measuring some keeps the others'."""
        states = results.setdefault("demos", {})
        for name, kw in DEMOS.items():
            if args.demos is None or name in args.demos:
                _sweep_part(model, save, states.setdefault(name, {}), args.sweep_n, kw.get("grids", [{}]),
                            previous=states.get(kw.get("chain_from", "")), **{k: v for k, v in kw.items() if k != "grids"})
        return states

    def save() -> None:
        if out is not None:
            atomic_write_text(out, json.dumps(results, indent=2) + "\n")

    for name in args.what:
        if name in ("sweep", "demos"):  # resumed setting by setting: nothing runs when every setting is measured
            results[name] = parts[name]()
            save()
            continue
        if name in results:
            print(f"{name}: kept from {out}")
            continue
        results[name] = parts[name]()
        print(json.dumps({name: results[name]}, indent=2), flush=True)
        if out is not None:
            atomic_write_text(out, json.dumps(results, indent=2) + "\n")
    if args.markdown:
        atomic_write_text(Path(args.markdown), markdown(results) + "\n")
    if args.figure and (results.get("sweep") or {}).get("rows"):
        from musicgen_lens.eval.sweep import sweep_figure

        sweep_figure(results["sweep"]["rows"]).savefig(args.figure, dpi=110)
    if args.defaults:
        atomic_write_text(Path(args.defaults), json.dumps(steering_defaults(results, provenance_fingerprint(model)), indent=1) + "\n")
    return 0
