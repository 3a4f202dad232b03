"""ActivationStore: caching throughput vs a bare forward pass, peak RSS for 1x vs 10x items, and
the cost of resuming a finished store (every shard's items re-hashed and checksum verified).

    .venv/bin/python benchmarks/bench_activations.py [--items 200]

Model: a small random checkpoint (6 layers, d_model 256, 4 x 1024 codes); items of 10 s
(500 frames) with a text; mean pooling of 6 residual hooks, shards of 64 items.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

import torch

CHILD = """
import sys, time, resource, torch
from musicgen_lens import HookedMusicGen
from musicgen_lens.activations import Item, cache_activations
from musicgen_lens.generation import apply_delay_pattern
model = HookedMusicGen.from_pretrained(sys.argv[1], device="cpu")
n, mode, out = int(sys.argv[2]), sys.argv[3], sys.argv[4]
gen = torch.Generator().manual_seed(0)
def items():
    for i in range(n):
        yield Item(f"i{i}", codes=torch.randint(0, model.cfg.d_vocab, (model.cfg.n_codebooks, 500), generator=gen), text="rock music", labels={"k": i})
hooks = [f"blocks.{l}.hook_resid_post" for l in range(model.cfg.n_layers)]
start = time.perf_counter()
if mode in ("cache", "resume"):
    cache_activations(model, items(), out, hooks, shard_size=64, progress=False)
else:
    cond = model.condition(["rock music"])
    with torch.no_grad():
        for item in items():
            model(apply_delay_pattern(item.codes[None], model.cfg.pad_token_id), cond)
print("SECONDS", time.perf_counter() - start, "PEAK_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def run(ckpt: str, n: int, mode: str, out: str) -> tuple[float, int]:
    res = subprocess.run([sys.executable, "-c", CHILD, ckpt, str(n), mode, out], capture_output=True, text=True, check=True,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    parts = res.stdout.split()
    return float(parts[parts.index("SECONDS") + 1]), int(parts[parts.index("PEAK_KB") + 1])


def main() -> None:
    from musicgen_lens.tiny import save_tiny_checkpoint

    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = str(save_tiny_checkpoint(f"{tmp}/ckpt", n_layers=6, d_model=256, n_heads=8, d_mlp=1024, codebook_size=1024, n_ctx=1024))
        bare, _ = run(ckpt, args.items, "bare", "")
        cached, rss1 = run(ckpt, args.items, "cache", f"{tmp}/s1")
        resumed, _ = run(ckpt, args.items, "resume", f"{tmp}/s1")
        _, rss10 = run(ckpt, 10 * args.items, "cache", f"{tmp}/s10")
    print(f"{args.items} items of 500 frames, 6 hooks, mean pooling, {torch.get_num_threads()} threads")
    print("| measure | value |")
    print("|---|---|")
    print(f"| caching throughput / bare forward throughput | {bare / cached:.2f}x ({args.items / cached:.1f} vs {args.items / bare:.1f} items/s) |")
    print(f"| resuming the finished store (checks only) / caching it | {resumed / cached:.3f}x ({resumed * 1000:.0f} ms vs {cached:.1f} s) |")
    print(f"| peak RSS, {args.items} items | {rss1 / 1024:.0f} MB |")
    print(f"| peak RSS, {10 * args.items} items | {rss10 / 1024:.0f} MB ({rss10 / rss1:.2f}x) |")


if __name__ == "__main__":
    main()
