"""Datasets of the synthetic world (musicgen_lens.data.dataset): splits, balance, the writer."""

from __future__ import annotations

import dataclasses
import re

import pytest

from musicgen_lens.data import make_dataset, write_dataset


def _tree(path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


@pytest.mark.parametrize("bad_id", ["../../x", "a/b", "..", ".", "", "a\\b", "a\x00b"])
def test_write_dataset_refuses_an_id_that_is_not_a_plain_file_name(tmp_path, bad_id: str) -> None:
    """Clip ids name the wavs; an id with a path in it must not write outside the dataset."""
    root = tmp_path / "a" / "b" / "dataset"
    root.mkdir(parents=True)
    (tmp_path / "x.wav").write_bytes(b"keep")
    before = _tree(tmp_path)
    good, clip = make_dataset(2, duration_s=0.1)
    bad = dataclasses.replace(clip, id=bad_id)
    with pytest.raises(ValueError, match=re.escape(repr(bad_id))) as info:
        write_dataset(root, [good, bad], progress=False)
    assert "clip id" in str(info.value) and "plain file name" in str(info.value)
    # Refused before anything is written: not even the good clip, nor the audio folder.
    assert _tree(tmp_path) == before
    assert (tmp_path / "x.wav").read_bytes() == b"keep"
