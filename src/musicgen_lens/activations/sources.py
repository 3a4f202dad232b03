"""Dataset items for activation stores, and what each one is made of (its digest)."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

__all__ = ["Item", "items_from_folder", "item_digest"]


@dataclass
class Item:
    """One dataset item: codes (undelayed [n_codebooks, frames]) or audio, a text, and labels."""

    id: str
    codes: torch.Tensor | None = None
    audio: Any = None  # a path, or an array [channels, samples] / [samples] at `sr`
    sr: int | None = None
    text: str | None = None
    labels: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def coerce(cls, raw: Any, index: int) -> "Item":
        """Accept an Item, or a dict (incl. a Hugging Face `datasets` row with an audio column)."""
        if isinstance(raw, Item):
            return raw
        if not isinstance(raw, Mapping):
            raise TypeError(f"dataset item {index} must be an Item or a dict, got {type(raw).__name__}")
        raw = dict(raw)
        audio, sr = raw.pop("audio", None), raw.pop("sr", None)
        if isinstance(audio, Mapping):  # datasets' Audio feature: {"array", "sampling_rate", "path"}
            sr = audio.get("sampling_rate", sr)
            audio = audio.get("array") if audio.get("array") is not None else audio.get("path")
        labels = dict(raw.pop("labels", {}) or {})
        item_id = str(raw.pop("id", index))
        codes, text = raw.pop("codes", None), raw.pop("text", None)
        labels.update({k: v for k, v in raw.items() if isinstance(v, (str, int, float, bool, np.generic))})
        return cls(item_id, codes=codes, audio=audio, sr=sr, text=text, labels=labels)


def jsonable(labels: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in labels.items()}


def _array_digest(h: "hashlib._Hash", a: Any) -> None:
    a = a.detach().cpu().contiguous().numpy() if isinstance(a, torch.Tensor) else np.ascontiguousarray(a)
    h.update(f"{a.dtype.str}:{a.shape}:".encode())
    h.update(a.tobytes())


def item_digest(item: Item) -> dict[str, str]:
    """Short hashes of what the item's rows are made of: its input (codes, or the audio's bytes
    and sample rate) and its labels. Its id and text are recorded beside them as they are."""
    content = hashlib.blake2b(digest_size=8)
    if item.codes is not None:
        content.update(b"codes:")
        _array_digest(content, item.codes)
    elif isinstance(item.audio, (str, os.PathLike)):
        content.update(b"file:")
        with open(item.audio, "rb") as f:  # the file's bytes, not its name: a re-recorded clip differs
            for block in iter(lambda: f.read(1 << 20), b""):
                content.update(block)
    elif item.audio is not None:
        content.update(f"audio:{item.sr}:".encode())
        _array_digest(content, item.audio)
    labels = hashlib.blake2b(json.dumps(jsonable(item.labels), sort_keys=True, default=str).encode(), digest_size=8)
    return {"content": content.hexdigest(), "labels": labels.hexdigest()}


def items_from_folder(folder: str | os.PathLike, csv_name: str = "labels.csv", *, path_column: str = "path", text_column: str = "text", id_column: str = "id") -> list[Item]:
    """A folder of audio files with a CSV of labels (one row per file) -> Items."""
    import csv

    folder = Path(folder)
    table = folder / csv_name
    if not table.exists():
        raise FileNotFoundError(f"{table} not found: expected a CSV with a {path_column!r} column")
    with open(table, newline="") as f:
        rows = list(csv.DictReader(f))
    items = []
    for i, row in enumerate(rows):
        if path_column not in row:
            raise ValueError(f"{table} has no {path_column!r} column (columns: {list(row)})")
        audio = folder / row.pop(path_column)
        item_id = row.pop(id_column, str(i))
        text = row.pop(text_column, None)
        labels = {k: _number_or_text(v) for k, v in row.items()}
        items.append(Item(item_id, audio=audio, text=text, labels=labels))
    return items


def _number_or_text(value: str) -> Any:
    try:
        return float(value) if "." in value else int(value)
    except ValueError:
        return value
