"""Atomic file writes, temporary-file clean-up and inter-process locks.

A run killed at any point (even kill -9) leaves either the old file or the complete new one,
which is what resumable jobs rely on to tell finished outputs from unfinished ones.
(`audio.save_audio` has its own variant: libsndfile needs the real extension, and it keeps the
replaced file's permissions.)

Temporary names are unique per process and call (``.{name}.tmp-{pid}-{random}.part``), so two
processes writing the same target never share one; the last rename wins and both are whole.
A process killed mid-write leaves its ``.part`` file behind: `remove_temps` deletes them (call
it while holding the lock that guards the folder, so no live writer's temp is touched).

`file_lock` is an exclusive ``fcntl.flock`` on a lock file: the kernel drops it when its holder
exits or is killed, so a lock can never go stale; the lock file records the holder's pid for
the message a waiting process gives when it times out. (POSIX only; flock is unreliable on some
network file systems.)
"""

from __future__ import annotations

import os
import re
import secrets
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

__all__ = ["atomic_path", "atomic_write_text", "remove_temps", "file_lock", "LockTimeout"]

_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.tmp-(?P<pid>\d+)-[0-9a-f]+\.part$")


@contextmanager
def atomic_path(path: str | os.PathLike, *, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path in the target's directory; on success it replaces `path`.

    On any exception (KeyboardInterrupt included) the temporary file is removed. `fsync=True`
    flushes the file and the directory entry to disk (survives a power cut, not only a kill).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}.part")
    try:
        yield tmp
        if fsync:
            _fsync(tmp)
        os.replace(tmp, path)
        if fsync:
            _fsync(path.parent, directory=True)
    finally:
        tmp.unlink(missing_ok=True)


def _fsync(path: Path, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on directories
        if not directory:
            raise
    finally:
        os.close(fd)


def atomic_write_text(path: str | os.PathLike, text: str, *, fsync: bool = False) -> None:
    with atomic_path(path, fsync=fsync) as tmp:
        tmp.write_text(text)


def remove_temps(folder: str | os.PathLike, prefix: str | tuple[str, ...] = "", suffix: str | tuple[str, ...] = "") -> list[Path]:
    """Delete the ``.part`` temporaries `atomic_path` left in `folder` for targets whose name
    starts with `prefix` and ends with `suffix` (a killed writer's leftovers; str or tuple of
    str); returns what was removed."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for file in folder.iterdir():
        m = _TEMP_RE.match(file.name)
        if m and m.group("name").startswith(prefix) and m.group("name").endswith(suffix):
            file.unlink(missing_ok=True)
            removed.append(file)
    return removed


class LockTimeout(TimeoutError):
    """Another process held the lock for longer than the timeout."""


@contextmanager
def file_lock(path: str | os.PathLike, timeout: float | None = 600.0, what: str = "this folder") -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if missing) for the duration of the block.

    Waits up to `timeout` seconds (None: forever) for another holder, then raises LockTimeout
    naming the holder's pid. The lock is released on exit, and by the kernel if the process dies.
    """
    import fcntl

    path = Path(path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.01
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if deadline is not None and time.monotonic() >= deadline:
                    holder = _read_holder(path)
                    raise LockTimeout(
                        f"{what} is locked by another process ({holder}; lock file {path}) and stayed locked for "
                        f"{timeout:g} s: wait for that process to finish, stop it, or pass a longer lock_timeout"
                    ) from None
                time.sleep(delay)
                delay = min(0.25, delay * 2)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _read_holder(path: Path) -> str:
    try:
        text = path.read_text().strip()
    except OSError:
        text = ""
    return text or "holder unknown"
