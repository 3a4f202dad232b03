"""Host (Python) overhead: a narrow 24-layer model's generation steps/s vs Hugging Face, and the
per-call costs behind it (HookPoint, einops vs a view, LayerNorm).

    .venv/bin/python benchmarks/bench_host.py [--steps 100] [--rounds 5]

The narrow model (d_model 64) does almost no arithmetic, so its step time is the host's: the
~600 HookPoint calls, the views and the mask work per step. Best of `rounds`, interleaved.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import einops
import torch
import torch.nn as nn
from transformer_lens.hook_points import HookPoint as TLHookPoint

sys.path.insert(0, str(Path(__file__).parent))
from common import alternate, seconds  # noqa: E402

from musicgen_lens import HookedMusicGen  # noqa: E402
from musicgen_lens.components import LayerNorm  # noqa: E402
from musicgen_lens.hook_point import HookPoint  # noqa: E402


def per_call_us(fn, n: int = 20000, rounds: int = 5) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - start) / n)
    return best * 1e6


def narrow_hf():
    from transformers import MusicgenForConditionalGeneration

    from musicgen_lens.tiny import tiny_hf_config

    cfg = tiny_hf_config(n_layers=24, d_model=64, n_heads=4, d_mlp=256, n_codebooks=4, codebook_size=2048, n_ctx=2048)
    torch.manual_seed(0)
    model = MusicgenForConditionalGeneration(cfg).eval()
    model.generation_config.pad_token_id = 2048
    model.generation_config.decoder_start_token_id = 2048
    return model


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_grad_enabled(False)

    hf = narrow_hf()
    ours = HookedMusicGen.from_hf(hf, device="cpu")
    text = torch.randint(3, 20, (1, 8))
    cond = ours.condition(input_ids=text)
    state = {"steps": 8}
    fns = {
        "hf": lambda: state["steps"] / seconds(lambda: hf.generate(
            input_ids=text, max_new_tokens=state["steps"], do_sample=True, guidance_scale=3.0, top_k=250)),
        "ours": lambda: state["steps"] / seconds(lambda: ours.generate(
            cond=cond, max_new_frames=state["steps"] - 3, guidance_scale=3.0, top_k=250, seed=0, progress=False)),
    }
    for fn in fns.values():
        fn()
    state["steps"] = args.steps
    r = alternate(fns, args.rounds, pick="max")
    print(f"narrow model (24 layers, d_model 64), batch 1, CFG 3.0, {args.steps} steps, {torch.get_num_threads()} threads, best of {args.rounds}")
    print("| run | steps/s | ratio to HF |")
    print("|---|---|---|")
    for name, value in r.items():
        print(f"| {name} | {value:.1f} | {value / r['hf']:.2f}x |")

    torch.set_num_threads(1)  # one-row ops: thread hand-offs on a shared machine would dominate
    x = torch.randn(2, 1, 1024)
    ours_hp, tl_hp, ident = HookPoint(), TLHookPoint(), nn.Identity()
    y = torch.randn(2, 1, 16 * 64)
    ln = LayerNorm(dataclasses.replace(ours.cfg, d_model=1024))
    ref_ln = nn.LayerNorm(1024)
    print()
    print("per call, 1 thread, best of 5")
    print("| per call | us | vs |")
    print("|---|---|---|")
    plain = per_call_us(lambda: (lambda t: t)(x))
    print(f"| HookPoint, nothing attached (ours) | {per_call_us(lambda: ours_hp(x)):.2f} | plain Python call {plain:.2f}, TransformerLens HookPoint {per_call_us(lambda: tl_hp(x)):.2f}, nn.Identity {per_call_us(lambda: ident(x)):.2f} |")
    print(f"| view [2,1,1024] -> [2,1,16,64] | {per_call_us(lambda: y.view(2, 1, 16, -1)):.2f} | einops.rearrange {per_call_us(lambda: einops.rearrange(y, 'b p (h e) -> b p h e', h=16)):.2f} |")
    print(f"| our LayerNorm [2,1,1024] | {per_call_us(lambda: ln(x), n=5000):.2f} | nn.LayerNorm {per_call_us(lambda: ref_ln(x), n=5000):.2f} |")


if __name__ == "__main__":
    main()
