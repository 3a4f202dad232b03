"""Forward pass: ours vs Hugging Face at several lengths, and ours with run_with_cache on every hook (ratios).

    .venv/bin/python benchmarks/bench_forward.py [--pos 250 500 1000 1500] [--rounds 3] [--keep-freed-memory]

Best of `rounds` interleaved runs per implementation (the machine may be shared).
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
    parser.add_argument("--pos", type=int, nargs="+", default=[250, 500, 1000, 1500])
    parser.add_argument("--cache-pos", type=int, default=250, help="length of the run_with_cache(every hook) run")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-warmup", action="store_true", help="skip the warm-up run (long lengths on a slow machine)")
    parser.add_argument("--keep-freed-memory", action="store_true", help="musicgen_lens.fast.keep_freed_memory() first (Linux/glibc)")
    args = parser.parse_args()
    if args.keep_freed_memory:
        from musicgen_lens.fast import keep_freed_memory

        keep_freed_memory()
    torch.set_grad_enabled(False)
    hf = small_shaped_hf_model()
    ours = HookedMusicGen.from_hf(hf, device="cpu")
    text = torch.randint(0, 32000, (args.batch, 12))
    cond = ours.condition(input_ids=text)
    enc = hf.text_encoder(input_ids=text).last_hidden_state
    print(f"forward, batch {args.batch}, musicgen-small shape, fp32, {torch.get_num_threads()} threads, best of {args.rounds}")
    print("| positions | Hugging Face s | ours s | ours / HF time | ours run_with_cache (all hooks) / HF | run_with_cache / ours bare |")
    print("|---|---|---|---|---|---|")
    for pos in args.pos:
        codes = torch.randint(0, 2048, (args.batch, 4, pos))
        flat = codes.reshape(-1, pos)
        fns = {
            "hf": lambda: seconds(lambda: hf(encoder_outputs=(enc,), decoder_input_ids=flat)),
            "ours": lambda: seconds(lambda: ours(codes, cond)),
        }
        if pos == args.cache_pos:
            fns["cache"] = lambda: seconds(lambda: ours.run_with_cache(codes, cond))
        for fn in fns.values() if not args.no_warmup else ():  # warm-up
            fn()
        t = alternate(fns, args.rounds, pick="min")
        cache = f"{t['cache'] / t['hf']:.2f}x" if "cache" in t else "-"
        # the issue's target is against our own bare forward (the cost of the hooks themselves)
        own = f"{t['cache'] / t['ours']:.2f}x" if "cache" in t else "-"
        print(f"| {pos} | {t['hf']:.3f} | {t['ours']:.3f} | {t['ours'] / t['hf']:.2f}x | {cache} | {own} |", flush=True)


if __name__ == "__main__":
    main()
