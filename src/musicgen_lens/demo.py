"""`make demo`: the paper's timbre transfer on the embedded toy model, offline, judged honestly.

Generate "classical trumpet melody" for several seeds in one batch, steer each towards violin
from second 2 with the stored recommended setting (`recipes.default_setting`: measured by
`musicgen_lens.eval.steering_sweep`; relative depth with a warning on other weights), and judge
every seed with the quality-guarded verdict (`musicgen_lens.eval.steering_verdict`: target
heard, no collapse of the codes' entropy, the style kept). Writes report.md (what the model can
and cannot do, in counts out of the seeds), spectrograms before/after for one success and one
failure, and the audio of one seed. The judges are shipped with the package (no training).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from musicgen_lens import HookedMusicGen
from musicgen_lens._atomic import atomic_path, atomic_write_text
from musicgen_lens.audio import save_audio
from musicgen_lens.eval import steering_sweep
from musicgen_lens.recipes import default_setting, stored_recommendation


def _figure(before: np.ndarray, after: np.ndarray, sr: int, title: str):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 5), layout="constrained")
    axes = fig.subplots(2, 1, sharex=True)
    for ax, audio, name in ((axes[0], before, "unsteered"), (axes[1], after, "steered")):
        ax.specgram(audio, Fs=sr, NFFT=512, noverlap=384, cmap="magma")
        ax.set_ylabel(f"{name}\nHz")
    axes[1].set_xlabel("seconds after the steering start")
    fig.suptitle(title)
    return fig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="demo_out")
    parser.add_argument("--model", default="toy", help='"toy" (embedded), a local checkpoint or a hub name')
    parser.add_argument("--source", default="trumpet")
    parser.add_argument("--target", default="violin")
    parser.add_argument("--style", default="classical")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--steer-from", type=float, default=2.0, help="second at which the intervention starts")
    parser.add_argument("--seeds", type=int, default=8, help="seeds, generated in one batch")
    parser.add_argument("--alpha", type=float, default=None, help="default: the stored recommendation")
    parser.add_argument("--layer", type=int, default=None, help="default: the stored recommendation")
    parser.add_argument("--method", choices=["probe", "diff_means"], default=None, help="default: the stored recommendation")
    args = parser.parse_args(argv)
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    model = HookedMusicGen.from_pretrained(args.model, device="cuda" if torch.cuda.is_available() else "cpu")
    cfg = model.cfg
    d = default_setting(model, args.target)
    site, head = d["site"], d["head"]
    layer = d["layer"] if args.layer is None else args.layer
    method = d["method"] if args.method is None else args.method
    alpha = d["alpha"] if args.alpha is None else args.alpha
    where = f"{'stored recommendation' if d['measured'] else 'relative-depth fallback (not measured on these weights)'}"
    print(f"model {args.model}: {cfg.n_layers} layers, d_model {cfg.d_model}; steering {site}@{layer} {method} alpha {alpha:g} ({where})")
    (row,) = steering_sweep(model, args.source, args.target, style=args.style, layers=[layer], alphas=[alpha], sites=(site,),
                            heads=None if head is None else [head], methods=(method,), n=args.seeds, start=args.steer_from,
                            duration=args.seconds, n_reference=24, batch_size=args.seeds, return_audio=True)
    sr, n = model.sample_rate, row["n"]
    c = row["counts"]
    outcomes = row["outcomes"]
    files = []
    for kind, pick in (("success", [i for i, o in enumerate(outcomes) if o == "success"]),
                       ("collapse", [i for i, o in enumerate(outcomes) if o == "collapse"]),
                       ("failure", [i for i, o in enumerate(outcomes) if o not in ("success", "collapse")])):
        if not pick:
            continue
        i = pick[0]
        fig = _figure(row["audio_unsteered"][i], row["audio_steered"][i], sr,
                      f"seed {i}: {kind} (judge: {row['labels'][i]}; outcome {outcomes[i]})")
        png = out / f"spectrogram_{kind}_seed{i}.png"
        with atomic_path(png) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
        files.append(png)
    i = next((k for k, o in enumerate(outcomes) if o == "success"), 0)
    with torch.no_grad():
        audio = model.decode(torch.stack([row["codes_unsteered"][i], row["codes_steered"][i]])).float().cpu()
    files += [save_audio(out / f"seed{i}_unsteered.wav", audio[0], sr), save_audio(out / f"seed{i}_steered.wav", audio[1], sr)]
    report = [
        f"# musicgen-lens demo: {args.source} -> {args.target} on the embedded toy model, {n} seeds",
        "",
        f"- model: `{args.model}`: {cfg.n_layers} layers, d_model {cfg.d_model}, {cfg.n_codebooks} codebooks x {cfg.d_vocab}, "
        f"{cfg.frame_rate:g} frames/s, {cfg.sample_rate} Hz",
        f"- prompt: `{row['prompt']}`, {args.seconds:g} s, seeds 0-{n - 1} (one batch); steering from second {args.steer_from:g}",
        f"- setting: `{row['key']}` ({row['mode']}), {where}; probe accuracy {row['probe_accuracy']:.2f}",
        f"- judge: the clean-trained concept classifiers (shipped with the package), abstaining out of distribution",
        "",
        "## verdict (success = target heard, no collapse, style kept; musicgen_lens.eval.steering_verdict)",
        "",
        f"- **success in {c['success']}/{n}** (rate {row['success_rate']:.2f} ± {row['success_rate_se']:.2f} SE"
        f"{'' if row['frechet_ok'] is not False else '; the set fails the Fréchet check, so the rate counts as 0'})",
        f"- target heard (judge says {args.target}, collapsed or not) in {round(row['heard_rate'] * n)}/{n} "
        f"(unsteered: {round(row['heard_rate_unsteered'] * n)}/{n})",
        f"- collapse (codebook-0 entropy < 0.8 x the same seed's unsteered run, or a held texture) in {c['collapse']}/{n}",
        f"- heard but the style was lost in {c['attribute_lost']}/{n}; not heard in {c['not_heard']}/{n}; judge abstained in {c['abstain']}/{n}",
        f"- style as prompted ({args.style}) in {round(row['kept_rate'] * n)}/{n} steered vs {round(row['kept_rate_unsteered'] * n)}/{n} unsteered",
        f"- codebook-0 entropy steered / unsteered: {row['entropy_ratio']:.2f}; Fréchet distance to real clips steered / unsteered: "
        f"{row['frechet_ratio']:.2f}; codes before second {args.steer_from:g} bit-identical: {row['frames_before_start_identical']:.0%}",
        "",
        *([f"- the same setting in `make eval` (16 seeds, 0-15): success {rec['success_rate']:.2f} ± {rec['success_rate_se']:.2f}, "
            f"collapse {rec['collapse_rate']:.2f}, heard {rec['heard_rate']:.2f}: {n} seeds are a small sample"]
          if (rec := stored_recommendation(model, args.target)) and rec["key"] == row["key"] else []),
        "",
        "## what this means",
        "",
        f"The toy model can be pushed towards {args.target}: the judge hears it in {round(row['heard_rate'] * n)}/{n} steered seeds. "
        f"It cannot yet do so reliably *as the paper describes* (same melody and style, only the timbre changed): "
        f"only {c['success']}/{n} pass every check. The usual failures are the style flipping with the timbre "
        f"(the toy model entangles instrument and style) and, at higher alpha, a collapse into a drone that the judge "
        "still calls the target. Look at the spectrograms: on this toy model unsteered and steered audio are both a dense, "
        "mostly stationary harmonic texture (few visible note changes), so a success is the judge's label plus the quality "
        "guard, not an unmistakable violin. See the README's steering results (`make eval`) for every setting with standard errors.",
        "",
        "## files",
        "",
        *[f"- `{p.name}`" for p in files],
        "",
        f"total time {time.perf_counter() - t0:.0f} s",
    ]
    atomic_write_text(out / "report.md", "\n".join(report) + "\n")
    print("\n".join(report))
    return 0 if row["frames_before_start_identical"] == 1.0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
