"""Step 2 of the toy model: train the decoder + T5 on the codec's codes, export the checkpoint.

    python training/train_lm.py --data runs/world --codec runs/codec/encodec --run runs/lm

Resumable (runs/lm/state.pt). Writes runs/lm/export (a `save_pretrained` checkpoint with its
tokenizer and model card); `training/ship.py` copies it into the package.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
from pathlib import Path

import torch

from musicgen_lens import HookedMusicGen
from musicgen_lens._atomic import atomic_path
from musicgen_lens.tiny import build_tokenizer
from musicgen_lens.training.data import WORLD, build_dataset, load_split
from musicgen_lens.training.lm import ARCH, build_hf_model, encode_audio, export, train_lm, validation_loss, world_words


def cached_codes(path: Path, codec, data: str, split: str) -> torch.Tensor:
    """The split's codes, encoded once; a resumed run does not read the audio again."""
    if path.exists():
        # weights-only whatever torch's default: a planted codes file cannot run code
        codes = torch.load(path, weights_only=True)
        if not isinstance(codes, torch.Tensor) or codes.dtype.is_floating_point:
            raise ValueError(f"{str(path)!r} is not a codes cache (expected an integer tensor); delete it to re-encode {split}")
        return codes
    codes = encode_audio(codec, load_split(data, split)[0])
    with atomic_path(path) as tmp:
        torch.save(codes, tmp)
    return codes


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="runs/world")
    p.add_argument("--codec", default="runs/codec/encodec")
    p.add_argument("--run", default="runs/lm")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init-from", default=None, help="a saved checkpoint (e.g. the shipped toy model): continue training its decoder and text encoder on its codec's codes")
    p.add_argument("--n-clips", type=int, default=None, help="first render the world's first N clips into --data (resumable; finished wavs are kept)")
    p.add_argument("--final-codec", default=None, help="ship this codec instead (a decoder-only fine-tune of --codec: same codes)")
    args = p.parse_args(argv)
    run = Path(args.run)
    run.mkdir(parents=True, exist_ok=True)
    if args.n_clips is not None:
        build_dataset(args.data, args.n_clips)

    _, train_rows = load_split(args.data, "train", with_audio=False)
    _, test_rows = load_split(args.data, "test", with_audio=False)
    n_listed = len(train_rows) + len(test_rows)
    # load_split reads every clip listed there: a folder rendered larger would train on more
    if args.n_clips is not None and n_listed != args.n_clips:
        p.error(f"--data {args.data} lists {n_listed} clips, not the --n-clips {args.n_clips} asked for; use a folder of its own for each size")
    if args.init_from:
        from transformers import AutoTokenizer, MusicgenForConditionalGeneration

        hf = MusicgenForConditionalGeneration.from_pretrained(args.init_from, dtype=torch.float32).eval()
        tokenizer = AutoTokenizer.from_pretrained(args.init_from)
    else:
        tokenizer = build_tokenizer(tuple(world_words([r["text"] for r in train_rows + test_rows])))
        hf = build_hf_model(args.codec, tokenizer.get_vocab(), seed=args.seed)
    model = HookedMusicGen.from_hf(hf, tokenizer=tokenizer, device="cpu")
    codes = cached_codes(run / "codes_train.pt", model.codec, args.data, "train")
    val = cached_codes(run / "codes_test.pt", model.codec, args.data, "test")
    n_params = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("codec."))
    print(f"decoder + text encoder: {n_params / 1e6:.2f} M parameters; {codes.shape[0]} clips of {codes.shape[-1]} frames")
    train_lm(run, model, codes, train_rows, val_codes=val, val_rows=test_rows, steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed)

    val_text = validation_loss(model, val, test_rows)
    val_null = validation_loss(model, val, test_rows, text=False)
    log = [json.loads(line) for line in open(run / "log.jsonl")]
    # each resumed process restarts its clock: add up the segments
    seconds = sum(a["t"] for a, b in zip(log, log[1:]) if b["t"] < a["t"]) + log[-1]["t"]
    stats = dict(val_loss_text=val_text, val_loss_no_text=val_null, final_train_loss=sum(e["loss"] for e in log[-50:]) / min(50, len(log)),
                 steps=args.steps, batch_size=args.batch_size, train_clips=int(codes.shape[0]), world_items=n_listed,
                 minutes=seconds / 60)
    (run / "stats.json").write_text(json.dumps(stats, indent=2))
    if args.final_codec:
        swap_codec_decoder(hf, args.final_codec)
    card = model_card(stats, model, args)
    out = export(model, hf, tokenizer, run / "export", card)
    print(json.dumps(stats, indent=2))
    print(f"checkpoint written to {out}")


def swap_codec_decoder(hf, path: str) -> None:
    """Take the decoder of a decoder-only fine-tune; refuse if encoder or codebooks differ."""
    from transformers import EncodecModel

    new = EncodecModel.from_pretrained(path).state_dict()
    old = hf.audio_encoder.state_dict()
    for key, value in old.items():
        if not key.startswith("decoder.") and not torch.equal(value, new[key]):
            raise ValueError(f"{path} changes {key}: the codes the decoder was trained on would change")
    hf.audio_encoder.load_state_dict(new)


def codec_steps(encodec_dir: str | None) -> int:
    """Steps of the codec run that wrote `encodec_dir` (its run folder's last logged step)."""
    if encodec_dir is None:
        return 0
    log = Path(encodec_dir).parent / "log.jsonl"
    last = log.read_text().strip().splitlines()[-1]
    return int(json.loads(last)["step"])


def earlier_card_line(checkpoint: str | None, prefix: str) -> str | None:
    """The line starting with `prefix` in the model card of the checkpoint a run continued from."""
    card = Path(checkpoint) / "README.md" if checkpoint else None
    if card is None or not card.exists():
        return None
    return next((line[len(prefix) :] for line in card.read_text().splitlines() if line.startswith(prefix)), None)


def model_card(stats: dict, model, args) -> str:
    cfg = model.cfg
    init_from = getattr(args, "init_from", None)
    earlier_codec = earlier_card_line(init_from, "- codec training: ")
    if earlier_codec is not None:  # a continued run keeps its checkpoint's codec (and codes)
        codec_text = "codec training: " + earlier_codec.split("; multi-resolution mel")[0]
    else:
        codec_text = f"codec training: {codec_steps(args.codec)} steps (batch 8 x 1 s, AdamW 1e-3, first 300 without quantisation)"
    if args.final_codec and earlier_codec is None:
        codec_text += f", then {codec_steps(args.final_codec)} decoder-only steps (lr 5e-4; encoder and codebooks frozen, so codes are unchanged)"
    world = {k: (list(v) if isinstance(v, tuple) else v) for k, v in WORLD.items()}
    first = earlier_card_line(init_from, "- training: ")
    # a checkpoint that was itself continued already says "first ...": its history is kept as it is
    earlier = f"first {first.rstrip(';').removeprefix('first ')}; then continued from that checkpoint for " if first else ""
    # a stage on a larger rendering of the world (e.g. `--n-clips 12000`) names its clips; the
    # checkpoint's own data line gives the earlier stages' count
    earlier_data = earlier_card_line(init_from, "- data: ") or ""
    found = re.search(r"\((\d+) clips of 4 s", earlier_data)
    earlier_clips = int(found.group(1)) if found else stats["train_clips"]
    found = re.search(r"; earlier stages: ([^)]*)\)", earlier_data)
    history = found.group(1) if found else None  # the checkpoint's own earlier stages, kept
    changed = earlier_clips != stats["train_clips"]
    if changed:
        history = f"{history}, then {earlier_clips} clips" if history else f"{earlier_clips} clips"
    items = f" with n = {stats['world_items']}" if "world_items" in stats else ""
    clips = f"{stats['train_clips']} clips of 4 s" + (f"; earlier stages: {history}" if history else "")
    on_clips = f", on {stats['train_clips']} clips" if changed else ""
    return f"""# musicgen-lens toy MusicGen

A tiny MusicGen (EnCodec + T5 + decoder) trained from scratch, offline, on the synthetic world of
`musicgen_lens.data.synth`. It exists so that demos, notebooks and tests mean something without
hub weights. It is NOT a general music model: it knows 7 lead instruments (trumpet, violin,
xylophone, flute, piano, guitar, synth), 5 styles (classical, rock, electronic, indian, jazz),
tempi 60-180 BPM, keys, and a tabla accompaniment.

- decoder: {cfg.n_layers} layers, d_model {cfg.d_model}, {cfg.n_heads} heads, d_mlp {cfg.d_mlp}, {cfg.n_codebooks} codebooks x {cfg.d_vocab} codes
- text encoder: T5, {ARCH['text_layers']} layers, d_model {ARCH['d_text']}, word-level tokenizer built with `tokenizers`
- codec: EnCodec, {cfg.sample_rate} Hz mono, {cfg.frame_rate:g} frames/s, trained with `musicgen_lens.training.rvq` (see training/train_codec.py)
- data: `make_dataset(n, **{world})`{items}, train split ({clips})
- training: {earlier}{stats['steps']} steps, batch {stats['batch_size']}, AdamW lr {args.lr}, seed {args.seed}, {stats['minutes']:.0f} min on {platform.machine()} CPU{on_clips};
  text dropped for 10% of items (CFG), descriptions randomly shortened
- final train loss {stats['final_train_loss']:.3f}; test loss with text {stats['val_loss_text']:.3f}, without text {stats['val_loss_no_text']:.3f} (mean cross-entropy over codebooks, nats)
- {codec_text}; multi-resolution mel (10 to 320 bands for windows of 64 to 2048 samples) + 0.1 waveform L1 + commitment; no adversarial loss
- known weakness: the codec smears harmonics and loses sparse high partials (a xylophone's bar modes), so a classifier trained on clean clips hears fewer instruments correctly in reconstructions (0.81 vs 0.95 clean); it is the encoder/decoder, not the codes (unquantised latents score the same) nor a noise floor (gating it away changes nothing); `make eval` also reports `eval.codec_classifier`, a judge trained on reconstructions, to separate the codec's errors from the decoder's; see the README's "The embedded toy model"
- stored in float16; `from_pretrained` loads it as float32
- reproduce: `make train` (training/train_codec.py, training/train_lm.py, training/ship.py)
"""


if __name__ == "__main__":
    main()
