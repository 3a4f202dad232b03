"""Generation steps/s: ours vs Hugging Face `generate`, and ours with an additive hook on 4 layers.

    .venv/bin/python benchmarks/bench_generate.py [--steps 100] [--rounds 3] [--bf16]

Batch 1, classifier-free guidance 3.0, top_k 250, measured alternately in one run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import alternate, seconds, small_shaped_hf_model  # noqa: E402

from musicgen_lens import HookedMusicGen  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bf16", action="store_true", help="also time ours in bfloat16")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    hf = small_shaped_hf_model()
    ours = HookedMusicGen.from_hf(hf, device="cpu")
    text = torch.randint(0, 32000, (1, 12))
    cond = ours.condition(input_ids=text)
    vector = torch.randn(1024) * 0.1
    hooks = [(f"blocks.{l}.hook_resid_post", lambda r, hook: r + vector) for l in (17, 18, 19, 20)]

    def run_hf() -> float:
        return args.steps / seconds(lambda: hf.generate(input_ids=text, max_new_tokens=args.steps, do_sample=True, guidance_scale=3.0, top_k=250))

    def run_ours() -> float:
        return args.steps / seconds(lambda: ours.generate(cond=cond, max_new_frames=args.steps - 3, guidance_scale=3.0, top_k=250, seed=0, progress=False))

    def run_hooked() -> float:
        return args.steps / seconds(lambda: ours.generate(cond=cond, max_new_frames=args.steps - 3, guidance_scale=3.0, top_k=250, seed=0, progress=False, fwd_hooks=hooks))

    fns = {"hf": run_hf, "ours": run_ours, "ours_4_hooks": run_hooked}
    if args.bf16:
        ours_bf16 = HookedMusicGen.from_hf(small_shaped_hf_model(), device="cpu", dtype=torch.bfloat16)
        cond_bf16 = cond.to(dtype=torch.bfloat16)
        fns["ours_bf16"] = lambda: args.steps / seconds(
            lambda: ours_bf16.generate(cond=cond_bf16, max_new_frames=args.steps - 3, guidance_scale=3.0, top_k=250, seed=0, progress=False)
        )
    steps = args.steps
    args.steps = 8  # short warm-up of every path
    for fn in fns.values():
        fn()
    args.steps = steps
    r = alternate(fns, args.rounds)
    print(f"generate, batch 1, CFG 3.0, top_k 250, {args.steps} steps, musicgen-small shape, {torch.get_num_threads()} threads")
    print("| run | steps/s (median) | ratio to Hugging Face |")
    print("|---|---|---|")
    for name, value in r.items():
        print(f"| {name} | {value:.2f} | {value / r['hf']:.2f}x |")
    print(f"hook overhead: {100 * (1 - r['ours_4_hooks'] / r['ours']):.1f}%")


if __name__ == "__main__":
    main()
