"""plain_file_name: ids from user data that become file names must not be paths."""

from __future__ import annotations

import re

import pytest

from musicgen_lens._paths import plain_file_name


@pytest.mark.parametrize("name", ["clip_000001", "a.b", "...", "x y", "ü", ".hidden"])
def test_plain_names_pass_through(name: str) -> None:
    assert plain_file_name(name, "clip id") == name


@pytest.mark.parametrize("name", ["../../x", "a/b", "/abs", "a\\b", "..", ".", "", "a\x00b"])
def test_anything_else_is_refused_naming_the_value_and_what_is_expected(name: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"shard name {name!r}")) as info:
        plain_file_name(name, "shard name")
    message = str(info.value)
    assert "plain file name" in message and "path separators" in message
    assert "'.' or '..'" in message and "NUL" in message
