"""Step 3: copy the exported checkpoint into the package as the embedded default model.

    python training/ship.py --export runs/lm/export

What the package keeps beside the checkpoint and the export does not make (the shipped clean
judges in judges/, steering_defaults.json keyed by weights fingerprint) is carried over.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from musicgen_lens.toy import TOY_MODEL

LIMIT_MB = 30


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--export", default="runs/lm/export")
    p.add_argument("--to", default=str(TOY_MODEL), help="the package's model folder (default: the embedded toy model)")
    args = p.parse_args(argv)
    src, target = Path(args.export), Path(args.to)
    size = sum(f.stat().st_size for f in src.iterdir()) / 2**20
    if size > LIMIT_MB:
        raise SystemExit(f"{src} is {size:.1f} MB; the embedded model must stay under {LIMIT_MB} MB")
    staging = target.with_name(".toy.staging")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(src, staging)
    if target.exists():  # the shipped judges and stored defaults are not part of an export: keep them
        for extra in target.iterdir():
            if not (staging / extra.name).exists():
                (shutil.copytree if extra.is_dir() else shutil.copy2)(extra, staging / extra.name)
    # swap by renames, never delete first: if shipping stops midway the old model is in .toy.previous
    previous = target.with_name(".toy.previous")
    shutil.rmtree(previous, ignore_errors=True)
    if target.exists():
        target.rename(previous)
    staging.rename(target)
    shutil.rmtree(previous, ignore_errors=True)
    print(f"shipped {size:.1f} MB to {target}")


if __name__ == "__main__":
    main()
