"""SMITIN-style per-head probes: ranking finds the planted head, top-k head interventions steer
one head each along its probe, monitored by the same probe."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from musicgen_lens.activations import Item, cache_activations
from musicgen_lens.head_probes import fit_head_probes, rank_heads
from musicgen_lens.steering import steering_hooks

from helpers import PROMPTS, random_codes
from steering_helpers import sandwich

H, D = 4, 8
HOOKS = ["blocks.0.attn.hook_z", "blocks.1.attn.hook_z"]


def planted_heads(n=400, seed=0, task="classification"):
    """Noise at every head; the concept lives at layer 1, head 2 along w (and weakly at layer 0, head 1)."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=D)
    w /= np.linalg.norm(w)
    y = rng.integers(0, 2, n) if task == "classification" else rng.normal(size=n)
    signal = (2.0 * y - 1) if task == "classification" else y
    acts = {h: rng.normal(size=(n, H, D)) for h in HOOKS}
    acts[HOOKS[1]][:, 2] += 3.0 * signal[:, None] * w
    acts[HOOKS[0]][:, 1] += 0.6 * signal[:, None] * w
    return acts, y, w


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_rank_heads_puts_the_planted_head_first(task):
    acts, y, w = planted_heads(task=task)
    table = rank_heads(acts, y, task=task, probe_kwargs={"normalize": "standardize"})
    assert len(table) == 2 * H
    assert (table[0]["layer"], table[0]["head"]) == (1, 2) and (table[1]["layer"], table[1]["head"]) == (0, 1)
    assert table[0]["score"] > 0.85 and table[-1]["score"] < 0.7
    assert all(a["score"] >= b["score"] for a, b in zip(table, table[1:]))


def test_top_head_interventions_are_monitored_and_add_exactly_the_rule(model):
    acts, y, w = planted_heads()
    hp = fit_head_probes(acts, y, probe_kwargs={"normalize": "standardize"})
    (iv,) = hp.interventions(k=1, alpha=2.0, margin=0.5, target=1)
    sv = iv.vector
    assert (sv.site, sv.layer, sv.head, sv.method, iv.heads, iv.mode) == ("attn.z", 1, 2, "probe", [2], "add")
    assert float(torch.from_numpy(w).float() @ sv.vector / sv.norm) > 0.9  # the planted direction
    assert sv.norm == pytest.approx(hp.rank(1)[0]["std"], rel=1e-5)
    probe = hp.probe(1, 2)
    name = HOOKS[1]
    hooks, before, after, _ = sandwich(model, [iv], name=name)
    model.run_with_hooks(random_codes(model, batch=2, pos=40), PROMPTS, fwd_hooks=hooks)
    h, out = before[0][2].detach(), after[0][2].detach()
    cond = slice(0, 2)  # PROMPTS: both rows conditional (branch="cond")
    hh = h[cond, :, 2].reshape(-1, D)
    reading = torch.from_numpy(probe.decision_function(hh.double().numpy()).ravel())
    added = (out - h)[cond, :, 2].reshape(-1, D)
    pos, far = reading >= 0, reading <= -0.5
    assert torch.equal(out[:, :, [0, 1, 3]], h[:, :, [0, 1, 3]])
    assert torch.equal(added[pos], torch.zeros_like(added[pos]))  # exactly 0 where the probe reads positive
    if far.any():
        torch.testing.assert_close(added[far], 2.0 * sv.vector.expand(int(far.sum()), -1), atol=1e-5, rtol=0)
    want = 2.0 * ((0.0 - reading) / 0.5).clamp(0, 1)[:, None].float() * sv.vector
    torch.testing.assert_close(added, want, atol=1e-5, rtol=1e-4)
    unmonitored = hp.interventions(k=3, alpha=1.0, monitored=False)
    assert [(i.vector.layer, i.heads) for i in unmonitored] == [(1, [2]), (0, [1])] + [(unmonitored[2].vector.layer, unmonitored[2].heads)]
    assert all(i.monitor is None for i in unmonitored)
    assert len(steering_hooks(model, unmonitored)) == 3


def test_head_probes_from_a_store_and_from_a_cache(model, tmp_path):
    gen = torch.Generator().manual_seed(0)
    items = [Item(f"x{i}", codes=torch.randint(0, model.cfg.d_vocab, (model.cfg.n_codebooks, 8), generator=gen), text="rock",
                  labels={"c": i % 2}) for i in range(24)]
    store = cache_activations(model, items, tmp_path / "store", HOOKS, progress=False)
    hp = fit_head_probes(store, "c")
    assert {(r["layer"], r["head"]) for r in hp.table} == {(layer, h) for layer in (0, 1) for h in range(model.cfg.n_heads)}
    _, cache = model.run_with_cache(random_codes(model, batch=2, pos=12), PROMPTS, names_filter=HOOKS[0])
    table = rank_heads({HOOKS[0]: cache[HOOKS[0]]}, np.array([0, 1]), task="classification")
    assert len(table) == model.cfg.n_heads and table[0]["n_train"] + table[0]["n_test"] == 24
    with pytest.raises(ValueError, match="per-head"):
        fit_head_probes({"blocks.0.hook_resid_post": np.zeros((4, 32))}, [0, 1, 0, 1])
