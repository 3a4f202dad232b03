"""ActivationStore integrity: provenance checks on resume and merge, checksums, damaged files,
two processes on one store, locks, and no code execution from a store's files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from safetensors import safe_open

from musicgen_lens import HookedMusicGen
from musicgen_lens._atomic import LockTimeout, file_lock
from musicgen_lens.activations import ActivationStore, StoreError, cache_activations, merge
from test_activations import make_items as shared_items

HOOKS = ["blocks.0.hook_resid_post", "blocks.1.attn.hook_z"]


def make_items(model, n, frames=8):
    return shared_items(model, n, frames=frames)


def snapshot(path):
    """Everything a reader sees: arrays, items, and every shard's bytes."""
    store = ActivationStore.open(path)
    shards = {}
    for f in sorted((path / "shards").glob("*.safetensors")):  # the header's key order is not deterministic: compare contents
        with safe_open(str(f), framework="np") as h:
            shards[f.name] = (h.metadata(), {k: h.get_tensor(k).tobytes() for k in h.keys()})
    return {h: np.asarray(store[h]).copy() for h in store.hooks}, store.items, shards


def assert_same(a, b):
    assert a[1] == b[1] and a[2] == b[2]
    assert a[0].keys() == b[0].keys()
    for hook in a[0]:
        np.testing.assert_array_equal(a[0][hook], b[0][hook])


def cache(model, items, path, **kw):
    return cache_activations(model, items, path, HOOKS, shard_size=2, progress=False, **kw)


@pytest.fixture
def retrained(checkpoint_dir):
    """The base model's architecture with other trained weights."""
    other = HookedMusicGen.from_pretrained(checkpoint_dir("base"), device="cpu")
    with torch.no_grad():
        for p in other.blocks.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    return other


def test_resume_with_other_trained_weights_is_refused(model, retrained, tmp_path):
    items = make_items(model, 4)
    cache(model, items, tmp_path / "s")
    meta = json.loads((tmp_path / "s" / "meta.json").read_text())
    from musicgen_lens.provenance import weights_fingerprint

    assert meta["weights_fingerprint"] == weights_fingerprint(model) != weights_fingerprint(retrained)
    with pytest.raises(StoreError, match=r"trained weights \(provenance.weights_fingerprint\): the store has .*overwrite=True\) or delete the folder"):
        cache(retrained, items, tmp_path / "s")
    with pytest.raises(ValueError, match="other trained weights"):
        ActivationStore.open(tmp_path / "s", model=retrained)
    ActivationStore.open(tmp_path / "s", model=model)
    fresh = cache(retrained, items, tmp_path / "s", overwrite=True)
    assert fresh.meta["weights_fingerprint"] == weights_fingerprint(retrained)
    assert not np.allclose(fresh["blocks.0.hook_resid_post"], cache(model, items, tmp_path / "ref")["blocks.0.hook_resid_post"])


def test_resume_with_another_or_shorter_dataset_is_refused(model, tmp_path):
    items = make_items(model, 8)
    first = snapshot(cache(model, items, tmp_path / "s").path)
    changed = make_items(model, 8)
    changed[3].codes = changed[3].codes.roll(1, -1)
    with pytest.raises(StoreError, match=r"dataset changed.*codes/audio of item 'item3' differ"):
        cache(model, changed, tmp_path / "s")
    relabelled = make_items(model, 8)
    relabelled[6].labels = {"genre": "pop"}
    with pytest.raises(StoreError, match=r"labels of item 'item6' differ"):
        cache(model, relabelled, tmp_path / "s")
    with pytest.raises(StoreError, match=r"holds 2 items where this run has 1"):
        cache(model, items[:7], tmp_path / "s")
    with pytest.raises(StoreError, match=r"beyond this run's 4 items: the dataset is shorter"):
        cache(model, items[:4], tmp_path / "s")
    renamed = make_items(model, 8)
    renamed[0].id = "other"
    with pytest.raises(StoreError, match=r"item 0 was id 'item0', this run's is 'other'"):
        cache(model, renamed, tmp_path / "s")
    assert_same(snapshot(cache(model, items, tmp_path / "s").path), first)  # the same dataset still resumes
    store = cache(model, items[:4], tmp_path / "s", overwrite=True)
    assert store.ids == [f"item{i}" for i in range(4)] and store.dataset_fingerprint != ActivationStore.open(cache(model, items, tmp_path / "r").path).dataset_fingerprint


def workers(model, items, path):
    """Fill a store with two workers (not merged yet)."""
    for i in range(2):
        assert cache(model, items, path, shard=(i, 2)) is None


def test_merge_refuses_a_deleted_shard_and_an_index_over_a_short_array(model, tmp_path):
    items = make_items(model, 8)
    workers(model, items, tmp_path / "s")
    (tmp_path / "s" / "shards" / "w1of2-00001.safetensors").unlink()
    with pytest.raises(StoreError, match=r"w1of2-00001.safetensors is missing .*cache_activations\(\.\.\., shard=\(1, 2\)\) again"):
        merge(tmp_path / "s")
    cache(model, items, tmp_path / "s", shard=(1, 2))  # recomputes it
    store = merge(tmp_path / "s")
    assert store.index["dataset"]["n_items"] == 8 and store.index["rows"] == 8 and len(store) == 8
    other = cache(model, make_items(model, 3), tmp_path / "three")
    np.save(tmp_path / "s" / store.index["arrays"][HOOKS[0]], np.asarray(other[HOOKS[0]]))
    with pytest.raises(StoreError, match=r"blocks.0.hook_resid_post.npy has shape \[3, 32\] but the index has 8 rows.*merge"):
        ActivationStore.open(tmp_path / "s")
    assert len(merge(tmp_path / "s")) == 8  # rebuilt from the shards


def test_tampered_shard_and_bit_flips_are_caught(model, tmp_path):
    items = make_items(model, 6)
    reference = snapshot(cache(model, items, tmp_path / "ref").path)[:2]
    workers(model, items, tmp_path / "s")
    shard = tmp_path / "s" / "shards" / "w0of2-00001.safetensors"
    raw = bytearray(shard.read_bytes())
    raw[-5] ^= 0x40  # one bit of the last tensor's payload
    shard.write_bytes(bytes(raw))
    with pytest.raises(StoreError, match=r"w0of2-00001.safetensors is damaged \(its tensors do not match the sha256"):
        merge(tmp_path / "s")
    with pytest.warns(UserWarning, match="w0of2-00001.safetensors is damaged.*recomputing it"):
        cache(model, items, tmp_path / "s", shard=(0, 2))
    merged = snapshot(merge(tmp_path / "s").path)
    assert merged[1] == reference[1]
    for hook in reference[0]:
        np.testing.assert_array_equal(merged[0][hook], reference[0][hook])


def test_truncated_files_say_which_and_how_to_recompute(model, tmp_path):
    items = make_items(model, 6)
    reference = snapshot(cache(model, items, tmp_path / "ref").path)
    path = tmp_path / "s"
    cache(model, items, path)

    def truncate(file, keep=0.5):
        data = file.read_bytes()
        file.write_bytes(data[: int(len(data) * keep)])

    truncate(path / "shards" / "w0of1-00001.safetensors")
    (path / "index.json").unlink()  # as if killed before merging
    with pytest.raises(StoreError, match=r"w0of1-00001.safetensors is damaged \(unreadable.*cache_activations\(\.\.\., shard=\(0, 1\)\) again with the same arguments"):
        merge(path)
    with pytest.warns(UserWarning, match="recomputing it"):
        cache(model, items, path)
    assert_same(snapshot(path), reference)  # bit-identical

    npy = path / "blocks.1.attn.hook_z.npy"
    truncate(npy, 0.9)
    with pytest.raises(StoreError, match=r"hook_z.npy is damaged .*truncated.*merge\("):
        ActivationStore.open(path)
    merge(path)
    assert_same(snapshot(path), reference)

    truncate(path / "index.json")
    with pytest.raises(StoreError, match=r"index.json is damaged \(not valid JSON.*merge\("):
        ActivationStore.open(path)
    merge(path)
    assert_same(snapshot(path), reference)

    truncate(path / "w0of1.done")
    with pytest.raises(StoreError, match=r"w0of1.done is damaged.*cache_activations\(\.\.\., shard=\(0, 1\)\) again"):
        merge(path)
    cache(model, items, path)
    assert_same(snapshot(path), reference)

    truncate(path / "meta.json")
    with pytest.raises(StoreError, match=r"meta.json is damaged.*overwrite=True\) or delete the folder"):
        cache(model, items, path)
    with pytest.raises(StoreError, match=r"meta.json is damaged"):
        ActivationStore.open(path)
    (path / "meta.json").unlink()
    with pytest.raises(StoreError, match=r"meta.json is missing but the folder holds .*overwrite=True\) or delete the folder"):
        cache(model, items, path)
    assert_same(snapshot(cache(model, items, path, overwrite=True).path), reference)


def test_lock_timeout_names_the_holder_and_crashed_temporaries_are_removed(model, tmp_path):
    items = make_items(model, 2)
    path = tmp_path / "s"
    path.mkdir()
    with file_lock(path / ".lock-w0of1"):
        with pytest.raises(LockTimeout, match=rf"worker \(0, 1\) of activation store .* is locked by another process \(pid {os.getpid()}"):
            cache(model, items, path, lock_timeout=0.2)
    (path / "shards").mkdir(exist_ok=True)
    leftover = path / "shards" / ".w0of1-00000.safetensors.tmp-999999-0badc0de.part"
    leftover.write_bytes(b"half a shard")
    merge_leftover = path / ".blocks.0.hook_resid_post.npy.tmp-999999-0badc0de.part"
    merge_leftover.write_bytes(b"half an array")
    cache(model, items, path)
    assert not leftover.exists() and not merge_leftover.exists()
    assert not list(path.rglob("*.part"))


WRITER = textwrap.dedent(
    """
    import sys, torch
    from musicgen_lens import HookedMusicGen
    from musicgen_lens.activations import Item, cache_activations, merge
    torch.set_num_threads(1)
    model = HookedMusicGen.from_pretrained(sys.argv[1], device="cpu")
    gen = torch.Generator().manual_seed(0)
    items = [Item(f"i{i}", codes=torch.randint(0, model.cfg.d_vocab, (model.cfg.n_codebooks, 8), generator=gen), text="rock")
             for i in range(12)]
    hooks = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    cache_activations(model, items, sys.argv[2], hooks, shard_size=2, progress=False)
    for _ in range(int(sys.argv[3])):
        merge(sys.argv[2])
    print("OK")
    """
)


def test_two_processes_on_one_store_and_concurrent_merges(checkpoint_dir, tmp_path):
    ckpt = checkpoint_dir("base")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}

    def start(out, merges):
        return subprocess.Popen([sys.executable, "-c", WRITER, ckpt, str(out), str(merges)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

    ref = start(tmp_path / "ref", 0)
    assert ref.communicate(timeout=600)[0].strip() == "OK"
    procs = [start(tmp_path / "s", 15) for _ in range(2)]
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0 and out.strip() == "OK", err[-3000:]
    assert_same(snapshot(tmp_path / "s"), snapshot(tmp_path / "ref"))
    assert not list((tmp_path / "s").rglob("*.part"))
    # forced concurrent rebuilds: each merge rewrites the arrays
    index = tmp_path / "s" / "index.json"
    script = textwrap.dedent(
        f"""
        import json, os, pathlib
        from musicgen_lens.activations import merge
        index = pathlib.Path({str(index)!r})
        for _ in range(15):
            data = json.loads(index.read_text()); data["manifest"] = "stale"
            tmp = index.with_name(f"x{{os.getpid()}}"); tmp.write_text(json.dumps(data)); os.replace(tmp, index)
            merge(index.parent)
        print("OK")
        """
    )
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0 and out.strip() == "OK", err[-3000:]
    assert_same(snapshot(tmp_path / "s"), snapshot(tmp_path / "ref"))


def test_store_files_never_execute_code(model, tmp_path):
    store = cache(model, make_items(model, 2), tmp_path / "s")
    npy = tmp_path / "s" / store.index["arrays"][HOOKS[0]]
    np.save(npy, np.array([{}, {}], dtype=object), allow_pickle=True)
    with pytest.raises(StoreError, match="Python objects.*pickle"):
        ActivationStore.open(tmp_path / "s")
    import musicgen_lens.activations as pkg

    for module in (pkg.collect, pkg.store, pkg.integrity, pkg.sources):
        src = open(module.__file__).read()
        assert "import pickle" not in src and "allow_pickle=True" not in src and "torch.load" not in src
