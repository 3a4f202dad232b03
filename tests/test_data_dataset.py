"""Datasets of the synthetic world (musicgen_lens.data.dataset): splits, balance, the writer."""

from __future__ import annotations

import csv
import dataclasses
import inspect
import os
import re

import numpy as np
import pytest
import soundfile as sf

from musicgen_lens.data import (
    INSTRUMENTS,
    STYLES,
    clip_spec_for_index,
    make_dataset,
    render_clip,
    split_of,
    write_dataset,
)

SR = 16000


def test_dataset_splits_are_disjoint_deterministic_and_prefix_stable() -> None:
    train = make_dataset(60, seed=4, split="train")
    test = make_dataset(20, seed=4, split="test")
    assert len(train) == 60 and len(test) == 20
    assert {c.id for c in train}.isdisjoint(c.id for c in test)
    assert all(c.split == "train" for c in train) and all(c.split == "test" for c in test)
    assert [c.spec for c in make_dataset(60, seed=4, split="train")] == [c.spec for c in train]
    assert [c.spec for c in make_dataset(30, seed=4, split="train")] == [c.spec for c in train[:30]]
    assert [c.spec for c in make_dataset(60, seed=5, split="train")] != [c.spec for c in train]
    everything = make_dataset(500, seed=4)
    test_share = np.mean([c.split == "test" for c in everything])
    assert 0.15 < test_share < 0.25
    assert all(c.split == split_of(int(c.id.split("_")[1]), 4, 0.2) for c in everything)


def test_dataset_items_are_balanced_and_described() -> None:
    clips = make_dataset(len(INSTRUMENTS) * len(STYLES), seed=1)
    # One full cycle covers each (instrument, style) exactly once.
    assert len({(c.spec.instrument, c.spec.style) for c in clips}) == len(clips)
    for clip in clips:
        assert clip.spec.instrument in clip.text and clip.spec.style in clip.text
        assert clip.labels["instrument"] == clip.spec.instrument
        assert 60 <= clip.spec.tempo_bpm <= 180
    limited = make_dataset(
        12,
        instruments=("trumpet", "violin"),
        styles=("classical",),
        tempo_range=(90, 95),
        accompaniments=(None, "tabla"),
    )
    assert {c.spec.instrument for c in limited} == {"trumpet", "violin"}
    assert {c.spec.accompaniment for c in limited} == {None, "tabla"}
    assert all(90 <= c.spec.tempo_bpm <= 95 for c in limited)


def test_clip_audio_is_lazy_and_matches_render_clip() -> None:
    clip = make_dataset(1, duration_s=0.5)[0]
    assert clip._audio is None
    assert np.array_equal(clip.audio, render_clip(clip.spec))
    assert clip.audio is clip.audio  # cached


def _read_rows(path: str | os.PathLike) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("num_workers", [1, 2])
def test_write_dataset_is_complete_atomic_and_resumable(tmp_path, num_workers: int) -> None:
    clips = make_dataset(5, seed=2, duration_s=0.5)
    csv_path = write_dataset(tmp_path, clips, progress=False, num_workers=num_workers)
    rows = _read_rows(csv_path)
    assert [r["id"] for r in rows] == sorted(c.id for c in clips)
    for row, clip in zip(rows, sorted(clips, key=lambda c: c.id), strict=True):
        for column in ("id", "path", "text", "instrument", "style", "tempo_bpm", "key", "split"):
            assert column in row
        assert row["text"] == clip.text and row["instrument"] == clip.spec.instrument
        audio, sr = sf.read(tmp_path / row["path"], dtype="float32")
        assert sr == SR and audio.shape == (SR // 2,)
        assert np.max(np.abs(audio - clip.audio)) < 1e-3  # 16-bit PCM rounding only
    assert not list(tmp_path.rglob("*.part"))  # no temporary files left behind

    wavs = sorted((tmp_path / "audio").glob("*.wav"))
    mtimes = {p: p.stat().st_mtime_ns for p in wavs}
    wavs[1].unlink()
    write_dataset(tmp_path, clips, progress=False, num_workers=num_workers)
    assert wavs[1].exists()
    for p in wavs:
        if p != wavs[1]:
            assert p.stat().st_mtime_ns == mtimes[p], p.name  # untouched

    # A later call with more clips merges into the same labels.csv.
    more = make_dataset(7, seed=2, duration_s=0.5)
    write_dataset(tmp_path, more, progress=False)
    assert len(_read_rows(csv_path)) == 7


def test_make_dataset_and_clip_spec_for_index_share_their_defaults() -> None:
    """make_dataset forwards the world's options to clip_spec_for_index; their defaults must
    agree, or item i of a default dataset would not be clip_spec_for_index(i)."""
    dataset_params = inspect.signature(make_dataset).parameters
    spec_params = inspect.signature(clip_spec_for_index).parameters
    shared = [name for name in dataset_params if name in spec_params]
    assert len(shared) == 8  # seed, duration_s, ..., backing_gain: all of the world's options
    for name in shared:
        assert dataset_params[name].default == spec_params[name].default, name
    assert [c.spec for c in make_dataset(3)] == [clip_spec_for_index(i) for i in range(3)]


def _tree(path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


@pytest.mark.parametrize("bad_id", ["../../x", "a/b", "..", ".", "", "a\\b", "a\x00b"])
def test_write_dataset_refuses_an_id_that_is_not_a_plain_file_name(tmp_path, bad_id: str) -> None:
    """Clip ids name the wavs; an id with a path in it must not write outside the dataset."""
    root = tmp_path / "a" / "b" / "dataset"
    root.mkdir(parents=True)
    decoy = root.parent / "x.wav"  # where "<root>/audio/../../x.wav" lands
    decoy.write_bytes(b"keep")
    before = _tree(tmp_path)
    good, clip = make_dataset(2, duration_s=0.1)
    bad = dataclasses.replace(clip, id=bad_id)
    with pytest.raises(ValueError, match=re.escape(repr(bad_id))) as info:
        write_dataset(root, [good, bad], progress=False)
    assert "clip id" in str(info.value) and "plain file name" in str(info.value)
    # Refused before anything is written: not even the good clip, nor the audio folder.
    assert _tree(tmp_path) == before
    assert decoy.read_bytes() == b"keep"


@pytest.mark.parametrize(
    ("row_id", "row_path"),
    [("../x", "audio/../x.wav"), ("clip_000009", "../../x.wav"), ("clip_000009", "/tmp/x.wav")],
)
def test_write_dataset_refuses_a_previous_labels_row_whose_wav_is_not_in_audio(
    tmp_path, row_id: str, row_path: str
) -> None:
    """Rows merged from an earlier labels.csv keep their path, which readers open; a row
    pointing outside ``audio/`` is refused, before anything is written."""
    root = tmp_path / "a" / "b" / "dataset"
    root.mkdir(parents=True)
    with open(root / "labels.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["id", "path"])
        writer.writeheader()
        writer.writerow({"id": row_id, "path": row_path})
    before = _tree(tmp_path)
    with pytest.raises(ValueError, match=re.escape(repr(row_id))) as info:
        write_dataset(root, make_dataset(1, duration_s=0.1), progress=False)
    assert "labels.csv" in str(info.value)
    assert _tree(tmp_path) == before
