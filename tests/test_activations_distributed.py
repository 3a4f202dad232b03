"""shard="auto": the same store from `torchrun --nproc_per_node 2` (CPU) as from one process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from musicgen_lens.activations import ActivationStore, Item, cache_activations, distributed_shard, local_device

HOOKS = ["blocks.0.hook_resid_post", "blocks.1.attn.hook_z"]

SCRIPT = r"""
import sys, torch
torch.set_num_threads(1)
from musicgen_lens import HookedMusicGen
from musicgen_lens.activations import Item, cache_activations, local_device
ckpt, out = sys.argv[1], sys.argv[2]
model = HookedMusicGen.from_pretrained(ckpt, device=local_device())
gen = torch.Generator().manual_seed(0)
items = [Item(f"item{i}", codes=torch.randint(0, model.cfg.d_vocab, (model.cfg.n_codebooks, 10), generator=gen), text="rock",
              labels={"i": i}) for i in range(7)]
store = cache_activations(model, items, out, ["blocks.0.hook_resid_post", "blocks.1.attn.hook_z"], shard="auto", shard_size=2, progress=False)
import os
print("RANK", os.environ["RANK"], "STORE", store is not None, flush=True)
"""


def _items(model, n=7):
    gen = torch.Generator().manual_seed(0)
    return [Item(f"item{i}", codes=torch.randint(0, model.cfg.d_vocab, (model.cfg.n_codebooks, 10), generator=gen), text="rock",
                 labels={"i": i}) for i in range(n)]


def test_environment_gives_the_shard(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert distributed_shard() == (0, 1)
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert distributed_shard() == (3, 4)
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(ValueError, match="rank 4 of world size 4"):
        distributed_shard()
    assert local_device().type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_shard_must_be_a_pair_or_auto(model, tmp_path):
    with pytest.raises(ValueError, match="'auto'"):
        cache_activations(model, _items(model, 2), tmp_path / "s", HOOKS, shard="all", progress=False)


def test_torchrun_two_processes_equal_one(model, checkpoint_dir, tmp_path):
    single = cache_activations(model, _items(model), tmp_path / "one", HOOKS, shard_size=2, progress=False)
    script = tmp_path / "cache.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517", str(script),
         checkpoint_dir("base"), str(tmp_path / "two")],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "RANK 0 STORE True" in run.stdout and "RANK 1 STORE False" in run.stdout
    two = ActivationStore.open(tmp_path / "two")
    assert two.ids == single.ids
    for hook in HOOKS:
        np.testing.assert_array_equal(np.asarray(two[hook]), np.asarray(single[hook]))
