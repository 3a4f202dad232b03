"""Step 1 of the toy model: render the synthetic world and train the tiny EnCodec.

    python training/train_codec.py --data runs/world --run runs/codec

Resumable: re-running skips rendered clips and continues from runs/codec/state.pt.
"""

from __future__ import annotations

import argparse

import torch

from musicgen_lens.training.codec import train_codec
from musicgen_lens.training.data import build_dataset, load_split


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="runs/world")
    p.add_argument("--run", default="runs/codec")
    p.add_argument("--n-clips", type=int, default=4000)
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--vq-warmup", type=int, default=300, help="steps of plain autoencoding before the codebooks start")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init-from", default=None, help="a finished run or a saved EncodecModel: continue training all of it (codes change)")
    p.add_argument("--decoder-only-from", default=None, help="a finished run or a saved EncodecModel: fine-tune only its decoder (codes unchanged)")
    p.add_argument("--adv-weight", type=float, default=0.0, help="weight of the spectrogram discriminator's adversarial term (0: none)")
    p.add_argument("--fm-weight", type=float, default=0.0, help="weight of the discriminator feature-matching term (0: none)")
    p.add_argument("--segment-s", type=float, default=1.0, help="seconds per training crop")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args(argv)
    if args.init_from and args.decoder_only_from:
        p.error("--init-from and --decoder-only-from exclude each other")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    build_dataset(args.data, args.n_clips, num_workers=args.workers)
    audio, _ = load_split(args.data, "train")
    print(f"training the codec on {audio.shape[0]} clips x {audio.shape[1] / 16000:g} s")
    out = train_codec(args.run, audio, steps=args.steps, batch_size=args.batch_size, seed=args.seed, vq_warmup=args.vq_warmup, lr=args.lr,
                      init_from=args.decoder_only_from or args.init_from, decoder_only=args.decoder_only_from is not None,
                      adv_weight=args.adv_weight, fm_weight=args.fm_weight, segment_s=args.segment_s)
    print(f"codec written to {out}")


if __name__ == "__main__":
    main()
