"""`musicgen-lens` command line: generate (and continue) audio from a text prompt."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

DEFAULT_MODEL = "facebook/musicgen-small"


def _generate(args: argparse.Namespace) -> int:
    import torch

    from musicgen_lens import HookedMusicGen
    from musicgen_lens.audio import save_audio

    if args.melody:
        raise SystemExit("--melody needs a melody checkpoint; melody conditioning is not supported yet")
    model = HookedMusicGen.from_pretrained(args.model, device=args.device)
    codes = model.generate(
        [args.prompt],
        duration=args.duration,
        guidance_scale=args.guidance_scale,
        top_k=args.top_k,
        top_p=args.top_p,
        temperature=args.temperature,
        seed=args.seed,
        audio_prompt=args.audio_prompt,
        prompt_offset=args.prompt_offset,
        prompt_duration=args.prompt_duration,
    )
    with torch.no_grad():
        audio = model.decode(codes)[0]
    path = save_audio(args.out, audio.cpu(), model.sample_rate)
    print(f"wrote {path} ({audio.shape[-1] / model.sample_rate:.2f} s at {model.sample_rate} Hz)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="musicgen-lens", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="generate audio from a text prompt")
    gen.add_argument("prompt")
    gen.add_argument("--duration", type=float, default=8.0, help="seconds of new audio")
    gen.add_argument("--out", default="out.wav")
    gen.add_argument("--model", default=DEFAULT_MODEL, help="hub name or local checkpoint directory")
    gen.add_argument("--seed", type=int, default=None)
    gen.add_argument("--guidance-scale", type=float, default=3.0)
    gen.add_argument("--top-k", type=int, default=250)
    gen.add_argument("--top-p", type=float, default=0.0)
    gen.add_argument("--temperature", type=float, default=1.0)
    gen.add_argument("--audio-prompt", default=None, help="audio file to continue")
    gen.add_argument("--prompt-offset", type=float, default=0.0, help="seconds into --audio-prompt to start")
    gen.add_argument("--prompt-duration", type=float, default=None, help="seconds of --audio-prompt to use")
    gen.add_argument("--melody", default=None, help="melody audio (melody checkpoints only)")
    gen.add_argument("--device", default=None)
    gen.set_defaults(func=_generate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
