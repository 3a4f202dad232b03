"""Atomic file writes: write beside the target, rename over it, never leave a partial file.

A run killed at any point (even kill -9) leaves either the old file or the complete new one,
which is what resumable jobs rely on to tell finished outputs from unfinished ones.
(`audio.save_audio` has its own variant: libsndfile needs the real extension, and it keeps the
replaced file's permissions.)
"""

from __future__ import annotations

import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the target's directory; on success it replaces `path`.

    On any exception (KeyboardInterrupt included) the temporary file is removed.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}.part")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
