"""ActivationStore: cache chosen hooks' activations over a music dataset to disk.

Layout of a store directory:

    meta.json                          provenance: model name, config hash, hooks, pooling, version
    shards/w{i}of{n}-{k:05d}.safetensors   one shard = `shard_size` consecutive items of worker i
    w{i}of{n}.done                     written when worker i has finished all its shards
    {hook}.npy                         consolidated per-hook arrays (memory-mapped on read)
    index.json                         items (id, labels, row range); written last

Every file is written to a temporary name and renamed, so a run killed at any point (even
kill -9) leaves only whole shards; started again it skips them and ends with exactly the store
an uninterrupted run makes. `shard=(i, n)` lets n processes fill one store (item j goes to
worker j % n); `merge(path)` joins them once all are done.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

from musicgen_lens._atomic import atomic_path, atomic_write_text

if TYPE_CHECKING:
    from musicgen_lens.model import HookedMusicGen

POOLINGS = ("mean", "frames", "last")


@dataclass
class Item:
    """One dataset item: codes (undelayed [n_codebooks, frames]) or audio, a text, and labels."""

    id: str
    codes: torch.Tensor | None = None
    audio: Any = None  # a path, or an array [channels, samples] / [samples] at `sr`
    sr: int | None = None
    text: str | None = None
    labels: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def coerce(cls, raw: Any, index: int) -> "Item":
        """Accept an Item, or a dict (incl. a Hugging Face `datasets` row with an audio column)."""
        if isinstance(raw, Item):
            return raw
        if not isinstance(raw, Mapping):
            raise TypeError(f"dataset item {index} must be an Item or a dict, got {type(raw).__name__}")
        raw = dict(raw)
        audio, sr = raw.pop("audio", None), raw.pop("sr", None)
        if isinstance(audio, Mapping):  # datasets' Audio feature: {"array", "sampling_rate", "path"}
            sr = audio.get("sampling_rate", sr)
            audio = audio.get("array") if audio.get("array") is not None else audio.get("path")
        labels = dict(raw.pop("labels", {}) or {})
        item_id = str(raw.pop("id", index))
        codes, text = raw.pop("codes", None), raw.pop("text", None)
        labels.update({k: v for k, v in raw.items() if isinstance(v, (str, int, float, bool, np.generic))})
        return cls(item_id, codes=codes, audio=audio, sr=sr, text=text, labels=labels)


@dataclass(frozen=True)
class Pooling:
    """How positions become rows: 'mean' over frames, 'frames' (one row per frame), a
    [t0, t1) window in seconds (mean), or 'last' (final step while generating a continuation)."""

    kind: str = "mean"
    window: tuple[float, float] | None = None
    new_frames: int = 1  # for 'last': frames generated after the prompt
    branch: str = "cond"  # for 'last': which CFG branch(es) to store
    guidance_scale: float = 3.0

    def __post_init__(self) -> None:
        if self.kind not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS} (or a (t0, t1) window), got {self.kind!r}")
        if self.window is not None and not (0 <= self.window[0] < self.window[1]):
            raise ValueError(f"window must satisfy 0 <= t0 < t1 seconds, got {self.window}")
        if self.branch not in ("cond", "uncond", "both"):
            raise ValueError(f"branch must be 'cond', 'uncond' or 'both', got {self.branch!r}")

    @classmethod
    def parse(cls, pooling: "str | tuple[float, float] | Pooling") -> "Pooling":
        if isinstance(pooling, Pooling):
            return pooling
        if isinstance(pooling, tuple):
            return cls("mean", window=(float(pooling[0]), float(pooling[1])))
        return cls(pooling)


def _position_second(hook: str) -> bool:
    """Hooks whose axis 1 is the decoder position (what pooling reduces)."""
    if hook.endswith(("hook_pattern", "hook_attn_scores", "hook_logits", "hook_cond")) or hook.startswith(("text_encoder.", "codec.")):
        return False
    return not (".cross_attn." in hook and hook.endswith(("hook_k", "hook_v")))


def _safe_name(hook: str) -> str:
    return hook.replace("/", "_")


class ActivationStore:
    """Read side of a store: `store[hook]` is a memory-mapped [rows, ...] numpy array."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        index = self.path / "index.json"
        if not index.exists():
            raise FileNotFoundError(f"{self.path} has no index.json: the caching run has not finished (or run merge())")
        self.meta = json.loads((self.path / "meta.json").read_text())
        self.index = json.loads(index.read_text())
        self.items: list[dict[str, Any]] = self.index["items"]

    @classmethod
    def open(cls, path: str | os.PathLike) -> "ActivationStore":
        return cls(path)

    @property
    def hooks(self) -> list[str]:
        return list(self.index["arrays"])

    @property
    def ids(self) -> list[str]:
        return [it["id"] for it in self.items]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, hook: str) -> np.ndarray:
        if hook not in self.index["arrays"]:
            raise KeyError(f"{hook!r} is not in this store; it has {self.hooks}")
        return np.load(self.path / self.index["arrays"][hook], mmap_mode="r")

    def torch(self, hook: str) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(self[hook]))

    def labels(self, name: str) -> np.ndarray:
        """One label per row (items repeated over their rows for per-frame pooling)."""
        missing = [it["id"] for it in self.items if name not in it["labels"]]
        if missing:
            raise KeyError(f"label {name!r} is missing for items {missing[:5]}; labels are {sorted(self.items[0]['labels'])}")
        return np.array([it["labels"][name] for it in self.items for _ in range(it["rows"])])

    def frames(self) -> np.ndarray:
        """Frame index of each row ('frames' pooling)."""
        return np.concatenate([np.asarray(it.get("frames", [-1] * it["rows"])) for it in self.items])

    def seconds(self) -> np.ndarray:
        return self.frames() / float(self.meta["frame_rate"])


def _provenance(model: "HookedMusicGen", hooks: Sequence[str], pooling: Pooling, shard_size: int) -> dict[str, Any]:
    from musicgen_lens import __version__

    return {
        "model_name": model.cfg.model_name,
        "config_hash": model.cfg.hash(),
        "hooks": list(hooks),
        "pooling": pooling.__dict__ | {"window": list(pooling.window) if pooling.window else None},
        "shard_size": shard_size,
        "frame_rate": model.cfg.frame_rate,
        "library_version": __version__,
    }


def _check_meta(path: Path, meta: dict[str, Any]) -> None:
    file = path / "meta.json"
    if not file.exists():
        path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(file, json.dumps(meta, indent=1))
        return
    old = json.loads(file.read_text())
    if old["config_hash"] != meta["config_hash"]:
        raise ValueError(
            f"{path} was written by a different model config (hash {old['config_hash']}, model {old['model_name']!r}); "
            f"this model's hash is {meta['config_hash']} ({meta['model_name']!r}). Use another directory."
        )
    for key in ("hooks", "pooling", "shard_size"):
        if old[key] != meta[key]:
            raise ValueError(f"{path} was written with {key}={old[key]}, this run asks for {meta[key]}; use another directory")


def _item_codes(model: "HookedMusicGen", item: Item) -> torch.Tensor:
    if item.codes is not None:
        codes = torch.as_tensor(item.codes)
        if codes.ndim == 2:
            codes = codes[None]
        return codes.to(model.device)
    if item.audio is None:
        raise ValueError(f"item {item.id!r} has neither codes nor audio")
    if item.sr is None and not isinstance(item.audio, (str, os.PathLike)):
        raise ValueError(f"item {item.id!r} has in-memory audio but no sr: give its sample rate (Item(sr=...) or 'sr')")
    with torch.no_grad():
        return model.encode_prompt(item.audio, batch=1, sr=item.sr)


def _rows_for_item(
    model: "HookedMusicGen", item: Item, hooks: Sequence[str], pooling: Pooling, conds: dict[str, Any]
) -> tuple[dict[str, torch.Tensor], list[int] | None]:
    """Run one item; return {array name: [rows, ...]} and the frame index of each row.

    `conds` memoises the text encoder per distinct text: datasets reuse prompt templates.
    """
    from musicgen_lens.generation import apply_delay_pattern

    codes = _item_codes(model, item)
    cond = None
    if item.text is not None:
        if item.text not in conds:
            with torch.no_grad():
                conds[item.text] = model.condition([item.text])
        cond = conds[item.text]
    if pooling.kind == "last":
        return _last_step_rows(model, codes, cond, hooks, pooling), None
    cfg = model.cfg
    seq = apply_delay_pattern(codes, cfg.pad_token_id, cfg.audio_channels)
    with torch.no_grad():
        _, cache = model.run_with_cache(seq, cond, names_filter=list(hooks), return_cache_object=False)
    n_frames = codes.shape[-1]
    frames = torch.arange(seq.shape[-1]) - model.ctx.max_delay
    keep = (frames >= 0) & (frames < n_frames)
    if pooling.window is not None:
        seconds = frames / cfg.frame_rate
        keep &= (seconds >= pooling.window[0]) & (seconds < pooling.window[1])
        if not keep.any():
            raise ValueError(f"item {item.id!r} ({n_frames / cfg.frame_rate:.2f} s) has no frame in window {pooling.window}")
    out = {}
    for hook in hooks:
        acts = cache[hook][0, keep.to(cache[hook].device)]  # [pos, ...]: position is axis 1 of every decoder hook
        out[hook] = acts if pooling.kind == "frames" else acts.mean(0, keepdim=True)
    return out, frames[keep].tolist() if pooling.kind == "frames" else None


def _last_step_rows(model: "HookedMusicGen", prompt: torch.Tensor, cond: Any, hooks: Sequence[str], pooling: Pooling) -> dict[str, torch.Tensor]:
    """The paper's collection: continue the prompt and keep the final step's activations."""
    grabbed: dict[str, torch.Tensor] = {}

    def grab(act: torch.Tensor, hook: Any) -> None:
        if hook.ctx.step == hook.ctx.n_steps - 1:
            grabbed[hook.name] = act[:, -1].detach().clone()  # [rows, ...]

    model.generate(
        cond=cond, audio_prompt_codes=prompt, max_new_frames=pooling.new_frames, guidance_scale=pooling.guidance_scale,
        do_sample=False, progress=False, fwd_hooks=[(h, grab) for h in hooks],
    )
    out = {}
    for hook in hooks:
        rows = grabbed[hook]
        uncond = rows[rows.shape[0] // 2 :] if rows.shape[0] > 1 else None
        if pooling.branch in ("cond", "both"):
            out[hook] = rows[:1]
        if pooling.branch in ("uncond", "both"):
            if uncond is None:
                raise ValueError("branch='uncond' needs guidance_scale > 1 (no unconditional rows otherwise)")
            out[f"{hook}@uncond"] = uncond[:1]
    return out


def cache_activations(
    model: "HookedMusicGen",
    items: Iterable[Any],
    path: str | os.PathLike,
    hooks: Sequence[str],
    *,
    pooling: "str | tuple[float, float] | Pooling" = "mean",
    shard_size: int = 256,
    shard: tuple[int, int] = (0, 1),
    labels: Sequence[Mapping[str, Any]] | None = None,
    progress: bool = True,
) -> ActivationStore | None:
    """Run `model` over `items`, writing `hooks`' activations to the store at `path`.

    Resumable: shards already on disk are skipped (their items are not run again). Returns the
    opened store when this call completes it (single worker), else None (run `merge`).
    """
    hooks = list(hooks)
    if not hooks:
        raise ValueError("hooks is empty: name at least one hook, e.g. 'blocks.0.hook_resid_post'")
    for hook in hooks:
        model._check_hook_name(hook)
        if not _position_second(hook):
            raise ValueError(
                f"{hook!r} has no [batch, pos, ...] layout (patterns, scores, logits, text/codec hooks); "
                "cache it with model.run_with_cache instead"
            )
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    worker, n_workers = shard
    if not 0 <= worker < n_workers:
        raise ValueError(f"shard=(i, n) needs 0 <= i < n, got {shard}")
    pooling = Pooling.parse(pooling)
    path = Path(path)
    _check_meta(path, _provenance(model, hooks, pooling, shard_size))
    (path / "shards").mkdir(exist_ok=True)
    tag = f"w{worker}of{n_workers}"

    if labels is not None:
        items = list(items)
        if len(labels) != len(items):
            raise ValueError(f"{len(items)} items but {len(labels)} labels; they must match one to one")
        items = [_with_labels(Item.coerce(raw, i), extra) for i, (raw, extra) in enumerate(zip(items, labels))]
    done = {int(m.group(1)) for f in (path / "shards").iterdir() if (m := re.fullmatch(rf"{tag}-(\d+)\.safetensors", f.name))}
    total = -(-len(items) // n_workers) if hasattr(items, "__len__") else None
    seen = 0
    conds: dict[str, Any] = {}
    with tqdm(total=total, disable=not progress, desc=f"caching {tag}", unit="item") as bar:
        for shard_no, chunk in enumerate(_chunks(_mine(items, worker, n_workers), shard_size)):
            seen += len(chunk)
            if shard_no in done:  # resumed: this shard is already on disk, whole
                bar.update(len(chunk))
                continue
            buffer = []
            for global_index, raw in chunk:
                item = Item.coerce(raw, global_index)
                rows, frames = _rows_for_item(model, item, hooks, pooling, conds)
                buffer.append((global_index, item, rows, frames))
                bar.update(1)
            _write_shard(path / "shards" / f"{tag}-{shard_no:05d}.safetensors", buffer)
    if seen == 0 and worker == 0:
        raise ValueError("the dataset is empty: nothing to cache")
    atomic_write_text(path / f"{tag}.done", json.dumps({"items": seen}))
    if n_workers == 1:
        return merge(path)
    return None


def _with_labels(item: Item, extra: Mapping[str, Any]) -> Item:
    item.labels = {**item.labels, **extra}
    return item


def _mine(items: Iterable[Any], worker: int, n_workers: int) -> Iterator[tuple[int, Any]]:
    for i, raw in enumerate(items):
        if i % n_workers == worker:
            yield i, raw


def _chunks(it: Iterator[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for x in it:
        chunk.append(x)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _write_shard(file: Path, buffer: list[tuple[int, Item, dict[str, torch.Tensor], list[int] | None]]) -> None:
    names = list(buffer[0][2])
    tensors = {name: torch.cat([rows[name].float().cpu() for _, _, rows, _ in buffer]).contiguous() for name in names}
    entries = [
        {"index": gi, "id": item.id, "text": item.text, "labels": _jsonable(item.labels), "rows": int(rows[names[0]].shape[0]), "frames": frames}
        for gi, item, rows, frames in buffer
    ]
    with atomic_path(file) as tmp:
        save_file(tensors, str(tmp), metadata={"items": json.dumps(entries)})


def _jsonable(labels: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in labels.items()}


def merge(path: str | os.PathLike) -> ActivationStore:
    """Join the shards of every worker into per-hook arrays + index.json (written last).

    Streams one shard at a time into memory-mapped .npy files, so RAM stays bounded.
    """
    path = Path(path)
    meta = json.loads((path / "meta.json").read_text())
    done = sorted(path.glob("w*of*.done"))
    if not done:
        raise FileNotFoundError(f"no finished worker in {path}: run cache_activations first")
    n_workers = int(re.fullmatch(r"w\d+of(\d+)\.done", done[0].name).group(1))
    missing = [i for i in range(n_workers) if not (path / f"w{i}of{n_workers}.done").exists()]
    if missing:
        raise RuntimeError(f"workers {missing} of {n_workers} have not finished; merge once all are done")
    shards = sorted((path / "shards").glob(f"w*of{n_workers}-*.safetensors"))
    # order rows by global item index, whichever worker made them
    placed: list[tuple[int, Path, int, int, dict[str, Any]]] = []  # (item index, shard, row start, rows, entry)
    for file in shards:
        with safe_open(str(file), framework="pt") as f:
            entries = json.loads(f.metadata()["items"])
        row = 0
        for entry in entries:
            placed.append((entry["index"], file, row, entry["rows"], entry))
            row += entry["rows"]
    placed.sort(key=lambda p: p[0])
    if not placed:
        raise ValueError("the dataset is empty: nothing was cached")
    with safe_open(str(placed[0][1]), framework="pt") as f:
        names = list(f.keys())
        shapes = {n: f.get_slice(n).get_shape()[1:] for n in names}
    total_rows = sum(p[3] for p in placed)
    arrays = {name: f"{_safe_name(name)}.npy" for name in names}
    tmps = {name: path / f".{arrays[name]}.tmp" for name in names}
    for name in names:  # allocate the files (sparse); rows are written shard by shard below
        del_me = np.lib.format.open_memmap(tmps[name], mode="w+", dtype=np.float32, shape=(total_rows, *shapes[name]))
        del del_me
    # Where each item's rows go in the merged arrays.
    destination, cursor = {}, 0
    for idx, _, _, rows, _ in placed:
        destination[idx] = cursor
        cursor += rows
    # One shard at a time, mapping the output only while writing it: dirty mapped pages count
    # as resident memory, so keeping the maps open would grow RSS with the dataset.
    for file in shards:
        with safe_open(str(file), framework="np") as f:
            entries = json.loads(f.metadata()["items"])
            for name in names:
                data, row = f.get_tensor(name), 0
                out = np.load(tmps[name], mmap_mode="r+")
                for entry in entries:
                    dst = destination[entry["index"]]
                    out[dst : dst + entry["rows"]] = data[row : row + entry["rows"]]
                    row += entry["rows"]
                out.flush()
                del out
    for name in names:
        os.replace(tmps[name], path / arrays[name])
    items = [{k: v for k, v in p[4].items() if k != "frames" or v is not None} for p in placed]
    atomic_write_text(path / "index.json", json.dumps({"arrays": arrays, "items": items, "meta": meta}))
    return ActivationStore(path)


def items_from_folder(folder: str | os.PathLike, csv_name: str = "labels.csv", *, path_column: str = "path", text_column: str = "text", id_column: str = "id") -> list[Item]:
    """A folder of audio files with a CSV of labels (one row per file) -> Items."""
    import csv

    folder = Path(folder)
    table = folder / csv_name
    if not table.exists():
        raise FileNotFoundError(f"{table} not found: expected a CSV with a {path_column!r} column")
    with open(table, newline="") as f:
        rows = list(csv.DictReader(f))
    items = []
    for i, row in enumerate(rows):
        if path_column not in row:
            raise ValueError(f"{table} has no {path_column!r} column (columns: {list(row)})")
        audio = folder / row.pop(path_column)
        item_id = row.pop(id_column, str(i))
        text = row.pop(text_column, None)
        labels = {k: _number_or_text(v) for k, v in row.items()}
        items.append(Item(item_id, audio=audio, text=text, labels=labels))
    return items


def _number_or_text(value: str) -> Any:
    try:
        return float(value) if "." in value else int(value)
    except ValueError:
        return value
