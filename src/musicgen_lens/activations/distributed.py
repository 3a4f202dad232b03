"""Caching on several processes with `torchrun` / `accelerate launch`, unchanged.

`cache_activations(..., shard="auto")` reads the rank and world size that torchrun, accelerate
and SLURM-style launchers put in the environment (`RANK`/`WORLD_SIZE`, else `LOCAL_RANK`/
`LOCAL_WORLD_SIZE`; one process when neither is set) and becomes worker `rank` of `world_size`:
item j goes to rank j % world_size, each rank writes and resumes its own shards, and rank 0 waits
for every rank's manifest, then merges and returns the store (the other ranks return None). The
wait is on the store's files, not on a process group, so it needs no `init_process_group` and
works across nodes that share the store's folder (a network file system with working `flock`).
Put the model on `local_device()` (cuda:LOCAL_RANK when there are GPUs, else the CPU).

    # torchrun --nproc_per_node 4 cache.py
    model = HookedMusicGen.from_pretrained("facebook/musicgen-small", device=local_device())
    store = cache_activations(model, items, "acts/", hooks, shard="auto")   # None on ranks > 0

With a `datasets` source, give every rank the same dataset (the same order): each rank takes its
own items, so nothing needs splitting by hand.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch

__all__ = ["distributed_shard", "local_device", "wait_for_workers"]


def _env_int(*names: str) -> int | None:
    for name in names:
        value = os.environ.get(name)
        if value not in (None, ""):
            try:
                return int(value)
            except ValueError:
                raise ValueError(f"environment variable {name}={value!r} is not an integer") from None
    return None


def distributed_shard() -> tuple[int, int]:
    """(rank, world_size) from the launcher's environment; (0, 1) outside a launcher."""
    rank = _env_int("RANK", "LOCAL_RANK")
    world = _env_int("WORLD_SIZE", "LOCAL_WORLD_SIZE")
    if world is None:
        return (0, 1)
    rank = 0 if rank is None else rank
    if not (world >= 1 and 0 <= rank < world):
        raise ValueError(f"the launcher's environment says rank {rank} of world size {world}: expected 0 <= rank < world_size")
    return (rank, world)


def local_device() -> torch.device:
    """This process's device: cuda:LOCAL_RANK when CUDA is available, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", (_env_int("LOCAL_RANK") or 0) % torch.cuda.device_count())
    return torch.device("cpu")


def wait_for_workers(path: Path, n_workers: int, timeout: float | None, poll: float = 0.5) -> None:
    """Block until every worker's manifest (w{i}of{n}.done) exists, or raise after `timeout` seconds."""
    start = time.monotonic()
    while True:
        missing = [i for i in range(n_workers) if not (path / f"w{i}of{n_workers}.done").exists()]
        if not missing:
            return
        if timeout is not None and time.monotonic() - start > timeout:
            raise TimeoutError(
                f"waited {timeout:g} s for workers {missing} of {n_workers} to finish {path}; is every rank running? "
                "(a finished store can be merged later with musicgen_lens.activations.merge(path))"
            )
        time.sleep(poll)
