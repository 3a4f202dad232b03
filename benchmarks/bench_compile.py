"""torch.compile of the blocks, with and without a steering hook: speed vs eager, and that the hook is applied.

    .venv/bin/python benchmarks/bench_compile.py [--pos 250] [--rounds 3] [--layers 24] [--backend inductor]

A forward at `--pos` positions of a musicgen-small-shaped model (random weights, fp32), eager
and with every block compiled (`block.compile(backend=...)`), with no hook and with an additive
steering hook on 4 layers' resid_post. Each compiled output is checked against eager with the
same hooks (max |logit difference|), so a speed-up from a graph that dropped the hook shows up
as a large difference instead of a good ratio. Best of `rounds` interleaved runs.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import alternate, seconds, small_shaped_hf_model  # noqa: E402

from musicgen_lens import HookedMusicGen  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pos", type=int, default=250)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backend", default="inductor")
    parser.add_argument("--layers", type=int, default=None, help="fewer layers than musicgen-small's 24 (a quick run)")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    hf = small_shaped_hf_model(**({"n_layers": args.layers} if args.layers else {}))
    model = HookedMusicGen.from_hf(hf, device="cpu")
    cond = model.condition(input_ids=torch.randint(0, 32000, (1, 12)))
    codes = torch.randint(0, 2048, (1, 4, args.pos))
    v = torch.randn(model.cfg.d_model) * 0.5
    layers = sorted({int(model.cfg.n_layers * f) for f in (0.25, 0.5, 0.625, 0.75)})
    steer = [(f"blocks.{l}.hook_resid_post", lambda x, hook: x + v) for l in layers]

    def eager_and_compiled() -> dict:
        out = {}
        for hooks in ("none", "steer"):
            fwd = steer if hooks == "steer" else []
            out[f"eager_{hooks}"] = lambda fwd=fwd: seconds(lambda: model.run_with_hooks(codes, cond, fwd_hooks=fwd))
        return out

    ref = {h: model.run_with_hooks(codes, cond, fwd_hooks=steer if h == "steer" else []) for h in ("none", "steer")}
    eager = eager_and_compiled()
    t0 = time.perf_counter()
    for block in model.blocks:
        block.compile(backend=args.backend, dynamic=False)
    diffs = {h: (model.run_with_hooks(codes, cond, fwd_hooks=steer if h == "steer" else []) - ref[h]).abs().max().item() for h in ("none", "steer")}
    compile_s = time.perf_counter() - t0
    compiled = {k.replace("eager", "compiled"): fn for k, fn in eager_and_compiled().items()}
    for block in model.blocks:  # the eager timings: no compiled call
        block._compiled_call_impl, block._lens_compiled = None, block._compiled_call_impl
    fns = {}
    for name, fn in {**eager, **compiled}.items():
        def run(fn=fn, use=name.startswith("compiled")):
            for block in model.blocks:
                block._compiled_call_impl = block._lens_compiled if use else None
            return fn()
        fns[name] = run
    t = alternate(fns, args.rounds, pick="min")
    print(f"forward at {args.pos} positions, {model.cfg.n_layers} layers, fp32, {torch.get_num_threads()} threads, backend {args.backend}, "
          f"best of {args.rounds}; first compiled calls (compile + run) {compile_s:.1f} s")
    print("| hooks | eager s | compiled s | compiled speed-up | max |compiled - eager logits| |")
    print("|---|---|---|---|---|")
    for h, label in (("none", "none"), ("steer", f"additive steering on resid_post of layers {layers}")):
        print(f"| {label} | {t[f'eager_{h}']:.3f} | {t[f'compiled_{h}']:.3f} | {t[f'eager_{h}'] / t[f'compiled_{h}']:.2f}x | {diffs[h]:.1e} |")
    # the difference the hook makes, for scale: a compiled graph that dropped it would be this far off
    print(f"(the hook itself moves the logits by up to {(ref['steer'] - ref['none']).abs().max().item():.2f})")


if __name__ == "__main__":
    main()
