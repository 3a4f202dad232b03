"""Draws docs/toy_chain_rock.png: the chain demo's rock step on the shipped toy model, seeds 0-3.

    HF_HUB_OFFLINE=1 PYTHONPATH=src python docs/plot_toy_chain_rock.py   # after `make eval` (reads eval_results.json)

Each seed's electronic-steered clip (the "electronic" demo's recommended setting, as `make eval`
chains it) is continued 2 s, unsteered and steered towards rock at the chain's recommended
setting; librosa STFT, the clean style judge's label in each title. Prints all 16 labels.
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
from musicgen_lens.eval.cli import DEMOS, _chain_codes  # noqa: E402
from musicgen_lens.eval.judges import clean_classifier  # noqa: E402
from musicgen_lens.eval.sweep import one_setting, steering_sweep  # noqa: E402


def main() -> None:
    model = HookedMusicGen.from_pretrained("toy")
    results = json.load(open("eval_results.json"))
    state: dict = {}
    codes = _chain_codes(model, state, "electronic", results["demos"]["electronic"], 16)
    print("first step", state["first_step"])
    chain = results["demos"]["chain_electronic_then_rock"]
    kw = {k: v for k, v in DEMOS["chain_electronic_then_rock"].items() if k not in ("grids", "sites", "layers", "methods", "alphas", "chain_from")}
    (row,) = steering_sweep(model, **kw, **one_setting(chain["recommended"]), n=16, return_audio=True, audio_prompt_codes=codes)
    print("success", row["success_rate"], "heard", row["heard_rate"], row["counts"])
    judge = clean_classifier("style")
    labels = {name: judge.predict(row[f"audio_{name}"], sr=model.sample_rate) for name in ("unsteered", "steered")}
    for name, lab in labels.items():
        print(f"{name:9s}", list(lab))
    fig, ax = plt.subplots(2, 4, figsize=(16, 6), sharey=True)
    for i in range(4):
        for r, name in enumerate(("unsteered", "steered")):
            audio = np.asarray(row[f"audio_{name}"][i], dtype=np.float32)
            db = librosa.amplitude_to_db(np.abs(librosa.stft(audio, n_fft=1024, hop_length=256)), ref=np.max)
            librosa.display.specshow(db, sr=model.sample_rate, hop_length=256, x_axis="time", y_axis="hz", ax=ax[r, i], vmin=-70)
            ax[r, i].set_title(f"seed {i} {name}: {labels[name][i]}")
    fig.suptitle(f"chain step 2: each seed's electronic-steered clip continued 2 s, steered towards rock ({row['key']}); clean style judge")
    fig.tight_layout()
    fig.savefig("docs/toy_chain_rock.png", dpi=80)


if __name__ == "__main__":
    main()
