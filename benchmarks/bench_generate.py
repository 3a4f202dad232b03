"""Generation steps/s: ours vs Hugging Face `generate` (fp32 = 1.00), fp32 / hooked / bf16 / int8, and the memory bound.

    .venv/bin/python benchmarks/bench_generate.py [--steps 60] [--rounds 3] [--batches 1 4] [--bf16] [--int8]

Classifier-free guidance 3.0, top_k 250 sampling, best of `rounds` interleaved runs per
implementation. The memory-bandwidth bound is measured in the same run: copy bandwidth / the
weight bytes one cached step reads.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import alternate, copy_bandwidth_gbs, decoder_bytes_per_step, seconds, small_shaped_hf_model  # noqa: E402

from musicgen_lens import HookedMusicGen, fast  # noqa: E402


def hf_int8(hf):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.ao.quantization import quantize_dynamic

        return quantize_dynamic(hf, {torch.nn.Linear}, dtype=torch.qint8)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--bf16", action="store_true", help="also time ours in bfloat16 (batch 1)")
    parser.add_argument("--int8", action="store_true", help="also time int8: ours (fast.quantize_int8) and HF (quantize_dynamic), batch 1")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    hf = small_shaped_hf_model()
    ours = HookedMusicGen.from_hf(hf, device="cpu")
    vector = torch.randn(1024) * 0.1
    hooks = [(f"blocks.{l}.hook_resid_post", lambda r, hook: r + vector) for l in (17, 18, 19, 20)]
    extra: dict = {}
    if args.bf16:
        extra["ours_bf16"] = HookedMusicGen.from_hf(hf, device="cpu", dtype=torch.bfloat16)
    if args.int8:
        extra["ours_int8"] = fast.quantize_int8(HookedMusicGen.from_hf(hf, device="cpu"))
        extra["hf_int8"] = hf_int8(hf)
    bw = copy_bandwidth_gbs()
    fp32_bytes = decoder_bytes_per_step(ours)
    print(f"generate, CFG 3.0, top_k 250, {args.steps} steps, musicgen-small shape, {torch.get_num_threads()} threads, best of {args.rounds}")
    print(f"memory bound: copy bandwidth {bw:.1f} GB/s, {fp32_bytes / 1e9:.2f} GB of fp32 weights per step -> "
          f"{bw * 1e9 / fp32_bytes:.1f} steps/s fp32, {4 * bw * 1e9 / fp32_bytes:.1f} steps/s int8 weights")
    print("| batch | run | steps/s | ratio to HF fp32 |")
    print("|---|---|---|---|")
    for batch in args.batches:
        text = torch.randint(0, 32000, (batch, 12))
        cond = ours.condition(input_ids=text)
        state = {"steps": 8}

        def hf_run(model):
            return lambda: state["steps"] / seconds(lambda: model.generate(
                input_ids=text, max_new_tokens=state["steps"], do_sample=True, guidance_scale=3.0, top_k=250))

        def ours_run(model, c=cond, **kw):
            return lambda: state["steps"] / seconds(lambda: model.generate(
                cond=c, max_new_frames=state["steps"] - 3, guidance_scale=3.0, top_k=250, seed=0, progress=False, **kw))

        fns = {"hf": hf_run(hf), "ours": ours_run(ours)}
        if batch == 1:
            fns["ours_4_hooks"] = ours_run(ours, fwd_hooks=hooks)
            if "ours_bf16" in extra:
                fns["ours_bf16"] = ours_run(extra["ours_bf16"], cond.to(dtype=torch.bfloat16))
            if "ours_int8" in extra:
                fns["hf_int8"] = hf_run(extra["hf_int8"])
                fns["ours_int8"] = ours_run(extra["ours_int8"])
        for fn in fns.values():  # short warm-up of every path
            fn()
        state["steps"] = args.steps
        r = alternate(fns, args.rounds, pick="max")
        for name, value in r.items():
            print(f"| {batch} | {name} | {value:.2f} | {value / r['hf']:.2f}x |", flush=True)
        if batch == 1:
            print(f"| 1 | hook overhead (4 additive hooks) | | {100 * (1 - r['ours_4_hooks'] / r['ours']):.1f}% |")


if __name__ == "__main__":
    main()
