"""Draws docs/toy_held_out_<demo>.png: up to three held-out successes (seeds 16-31) of the two demos whose
recommended setting passes most often on held-out seeds, unsteered above, steered below.

    HF_HUB_OFFLINE=1 PYTHONPATH=src python docs/plot_toy_held_out.py   # after `make eval` (reads eval_results.json)

Prints each demo's held-out outcomes (they reproduce `make eval`'s held_out row).
"""

from __future__ import annotations

import json

import librosa
import librosa.display
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from musicgen_lens import HookedMusicGen  # noqa: E402
from musicgen_lens.eval.cli import DEMOS, demo_audio_prompt  # noqa: E402
from musicgen_lens.eval.sweep import one_setting, steering_sweep  # noqa: E402


def main() -> None:
    model = HookedMusicGen.from_pretrained("toy")
    results = json.load(open("eval_results.json"))
    for name in ("tabla_audio_prompt", "violin_from_second_5"):
        kw = {k: v for k, v in DEMOS[name].items() if k not in ("grids", "sites", "layers", "methods", "alphas")}
        if isinstance(kw.get("audio_prompt"), str):
            kw["audio_prompt"], kw["audio_prompt_sr"] = demo_audio_prompt(model, kw["audio_prompt"]), model.sample_rate
        (row,) = steering_sweep(model, **kw, **one_setting(results["demos"][name]["recommended"]), n=16, seed=16, return_audio=True)
        print(name, row["key"], "success", row["success_rate"], row["counts"], "outcomes", row["outcomes"])
        ok = [i for i, o in enumerate(row["outcomes"]) if o == "success"][:3]
        if not ok:
            continue
        fig, ax = plt.subplots(2, len(ok), figsize=(5 * len(ok), 6), sharey=True, squeeze=False)
        for c, i in enumerate(ok):
            for r, kind in enumerate(("unsteered", "steered")):
                audio = np.asarray(row[f"audio_{kind}"][i], dtype=np.float32)
                db = librosa.amplitude_to_db(np.abs(librosa.stft(audio, n_fft=1024, hop_length=256)), ref=np.max)
                librosa.display.specshow(db, sr=model.sample_rate, hop_length=256, x_axis="time", y_axis="hz", ax=ax[r, c], vmin=-70)
                ax[r, c].set_title(f"seed {16 + i} {kind}")
        fig.suptitle(f"{name} {row['key']}: held-out successes")
        fig.tight_layout()
        fig.savefig(f"docs/toy_held_out_{name}.png", dpi=70)


if __name__ == "__main__":
    main()
