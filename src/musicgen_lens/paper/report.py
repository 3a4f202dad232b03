"""`write_report`: report.md of a `reproduce` run (tables, plots, links to the audio)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from musicgen_lens._atomic import atomic_path, atomic_write_text

__all__ = ["markdown_table", "steering_plot", "write_report"]


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    return "" if v is None else str(v)


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def steering_plot(rows: Sequence[dict[str, Any]]) -> Any:
    """Tagger score of the target genre (left) and CLAP prompt adherence (right) against alpha, one line per (genre, layer)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.6), layout="constrained")
    ax_tag, ax_clap = fig.subplots(1, 2)
    steered = [r for r in rows if r.get("genre")]
    for g, l in sorted({(r["genre"], r["layer"]) for r in steered}):
        cell = sorted((r for r in steered if r["genre"] == g and r["layer"] == l), key=lambda r: r["alpha"])
        x = [0.0] + [r["alpha"] for r in cell]
        ax_tag.plot(x, [cell[0]["tag_prob_base"]] + [r["tag_prob"] for r in cell], marker="o", label=f"{g} L{l}")
        ax_clap.plot(x, [cell[0]["clap_prompt_base"]] + [r["clap_prompt"] for r in cell], marker="o", label=f"{g} L{l}")
    ax_tag.set(xlabel="alpha", ylabel="AudioSet score of the genre", title="steering success (AST tagger)")
    ax_clap.set(xlabel="alpha", ylabel="CLAP cosine with the prompt", title="prompt adherence (CLAP)")
    ax_tag.legend(fontsize="x-small", ncol=2)
    return fig


def write_report(out: str | os.PathLike, summary: dict[str, Any], cells: Sequence[dict[str, Any]]) -> Path:
    out = Path(out)
    rows = summary["judge"]["rows"]
    plot = out / "steering.png"
    with atomic_path(plot) as tmp:
        steering_plot(rows).savefig(tmp, format="png", dpi=110)
    probes_png = os.path.relpath(Path(summary["probes"]["path"]) / "probes.png", out)
    s, mdl = summary["settings"], summary["model"]
    audio_dir = Path(summary["steer"]["path"]) / "audio"
    lines = [
        "# arXiv 2506.10225 reproduced", "",
        f"Model `{mdl['name']}` ({mdl['dtype']}, config {mdl['config']}, weights {mdl['weights']}); "
        f"{summary['segments']['n']} segments of {s['segment_seconds']} s, genres {', '.join(summary['segments']['genres'])}.",
        f"Collection: {s['new_frames']} sampled frames, CFG {s['guidance_scale']}, pooling `{s['pooling_steps']}`, conditional branch, seed {s['seed']}.",
        "", "## Probes (held-out accuracy, 15% stratified; agreement = mean |cos| of directions across seeds / lrs)", "",
        f"Chance: {summary['probes']['chance']:.3f}.", "",
        markdown_table(sorted(summary["probes"]["table"], key=lambda r: (r["layer"], r["kind"])), ["layer", "kind", "accuracy", "accuracy_std", "agreement", "fits"]),
        "", f"![probes]({probes_png})", "",
        f"## Steering (`{s['steer_kind']}` probe directions, norm_relative, prompt \"{s['steer_prompt']}\", {s['n_steer']} clips per cell)", "",
        "success = share of clips whose tagger score of the genre beats the unsteered clip with the same seed.", "",
        markdown_table(rows, ["genre", "layer", "alpha", "tag_label", "tag_prob", "tag_prob_base", "success", "clap_prompt", "clap_prompt_base",
                              "clap_concept", "fad_clap", "fad_encodec", "code_entropy", "stationarity"]),
        "", "![steering](steering.png)", "", "## Audio", "",
    ]
    for c in cells:
        first = audio_dir / f"{c['name']}_0.wav"
        lines.append(f"- {c['name']}: [{first.name}]({os.path.relpath(first, out)})")
    report = out / "report.md"
    atomic_write_text(report, "\n".join(lines) + "\n")
    return report
