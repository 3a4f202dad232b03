"""What a store records about itself, and the checks that refuse a store that does not match.

- ``meta.json`` (written first): the run's settings and the model's provenance, i.e. the
  architecture hash (``cfg.hash()``) and the trained-weights fingerprint
  (`provenance.weights_fingerprint`). Resuming with another model, hooks, pooling or shard size
  is refused.
- each shard's safetensors metadata: its items (id, text, digests of content and labels, rows,
  frames) and the SHA-256 of its tensors (`provenance.tensor_checksum`), verified whenever the
  shard is read. Resuming over a shard made from other items is refused; a damaged shard
  (truncated, bit-flipped) is recomputed on resume and refused by `merge`.
- ``w{i}of{n}.done``: worker i's manifest (its shards with their checksums, items and rows, and
  how many items the dataset had); `merge` reads exactly these shards, nothing else on disk.
- ``index.json`` (written last): items, per-array files and shapes, the dataset fingerprint
  (hash of every item's id, text and digests, in order), item and row counts, the manifest.
  Opening a store checks every array's header and size against it.

Locks: ``.lock`` guards meta.json, merging and overwriting; ``.lock-w{i}of{n}`` guards worker
i's shards (`_atomic.file_lock`).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch

from musicgen_lens._atomic import atomic_write_text
from musicgen_lens.provenance import tensor_checksum

FORMAT_VERSION = 2
STORE_LOCK = ".lock"


class StoreError(ValueError):
    """The store on disk does not match this run, or a file of it is damaged."""


def fresh(path: Path) -> str:
    return f"start afresh with cache_activations(..., overwrite=True) or delete the folder {path}"


def read_json(file: Path, fix: str) -> Any:
    """JSON from a store file; a damaged (truncated, edited) file raises naming it and `fix`."""
    try:
        return json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise StoreError(f"{file} is damaged (not valid JSON: {e}); {fix}") from e


def read_meta(path: Path) -> dict[str, Any]:
    return read_json(path / "meta.json", f"it records which model and settings made the store, so {fresh(path)}")


# meta.json keys that must agree for a run to resume a store, with what they mean in messages
_MUST_MATCH = {
    "config_hash": "architecture (cfg.hash())",
    "weights_fingerprint": "trained weights (provenance.weights_fingerprint)",
    "hooks": "hooks",
    "pooling": "pooling",
    "shard_size": "shard_size",
}


def check_or_write_meta(path: Path, meta: dict[str, Any]) -> None:
    """Write meta.json for a new store; for an existing one, refuse a run that differs."""
    file = path / "meta.json"
    if not file.exists():
        atomic_write_text(file, json.dumps(meta, indent=1), fsync=True)
        return
    old = read_meta(path)
    if old.get("format_version") != FORMAT_VERSION:
        raise StoreError(
            f"{path} was written by an older musicgen-lens (store format {old.get('format_version', 1)}, this one writes "
            f"{FORMAT_VERSION}) that recorded no weights or dataset provenance, so its shards cannot be checked; {fresh(path)}"
        )
    diffs = [f"{what}: the store has {old.get(key)!r}, this run {meta[key]!r}" for key, what in _MUST_MATCH.items() if old.get(key) != meta[key]]
    if diffs:
        raise StoreError(
            f"{path} was written by a different run (model {old.get('model_name')!r}), and resuming it would mix the shards "
            f"of both: " + "; ".join(diffs) + f". Use another folder, or {fresh(path)}"
        )


# ------------------------------------------------------------------ shards


class DamagedShard(StoreError):
    def __init__(self, file: Path, reason: str, fix: str):
        super().__init__(f"{file} is damaged ({reason}); {fix}")
        self.file, self.reason = file, reason


class _LazyTensors(Mapping):
    """A safetensors file's tensors, read one at a time (tensor_checksum without holding them all)."""

    def __init__(self, handle: Any):
        self.handle, self.names = handle, list(handle.keys())

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.handle.get_tensor(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)


def shard_entries(file: Path, fix: str, *, verify: bool = True) -> tuple[list[dict[str, Any]], str]:
    """(item entries, checksum) of a shard; `verify` re-hashes its tensors. Raises DamagedShard."""
    from safetensors import safe_open

    try:
        with safe_open(str(file), framework="pt") as f:
            header = f.metadata() or {}
            entries, checksum = json.loads(header["items"]), header["checksum"]
            found = tensor_checksum(_LazyTensors(f)) if verify else checksum
    except FileNotFoundError:
        raise
    except Exception as e:  # SafetensorError (truncated), KeyError/JSONDecodeError (header edited)
        raise DamagedShard(file, f"unreadable: {type(e).__name__}: {e}", fix) from e
    if found != checksum:
        raise DamagedShard(file, f"its tensors do not match the sha256 saved with them: {checksum[:12]}... expected, {found[:12]}... found", fix)
    return entries, checksum


def describe_mismatch(file: Path, old: list[dict[str, Any]], new: list[dict[str, Any]]) -> str | None:
    """None when a shard's items are this run's items, else what differs."""
    if len(old) != len(new):
        return f"{file} holds {len(old)} items where this run has {len(new)} (the dataset is shorter or longer than when the store was written)"
    for a, b in zip(old, new):
        for key in ("index", "id", "text"):
            if a.get(key) != b[key]:
                return f"{file}: item {a.get('index')} was {key} {a.get(key)!r}, this run's is {b[key]!r}"
        for key, what in (("content", "codes/audio"), ("labels", "labels")):
            if a.get("digest", {}).get(key) != b["digest"][key]:
                return f"{file}: the {what} of item {a['id']!r} differ from this run's"
    return None


def dataset_fingerprint(entries: list[dict[str, Any]]) -> str:
    """Hash of every item's index, id, text and digests, in the order given."""
    h = hashlib.sha256()
    for e in entries:
        h.update(json.dumps([e["index"], e["id"], e["text"], e["digest"]], sort_keys=True).encode())
    return h.hexdigest()[:16]


# ------------------------------------------------------------------ consolidated arrays


def check_npy(file: Path, rows: int, shape: list[int] | None, fix: str) -> None:
    """Refuse a missing, truncated or mis-shaped .npy before it is memory-mapped."""
    if not file.exists():
        raise StoreError(f"{file} is missing; {fix}")
    try:
        with open(file, "rb") as f:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            found, _, dtype = read(f, max_header_size=100_000)
            data_start = f.tell()
    except Exception as e:
        raise StoreError(f"{file} is damaged (bad .npy header: {e}); {fix}") from e
    if dtype.hasobject:
        raise StoreError(f"{file} holds Python objects, which a store never writes (it would need pickle); {fix}")
    if found[0] != rows or (shape is not None and list(found[1:]) != list(shape)):
        raise StoreError(f"{file} has shape {list(found)} but the index has {rows} rows of {shape}; {fix}")
    expected = data_start + int(np.prod(found)) * dtype.itemsize
    if os.path.getsize(file) != expected:
        raise StoreError(f"{file} is damaged ({os.path.getsize(file)} bytes, {expected} expected: truncated?); {fix}")
