"""ActivationStore: pooling, resumability (incl. kill -9), sharded workers + merge, bounded memory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

from musicgen_lens.activations import ActivationStore, Item, cache_activations, items_from_folder, merge
from musicgen_lens.generation import apply_delay_pattern

HOOKS = ["blocks.0.hook_resid_post", "blocks.1.attn.hook_z"]


def make_items(model, n, frames=12, seed=0):
    gen = torch.Generator().manual_seed(seed)
    texts = ["rock", "classical trumpet melody", "jazz piano"]
    return [
        Item(f"item{i}", codes=torch.randint(0, model.cfg.d_vocab, (model.cfg.n_codebooks, frames), generator=gen),
             text=texts[i % 3], labels={"genre": texts[i % 3].split()[0], "tempo": 60.0 + i})
        for i in range(n)
    ]


def read_all(path):
    store = ActivationStore.open(path)
    return {h: np.asarray(store[h]) for h in store.hooks}, store.items


def test_mean_pooling_equals_manual_cache(model, tmp_path):
    items = make_items(model, 5)
    store = cache_activations(model, items, tmp_path / "s", HOOKS, shard_size=2, progress=False)
    assert len(store) == 5 and store.ids == [f"item{i}" for i in range(5)]
    assert store["blocks.1.attn.hook_z"].shape == (5, model.cfg.n_heads, model.cfg.d_head)
    assert isinstance(store["blocks.0.hook_resid_post"], np.memmap)
    item = items[3]
    seq = apply_delay_pattern(item.codes[None], model.cfg.pad_token_id)
    _, cache = model.run_with_cache(seq, [item.text])
    d = model.ctx.max_delay
    manual = cache["blocks.0.hook_resid_post"][0, d : d + 12].mean(0)
    np.testing.assert_allclose(store["blocks.0.hook_resid_post"][3], manual.detach().numpy(), atol=1e-6)
    assert list(store.labels("genre")) == ["rock", "classical", "jazz", "rock", "classical"]
    np.testing.assert_array_equal(store.labels("tempo"), [60.0, 61.0, 62.0, 63.0, 64.0])
    meta = json.loads((tmp_path / "s" / "meta.json").read_text())
    assert meta["config_hash"] == model.cfg.hash() and meta["hooks"] == HOOKS and meta["library_version"]


def test_frames_and_window_pooling(model, tmp_path):
    items = make_items(model, 2, frames=20)
    frames = cache_activations(model, items, tmp_path / "f", HOOKS[:1], pooling="frames", progress=False)
    assert frames["blocks.0.hook_resid_post"].shape == (40, model.cfg.d_model)
    np.testing.assert_array_equal(frames.frames(), list(range(20)) * 2)
    assert frames.labels("genre").shape == (40,)
    window = cache_activations(model, items, tmp_path / "w", HOOKS[:1], pooling=(0.1, 0.2), progress=False)
    # 50 frames/s: [0.1, 0.2) s = frames 5..9
    np.testing.assert_allclose(window["blocks.0.hook_resid_post"][1], frames["blocks.0.hook_resid_post"][20 + 5 : 20 + 10].mean(0), atol=1e-6)


def test_last_generation_step_pooling(model, tmp_path):
    items = make_items(model, 2, frames=6)
    store = cache_activations(model, items, tmp_path / "g", ["blocks.1.hook_resid_post"], pooling="last", progress=False)
    assert store["blocks.1.hook_resid_post"].shape == (2, model.cfg.d_model)
    grabbed = []
    model.generate(["rock"], audio_prompt_codes=items[0].codes[None], max_new_frames=1, do_sample=False,
                   fwd_hooks=[("blocks.1.hook_resid_post", lambda a, hook: grabbed.append(a[:, -1].clone()))])
    np.testing.assert_allclose(store["blocks.1.hook_resid_post"][0], grabbed[-1][0].numpy(), atol=1e-6)


def test_restart_after_failure_equals_uninterrupted(model, tmp_path):
    items = make_items(model, 7)
    reference, ref_items = read_all(cache_activations(model, items, tmp_path / "ref", HOOKS, shard_size=2, progress=False).path)

    def dying(n):
        for i, item in enumerate(items):
            if i == n:
                raise KeyboardInterrupt("killed at item 5")
            yield item

    with pytest.raises(KeyboardInterrupt):
        cache_activations(model, dying(5), tmp_path / "run", HOOKS, shard_size=2, progress=False)
    assert not (tmp_path / "run" / "index.json").exists()
    assert len(list((tmp_path / "run" / "shards").glob("*.safetensors"))) == 2  # items 0-3, whole shards only
    resumed, res_items = read_all(cache_activations(model, items, tmp_path / "run", HOOKS, shard_size=2, progress=False).path)
    assert res_items == ref_items
    for hook in reference:
        np.testing.assert_array_equal(resumed[hook], reference[hook])


def test_two_workers_merged_equal_one_run(model, tmp_path):
    items = make_items(model, 7)
    reference, ref_items = read_all(cache_activations(model, items, tmp_path / "ref", HOOKS, shard_size=2, progress=False).path)
    assert cache_activations(model, items, tmp_path / "two", HOOKS, shard_size=2, shard=(1, 2), progress=False) is None
    with pytest.raises(RuntimeError, match=r"workers \[0\] of 2 have not finished"):
        merge(tmp_path / "two")
    cache_activations(model, items, tmp_path / "two", HOOKS, shard_size=2, shard=(0, 2), progress=False)
    merged, merged_items = read_all(merge(tmp_path / "two").path)
    assert merged_items == ref_items
    for hook in reference:
        np.testing.assert_array_equal(merged[hook], reference[hook])


WORKER = textwrap.dedent(
    """
    import sys, time, torch
    from musicgen_lens import HookedMusicGen
    from musicgen_lens.activations import Item, cache_activations
    model = HookedMusicGen.from_pretrained(sys.argv[1], device="cpu")
    n, frames, slow = int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
    gen = torch.Generator().manual_seed(0)
    def items():
        for i in range(n):
            if slow:
                time.sleep(slow)
            yield Item(f"i{i}", codes=torch.randint(0, model.cfg.d_vocab, (model.cfg.n_codebooks, frames), generator=gen), text="rock", labels={"k": i})
    hooks = ["hook_codebook_embed"] + [f"blocks.{l}.hook_resid_{w}" for l in range(2) for w in ("pre", "mid", "post")]
    cache_activations(model, items(), sys.argv[2], hooks, pooling="frames", shard_size=int(sys.argv[6]), progress=False)
    import resource
    print("PEAK_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    """
)


def run_worker(ckpt, out, n, frames=12, slow=0.0, shard_size=2, wait=True):
    args = [sys.executable, "-c", WORKER, ckpt, str(out), str(n), str(frames), str(slow), str(shard_size)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if wait:
        out_text, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-2000:]
        return int(out_text.split("PEAK_KB")[1])
    return proc


def test_kill_9_then_restart_equals_uninterrupted(checkpoint_dir, tmp_path):
    ckpt = checkpoint_dir("base")
    run_worker(ckpt, tmp_path / "ref", 12)
    proc = run_worker(ckpt, tmp_path / "run", 12, slow=0.1, wait=False)
    shards = tmp_path / "run" / "shards"
    deadline = time.time() + 300
    while time.time() < deadline and len(list(shards.glob("*.safetensors")) if shards.exists() else []) < 2:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "run" / "index.json").exists()
    run_worker(ckpt, tmp_path / "run", 12)
    reference, ref_items = read_all(tmp_path / "ref")
    resumed, res_items = read_all(tmp_path / "run")
    assert res_items == ref_items
    for hook in reference:
        np.testing.assert_array_equal(resumed[hook], reference[hook])
    assert not list((tmp_path / "run").rglob(".*tmp*"))


def test_peak_memory_flat_when_dataset_grows_10x(checkpoint_dir, tmp_path):
    ckpt = checkpoint_dir("base")
    # per item: 100 frames x (4x32 codebook embeds + 6 resid x 32) floats = 128 KB; 10x = 400 items = 51 MB if held
    small = run_worker(ckpt, tmp_path / "small", 40, frames=100, shard_size=10)
    large = run_worker(ckpt, tmp_path / "large", 400, frames=100, shard_size=10)
    assert large - small < 15_000, f"peak RSS grew by {(large - small) / 1000:.0f} MB for 10x the items"
    assert ActivationStore.open(tmp_path / "large")["hook_codebook_embed"].shape == (40000, 4, 32)


def test_folder_with_csv_and_hf_style_rows(model, tmp_path):
    import soundfile as sf

    sr = model.sample_rate
    t = np.arange(int(0.2 * sr)) / sr
    rows = ["id,path,text,instrument,tempo_bpm"]
    for i, f0 in enumerate((220, 330)):
        sf.write(tmp_path / f"c{i}.wav", (0.5 * np.sin(2 * np.pi * f0 * t)).astype(np.float32), sr)
        rows.append(f"c{i},c{i}.wav,rock,{'violin' if i else 'trumpet'},{90 + i}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    items = items_from_folder(tmp_path)
    assert items[1].labels == {"instrument": "violin", "tempo_bpm": 91}
    store = cache_activations(model, items, tmp_path / "store", HOOKS[:1], progress=False)
    assert list(store.labels("instrument")) == ["trumpet", "violin"]
    hf_rows = [{"audio": {"array": 0.5 * np.sin(2 * np.pi * 220 * t), "sampling_rate": sr}, "text": "rock", "genre": "rock"}]
    store2 = cache_activations(model, hf_rows, tmp_path / "store2", HOOKS[:1], progress=False)
    np.testing.assert_allclose(store2["blocks.0.hook_resid_post"][0], store["blocks.0.hook_resid_post"][0], atol=1e-5)


def test_bad_input(model, tmp_path):
    items = make_items(model, 3)
    with pytest.raises(ValueError, match="3 items but 2 labels"):
        cache_activations(model, items, tmp_path / "a", HOOKS, labels=[{}, {}], progress=False)
    with pytest.raises(KeyError, match="Unknown hook name"):
        cache_activations(model, items, tmp_path / "b", ["blocks.0.hook_resid_prost"], progress=False)
    with pytest.raises(ValueError, match="cannot be pooled over frames"):
        cache_activations(model, items, tmp_path / "b2", ["blocks.0.attn.hook_pattern"], progress=False)
    with pytest.raises(ValueError, match="dataset is empty"):
        cache_activations(model, [], tmp_path / "c", HOOKS, progress=False)
    with pytest.raises(ValueError, match="hooks is empty"):
        cache_activations(model, items, tmp_path / "d", [], progress=False)
    cache_activations(model, items, tmp_path / "e", HOOKS, progress=False)
    (tmp_path / "e" / "meta.json").write_text(
        json.dumps({**json.loads((tmp_path / "e" / "meta.json").read_text()), "config_hash": "0123", "model_name": "other"})
    )
    with pytest.raises(ValueError, match="architecture \\(cfg.hash\\(\\)\\): the store has .0123."):
        cache_activations(model, items, tmp_path / "e", HOOKS, progress=False)
    with pytest.raises(FileNotFoundError, match="no index.json"):
        ActivationStore.open(tmp_path / "nothing")
    with pytest.raises(KeyError, match="not in this store"):
        ActivationStore.open(tmp_path / "e")["blocks.1.hook_resid_post"]


def test_in_memory_audio_needs_its_sample_rate(model, tmp_path):
    with pytest.raises(ValueError, match="in-memory audio but no sr"):
        cache_activations(model, [Item("a", audio=np.ones(800, dtype=np.float32) * 0.1, text="rock")], tmp_path / "s", HOOKS[:1], progress=False)


def test_melody_store_drops_the_prefix_and_matches_run_with_cache(melody_model, tmp_path):
    model = melody_model
    items = make_items(model, 2, frames=15)
    hooks = ["blocks.0.hook_resid_post", "blocks.1.attn.hook_z", "hook_embed", "hook_logits"]
    store = cache_activations(model, items, tmp_path / "m", hooks, pooling="frames", progress=False)
    np.testing.assert_array_equal(store.frames(), list(range(15)) * 2)
    np.testing.assert_allclose(store.seconds(), np.array(list(range(15)) * 2) / model.cfg.frame_rate)
    item = items[1]
    cond = model.condition([item.text])
    seq = model.pattern.apply(item.codes[None], model.cfg.pad_token_id)
    _, cache = model.run_with_cache(seq, cond)
    p, d = model.n_prefix(cond), model.pattern.max_delay
    assert p > 0 and cache["blocks.0.hook_resid_post"].shape[1] == p + seq.shape[-1]
    rows = slice(15, 30)  # item 1
    np.testing.assert_allclose(store["blocks.0.hook_resid_post"][rows], cache["blocks.0.hook_resid_post"][0, p + d : p + d + 15].numpy(), atol=1e-6)
    np.testing.assert_allclose(store["blocks.1.attn.hook_z"][rows], cache["blocks.1.attn.hook_z"][0, p + d : p + d + 15].numpy(), atol=1e-6)
    np.testing.assert_allclose(store["hook_embed"][rows], cache["hook_embed"][0, d : d + 15].numpy(), atol=1e-6)  # codes only: no prefix
    np.testing.assert_allclose(store["hook_logits"][rows], cache["hook_logits"][0, :, d : d + 15].movedim(1, 0).numpy(), atol=1e-5)
    window = cache_activations(model, items, tmp_path / "w", hooks[:1], pooling=(0.1, 0.2), progress=False)  # frames 5..9
    np.testing.assert_allclose(window["blocks.0.hook_resid_post"][1], store["blocks.0.hook_resid_post"][15 + 5 : 15 + 10].mean(0), atol=1e-6)


def test_hooks_without_a_decoder_position_axis_are_refused(model, melody_model, tmp_path):
    items = make_items(model, 1)
    for hook in ["hook_cond", "text_encoder.hook_out", "blocks.0.attn.hook_pattern", "blocks.0.cross_attn.hook_k", "blocks.0.attn.hook_attn_scores"]:
        with pytest.raises(ValueError, match=rf"{hook}.*cannot be pooled over frames.*run_with_cache"):
            cache_activations(model, items, tmp_path / "x", [hook], pooling="frames", progress=False)
    with pytest.raises(ValueError, match="hook_chroma.*melody-prefix positions.*cannot be pooled"):
        cache_activations(melody_model, items, tmp_path / "y", ["hook_chroma"], pooling="frames", progress=False)
    # logits have their position on axis 2: pooled all the same
    store = cache_activations(model, items, tmp_path / "z", ["hook_logits"], progress=False)
    seq = model.pattern.apply(items[0].codes[None], model.cfg.pad_token_id)
    _, cache = model.run_with_cache(seq, [items[0].text])
    d = model.pattern.max_delay
    np.testing.assert_allclose(store["hook_logits"][0], cache["hook_logits"][0, :, d : d + 12].mean(1).numpy(), atol=1e-5)
