"""The embedded default model: a tiny MusicGen trained offline on the synthetic world.

`HookedMusicGen.from_pretrained("toy")` (or with no name) loads it from the package; see its
model card (`TOY_MODEL / "README.md"`) for what it was trained on, and `training/` for how.

"toy" is a reserved name: it always means this embedded model, even when the working directory
holds a folder called `toy`. Load such a folder by its path: "./toy", an absolute path, or a
`pathlib.Path` (a Path is always a path, never a name).
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


def is_toy_name(name_or_path: str | os.PathLike | None) -> bool:
    """True for None and the plain string "toy" (not Path("toy"), not "./toy")."""
    return name_or_path is None or (isinstance(name_or_path, str) and name_or_path == TOY_NAME)


def resolve(name_or_path: str | os.PathLike | None) -> str | os.PathLike:
    """"toy" (or None) -> the embedded checkpoint; anything else is returned unchanged."""
    if is_toy_name(name_or_path):
        return toy_model_path()
    assert name_or_path is not None
    return name_or_path
