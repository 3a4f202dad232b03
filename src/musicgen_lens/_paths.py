"""Names from user data that become file names: refuse any that would be a path instead.

An id such as ``../../x`` joined onto a folder writes outside it, so every place that turns
an id into a file name passes it through :func:`plain_file_name` first.
"""

from __future__ import annotations

# Both separators are refused on every platform: a dataset written on POSIX with an id
# "a\\b" would otherwise become a path when read on Windows.
_SEPARATORS = ("/", "\\")


def plain_file_name(name: str, what: str) -> str:
    """Return ``name`` if it is a plain file name, else raise ``ValueError``.

    A plain file name is non-empty, is not ``.`` or ``..``, and has no path separator
    (``/`` or ``\\``) and no NUL byte. ``what`` names the value in the message
    (e.g. ``"clip id"``).
    """
    if not name or name in (".", "..") or "\0" in name or any(s in name for s in _SEPARATORS):
        raise ValueError(
            f"{what} {name!r} is not a plain file name: expected a non-empty name with no "
            "path separators ('/' or '\\'), not '.' or '..', and no NUL byte"
        )
    return name
