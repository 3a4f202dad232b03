"""Datasets of the synthetic world: labelled clips, their split, and writing them to disk.

:class:`Clip` is one item (spec, prompt, labels, split; audio rendered lazily).
:func:`split_of` puts each index in train or test from a hash, :func:`clip_spec_for_index`
gives the balanced spec of each index and :func:`make_dataset` a list of clips;
:func:`write_dataset` writes them as ``audio/<id>.wav`` plus ``labels.csv``, resumably.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from musicgen_lens._atomic import atomic_path
from musicgen_lens._paths import plain_file_name
from musicgen_lens.data.arrangement import render_clip
from musicgen_lens.data.dsp import _stream_id
from musicgen_lens.data.vocabulary import (
    _STYLE_TEMPI,
    INSTRUMENTS,
    KEYS,
    MAX_TEMPO_BPM,
    MIN_TEMPO_BPM,
    STYLES,
    ClipSpec,
    describe,
    spec_labels,
)

# --------------------------------------------------------------------------------------
# Items and splits
# --------------------------------------------------------------------------------------


@dataclass
class Clip:
    """One dataset item; ``audio`` is rendered on first access and then cached."""

    id: str
    spec: ClipSpec
    text: str
    labels: dict[str, Any]
    split: str
    _audio: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def audio(self) -> np.ndarray:
        if self._audio is None:
            self._audio = render_clip(self.spec)
        return self._audio


def split_of(index: int, seed: int = 0, test_fraction: float = 0.2) -> str:
    """``"test"`` or ``"train"``, from a hash of (seed, index): stable across runs and
    processes, and independent of how many clips are requested."""
    digest = hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=8).digest()
    u = int.from_bytes(digest, "little") / 2.0**64
    return "test" if u < test_fraction else "train"


def _combo(
    index: int, combos: Sequence[tuple[str, str, str | None]], seed: int
) -> tuple[str, str, str | None]:
    """Walk through every (instrument, style, accompaniment) once per cycle, in a seeded
    order per cycle: balanced classes, yet no fixed pattern tied to the index."""
    cycle, pos = divmod(index, len(combos))
    order = np.random.default_rng([seed, _stream_id("combos"), cycle]).permutation(len(combos))
    return combos[int(order[pos])]


def clip_spec_for_index(
    index: int,
    *,
    seed: int = 0,
    duration_s: float = 4.0,
    sample_rate: int = 16000,
    instruments: Sequence[str] = INSTRUMENTS,
    styles: Sequence[str] = STYLES,
    accompaniments: Sequence[str | None] = (None,),
    tempo_range: tuple[float, float] | None = None,
    backing_gain: float = 0.5,
) -> ClipSpec:
    """The spec of dataset item ``index``; depends only on the arguments, not on n."""
    combos = list(itertools.product(instruments, styles, accompaniments))
    if not combos:
        raise ValueError("instruments, styles and accompaniments must all be non-empty")
    instrument, style, accompaniment = _combo(index, combos, seed)
    rng = np.random.default_rng([seed, _stream_id("clip"), index])
    low, high = tempo_range if tempo_range is not None else _STYLE_TEMPI[style]
    tempo = float(rng.integers(int(low), int(high) + 1))
    key = KEYS[int(rng.integers(len(KEYS)))]
    clip_seed = int(rng.integers(2**31 - 1))
    return ClipSpec(
        instrument=instrument,
        style=style,
        tempo_bpm=tempo,
        key=key,
        seed=clip_seed,
        duration_s=duration_s,
        sample_rate=sample_rate,
        accompaniment=accompaniment,
        backing_gain=backing_gain,
    )


def make_dataset(
    n: int,
    *,
    seed: int = 0,
    duration_s: float = 4.0,
    sample_rate: int = 16000,
    instruments: Sequence[str] = INSTRUMENTS,
    styles: Sequence[str] = STYLES,
    accompaniments: Sequence[str | None] = (None,),
    split: str | None = None,
    test_fraction: float = 0.2,
    tempo_range: tuple[float, float] | None = None,
    backing_gain: float = 0.5,
    render: bool = False,
) -> list[Clip]:
    """``n`` labelled clips (audio rendered lazily unless ``render=True``).

    Item ``i`` is a pure function of (seed, i, the other arguments), and its split is
    :func:`split_of` (i, seed, test_fraction). ``split="train"``/``"test"`` returns the
    first ``n`` items of that split, so train and test sets are disjoint and each is a
    prefix of any larger request. ``tempo_range=None`` uses style-typical tempi.
    """
    if split not in (None, "train", "test"):
        raise ValueError(f"split must be None, 'train' or 'test', got {split!r}")
    if not 0.0 <= test_fraction <= 1.0:
        raise ValueError(f"test_fraction must be in [0, 1], got {test_fraction}")
    if (split == "test" and test_fraction == 0.0) or (split == "train" and test_fraction == 1.0):
        raise ValueError(f"split={split!r} is empty with test_fraction={test_fraction}")
    if tempo_range is not None and not (
        MIN_TEMPO_BPM <= tempo_range[0] <= tempo_range[1] <= MAX_TEMPO_BPM
    ):
        raise ValueError(f"tempo_range must lie within [{MIN_TEMPO_BPM:g}, {MAX_TEMPO_BPM:g}]")
    clips: list[Clip] = []
    index = 0
    while len(clips) < n:
        which = split_of(index, seed, test_fraction)
        if split is None or which == split:
            spec = clip_spec_for_index(
                index,
                seed=seed,
                duration_s=duration_s,
                sample_rate=sample_rate,
                instruments=instruments,
                styles=styles,
                accompaniments=accompaniments,
                tempo_range=tempo_range,
                backing_gain=backing_gain,
            )
            clips.append(Clip(f"clip_{index:06d}", spec, describe(spec), spec_labels(spec), which))
        index += 1
    if render:
        for clip in clips:
            _ = clip.audio
    return clips


# --------------------------------------------------------------------------------------
# Writing to disk
# --------------------------------------------------------------------------------------


LABEL_COLUMNS: tuple[str, ...] = (
    "id",
    "path",
    "text",
    "instrument",
    "style",
    "tempo_bpm",
    "key",
    "split",
    "scale",
    "accompaniment",
    "seed",
    "duration_s",
    "sample_rate",
)


def _write_wav_atomic(path: Path, audio: np.ndarray, sample_rate: int, subtype: str) -> None:
    """Write to a temporary name then rename, so a crash never leaves a truncated .wav
    that a resumed run would mistake for a finished one."""
    import soundfile as sf

    with atomic_path(path) as tmp:
        sf.write(tmp, audio, sample_rate, format="WAV", subtype=subtype)


def _wav_path(clip_id: str, what: str = "clip id") -> str:
    """Where a clip's wav lives, relative to the dataset root; the id must be a plain file
    name, so the wav cannot land outside ``audio/``."""
    return f"audio/{plain_file_name(clip_id, what)}.wav"


def _render_to(job: tuple[ClipSpec, str, str]) -> str:
    spec, path, subtype = job
    _write_wav_atomic(Path(path), render_clip(spec), spec.sample_rate, subtype)
    return path


def _label_row(clip: Clip, rel_path: str) -> dict[str, Any]:
    row = {"id": clip.id, "path": rel_path, "text": clip.text, "split": clip.split}
    row.update(clip.labels)
    return {col: row.get(col, "") for col in LABEL_COLUMNS}


def _write_labels(csv_path: Path, rows: dict[str, dict[str, Any]]) -> None:
    with atomic_path(csv_path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(LABEL_COLUMNS))
        writer.writeheader()
        for key in sorted(rows):
            writer.writerow(rows[key])


def _read_labels(csv_path: Path) -> dict[str, dict[str, Any]]:
    """The rows of an earlier ``labels.csv`` by id, each checked to list its own wav in
    ``audio/``: they are merged into the new CSV, whose paths readers open."""
    if not csv_path.exists():
        return {}
    with open(csv_path, newline="", encoding="utf-8") as f:
        rows = {row["id"]: row for row in csv.DictReader(f)}
    for clip_id, row in rows.items():
        expected = _wav_path(clip_id, f"clip id in {csv_path}")
        if row["path"] != expected:
            raise ValueError(
                f"{csv_path}: clip {clip_id!r} lists path {row['path']!r}, expected {expected!r}"
            )
    return rows


def write_dataset(
    directory: str | os.PathLike[str],
    clips: Sequence[Clip],
    *,
    subtype: str = "PCM_16",
    num_workers: int = 1,
    progress: bool = True,
) -> Path:
    """Write ``<dir>/audio/<id>.wav`` per clip and ``<dir>/labels.csv``; return the CSV path.

    Each id must be a plain file name (see :func:`musicgen_lens._paths.plain_file_name`),
    and each row of an earlier ``labels.csv`` must list its own ``audio/<id>.wav``;
    otherwise ``ValueError`` is raised before anything is written.

    Resumable: wavs that already exist are skipped (never rewritten) and only the missing
    ones are rendered; ``labels.csv`` is merged by id with any previous one. Every file is
    written to a temporary name and renamed into place. ``num_workers > 1`` renders in a
    process pool.
    """
    from tqdm.auto import tqdm

    # Every id, new or from an earlier labels.csv, is checked before anything is written,
    # so a bad one leaves no partial dataset.
    rels = {clip.id: _wav_path(clip.id) for clip in clips}
    root = Path(directory)
    rows = _read_labels(root / "labels.csv")
    audio_dir = root / "audio"
    audio_dir.mkdir(parents=True, exist_ok=True)
    jobs = []
    for clip in clips:
        rel = rels[clip.id]
        rows[clip.id] = _label_row(clip, rel)
        if not (root / rel).exists():
            jobs.append((clip.spec, str(root / rel), subtype))
    bar = tqdm(total=len(jobs), desc="rendering clips", unit="clip", disable=not progress)
    try:
        if num_workers > 1 and len(jobs) > 1:
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(max_workers=num_workers) as pool:
                for _ in pool.map(_render_to, jobs, chunksize=4):
                    bar.update()
        else:
            for job in jobs:
                _render_to(job)
                bar.update()
    finally:
        bar.close()
        # Written even after an interruption, so the CSV lists every clip whose wav exists.
        done = {k: r for k, r in rows.items() if (root / r["path"]).exists()}
        _write_labels(root / "labels.csv", done)
    return root / "labels.csv"


__all__ = [
    "LABEL_COLUMNS",
    "Clip",
    "clip_spec_for_index",
    "make_dataset",
    "split_of",
    "write_dataset",
]
