"""`from_pretrained` name resolution: the reserved toy name, local paths, and clear errors."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest

from musicgen_lens import HookedMusicGen
from musicgen_lens.toy import TOY_MODEL


@pytest.fixture
def local_toy(tmp_path, monkeypatch, checkpoint_dir):
    """A working directory holding a folder named `toy` that is *another* (tiny random) model."""
    shutil.copytree(checkpoint_dir("base"), tmp_path / "toy")
    monkeypatch.chdir(tmp_path)
    return tmp_path / "toy"


def test_toy_always_means_the_embedded_model_even_next_to_a_toy_folder(local_toy, caplog):
    with caplog.at_level(logging.INFO, logger="musicgen_lens.loading"):
        model = HookedMusicGen.from_pretrained("toy", device="cpu")
    assert model.source == str(TOY_MODEL)
    assert model.cfg.model_name == "toy"
    assert model.cfg.sample_rate == 16000  # the embedded toy, not the tiny random one
    assert any(str(TOY_MODEL) in r.getMessage() for r in caplog.records)
    assert any("./toy" in r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)


def test_a_local_folder_named_toy_is_loaded_by_its_path(local_toy, checkpoint_dir, caplog):
    expected = HookedMusicGen.from_pretrained(checkpoint_dir("base"), device="cpu")
    with caplog.at_level(logging.INFO, logger="musicgen_lens.loading"):
        for name in ("./toy", str(local_toy), local_toy, Path("toy")):
            model = HookedMusicGen.from_pretrained(name, device="cpu")
            assert model.source == str(local_toy.resolve()), name
            assert model.cfg.hash() == expected.cfg.hash()
    assert any(str(local_toy.resolve()) in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("name", ["/nonexistent", "/nonexistent/model", "./missing", "../missing", "~/no-such-model-dir", "a/b/c"])
def test_a_missing_path_says_no_such_directory_not_a_hub_error(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such directory: .*" + os.path.basename(name)):
        HookedMusicGen.from_pretrained(name, device="cpu")


def test_a_path_that_is_a_file_or_lacks_a_config_is_named(tmp_path):
    (tmp_path / "model.bin").write_bytes(b"")
    with pytest.raises(NotADirectoryError, match=r"not a directory: .*model\.bin"):
        HookedMusicGen.from_pretrained(tmp_path / "model.bin", device="cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty.*no config\.json.*save_pretrained"):
        HookedMusicGen.from_pretrained(str(tmp_path / "empty"), device="cpu")
