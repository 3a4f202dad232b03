"""Forward pass: ours vs Hugging Face, and ours with run_with_cache on every hook (ratios).

    .venv/bin/python benchmarks/bench_forward.py [--pos 250] [--rounds 5]
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
    parser.add_argument("--pos", type=int, default=250)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    hf = small_shaped_hf_model()
    ours = HookedMusicGen.from_hf(hf, device="cpu")
    codes = torch.randint(0, 2048, (args.batch, 4, args.pos))
    text = torch.randint(0, 32000, (args.batch, 12))
    cond = ours.condition(input_ids=text)
    enc = hf.text_encoder(input_ids=text).last_hidden_state
    flat = codes.reshape(-1, args.pos)

    def run_hf() -> float:
        return seconds(lambda: hf(encoder_outputs=(enc,), decoder_input_ids=flat))

    def run_ours() -> float:
        return seconds(lambda: ours(codes, cond))

    def run_cache() -> float:
        return seconds(lambda: ours.run_with_cache(codes, cond))

    run_hf(), run_ours(), run_cache()  # warm-up
    t = alternate({"hf": run_hf, "ours": run_ours, "ours_cache_all": run_cache}, args.rounds)
    print(f"forward, batch {args.batch}, {args.pos} positions, musicgen-small shape, fp32, {torch.get_num_threads()} threads")
    print("| run | seconds (median) | ratio to Hugging Face |")
    print("|---|---|---|")
    for name in ("hf", "ours", "ours_cache_all"):
        print(f"| {name} | {t[name]:.3f} | {t[name] / t['hf']:.2f}x |")


if __name__ == "__main__":
    main()
