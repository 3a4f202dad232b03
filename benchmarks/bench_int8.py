"""Accuracy of `musicgen_lens.fast.quantize_int8` against fp32: logit error and greedy-code agreement.

    .venv/bin/python benchmarks/bench_int8.py [--steps 100]

On the musicgen-small-shaped random model and on the embedded toy model (trained weights):
max |logit error| of a forward pass over a fp32 greedy generation (and its ratio to the logits'
std), teacher-forced argmax agreement on that sequence, and free-running greedy generation
(CFG 3.0) agreement over `--steps` frames: the fraction of codes equal and the first frame
that differs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import small_shaped_hf_model  # noqa: E402

from musicgen_lens import HookedMusicGen, fast  # noqa: E402


def measure(name: str, fp32: HookedMusicGen, int8: HookedMusicGen, cond, steps: int) -> str:
    ref = fp32.generate(cond=cond, max_new_frames=steps, do_sample=False, guidance_scale=3.0, progress=False)
    got = int8.generate(cond=cond, max_new_frames=steps, do_sample=False, guidance_scale=3.0, progress=False)
    seq = fp32.pattern.apply(ref, fp32.cfg.pad_token_id)
    a, b = fp32(seq, cond), int8(seq, cond)
    err = (a - b).abs().max().item()
    teacher = (a.argmax(-1) == b.argmax(-1)).float().mean().item()
    same = ref == got
    differs = (~same).any(dim=1).any(dim=0).nonzero()
    first = int(differs[0]) if len(differs) else "none"
    return (f"| {name} | {err:.4f} ({err / a.std().item():.3f} std) | {100 * teacher:.1f}% | "
            f"{100 * same.float().mean().item():.1f}% | {first} |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    rows = []
    hf = small_shaped_hf_model()
    fp32 = HookedMusicGen.from_hf(hf, device="cpu")
    int8 = fast.quantize_int8(HookedMusicGen.from_hf(hf, device="cpu"))
    del hf
    rows.append(measure("musicgen-small shape, random weights", fp32, int8, fp32.condition(input_ids=torch.randint(0, 32000, (1, 12))), args.steps))
    del fp32, int8
    try:
        toy = HookedMusicGen.from_pretrained("toy", device="cpu")
        toy8 = fast.quantize_int8(HookedMusicGen.from_pretrained("toy", device="cpu"))
        steps = min(args.steps, toy.pattern.max_frames(toy.cfg.n_ctx, 0))
        rows.append(measure("toy model (trained)", toy, toy8, toy.condition(["classical trumpet melody"]), steps))
    except Exception as err:  # noqa: BLE001 - the toy model is optional here
        rows.append(f"| toy model | not measured: {type(err).__name__}: {err} | | | |")
    print(f"int8 (per-channel dynamic quantization) vs fp32, greedy, CFG 3.0, {args.steps} frames")
    print("| model | max logit error | teacher-forced argmax agreement | free-running codes equal | first differing frame |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(row)


if __name__ == "__main__":
    main()
