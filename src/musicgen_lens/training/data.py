"""The toy model's training data: the synthetic world rendered to disk, and loaded as one array."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import numpy as np

from musicgen_lens.data.synth import make_dataset, write_dataset

# Everything the shipped model was trained on; the model card records it.
WORLD: dict[str, Any] = dict(
    seed=0,
    duration_s=4.0,
    sample_rate=16000,
    accompaniments=(None, "tabla"),
    backing_gain=0.5,
)


def build_dataset(root: str | os.PathLike, n: int, num_workers: int = 2, progress: bool = True) -> Path:
    """Render `n` clips of the world to `root` (resumable: finished wavs are kept)."""
    return write_dataset(root, make_dataset(n, **WORLD), num_workers=num_workers, progress=progress)


def load_split(root: str | os.PathLike, split: str, with_audio: bool = True) -> tuple[np.ndarray | None, list[dict[str, str]]]:
    """All clips of a split as int16 `[n, samples]` plus their label rows (sorted by id);
    `with_audio=False` reads only the rows (audio None)."""
    import soundfile as sf

    root = Path(root)
    if not (root / "labels.csv").exists():
        raise FileNotFoundError(f"{root / 'labels.csv'} does not exist; run build_dataset first")
    with open(root / "labels.csv", newline="") as f:
        rows = sorted((r for r in csv.DictReader(f) if r["split"] == split), key=lambda r: r["id"])
    if not rows:
        raise FileNotFoundError(f"no {split!r} clips listed in {root / 'labels.csv'}; run build_dataset first")
    if not with_audio:
        return None, rows
    audio = [sf.read(root / r["path"], dtype="int16")[0] for r in rows]
    n = min(len(a) for a in audio)
    return np.stack([a[:n] for a in audio]), rows
