"""ActivationStore: cache chosen hooks' activations over a music dataset to disk.

Layout of a store directory:

    meta.json                          the run: model (architecture hash, weights fingerprint), hooks, pooling, version
    shards/w{i}of{n}-{k:05d}.safetensors   one shard = `shard_size` consecutive items of worker i,
                                       with its items' digests and the checksum of its tensors
    w{i}of{n}.done                     worker i's manifest, written when it has finished all its shards
    {hook}.npy                         consolidated per-hook arrays (memory-mapped on read)
    index.json                         items, shapes, dataset fingerprint, counts; written last
    .lock, .lock-w{i}of{n}             lock files (fcntl.flock): the store, and each worker's shards

Every file is written to a unique temporary name and renamed, so a run killed at any point
(even kill -9) leaves only whole shards; started again it checks and skips them and ends with
exactly the store an uninterrupted run makes. `shard=(i, n)` lets n processes fill one store
(item j goes to worker j % n); `merge(path)` joins them once all are done. What is recorded and
checked is described in `musicgen_lens.activations.integrity`.

Modules: `sources` (items and their digests), `collect` (`cache_activations`, pooling),
`store` (`ActivationStore`, `merge`), `integrity` (provenance and checks), `distributed`
(`shard="auto"` under torchrun / accelerate).
"""

from musicgen_lens.activations.collect import POOLINGS, Pooling, cache_activations
from musicgen_lens.activations.distributed import distributed_shard, local_device
from musicgen_lens.activations.integrity import StoreError
from musicgen_lens.activations.sources import Item, items_from_folder
from musicgen_lens.activations.store import ActivationStore, merge

__all__ = [
    "ActivationStore", "Item", "Pooling", "POOLINGS", "StoreError", "cache_activations", "distributed_shard", "items_from_folder",
    "local_device", "merge",
]
