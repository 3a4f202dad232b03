"""Step 3: copy the exported checkpoint into the package as the embedded default model.

    python training/ship.py --export runs/lm/export
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
    args = p.parse_args(argv)
    src = Path(args.export)
    size = sum(f.stat().st_size for f in src.iterdir()) / 2**20
    if size > LIMIT_MB:
        raise SystemExit(f"{src} is {size:.1f} MB; the embedded model must stay under {LIMIT_MB} MB")
    staging = TOY_MODEL.with_name(".toy.staging")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(src, staging)
    # swap by renames, never delete first: if shipping stops midway the old model is in .toy.previous
    previous = TOY_MODEL.with_name(".toy.previous")
    shutil.rmtree(previous, ignore_errors=True)
    if TOY_MODEL.exists():
        TOY_MODEL.rename(previous)
    staging.rename(TOY_MODEL)
    shutil.rmtree(previous, ignore_errors=True)
    print(f"shipped {size:.1f} MB to {TOY_MODEL}")


if __name__ == "__main__":
    main()
