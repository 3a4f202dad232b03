"""`make demo`: the whole pipeline end to end, offline.

text -> conditioning -> forward with cache (hook names and shapes) -> generation -> a
time-aware intervention from a chosen second -> EnCodec decode -> wav files + a report.

Until the trained toy model ships, this runs on a small model with RANDOM weights: the
pipeline is real, the music is not (expect noise).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from musicgen_lens import HookedMusicGen
from musicgen_lens._atomic import atomic_write_text
from musicgen_lens.audio import save_audio
from musicgen_lens.generation import apply_delay_pattern
from musicgen_lens.tiny import save_tiny_checkpoint

BANNER = "NOTE: the weights are RANDOM (no trained default model ships yet), so the audio is noise."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="demo_out")
    parser.add_argument("--prompt", default="classical trumpet melody")
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--steer-from", type=float, default=0.5, help="second at which the intervention starts")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(BANNER)
    torch.manual_seed(args.seed)

    ckpt = out / "random_model"
    if not (ckpt / "config.json").exists():
        save_tiny_checkpoint(ckpt, seed=args.seed, n_layers=4, d_model=64, n_heads=4, d_mlp=128, n_ctx=512)
    model = HookedMusicGen.from_pretrained(ckpt, device="cuda" if torch.cuda.is_available() else "cpu")
    cfg = model.cfg
    print(f"model: {cfg.n_layers} layers, d_model {cfg.d_model}, {cfg.n_heads} heads, {cfg.n_codebooks} codebooks x {cfg.d_vocab} codes, "
          f"{cfg.frame_rate:g} frames/s, {cfg.sample_rate} Hz")

    cond = model.condition([args.prompt])
    frames = torch.randint(0, cfg.d_vocab, (1, cfg.n_codebooks, 20), generator=torch.Generator().manual_seed(args.seed))
    codes = apply_delay_pattern(frames, cfg.pad_token_id, cfg.audio_channels).to(model.device)
    with torch.no_grad():
        _, cache = model.run_with_cache(codes, cond)
    shapes = {name: tuple(cache[name].shape) for name in cache.keys()}
    print(f"\nrun_with_cache: {len(shapes)} activations; block 0 and the ends:")
    for name, shape in shapes.items():
        if not name.startswith("blocks.") or name.startswith("blocks.0."):
            print(f"  {name:40s} {shape}")

    # A time-aware intervention: from --steer-from seconds on, conditional CFG rows only.
    direction = torch.randn(cfg.d_model, generator=torch.Generator().manual_seed(1)).to(model.device)
    direction = 8.0 * direction / direction.norm()
    layer = cfg.n_layers // 2

    def steer(resid: torch.Tensor, hook) -> torch.Tensor:
        when = (hook.ctx.seconds >= args.steer_from).to(resid.dtype)[None, :, None]
        rows = hook.ctx.cond_rows.to(resid.dtype)[:, None, None]
        return resid + rows * when * direction

    t0 = time.perf_counter()
    plain = model.generate([args.prompt], duration=args.seconds, seed=args.seed)
    t_plain = time.perf_counter() - t0
    steered = model.generate([args.prompt], duration=args.seconds, seed=args.seed, fwd_hooks=[(f"blocks.{layer}.hook_resid_post", steer)])
    start_frame = int(args.steer_from * cfg.frame_rate)
    same_before = bool(torch.equal(plain[..., :start_frame], steered[..., :start_frame]))
    changed_after = float((plain[..., start_frame:] != steered[..., start_frame:]).float().mean())
    print(f"\ngenerated {plain.shape[-1]} frames ({args.seconds} s) in {t_plain:.2f} s; "
          f"steered from {args.steer_from} s: frames before identical = {same_before}, "
          f"{100 * changed_after:.0f}% of later codes changed")

    with torch.no_grad():
        paths = {name: save_audio(out / f"{name}.wav", model.decode(c)[0].cpu(), model.sample_rate) for name, c in (("original", plain), ("steered", steered))}
    report = [
        "# musicgen-lens demo report",
        "",
        BANNER,
        "",
        f"- prompt: `{args.prompt}`",
        f"- model: {cfg.n_layers} layers, d_model {cfg.d_model}, {cfg.n_codebooks} codebooks, {cfg.frame_rate:g} frames/s, {cfg.sample_rate} Hz",
        f"- hook points cached in one forward: {len(shapes)}",
        f"- generated: {plain.shape[-1]} frames in {t_plain:.2f} s (seed {args.seed})",
        f"- intervention: random direction (norm 8) added to blocks.{layer}.hook_resid_post from {args.steer_from} s, conditional branch",
        f"- frames before {args.steer_from} s bit-identical to the unsteered run: {same_before}",
        f"- codes changed after: {100 * changed_after:.0f}%",
        "",
        "## files",
        *[f"- `{p.name}`" for p in paths.values()],
        "",
        "## activations (block 0 and the ends)",
        "",
        "| hook | shape |",
        "|---|---|",
        *[f"| `{n}` | {list(s)} |" for n, s in shapes.items() if not n.startswith("blocks.") or n.startswith("blocks.0.")],
    ]
    atomic_write_text(out / "report.md", "\n".join(report) + "\n")
    print(f"\nwrote {', '.join(str(p) for p in paths.values())} and {out / 'report.md'}")
    print(BANNER)
    return 0 if same_before else 1


if __name__ == "__main__":
    raise SystemExit(main())
