"""`cache_activations`: run a model over a dataset and write chosen hooks to shards on disk."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping, Sequence

import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from musicgen_lens._atomic import atomic_path, atomic_write_text, file_lock, remove_temps
from musicgen_lens.activations.distributed import distributed_shard, wait_for_workers
from musicgen_lens.activations.integrity import (
    FORMAT_VERSION,
    STORE_LOCK,
    DamagedShard,
    StoreError,
    check_or_write_meta,
    dataset_fingerprint,
    describe_mismatch,
    fresh,
    shard_entries,
)
from musicgen_lens.activations.sources import Item, item_digest, jsonable
from musicgen_lens.activations.store import ActivationStore, merge
from musicgen_lens.hooks import Site, parse_hook_name
from musicgen_lens.provenance import tensor_checksum, weights_fingerprint

if TYPE_CHECKING:
    from musicgen_lens.model import HookedMusicGen

POOLINGS = ("mean", "frames", "last")


@dataclass(frozen=True)
class Pooling:
    """How positions become rows: 'mean' over frames, 'frames' (one row per frame), a
    [t0, t1) window in seconds (mean), or 'last' (while generating a continuation of the item).

    For 'last' (the paper's collection: the item's audio is the prompt, its text the
    conditioning, and `new_frames` frames are generated): `steps="last"` keeps the final
    generation step's activation (the last position it processed), `steps="mean"` the mean over
    every generation step's last position (one per new position, prefill included). `do_sample`
    with `seed`: item i (its index in the dataset) is generated with seed `seed + i`, so a row
    does not depend on the batch it ran in. `batch_size` items run in one `generate` call
    (items of one prompt length; the rest in smaller calls). `branch` picks the CFG rows.
    `Pooling.paper()` is the authors' setting (512 sampled frames, CFG 3, last step, cond).
    """

    kind: str = "mean"
    window: tuple[float, float] | None = None
    new_frames: int = 1  # for 'last': frames generated after the prompt
    branch: str = "cond"  # for 'last': which CFG branch(es) to store
    guidance_scale: float = 3.0
    steps: str = "last"  # for 'last': "last" generation step, or "mean" over all steps
    do_sample: bool = False
    seed: int = 0
    top_k: int = 250
    batch_size: int = 1

    def __post_init__(self) -> None:
        if self.kind not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS} (or a (t0, t1) window), got {self.kind!r}")
        if self.window is not None and not (0 <= self.window[0] < self.window[1]):
            raise ValueError(f"window must satisfy 0 <= t0 < t1 seconds, got {self.window}")
        if self.branch not in ("cond", "uncond", "both"):
            raise ValueError(f"branch must be 'cond', 'uncond' or 'both', got {self.branch!r}")
        if self.steps not in STEP_POOLINGS:
            raise ValueError(f"steps must be one of {STEP_POOLINGS}, got {self.steps!r}")
        if not (isinstance(self.new_frames, int) and self.new_frames >= 1):
            raise ValueError(f"new_frames must be an int >= 1, got {self.new_frames!r}")
        if not (isinstance(self.batch_size, int) and self.batch_size >= 1):
            raise ValueError(f"batch_size must be an int >= 1, got {self.batch_size!r}")

    @classmethod
    def parse(cls, pooling: "str | tuple[float, float] | Pooling") -> "Pooling":
        if isinstance(pooling, Pooling):
            return pooling
        if isinstance(pooling, tuple):
            return cls("mean", window=(float(pooling[0]), float(pooling[1])))
        return cls(pooling)

    @classmethod
    def paper(
        cls, new_frames: int = 512, *, steps: str = "last", branch: str = "cond", guidance_scale: float = 3.0,
        seed: int = 0, batch_size: int = 8, do_sample: bool = True, top_k: int = 250,
    ) -> "Pooling":
        """arXiv 2506.10225's collection: continue each prompt for `new_frames` sampled frames
        (512 in the authors' code) with CFG 3 and keep the last step's conditional-branch
        activations; `steps="mean"` averages over the new frames' steps instead."""
        return cls("last", new_frames=new_frames, steps=steps, branch=branch, guidance_scale=guidance_scale, seed=seed,
                   batch_size=batch_size, do_sample=do_sample, top_k=top_k)

    def as_dict(self) -> dict[str, Any]:
        # the fields added for paper-scale collection are recorded only when set, so stores
        # written before them keep their meta.json (and resume)
        out = {k: v for k, v in self.__dict__.items() if k not in _NEW_FIELDS or v != _NEW_FIELDS[k]}
        # batch_size does not change the rows (per-item seeds): resuming with another is allowed
        out.pop("batch_size", None)
        return out | {"window": list(self.window) if self.window else None}


STEP_POOLINGS = ("last", "mean")
_NEW_FIELDS = {"steps": "last", "do_sample": False, "seed": 0, "top_k": 250, "batch_size": 1}


def _poolable_site(model: "HookedMusicGen", hook: str) -> Site:
    """The registry's site of `hook`, if its activation has one row per decoder/code position."""
    model._check_hook_name(hook)
    site, _ = parse_hook_name(hook)
    if site.positions not in ("decoder", "codes") or "key_pos" in site.shape or "text_pos" in site.shape:
        what = {"text": "text-token positions", "chroma": "melody-prefix positions", None: "no position axis"}.get(site.positions, "a key axis as long as the item")
        raise ValueError(
            f"{hook!r} ({list(site.shape)}) has {what}, not one row per decoder position, so it cannot be pooled over frames; "
            "cache it with model.run_with_cache instead"
        )
    return site


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
    model: "HookedMusicGen", item: Item, sites: Mapping[str, Site], pooling: Pooling, conds: dict[str, Any], index: int = 0
) -> tuple[dict[str, torch.Tensor], list[int] | None]:
    """Run one item; return {array name: [rows, ...]} and the frame index of each row.

    `conds` memoises the text encoder per distinct text: datasets reuse prompt templates.
    A melody model's decoder hooks also cover its conditioning prefix; those positions are
    dropped, so every row is a code position (as the codes-only hooks are).
    """
    codes = _item_codes(model, item)
    cond = None
    if item.text is not None:
        if item.text not in conds:
            with torch.no_grad():
                conds[item.text] = model.condition([item.text])
        cond = conds[item.text]
    if pooling.kind == "last":
        return _last_step_rows(model, codes, cond, sites, pooling, [pooling.seed + index])[0], None
    cond = model.resolve_cond(cond, 1)
    seq = model.pattern.apply(codes, model.cfg.pad_token_id)
    with torch.no_grad():
        _, cache = model.run_with_cache(seq, cond, names_filter=list(sites), return_cache_object=False)
    n_pos, n_frames, n_prefix = seq.shape[-1], codes.shape[-1], model.n_prefix(cond)
    frames = model.pattern.frame_of(torch.arange(n_pos))
    keep = (frames >= 0) & (frames < n_frames)
    if pooling.window is not None:
        seconds = model.pattern.position_seconds(n_pos)
        keep &= (seconds >= pooling.window[0]) & (seconds < pooling.window[1])
        if not keep.any():
            raise ValueError(f"item {item.id!r} ({n_frames / model.pattern.frame_rate:.2f} s) has no frame in window {pooling.window}")
    out = {}
    for hook, site in sites.items():
        acts = cache[hook][0].movedim(site.pos_axis - 1, 0)  # [pos, ...]
        skip = n_prefix if site.positions == "decoder" else 0
        if acts.shape[0] != skip + n_pos:
            raise RuntimeError(f"{hook} has {acts.shape[0]} positions, expected {skip} prefix + {n_pos} code positions")
        acts = acts[skip:][keep.to(acts.device)]
        out[hook] = acts if pooling.kind == "frames" else acts.mean(0, keepdim=True)
    return out, frames[keep].tolist() if pooling.kind == "frames" else None


def _last_step_rows(model: "HookedMusicGen", prompt: torch.Tensor, cond: Any, sites: Mapping[str, Site], pooling: Pooling, seeds: Sequence[int] | None = None) -> list[dict[str, torch.Tensor]]:
    """The paper's collection: continue the prompts [batch, K, frames] and keep, per row, the
    final step's activations (steps="last") or their mean over all steps (steps="mean").
    Returns one {array name: [1, ...]} per row."""
    batch = prompt.shape[0]
    grabbed: dict[str, torch.Tensor] = {}
    mean = pooling.steps == "mean"

    def grab(act: torch.Tensor, hook: Any) -> None:
        last = act.select(sites[hook.name].pos_axis, -1).detach()  # [rows, ...]
        if mean:
            acc = last.float()
            grabbed[hook.name] = grabbed[hook.name] + acc if hook.name in grabbed else acc.clone()
        elif hook.ctx.step == hook.ctx.n_steps - 1:
            grabbed[hook.name] = last.clone()

    if seeds is None:
        seeds = [pooling.seed + i for i in range(batch)]
    model.generate(
        cond=cond, audio_prompt_codes=prompt, max_new_frames=pooling.new_frames, guidance_scale=pooling.guidance_scale,
        do_sample=pooling.do_sample, top_k=pooling.top_k, seed=list(seeds) if pooling.do_sample else None, progress=False,
        fwd_hooks=[(h, grab) for h in sites],
    )
    n_steps = model.pattern.length_for(prompt.shape[-1] + pooling.new_frames) - (prompt.shape[-1] + 1)
    out: list[dict[str, torch.Tensor]] = [{} for _ in range(batch)]
    for hook in sites:
        rows = grabbed[hook] / n_steps if mean else grabbed[hook]
        has_uncond = rows.shape[0] == 2 * batch
        for b in range(batch):
            if pooling.branch in ("cond", "both"):
                out[b][hook] = rows[b : b + 1]
            if pooling.branch in ("uncond", "both"):
                if not has_uncond:
                    raise ValueError("branch='uncond' needs guidance_scale > 1 (no unconditional rows otherwise)")
                out[b][f"{hook}@uncond"] = rows[batch + b : batch + b + 1]
    return out


def _continuation_batches(
    model: "HookedMusicGen", chunk: list[tuple[int, Item]], sites: Mapping[str, Site], pooling: Pooling, conds: dict[Any, Any],
) -> Iterator[tuple[list[int], list[dict[str, torch.Tensor]]]]:
    """Run the chunk's items `pooling.batch_size` at a time (items of one prompt length and with or
    without text together); yields (positions in the chunk, rows per item)."""
    prompts = [_item_codes(model, item) for _, item in chunk]
    groups: dict[tuple[int, bool], list[int]] = {}
    for j, ((_, item), codes) in enumerate(zip(chunk, prompts)):
        groups.setdefault((codes.shape[-1], item.text is not None), []).append(j)
    for (_, has_text), members in groups.items():
        for lo in range(0, len(members), pooling.batch_size):
            part = members[lo : lo + pooling.batch_size]
            texts = tuple(chunk[j][1].text for j in part)
            if has_text:
                if texts not in conds:
                    with torch.no_grad():
                        conds[texts] = model.condition(list(texts))
                cond = conds[texts]
            else:
                cond = model.resolve_cond(None, len(part))
            codes = torch.cat([prompts[j] for j in part])
            seeds = [pooling.seed + chunk[j][0] for j in part]
            yield part, _last_step_rows(model, codes, cond, sites, pooling, seeds)


def _provenance(model: "HookedMusicGen", hooks: Sequence[str], pooling: Pooling, shard_size: int) -> dict[str, Any]:
    from musicgen_lens import __version__

    return {
        "format_version": FORMAT_VERSION,
        "model_name": model.cfg.model_name,
        "config_hash": model.cfg.hash(),
        "weights_fingerprint": weights_fingerprint(model),
        "hooks": list(hooks),
        "pooling": pooling.as_dict(),
        "shard_size": shard_size,
        "frame_rate": model.pattern.frame_rate,
        "library_version": __version__,
    }


def _start(path: Path, meta: dict[str, Any], n_workers: int, overwrite: bool) -> None:
    """Under the store lock: empty the folder (overwrite), write or check meta.json, and refuse
    files of another split."""
    if overwrite and path.exists():
        if any(path.iterdir()) and not (path / "meta.json").exists() and not (path / "shards").is_dir():
            raise StoreError(f"overwrite=True would empty {path}, which is not an activation store (no meta.json); choose another folder")
        for entry in path.iterdir():
            if entry.name.startswith(STORE_LOCK):  # lock files stay: other processes may be waiting on them
                continue
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    leftovers = list(path.glob("w*of*.done")) + list(path.glob("shards/*.safetensors"))
    if not (path / "meta.json").exists() and leftovers:
        raise StoreError(
            f"{path}/meta.json is missing but the folder holds {leftovers[0].name} and other store files: which model made "
            f"them cannot be checked; {fresh(path)}"
        )
    check_or_write_meta(path, meta)
    other = sorted({m.group(1) for f in path.glob("w*of*.done") if (m := re.fullmatch(r"w\d+of(\d+)\.done", f.name))} - {str(n_workers)})
    if other:
        raise StoreError(f"{path} was filled with shard=(i, {other[0]}), this run uses shard=(i, {n_workers}); use the same split, or {fresh(path)}")


def cache_activations(
    model: "HookedMusicGen",
    items: Iterable[Any],
    path: str | os.PathLike,
    hooks: Sequence[str],
    *,
    pooling: "str | tuple[float, float] | Pooling" = "mean",
    shard_size: int = 256,
    shard: "tuple[int, int] | str" = (0, 1),
    labels: Sequence[Mapping[str, Any]] | None = None,
    progress: bool = True,
    overwrite: bool = False,
    lock_timeout: float | None = 600.0,
) -> ActivationStore | None:
    """Run `model` over `items`, writing `hooks`' activations to the store at `path`.

    Resumable: shards already on disk are checked (same model, settings and items, intact
    payload) and skipped; a damaged one is recomputed; any other mismatch is refused. Returns
    the opened store when this call completes it (single worker), else None (run `merge`).
    `overwrite=True` empties the store first. A second process on the same worker waits up to
    `lock_timeout` seconds for the first (then finds its shards done); workers of one split
    (`shard=(i, n)`) run side by side. `shard="auto"` takes (rank, world size) from a torchrun /
    accelerate launch (`musicgen_lens.activations.distributed`): rank 0 waits for the others, merges
    and returns the store; the other ranks return None.
    """
    hooks = list(hooks)
    if not hooks:
        raise ValueError("hooks is empty: name at least one hook, e.g. 'blocks.0.hook_resid_post'")
    sites = {hook: _poolable_site(model, hook) for hook in hooks}
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    launched = isinstance(shard, str)
    if launched:
        if shard != "auto":
            raise ValueError(f"shard must be (i, n) or 'auto' (from torchrun/accelerate's environment), got {shard!r}")
        shard = distributed_shard()
    worker, n_workers = shard
    if not 0 <= worker < n_workers:
        raise ValueError(f"shard=(i, n) needs 0 <= i < n, got {shard}")
    pooling = Pooling.parse(pooling)
    path = Path(path)
    meta = _provenance(model, hooks, pooling, shard_size)
    if labels is not None:
        items = list(items)
        if len(labels) != len(items):
            raise ValueError(f"{len(items)} items but {len(labels)} labels; they must match one to one")
        items = [_with_labels(Item.coerce(raw, i), extra) for i, (raw, extra) in enumerate(zip(items, labels))]
    path.mkdir(parents=True, exist_ok=True)
    tag = f"w{worker}of{n_workers}"
    with file_lock(path / f"{STORE_LOCK}-{tag}", lock_timeout, f"worker {shard} of activation store {path}"):
        with file_lock(path / STORE_LOCK, lock_timeout, f"activation store {path}"):
            _start(path, meta, n_workers, overwrite)
        (path / "shards").mkdir(exist_ok=True)
        remove_temps(path / "shards", tag)  # a killed run's partial shards (only this worker writes them)
        _run_worker(model, items, path, sites, pooling, shard_size, worker, n_workers, progress)
    if n_workers == 1:
        return merge(path, lock_timeout=lock_timeout)
    if launched and worker == 0:
        wait_for_workers(path, n_workers, lock_timeout)
        return merge(path, lock_timeout=lock_timeout)
    return None


def _run_worker(
    model: "HookedMusicGen", items: Iterable[Any], path: Path, sites: Mapping[str, Site], pooling: Pooling,
    shard_size: int, worker: int, n_workers: int, progress: bool,
) -> None:
    tag = f"w{worker}of{n_workers}"
    shard_re = re.compile(rf"{tag}-(\d+)\.safetensors")
    on_disk = {int(m.group(1)) for f in (path / "shards").iterdir() if (m := shard_re.fullmatch(f.name))}
    fix = "it is recomputed when cache_activations runs again"
    ids = _IdsDigest(items)
    total = -(-len(items) // n_workers) if hasattr(items, "__len__") else None
    manifest, conds, n_chunks = [], {}, 0
    with tqdm(total=total, disable=not progress, desc=f"caching {tag}", unit="item") as bar:
        for shard_no, chunk in enumerate(_chunks(_mine(ids, worker, n_workers), shard_size)):
            n_chunks += 1
            file = path / "shards" / f"{tag}-{shard_no:05d}.safetensors"
            chunk = [(i, Item.coerce(raw, i)) for i, raw in chunk]
            expected = [{"index": i, "id": it.id, "text": it.text, "digest": item_digest(it)} for i, it in chunk]
            if shard_no in on_disk:  # resumed: keep the shard if it is whole and made from these items
                try:
                    entries, checksum = shard_entries(file, fix)
                except DamagedShard as e:
                    warnings.warn(f"{e.file} is damaged ({e.reason}); recomputing it", stacklevel=3)
                else:
                    mismatch = describe_mismatch(file, entries, expected)
                    if mismatch:
                        raise StoreError(f"the dataset changed since the store was written: {mismatch}. Use another folder, or {fresh(path)}")
                    manifest.append(_manifest_entry(file, entries, checksum))
                    bar.update(len(chunk))
                    continue
            buffer = []
            if pooling.kind == "last":  # batched continuations
                done: dict[int, dict[str, torch.Tensor]] = {}
                for part, rows_list in _continuation_batches(model, chunk, sites, pooling, conds):
                    done.update(zip(part, rows_list))
                    bar.update(len(part))
                buffer = [(entry, item, done[j], None) for j, ((_, item), entry) in enumerate(zip(chunk, expected))]
            else:
                for (i, item), entry in zip(chunk, expected):
                    rows, frames = _rows_for_item(model, item, sites, pooling, conds, i)
                    buffer.append((entry, item, rows, frames))
                    bar.update(1)
            manifest.append(_write_shard(file, buffer))
    stale = sorted(n for n in on_disk if n >= n_chunks)
    if stale:
        raise StoreError(
            f"{path} holds shards {tag}-{stale[0]:05d}... beyond this run's {ids.n} items: the dataset is shorter than when "
            f"the store was written. Use another folder, or {fresh(path)}"
        )
    if ids.n == 0:
        raise ValueError("the dataset is empty: nothing to cache")
    done = {
        "items": sum(s["items"] for s in manifest), "n_total": ids.n, "ids_digest": ids.hexdigest(),
        "dataset": dataset_fingerprint([e for s in manifest for e in s.pop("_entries")]), "shards": manifest,
    }
    atomic_write_text(path / f"{tag}.done", json.dumps(done, indent=1), fsync=True)


class _IdsDigest:
    """Iterates the dataset, hashing every item's position, id and text (cheap: no audio), so
    that merge can check all workers saw the same dataset."""

    def __init__(self, items: Iterable[Any]):
        self.items, self.n, self._h = items, 0, hashlib.sha256()

    def __iter__(self) -> Iterator[Any]:
        for raw in self.items:
            item = Item.coerce(raw, self.n)
            self._h.update(json.dumps([self.n, item.id, item.text]).encode())
            self.n += 1
            yield item

    def hexdigest(self) -> str:
        return self._h.hexdigest()[:16]


def _manifest_entry(file: Path, entries: list[dict[str, Any]], checksum: str) -> dict[str, Any]:
    return {"file": file.name, "checksum": checksum, "items": len(entries), "rows": sum(e["rows"] for e in entries), "_entries": entries}


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


def _write_shard(file: Path, buffer: list[tuple[dict[str, Any], Item, dict[str, torch.Tensor], list[int] | None]]) -> dict[str, Any]:
    names = list(buffer[0][2])
    tensors = {name: torch.cat([rows[name].float().cpu() for _, _, rows, _ in buffer]).contiguous() for name in names}
    entries = [
        {**entry, "labels": jsonable(item.labels), "rows": int(rows[names[0]].shape[0]), "frames": frames}
        for entry, item, rows, frames in buffer
    ]
    checksum = tensor_checksum(tensors)
    with atomic_path(file, fsync=True) as tmp:
        save_file(tensors, str(tmp), metadata={"items": json.dumps(entries), "checksum": checksum})
    return _manifest_entry(file, entries, checksum)
