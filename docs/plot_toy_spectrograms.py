"""Draws the README's looked-at figures of the shipped toy model, unsteered above and steered below:

- docs/toy_chain_rock.png: the chain demo's rock step, seeds 0-3 (each seed's electronic-steered
  clip, the "electronic" demo's recommended setting as `make eval` chains it, continued 2 s and
  steered towards rock at the chain's recommended setting), with the clean style judge's labels;
- docs/toy_held_out_<demo>.png: up to three held-out successes (seeds 16-31) of the two demos whose
  recommended setting passes most often there.

    HF_HUB_OFFLINE=1 PYTHONPATH=src python docs/plot_toy_spectrograms.py   # after `make eval` (reads eval_results.json)

Prints each row's outcomes (they reproduce `make eval`'s rows).
"""

from __future__ import annotations

import json
from typing import Any

import librosa
import librosa.display
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from musicgen_lens import HookedMusicGen  # noqa: E402
from musicgen_lens.eval.cli import DEMOS, _chain_codes, demo_audio_prompt  # noqa: E402
from musicgen_lens.eval.judges import clean_classifier  # noqa: E402
from musicgen_lens.eval.sweep import one_setting, steering_sweep  # noqa: E402

_GRID_ONLY = ("grids", "sites", "layers", "methods", "alphas", "chain_from")


def _draw(row: dict[str, Any], picks: list[int], titles: list[list[str]], suptitle: str, path: str, sr: int, dpi: int) -> None:
    """Row 0 unsteered, row 1 steered, one column per picked seed; librosa STFT in dB."""
    fig, ax = plt.subplots(2, len(picks), figsize=(4 * len(picks) + 1, 6), sharey=True, squeeze=False)
    for c, i in enumerate(picks):
        for r, kind in enumerate(("unsteered", "steered")):
            audio = np.asarray(row[f"audio_{kind}"][i], dtype=np.float32)
            db = librosa.amplitude_to_db(np.abs(librosa.stft(audio, n_fft=1024, hop_length=256)), ref=np.max)
            librosa.display.specshow(db, sr=sr, hop_length=256, x_axis="time", y_axis="hz", ax=ax[r, c], vmin=-70)
            ax[r, c].set_title(titles[r][c])
    fig.suptitle(suptitle)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)


def chain(model: HookedMusicGen, results: dict[str, Any]) -> None:
    state: dict = {}
    codes = _chain_codes(model, state, "electronic", results["demos"]["electronic"], 16)
    print("first step", state["first_step"])
    kw = {k: v for k, v in DEMOS["chain_electronic_then_rock"].items() if k not in _GRID_ONLY}
    rec = results["demos"]["chain_electronic_then_rock"]["recommended"]
    (row,) = steering_sweep(model, **kw, **one_setting(rec), n=16, return_audio=True, audio_prompt_codes=codes)
    print("chain", row["key"], "success", row["success_rate"], row["counts"])
    judge = clean_classifier("style")
    labels = {kind: judge.predict(row[f"audio_{kind}"], sr=model.sample_rate) for kind in ("unsteered", "steered")}
    for kind, lab in labels.items():
        print(f"{kind:9s}", list(lab))
    titles = [[f"seed {i} {kind}: {labels[kind][i]}" for i in range(4)] for kind in ("unsteered", "steered")]
    _draw(row, list(range(4)), titles, f"chain step 2: each seed's electronic-steered clip continued 2 s, steered towards rock "
          f"({row['key']}); clean style judge", "docs/toy_chain_rock.png", model.sample_rate, dpi=80)


def held_out(model: HookedMusicGen, results: dict[str, Any]) -> None:
    for name in ("tabla_audio_prompt", "violin_from_second_5"):
        kw = {k: v for k, v in DEMOS[name].items() if k not in _GRID_ONLY}
        if isinstance(kw.get("audio_prompt"), str):
            kw["audio_prompt"], kw["audio_prompt_sr"] = demo_audio_prompt(model, kw["audio_prompt"]), model.sample_rate
        (row,) = steering_sweep(model, **kw, **one_setting(results["demos"][name]["recommended"]), n=16, seed=16, return_audio=True)
        print(name, row["key"], "success", row["success_rate"], row["counts"], "outcomes", row["outcomes"])
        picks = [i for i, o in enumerate(row["outcomes"]) if o == "success"][:3]
        if picks:
            titles = [[f"seed {16 + i} {kind}" for i in picks] for kind in ("unsteered", "steered")]
            _draw(row, picks, titles, f"{name} {row['key']}: held-out successes", f"docs/toy_held_out_{name}.png", model.sample_rate, dpi=70)


def main() -> None:
    model = HookedMusicGen.from_pretrained("toy")
    results = json.load(open("eval_results.json"))
    chain(model, results)
    held_out(model, results)


if __name__ == "__main__":
    main()
