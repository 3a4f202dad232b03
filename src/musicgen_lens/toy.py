"""The embedded default model: a tiny MusicGen trained offline on the synthetic world.

`HookedMusicGen.from_pretrained("toy")` (or with no name) loads it from the package; see its
model card (`TOY_MODEL / "README.md"`) for what it was trained on, and `training/` for how.
"""

from __future__ import annotations

import os
from pathlib import Path

TOY_NAME = "toy"
TOY_MODEL = Path(__file__).parent / "assets" / "toy"


def toy_model_path() -> Path:
    if not (TOY_MODEL / "config.json").exists():
        raise FileNotFoundError(
            f"the embedded toy model is missing from {TOY_MODEL}; reinstall musicgen-lens, or rebuild it with `make train`"
        )
    return TOY_MODEL


def resolve(name_or_path: str | os.PathLike | None) -> str | os.PathLike:
    """"toy" (or None) -> the embedded checkpoint, unless a local folder called "toy" exists."""
    if name_or_path is None or (str(name_or_path) == TOY_NAME and not Path(TOY_NAME).exists()):
        return toy_model_path()
    return name_or_path
