"""`musicgen-lens` command line: generate (and continue) audio from a text prompt.

Everything that can be checked without the model is checked before it is loaded: numbers, the
input files, and that --out (and --original) can be written, so a bad argument never costs a
generation. The default model is the embedded toy model; pass --model facebook/musicgen-small
(downloaded from the Hugging Face hub) or a local checkpoint directory for real music.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Callable, Sequence

DEFAULT_MODEL = "toy"
HUB_MODEL = "facebook/musicgen-small"
# torch.Generator.manual_seed takes up to 64 bits; numpy and others up to 63 (signed).
_MAX_SEED = 2**63 - 1


# ------------------------------------------------------------------ argument types


def _number(kind: type, *, low: float | None = None, high: float | None = None, low_open: bool = False, what: str) -> Callable[[str], float]:
    """An argparse type: `kind` (int or float), finite, within the bounds; the message says what is expected."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid value {text!r}; expected {what}") from None
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"invalid value {text!r}; expected {what}")
        if low is not None and (value < low or (low_open and value == low)):
            raise argparse.ArgumentTypeError(f"invalid value {text!r}; expected {what}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"invalid value {text!r}; expected {what}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in some messages
    return parse


_seconds_positive = _number(float, low=0.0, low_open=True, what="a positive, finite number of seconds")
_seconds = _number(float, low=0.0, what="a finite number of seconds >= 0")
_positive = _number(float, low=0.0, low_open=True, what="a positive, finite number")
_nonneg = _number(float, low=0.0, what="a finite number >= 0")
_finite = _number(float, what="a finite number")
_unit = _number(float, low=0.0, high=1.0, what="a number in [0, 1]")
_count = _number(int, low=0, what="a whole number >= 0")
_every = _number(int, low=1, what="a whole number >= 1")
_seed = _number(int, low=0, high=_MAX_SEED, what=f"a whole number in [0, {_MAX_SEED}]")


# ------------------------------------------------------------------ checks before the model


def _check_destinations(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    from musicgen_lens.audio import check_save_path

    for option in ("out", "original"):
        path = getattr(args, option, None)
        if path is None:
            continue
        try:
            check_save_path(path, create_dirs=True)
        except (OSError, ValueError) as err:
            parser.error(f"--{option} {path}: {err}")


def _check_inputs(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    for option in ("audio_prompt", "melody", "vector"):
        path = getattr(args, option, None)
        if path is None:
            continue
        flag = "--" + option.replace("_", "-")
        if not Path(path).exists():
            parser.error(f"{flag} {path}: no such file ({str(Path(path).absolute())!r})")
        if Path(path).is_dir():
            parser.error(f"{flag} {path}: is a directory; expected a file")


def _load_model(parser: argparse.ArgumentParser, args: argparse.Namespace):
    """The model named by --model; a missing directory, or a hub download that fails, is a usage
    error that says what to do, not a traceback."""
    from musicgen_lens import HookedMusicGen
    from musicgen_lens.loading import resolve_name_or_path
    from musicgen_lens.toy import is_toy_name

    try:
        _, source = resolve_name_or_path(args.model)
    except (OSError, ValueError, TypeError) as err:
        parser.error(f"--model {args.model}: {err}")
    from_hub = not is_toy_name(args.model) and not os.path.isdir(source)
    try:
        return HookedMusicGen.from_pretrained(args.model, device=args.device)
    except OSError as err:
        if not from_hub:
            raise
        offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
        parser.error(
            f"--model {args.model}: could not load it from the Hugging Face hub{' (HF_HUB_OFFLINE is set)' if offline else ''}: "
            f"{str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__}\n"
            "no network? try --model toy (the embedded model), or set HF_HUB_OFFLINE=1 and pass a local directory "
            "(a save_pretrained checkpoint, or a hub name already in the cache)"
        )


def _save(path: str, audio, sample_rate: int) -> Path:
    from musicgen_lens.audio import save_audio

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return save_audio(path, audio, sample_rate)


# ------------------------------------------------------------------ commands


def _generate(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    import torch

    model = _load_model(parser, args)
    if args.melody and not model.cfg.is_melody:
        parser.error(
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
    path = _save(args.out, audio.cpu(), model.sample_rate)
    print(f"wrote {path} ({audio.shape[-1] / model.sample_rate:.2f} s at {model.sample_rate} Hz)")
    return 0


def _steer(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    import torch

    from musicgen_lens.steering import Intervention, SteeringVector

    if args.original is not None and Path(args.original).absolute() == Path(args.out).absolute():
        parser.error(f"--original {args.original} is the same file as --out; expected two different paths")
    vector = SteeringVector.load(args.vector)  # before the model: a bad vector file fails fast
    model = _load_model(parser, args)
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
        print(f"wrote {_save(path, audio, model.sample_rate)}")
    return 0


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt")
    parser.add_argument("--duration", type=_seconds_positive, default=8.0, help="seconds of new audio")
    parser.add_argument(
        "--out", default="out.wav",
        help="audio file to write; its extension sets the format (.wav, .flac, .ogg, ...); missing directories are created",
    )
    parser.add_argument(
        "--model", default=DEFAULT_MODEL,
        help=f'"toy" (default: the embedded toy model, trained on synthetic audio), a hub name such as {HUB_MODEL} '
        '(downloaded; the real MusicGen), or a local checkpoint directory (a folder named toy: "./toy")',
    )
    parser.add_argument("--seed", type=_seed, default=None)
    parser.add_argument("--guidance-scale", type=_nonneg, default=3.0, help="classifier-free guidance; <= 1 turns it off")
    parser.add_argument("--top-k", type=_count, default=250, help="0 disables top-k")
    parser.add_argument("--audio-prompt", default=None, help="audio file to continue")
    parser.add_argument("--prompt-offset", type=_seconds, default=0.0, help="seconds into --audio-prompt to start")
    parser.add_argument("--prompt-duration", type=_seconds_positive, default=None, help="seconds of --audio-prompt to use")
    parser.add_argument("--device", default=None)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="musicgen-lens", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="generate audio from a text prompt")
    _common(gen)
    gen.add_argument("--top-p", type=_unit, default=0.0, help="0 disables nucleus sampling")
    gen.add_argument("--temperature", type=_positive, default=1.0)
    gen.add_argument("--melody", default=None, help="audio file whose melody (chroma) conditions the music (melody checkpoints only)")
    gen.set_defaults(func=_generate, subparser=gen)
    steer = sub.add_parser("steer", help="generate with a steering vector (the paper's intervention)")
    _common(steer)
    steer.add_argument("--vector", required=True, help="a SteeringVector .safetensors file")
    steer.add_argument("--layer", type=_count, default=None, help="default: the vector's layer")
    steer.add_argument("--site", default=None, help="default: the vector's site (e.g. resid_post)")
    steer.add_argument("--alpha", type=_finite, default=0.5)
    steer.add_argument("--mode", default="norm_relative", choices=["add", "norm_relative", "clamp", "ablate"])
    steer.add_argument("--start", type=_seconds, default=None, help="second at which steering starts")
    steer.add_argument("--end", type=_seconds, default=None)
    steer.add_argument("--every", type=_every, default=None, help="fire every N generation steps (or calls, see --count)")
    steer.add_argument("--count", default="steps", choices=["steps", "calls"],
                       help="what --every counts: generation steps, or the authors' Hugging Face forward calls (25 -> steps 23, 48, ...)")
    steer.add_argument("--branch", default="cond", choices=["cond", "uncond", "both"])
    steer.add_argument("--original", default=None, help="also write the unsteered audio here")
    steer.set_defaults(func=_steer, subparser=steer)
    _reproduce_parser(sub)
    return parser


def _ints(text: str) -> list[int]:
    """"17-21" or "17,18,21" -> [17, ..., 21]."""
    out: list[int] = []
    try:
        for part in text.split(","):
            lo, _, hi = part.partition("-")
            out.extend(range(int(lo), int(hi) + 1) if hi else [int(lo)])
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}; expected layers like 17-21 or 17,19") from None
    return out


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}; expected numbers like 0.3,0.5,0.7") from None


def _reproduce_parser(sub) -> None:  # noqa: ANN001 - argparse's private subparsers action
    rep = sub.add_parser(
        "reproduce", help="arXiv 2506.10225 end to end: segments -> activations -> probes -> steering -> judges -> report.md",
        description="Resumable: run it again with the same arguments to continue; each stage's outputs are keyed by its inputs.",
    )
    rep.add_argument("--data", required=True, help="GTZAN-style folder (genre/xxx.wav), or a folder with labels.csv (path, genre)")
    rep.add_argument("--model", default=HUB_MODEL, help=f"hub name or local checkpoint (default {HUB_MODEL})")
    rep.add_argument("--out", required=True, help="output folder (report.md, audio, stores)")
    rep.add_argument("--device", default=None)
    rep.add_argument("--dtype", default=None, choices=["bf16", "fp16", "fp32"])
    rep.add_argument("--genres", default="classical,electronic,rock,jazz", help="comma-separated; 'all' = every genre found")
    rep.add_argument("--segment-seconds", type=_seconds_positive, default=10.0)
    rep.add_argument("--max-per-genre", type=_count, default=None)
    rep.add_argument("--new-frames", type=_every, default=512)
    rep.add_argument("--guidance-scale", type=_nonneg, default=3.0)
    rep.add_argument("--batch-size", type=_every, default=8)
    rep.add_argument("--pooling", default="last", choices=["last", "mean"], help="last generation step (paper) or mean over the new frames")
    rep.add_argument("--seed", type=_seed, default=0)
    rep.add_argument("--probe-layers", type=_ints, default=None, help="default: every layer")
    rep.add_argument("--probe-epochs", type=_every, default=250)
    rep.add_argument("--probe-seeds", type=_every, default=3, help="held-out splits per probe (seeds 0..N-1)")
    rep.add_argument("--probe-lrs", type=_floats, default=[5e-3, 5e-2], help="Adam learning rates compared")
    rep.add_argument("--steer-kind", default="mse", choices=["mse", "ordinal", "ce", "logistic"])
    rep.add_argument("--layers", type=_ints, default=[17, 18, 19, 20, 21], help="steering layers (default 17-21)")
    rep.add_argument("--alphas", type=_floats, default=[0.3, 0.5, 0.7])
    rep.add_argument("--steer-prompt", default="a piece of music")
    rep.add_argument("--n-steer", type=_every, default=8, help="clips per (genre, layer, alpha)")
    rep.add_argument("--steer-seconds", type=_seconds_positive, default=10.0)
    rep.add_argument("--every", type=_every, default=None, help="the authors: --every 25 --count calls")
    rep.add_argument("--count", default="steps", choices=["steps", "calls"])
    rep.add_argument("--tagger", default="MIT/ast-finetuned-audioset-10-10-0.4593")
    rep.add_argument("--clap", default="laion/clap-htsat-unfused")
    rep.add_argument("--quiet", action="store_true")
    rep.set_defaults(func=_reproduce, subparser=rep)


def _reproduce(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if not Path(args.data).is_dir():
        parser.error(f"--data {args.data}: not a folder")
    from musicgen_lens.paper.protocol.reproduce import reproduce

    genres = None if args.genres == "all" else [g.strip() for g in args.genres.split(",") if g.strip()]
    summary = reproduce(
        args.data, args.model, args.out, device=args.device, dtype=args.dtype, progress=not args.quiet, genres=genres,
        segment_seconds=args.segment_seconds, max_per_genre=args.max_per_genre, new_frames=args.new_frames,
        guidance_scale=args.guidance_scale, batch_size=args.batch_size, pooling_steps=args.pooling, seed=args.seed,
        probe_layers=args.probe_layers, probe_epochs=args.probe_epochs,
        probe_seeds=tuple(range(args.probe_seeds)), probe_lrs=tuple(args.probe_lrs), steer_kind=args.steer_kind, steer_layers=args.layers,
        alphas=args.alphas, steer_prompt=args.steer_prompt, n_steer=args.n_steer, steer_seconds=args.steer_seconds,
        every=args.every, count=args.count, tagger=args.tagger, clap=args.clap,
    )
    print(summary["report"])
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    sub = args.subparser  # errors print the subcommand's usage
    if args.command != "reproduce":  # its --out is a folder, checked by reproduce
        _check_destinations(sub, args)
        _check_inputs(sub, args)
    return args.func(sub, args)


if __name__ == "__main__":
    sys.exit(main())
