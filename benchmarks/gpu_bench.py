"""GPU set (prepared, not yet run): HF generate vs ours eager vs ours CUDA-graphed, bf16.

    python benchmarks/gpu_bench.py [--steps 250] [--rounds 3]    # < 8 min on one H100/H200

musicgen-small shape, random weights, bfloat16, batch 1, CFG 3.0, greedy decoding (so codes
can be compared), a steering hook (additive vector, marked graph-safe, time-windowed through
the device-side `hook.ctx.frames`) on 4 layers. Prints steps/s and ratios to HF, and whether
the greedy codes of eager, graphed and steered runs are identical to ours eager / to HF.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import small_shaped_hf_model  # noqa: E402

from musicgen_lens import HookedMusicGen, fast  # noqa: E402


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn) -> tuple[float, object]:
    _sync()
    start = time.perf_counter()
    out = fn()
    _sync()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=250)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="CPU, fp32, 2 narrow layers: checks the script runs (no graphs)")
    args = parser.parse_args()
    if not args.smoke and not torch.cuda.is_available():
        sys.exit("gpu_bench.py needs a CUDA device (or --smoke on CPU)")
    torch.set_grad_enabled(False)
    dev, dtype = ("cpu", torch.float32) if args.smoke else ("cuda", torch.bfloat16)
    shape = dict(n_layers=12, d_model=64, n_heads=4, d_mlp=256) if args.smoke else {}
    hf = small_shaped_hf_model(**shape).to(dev, dtype)
    ours = HookedMusicGen.from_hf(hf, device=dev, dtype=dtype)
    text = torch.randint(0, 32000, (1, 12), device=dev)
    cond = ours.condition(input_ids=text)
    frames = args.steps - 3  # ours counts frames; a generation of n frames runs n + 3 steps at 4 codebooks
    vector = (torch.randn(ours.cfg.d_model, device=dev) * 0.5).to(dtype)

    @fast.graph_safe
    def steer(resid, hook):  # from frame 50 on: read from device tensors, so graph replays see each step's time
        return resid + (hook.ctx.frames >= 50).to(resid.dtype)[None, :, None] * vector

    hooks = [(f"blocks.{l}.hook_resid_post", steer) for l in (8, 9, 10, 11)]  # 4 of the 24 (12 in --smoke) layers

    hf_codes: list[torch.Tensor] = []
    decode = hf.audio_encoder.decode

    def spy(codes, *a, **kw):  # HF hands its codes to EnCodec here (as tests/helpers.hf_generate_codes)
        hf_codes[:] = [codes[0]]
        return decode(codes, *a, **kw)

    hf.audio_encoder.decode = spy
    runs = {
        "hf_generate": lambda: hf.generate(input_ids=text, max_new_tokens=args.steps, do_sample=False, guidance_scale=3.0),
        "ours_eager": lambda: ours.generate(cond=cond, max_new_frames=frames, do_sample=False, guidance_scale=3.0, progress=False),
        "ours_static_eager": lambda: fast.generate_static(ours, cond, max_new_frames=frames, graph=False, return_info=True),
        "ours_graphed": lambda: fast.generate_static(ours, cond, max_new_frames=frames, return_info=True),
        "ours_eager_steered": lambda: ours.generate(cond=cond, max_new_frames=frames, do_sample=False, guidance_scale=3.0, progress=False, fwd_hooks=hooks),
        "ours_graphed_steered": lambda: fast.generate_static(ours, cond, max_new_frames=frames, fwd_hooks=hooks, return_info=True),
    }
    for fn in runs.values():  # warm-up (kernels, cuBLAS handles, allocator)
        fn()
    best: dict[str, float] = {}
    outs: dict[str, object] = {}
    for _ in range(args.rounds):
        for name, fn in runs.items():
            t, out = timed(fn)
            best[name] = min(best.get(name, float("inf")), t)
            outs[name] = out
    codes = {n: (o[0] if isinstance(o, tuple) else o) for n, o in outs.items()}
    infos = {n: o[1] for n, o in outs.items() if isinstance(o, tuple)}
    device_name = "CPU smoke run" if args.smoke else torch.cuda.get_device_name()
    print(f"{device_name}, {dtype}, batch 1, CFG 3.0, greedy, {args.steps} steps, best of {args.rounds}")
    print("| run | steps/s | ratio to HF generate | path |")
    print("|---|---|---|---|")
    for name, t in best.items():
        info = infos.get(name)
        path = f"{info.path}" + (f" ({info.reason})" if info and info.reason else "") if info else "-"
        print(f"| {name} | {args.steps / t:.1f} | {best['hf_generate'] / t:.2f}x | {path} |")
    ref = codes["ours_eager"]
    checks = {
        "ours eager == HF generate (greedy; bf16 rounding may split them)": bool(hf_codes) and torch.equal(hf_codes[0].to(ref.device), ref),
        "static eager == ours eager": torch.equal(codes["ours_static_eager"], ref),
        "graphed == ours eager": torch.equal(codes["ours_graphed"], ref),
        "graphed steered == eager steered": torch.equal(codes["ours_graphed_steered"], codes["ours_eager_steered"]),
        "steering changed the codes": not torch.equal(codes["ours_eager_steered"], ref),
    }
    print()
    for what, ok in checks.items():
        print(f"{'OK  ' if ok else 'FAIL'} {what}")


if __name__ == "__main__":
    main()
