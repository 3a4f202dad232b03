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

    model = HookedMusicGen.from_pretrained(args.model, device=args.device)
    if args.melody and not model.cfg.is_melody:
        raise SystemExit(
            f"--melody needs a MusicGen-melody checkpoint (e.g. --model facebook/musicgen-melody); {args.model!r} is text-only"
        )
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
        melody=args.melody,
    )
    with torch.no_grad():
        audio = model.decode(codes)[0]
    path = save_audio(args.out, audio.cpu(), model.sample_rate)
    print(f"wrote {path} ({audio.shape[-1] / model.sample_rate:.2f} s at {model.sample_rate} Hz)")
    return 0


def _steer(args: argparse.Namespace) -> int:
    import torch

    from musicgen_lens import HookedMusicGen
    from musicgen_lens.audio import save_audio
    from musicgen_lens.steering import Intervention, SteeringVector

    model = HookedMusicGen.from_pretrained(args.model, device=args.device)
    vector = SteeringVector.load(args.vector)
    intervention = Intervention(
        vector, site=args.site or vector.site, layer=args.layer if args.layer is not None else vector.layer,
        alpha=args.alpha, mode=args.mode, start=args.start, end=args.end, every=args.every, count=args.count, branch=args.branch,
    )
    kwargs = dict(
        duration=args.duration, guidance_scale=args.guidance_scale, top_k=args.top_k, seed=args.seed,
        audio_prompt=args.audio_prompt, prompt_offset=args.prompt_offset, prompt_duration=args.prompt_duration,
    )
    outputs = {args.out: model.generate([args.prompt], steering=[intervention], **kwargs)}
    if args.original:
        outputs[args.original] = model.generate([args.prompt], **kwargs)
    for path, codes in outputs.items():
        with torch.no_grad():
            audio = model.decode(codes)[0].cpu()
        print(f"wrote {save_audio(path, audio, model.sample_rate)}")
    return 0


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds of new audio")
    parser.add_argument("--out", default="out.wav")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="hub name or local checkpoint directory")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--guidance-scale", type=float, default=3.0)
    parser.add_argument("--top-k", type=int, default=250)
    parser.add_argument("--audio-prompt", default=None, help="audio file to continue")
    parser.add_argument("--prompt-offset", type=float, default=0.0, help="seconds into --audio-prompt to start")
    parser.add_argument("--prompt-duration", type=float, default=None, help="seconds of --audio-prompt to use")
    parser.add_argument("--device", default=None)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="musicgen-lens", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="generate audio from a text prompt")
    _common(gen)
    gen.add_argument("--top-p", type=float, default=0.0)
    gen.add_argument("--temperature", type=float, default=1.0)
    gen.add_argument("--melody", default=None, help="audio file whose melody (chroma) conditions the music (melody checkpoints only)")
    gen.set_defaults(func=_generate)
    steer = sub.add_parser("steer", help="generate with a steering vector (the paper's intervention)")
    _common(steer)
    steer.add_argument("--vector", required=True, help="a SteeringVector .safetensors file")
    steer.add_argument("--layer", type=int, default=None, help="default: the vector's layer")
    steer.add_argument("--site", default=None, help="default: the vector's site (e.g. resid_post)")
    steer.add_argument("--alpha", type=float, default=0.5)
    steer.add_argument("--mode", default="norm_relative", choices=["add", "norm_relative", "clamp", "ablate"])
    steer.add_argument("--start", type=float, default=None, help="second at which steering starts")
    steer.add_argument("--end", type=float, default=None)
    steer.add_argument("--every", type=int, default=None, help="fire every N generation steps (or calls, see --count)")
    steer.add_argument("--count", default="steps", choices=["steps", "calls"],
                       help="what --every counts: generation steps, or the authors' Hugging Face forward calls (25 -> steps 23, 48, ...)")
    steer.add_argument("--branch", default="cond", choices=["cond", "uncond", "both"])
    steer.add_argument("--original", default=None, help="also write the unsteered audio here")
    steer.set_defaults(func=_steer)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
