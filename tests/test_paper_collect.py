"""Paper-scale collection: batched sampled continuations == one at a time, last vs mean pooling, resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from musicgen_lens.activations import ActivationStore, Item, Pooling, cache_activations

HOOK = "blocks.1.hook_resid_post"


def _items(model, n, frames=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    genres = ["rock", "jazz", "classical"]  # one word each: equal token lengths in a batch
    return [
        Item(f"seg{i}", codes=torch.randint(0, model.cfg.d_vocab, (model.cfg.n_codebooks, frames), generator=gen),
             text=f"generate {genres[i % 3]} music continuing the given audio", labels={"genre": genres[i % 3]})
        for i in range(n)
    ]


def test_batched_sampled_equals_one_at_a_time(model, tmp_path):
    items = _items(model, 4)
    kw = dict(new_frames=3, seed=7, branch="both")
    batched = cache_activations(model, items, tmp_path / "b", [HOOK], pooling=Pooling.paper(batch_size=3, **kw), shard_size=4, progress=False)
    single = cache_activations(model, items, tmp_path / "s", [HOOK], pooling=Pooling.paper(batch_size=1, **kw), shard_size=4, progress=False)
    for name in (HOOK, f"{HOOK}@uncond"):
        np.testing.assert_allclose(batched[name], single[name], atol=1e-5)
    # item 3 alone, sampled with seed 7 + 3, through generate: its last step's conditional row
    grabbed = []
    model.generate([items[3].text], audio_prompt_codes=items[3].codes[None], max_new_frames=3, do_sample=True, seed=[10],
                   guidance_scale=3.0, fwd_hooks=[(HOOK, lambda a, hook: grabbed.append(a[:, -1].clone()))], progress=False)
    np.testing.assert_allclose(batched[HOOK][3], grabbed[-1][0].numpy(), atol=1e-5)
    # sampling differs from greedy
    greedy = cache_activations(model, items[:1], tmp_path / "g", [HOOK], pooling=Pooling("last", new_frames=3), progress=False)
    assert not np.allclose(greedy[HOOK][0], batched[HOOK][0])


def test_last_vs_mean_over_steps(model, tmp_path):
    items = _items(model, 2)
    steps = []
    model.generate([items[0].text], audio_prompt_codes=items[0].codes[None], max_new_frames=3, do_sample=True, seed=[0],
                   fwd_hooks=[(HOOK, lambda a, hook: steps.append(a[:1, -1].clone()))], progress=False)
    last = cache_activations(model, items, tmp_path / "l", [HOOK], pooling=Pooling.paper(3, batch_size=2), progress=False)
    mean = cache_activations(model, items, tmp_path / "m", [HOOK], pooling=Pooling.paper(3, steps="mean", batch_size=2), progress=False)
    np.testing.assert_allclose(last[HOOK][0], steps[-1][0].numpy(), atol=1e-5)
    np.testing.assert_allclose(mean[HOOK][0], torch.cat(steps).mean(0).numpy(), atol=1e-5)
    assert len(steps) == model.pattern.length_for(6 + 3) - 7  # one row per generation step
    meta = ActivationStore.open(tmp_path / "m").meta
    assert meta["pooling"]["steps"] == "mean" and meta["pooling"]["do_sample"] is True


def test_resume_with_another_batch_size(model, tmp_path):
    items = _items(model, 4)
    pooling = Pooling.paper(3, batch_size=4)
    ref = np.asarray(cache_activations(model, items, tmp_path / "r", [HOOK], pooling=pooling, shard_size=2, progress=False)[HOOK])
    calls = []
    orig = model.generate
    try:
        model.generate = lambda *a, **k: calls.append(1) or orig(*a, **k)
        again = cache_activations(model, items, tmp_path / "r", [HOOK], pooling=Pooling.paper(3, batch_size=1), shard_size=2, progress=False)
    finally:
        del model.generate
    assert calls == []  # every shard was on disk
    np.testing.assert_array_equal(again[HOOK], ref)


def test_old_pooling_meta_is_unchanged():
    assert Pooling("last").as_dict() == {"kind": "last", "window": None, "new_frames": 1, "branch": "cond", "guidance_scale": 3.0}
    with pytest.raises(ValueError, match="steps"):
        Pooling("last", steps="max")


def test_collection_follows_model_dtype(checkpoint_dir, tmp_path):
    from musicgen_lens import HookedMusicGen

    bf16 = HookedMusicGen.from_pretrained(checkpoint_dir(), device="cpu", dtype=torch.bfloat16)
    items = _items(bf16, 2)
    store = cache_activations(bf16, items, tmp_path / "h", [HOOK], pooling=Pooling.paper(2, batch_size=2, branch="both"), progress=False)
    rows = np.asarray(store[HOOK])
    assert rows.dtype == np.float32 and rows.shape == (2, bf16.cfg.d_model) and np.isfinite(rows).all()
