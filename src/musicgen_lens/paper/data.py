"""Labelled audio -> 10 s segments (dataset Items), as in the authors' code.

Sources (`load_tracks`): a GTZAN-style folder (``genre/xxx.wav``), a folder with a
``labels.csv`` (columns ``path`` and ``genre`` or ``label``), or a Hugging Face ``datasets``
dataset (rows with an ``audio`` column {array, sampling_rate} or path, and a ``genre``/``label``
column; a ClassLabel's names are used). `segment_items` resamples each track to the model's
rate, cuts it in consecutive `seconds`-long segments and makes one Item per segment, with the
text "Generate {genre} music continuing the given audio" and labels genre / track / segment.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from musicgen_lens.activations import Item

__all__ = ["AUDIO_EXTENSIONS", "PAPER_GENRES", "TEMPLATE", "Track", "load_tracks", "segment_items"]

PAPER_GENRES = ("classical", "electronic", "rock", "jazz")
TEMPLATE = "Generate {genre} music continuing the given audio"
AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".au", ".aiff", ".aif")


@dataclass
class Track:
    id: str
    genre: str
    audio: Any  # a path, or an array [samples] / [channels, samples] at sr
    sr: int | None = None


def _label_column(columns: Sequence[str]) -> str:
    for name in ("genre", "label", "labels"):
        if name in columns:
            return name
    raise ValueError(f"no genre column: expected 'genre' or 'label' among {list(columns)}")


def load_tracks(data: Any, genres: Sequence[str] | None = None) -> list[Track]:
    """Tracks with their genre from a folder (GTZAN layout or labels.csv) or a `datasets` dataset;
    `genres` keeps only those (in that order), default all found."""
    tracks: list[Track] = []
    if isinstance(data, (str, os.PathLike)):
        root = Path(data)
        if not root.is_dir():
            raise FileNotFoundError(f"{root} is not a folder of audio")
        table = root / "labels.csv"
        if table.exists():
            with open(table, newline="") as f:
                rows = list(csv.DictReader(f))
            col = _label_column(list(rows[0]) if rows else [])
            tracks = [Track(str(Path(r["path"]).with_suffix("")), str(r[col]).strip().lower(), root / r["path"]) for r in rows]
        else:
            for sub in sorted(p for p in root.iterdir() if p.is_dir()):
                for f in sorted(sub.iterdir()):
                    if f.suffix.lower() in AUDIO_EXTENSIONS:
                        tracks.append(Track(f"{sub.name}/{f.stem}", sub.name.lower(), f))
    else:  # a datasets.Dataset (or any sequence of dict rows)
        columns = getattr(data, "column_names", None) or list(data[0])
        col = _label_column(columns)
        names = None
        feature = getattr(data, "features", {}).get(col) if hasattr(data, "features") else None
        if feature is not None and hasattr(feature, "names"):
            names = feature.names
        for i, row in enumerate(data):
            audio, label = row["audio"], row[col]
            label = names[label] if names is not None and isinstance(label, (int, np.integer)) else label
            if isinstance(audio, dict):
                arr, sr = audio.get("array"), audio.get("sampling_rate")
                audio = np.asarray(arr, dtype=np.float32) if arr is not None else audio.get("path")
            else:
                sr = row.get("sr")
            tracks.append(Track(str(row.get("id", i)), str(label).strip().lower(), audio, sr))
    if not tracks:
        raise ValueError(f"no audio found in {data!r}: expected genre/xxx.wav folders, a labels.csv, or dataset rows")
    if genres is not None:
        wanted = [g.lower() for g in genres]
        missing = sorted(set(wanted) - {t.genre for t in tracks})
        if missing:
            raise ValueError(f"no tracks of genre(s) {missing}; found {sorted({t.genre for t in tracks})}")
        tracks = [t for t in tracks if t.genre in wanted]
    return tracks


def segment_items(
    tracks: Sequence[Track], sr: int, *, seconds: float = 10.0, max_segments_per_track: int | None = None,
    max_per_genre: int | None = None, template: str = TEMPLATE, channels: int = 1,
) -> list[Item]:
    """One Item per `seconds`-long segment of each track, at `sr` (the model's rate)."""
    from musicgen_lens.audio import load_audio

    n = int(round(seconds * sr))
    if n < 1:
        raise ValueError(f"seconds={seconds} is shorter than one sample at {sr} Hz")
    items, per_genre = [], {}
    for t in tracks:
        if max_per_genre is not None and per_genre.get(t.genre, 0) >= max_per_genre:
            continue
        kw = {"sr": t.sr} if not isinstance(t.audio, (str, os.PathLike)) else {}
        audio, _ = load_audio(t.audio, target_sr=sr, channels=channels, **kw)
        count = audio.shape[-1] // n
        if max_segments_per_track is not None:
            count = min(count, max_segments_per_track)
        for k in range(count):
            if max_per_genre is not None and per_genre.get(t.genre, 0) >= max_per_genre:
                break
            seg = audio[:, k * n : (k + 1) * n].numpy()
            items.append(Item(f"{t.id}#{k}", audio=seg, sr=sr, text=template.format(genre=t.genre),
                              labels={"genre": t.genre, "track": t.id, "segment": k}))
            per_genre[t.genre] = per_genre.get(t.genre, 0) + 1
    if not items:
        raise ValueError(f"no track is at least {seconds} s long")
    return items


def write_synthetic_gtzan(root: str | os.PathLike, genres: Sequence[str] = PAPER_GENRES, tracks_per_genre: int = 2,
                          seconds: float = 4.0, sr: int = 16000, seed: int = 0) -> Path:
    """A tiny GTZAN-style folder of synthetic wavs (numpy tones + noise, one timbre per genre), for tests and CI."""
    import soundfile as sf

    root = Path(root)
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    for g_i, genre in enumerate(genres):
        (root / genre).mkdir(parents=True, exist_ok=True)
        for k in range(tracks_per_genre):
            f0 = 110.0 * 2 ** (g_i + rng.uniform(0, 0.5))
            x = sum(np.sin(2 * np.pi * f0 * h * t) / h ** (1 + g_i * 0.5) for h in range(1, 5))
            x = 0.3 * x / np.abs(x).max() + 0.02 * (g_i + 1) * rng.normal(size=t.shape)
            sf.write(root / genre / f"{genre}.{k:05d}.wav", (x / max(1.0, np.abs(x).max())).astype(np.float32), sr)
    return root
