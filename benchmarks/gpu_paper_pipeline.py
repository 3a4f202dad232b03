"""The paper's collection at scale on a musicgen-small-shaped random model (no download), vs HF generate.

Prepared for a CUDA GPU (bf16), not yet run on one. Prints items/s and generation steps/s of
`cache_activations(..., pooling=Pooling.paper(...))` (batched, sampled continuations of audio
prompts, every decoder layer's output kept at the last step) and, on the same batch, of
Hugging Face's `MusicgenForConditionalGeneration.generate` (text only, same number of steps,
CFG 3, sampling) and of our `generate` without hooks.

    python benchmarks/gpu_paper_pipeline.py --device cuda --dtype bf16 --items 64 --batch-size 16
    python benchmarks/gpu_paper_pipeline.py --device cpu --tiny        # smoke test (CI-sized)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def build(tiny: bool, device: str, dtype: torch.dtype):
    from musicgen_lens import HookedMusicGen
    from musicgen_lens.tiny import build_tokenizer, tiny_hf_model

    if tiny:
        hf = tiny_hf_model(seed=0).eval()
    else:
        from common import small_shaped_hf_model

        hf = small_shaped_hf_model()
    tok = build_tokenizer()
    model = HookedMusicGen.from_hf(hf, tokenizer=tok, device=device, dtype=dtype)
    return hf.to(device=device, dtype=dtype), tok, model


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run(argv: list[str] | None = None) -> dict[str, float]:
    from musicgen_lens.activations import Item, Pooling, cache_activations

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="bf16", choices=list(DTYPES))
    p.add_argument("--tiny", action="store_true", help="the tiny random model (smoke test) instead of musicgen-small's shape")
    p.add_argument("--items", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--prompt-frames", type=int, default=None, help="audio prompt length (paper: 10 s = 500 frames)")
    p.add_argument("--new-frames", type=int, default=None, help="paper: 512")
    a = p.parse_args(argv)
    items = a.items or (4 if a.tiny else 64)
    batch = a.batch_size or (2 if a.tiny else 16)
    prompt_frames = a.prompt_frames or (10 if a.tiny else 500)
    new_frames = a.new_frames or (6 if a.tiny else 512)
    dtype = DTYPES[a.dtype] if a.device != "cpu" or a.dtype == "fp32" else torch.float32  # CPU: fp32
    hf, tok, model = build(a.tiny, a.device, dtype)
    cfg = model.cfg
    gen = torch.Generator().manual_seed(0)
    data = [Item(f"i{i}", codes=torch.randint(0, cfg.d_vocab, (cfg.n_codebooks, prompt_frames), generator=gen),
                 text="generate rock music continuing the given audio", labels={"genre": "rock"}) for i in range(items)]
    hooks = [f"blocks.{l}.hook_resid_post" for l in range(cfg.n_layers)]
    steps = model.pattern.length_for(prompt_frames + new_frames) - (prompt_frames + 1)
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        _sync(a.device)
        t = time.perf_counter()
        cache_activations(model, data, Path(tmp) / "s", hooks, pooling=Pooling.paper(new_frames, batch_size=batch), progress=False)
        _sync(a.device)
        dt = time.perf_counter() - t
    out["collect_items_per_s"] = items / dt
    out["collect_steps_per_s"] = items / batch * steps / dt  # batched generate steps per second
    texts = ["generate rock music"] * batch
    ids = tok(texts, return_tensors="pt", padding=True).to(a.device)
    n_new = new_frames + model.pattern.max_delay
    for name, fn in {
        "hf_generate": lambda: hf.generate(**ids, max_new_tokens=n_new, do_sample=True, guidance_scale=3.0),
        "ours_generate": lambda: model.generate(texts, max_new_frames=new_frames, guidance_scale=3.0, seed=0, progress=False),
    }.items():
        fn()  # warm-up
        _sync(a.device)
        t = time.perf_counter()
        fn()
        _sync(a.device)
        out[f"{name}_steps_per_s"] = n_new / (time.perf_counter() - t)
    shape = "tiny" if a.tiny else "musicgen-small-shaped"
    print(f"{shape} model on {a.device} ({dtype}), {items} items, batch {batch}, prompt {prompt_frames} + {new_frames} new frames")
    for k, v in out.items():
        print(f"  {k:28s} {v:10.2f}")
    return out


if __name__ == "__main__":
    run()
