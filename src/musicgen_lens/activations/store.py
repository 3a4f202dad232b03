"""The read side of an activation store (`ActivationStore`) and `merge`, which builds it."""

from __future__ import annotations

import hashlib
import json
import os
import re
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from musicgen_lens._atomic import atomic_path, atomic_write_text, file_lock, remove_temps
from musicgen_lens.activations.integrity import (
    FORMAT_VERSION,
    STORE_LOCK,
    StoreError,
    check_npy,
    dataset_fingerprint,
    fresh,
    read_json,
    read_meta,
    shard_entries,
)

if TYPE_CHECKING:
    from musicgen_lens.model import HookedMusicGen

_DONE_RE = re.compile(r"w(\d+)of(\d+)\.done")


def _safe_name(hook: str) -> str:
    return hook.replace("/", "_")


def _remerge(path: Path) -> str:
    return f"run musicgen_lens.activations.merge({str(path)!r}) to rebuild it from the shards"


class ActivationStore:
    """Read side of a store: `store[hook]` is a memory-mapped [rows, ...] numpy array.

    Opening checks index.json against every array file (shape, size); `model=` also checks
    that the store was made by this model (architecture hash and weights fingerprint).
    """

    def __init__(self, path: str | os.PathLike, model: "HookedMusicGen | None" = None):
        self.path = Path(path)
        index = self.path / "index.json"
        if not index.exists():
            raise FileNotFoundError(f"{self.path} has no index.json: the caching run has not finished (or run merge())")
        self.meta = read_meta(self.path)
        self.index = read_json(index, _remerge(self.path))
        self.items: list[dict[str, Any]] = self.index["items"]
        rows = sum(it["rows"] for it in self.items)
        if "rows" in self.index and self.index["rows"] != rows:
            raise StoreError(f"{index} is damaged (its items have {rows} rows, it records {self.index['rows']}); {_remerge(self.path)}")
        shapes = self.index.get("shapes", {})
        for hook, file in self.index["arrays"].items():
            check_npy(self.path / file, rows, shapes.get(hook), _remerge(self.path))
        if model is not None:
            self.check_model(model)

    @classmethod
    def open(cls, path: str | os.PathLike, model: "HookedMusicGen | None" = None) -> "ActivationStore":
        return cls(path, model)

    def check_model(self, model: "HookedMusicGen") -> None:
        """Refuse a store made on another architecture or other trained weights."""
        from musicgen_lens.provenance import check_model

        check_model(model, self.meta.get("config_hash"), self.meta.get("weights_fingerprint"), f"activation store {self.path}",
                    override="ActivationStore.open(path) without model=")

    @property
    def hooks(self) -> list[str]:
        return list(self.index["arrays"])

    @property
    def ids(self) -> list[str]:
        return [it["id"] for it in self.items]

    @property
    def dataset_fingerprint(self) -> str | None:
        """Hash of the items (ids, texts, content and label digests) the store was made from."""
        return self.index.get("dataset", {}).get("fingerprint")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, hook: str) -> np.ndarray:
        if hook not in self.index["arrays"]:
            raise KeyError(f"{hook!r} is not in this store; it has {self.hooks}")
        return np.load(self.path / self.index["arrays"][hook], mmap_mode="r", allow_pickle=False)

    def labels(self, name: str) -> np.ndarray:
        """One label per row (items repeated over their rows for per-frame pooling)."""
        missing = [it["id"] for it in self.items if name not in it["labels"]]
        if missing:
            raise KeyError(f"label {name!r} is missing for items {missing[:5]}; labels are {sorted(self.items[0]['labels'])}")
        return np.array([it["labels"][name] for it in self.items for _ in range(it["rows"])])

    def groups(self) -> np.ndarray:
        """The item (0..len-1) of each row: keep an item's frames on one side of a split."""
        return np.repeat(np.arange(len(self.items)), [it["rows"] for it in self.items])

    def frames(self) -> np.ndarray:
        """Frame index of each row ('frames' pooling)."""
        return np.concatenate([np.asarray(it.get("frames", [-1] * it["rows"])) for it in self.items])

    def seconds(self) -> np.ndarray:
        return self.frames() / float(self.meta["frame_rate"])


def _manifests(path: Path) -> tuple[int, list[dict[str, Any]]]:
    """The finished workers' manifests (all of one split), or an error naming what is missing."""
    done = sorted(path.glob("w*of*.done"))
    if not done:
        raise FileNotFoundError(f"no finished worker in {path}: run cache_activations first")
    splits = {int(_DONE_RE.fullmatch(f.name).group(2)) for f in done if _DONE_RE.fullmatch(f.name)}
    if len(splits) != 1:
        raise StoreError(f"{path} has workers of different splits (shard=(i, n) with n in {sorted(splits)}); they cannot be merged")
    (n_workers,) = splits
    missing = [i for i in range(n_workers) if not (path / f"w{i}of{n_workers}.done").exists()]
    if missing:
        raise RuntimeError(f"workers {missing} of {n_workers} have not finished; merge once all are done")
    manifests = []
    for i in range(n_workers):
        file = path / f"w{i}of{n_workers}.done"
        manifests.append(read_json(file, f"run cache_activations(..., shard=({i}, {n_workers})) again with the same arguments to rewrite it"))
    totals = {(m["n_total"], m["ids_digest"]) for m in manifests}
    if len(totals) != 1:
        raise StoreError(
            f"the workers of {path} ran over different datasets (items, ids digests: {sorted(totals)}); "
            "run every worker on the same dataset"
        )
    return n_workers, manifests


def merge(path: str | os.PathLike, *, lock_timeout: float | None = 600.0) -> ActivationStore:
    """Join the shards the finished workers list into per-hook arrays + index.json (written last).

    Streams one shard at a time into memory-mapped .npy files, so RAM stays bounded. Every shard
    is checked against its checksum first; a missing or damaged one is an error naming it. Safe
    to call from several processes at once: they take turns, and a store that is already merged
    from the same shards is returned as it is.
    """
    path = Path(path)
    with file_lock(path / STORE_LOCK, lock_timeout, f"activation store {path}"):
        return _merge_locked(path)


def _merge_locked(path: Path) -> ActivationStore:
    meta = read_meta(path)
    n_workers, manifests = _manifests(path)
    listed = [(w, s) for w, m in enumerate(manifests) for s in m["shards"]]
    manifest_digest = hashlib.sha256(json.dumps([m["shards"] for m in manifests], sort_keys=True).encode()).hexdigest()[:16]
    if (path / "index.json").exists():
        try:
            if read_json(path / "index.json", "").get("manifest") == manifest_digest:
                return ActivationStore(path)  # checks the arrays too
        except StoreError:
            pass  # an array or the index is damaged: rebuilt below
    remove_temps(path, suffix=(".npy", "index.json"))  # a killed merge's (workers' .done temporaries are theirs)
    placed: list[tuple[int, Path, dict[str, Any]]] = []  # (item index, shard, entry)
    for worker, shard in listed:
        file = path / "shards" / shard["file"]
        fix = f"run cache_activations(..., shard=({worker}, {n_workers})) again with the same arguments: it recomputes that shard"
        if not file.exists():
            raise StoreError(f"{file} is missing (worker {worker}'s manifest lists it; deleted?); {fix}")
        entries, checksum = shard_entries(file, fix)
        if checksum != shard["checksum"] or len(entries) != shard["items"] or sum(e["rows"] for e in entries) != shard["rows"]:
            raise StoreError(f"{file} is not the shard worker {worker} finished (checksum, items or rows differ from its manifest); {fix}")
        placed.extend((e["index"], file, e) for e in entries)
    placed.sort(key=lambda p: p[0])
    if not placed:
        raise ValueError("the dataset is empty: nothing was cached")
    n_total = manifests[0]["n_total"]
    if [p[0] for p in placed] != list(range(n_total)):
        raise StoreError(f"the manifests of {path} cover {len(placed)} items, the dataset has {n_total}; {fresh(path)}")
    _write_arrays(path, placed)
    items = [{k: v for k, v in e.items() if k != "frames" or v is not None} for _, _, e in placed]
    _write_index(path, meta, items, placed, manifest_digest)
    return ActivationStore(path)


def _shapes(placed: list[tuple[int, Path, dict[str, Any]]]) -> tuple[list[str], dict[str, tuple[int, ...]]]:
    from safetensors import safe_open

    with safe_open(str(placed[0][1]), framework="pt") as f:
        names = list(f.keys())
        return names, {n: tuple(f.get_slice(n).get_shape()[1:]) for n in names}


def _write_arrays(path: Path, placed: list[tuple[int, Path, dict[str, Any]]]) -> None:
    from safetensors import safe_open

    names, shapes = _shapes(placed)
    total_rows = sum(e["rows"] for _, _, e in placed)
    destination, cursor = {}, 0  # where each item's rows go in the merged arrays
    for idx, _, e in placed:
        destination[idx] = cursor
        cursor += e["rows"]
    shards = list(dict.fromkeys(file for _, file, _ in placed))
    with ExitStack() as stack:  # unique temporaries: concurrent merges never share one
        tmps = {name: stack.enter_context(atomic_path(path / f"{_safe_name(name)}.npy", fsync=True)) for name in names}
        for name in names:  # allocate the files (sparse); rows are written shard by shard below
            del_me = np.lib.format.open_memmap(tmps[name], mode="w+", dtype=np.float32, shape=(total_rows, *shapes[name]))
            del del_me
        # One shard at a time, mapping the output only while writing it: dirty mapped pages count
        # as resident memory, so keeping the maps open would grow RSS with the dataset.
        for file in shards:
            with safe_open(str(file), framework="np") as f:
                entries = json.loads(f.metadata()["items"])
                for name in names:
                    data, row = f.get_tensor(name), 0
                    out = np.load(tmps[name], mmap_mode="r+", allow_pickle=False)
                    for entry in entries:
                        dst = destination[entry["index"]]
                        out[dst : dst + entry["rows"]] = data[row : row + entry["rows"]]
                        row += entry["rows"]
                    out.flush()
                    del out
        # leaving the ExitStack renames every temporary over its array


def _write_index(path: Path, meta: dict[str, Any], items: list[dict[str, Any]], placed: list[tuple[int, Path, dict[str, Any]]], manifest: str) -> None:
    names, shapes = _shapes(placed)
    index = {
        "format_version": FORMAT_VERSION,
        "arrays": {name: f"{_safe_name(name)}.npy" for name in names},
        "shapes": {name: list(shapes[name]) for name in names},
        "rows": sum(it["rows"] for it in items),
        "dataset": {"fingerprint": dataset_fingerprint([e for _, _, e in placed]), "n_items": len(items)},
        "manifest": manifest,
        "items": items,
        "meta": meta,
    }
    atomic_write_text(path / "index.json", json.dumps(index), fsync=True)
