"""SAEs: shuffled store batches (chunked memory-mapped reads), TopK training on planted sparse
features, loading our / SAELens / sparsify layouts without the trainers, feature inspection and
feature directions as steering vectors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from musicgen_lens.activations import Item, cache_activations
from musicgen_lens.sae import SAE, explained_variance, feature_activations, sparsify_available, store_batches, top_activating, train_sae
from musicgen_lens.steering import Intervention, SteeringVector, steering_hooks

HOOK = "blocks.1.hook_resid_post"


def planted_sparse(n=20000, d=32, n_features=64, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    D = torch.randn(n_features, d, generator=g)
    D /= D.norm(dim=1, keepdim=True)
    idx = torch.stack([torch.randperm(n_features, generator=g)[:k] for _ in range(n)])
    Z = torch.zeros(n, n_features).scatter(1, idx, 1 + torch.rand(n, k, generator=g))
    return Z @ D + 0.5, D


class CountingArray:
    """An array that records the size of every read."""

    def __init__(self, a):
        self.a, self.shape, self.reads = a, a.shape, []

    def __getitem__(self, key):
        out = self.a[key]
        self.reads.append(out.shape[0])
        return out


@pytest.fixture(scope="module")
def frame_store(model, tmp_path_factory):
    gen = torch.Generator().manual_seed(0)
    items = [Item(f"x{i}", codes=torch.randint(0, model.cfg.d_vocab, (model.cfg.n_codebooks, 10), generator=gen), text="rock",
                  labels={"c": i % 2}) for i in range(12)]
    return cache_activations(model, items, tmp_path_factory.mktemp("sae") / "store", [HOOK, "blocks.0.attn.hook_z"], pooling="frames", progress=False)


def test_store_batches_cover_every_row_once_per_epoch_in_a_seeded_order():
    X = np.arange(1000 * 3, dtype=np.float32).reshape(1000, 3)
    arr = CountingArray(X)
    batches = list(store_batches(arr, batch_size=64, seed=1, chunk_rows=50, buffer_chunks=3))
    assert max(arr.reads) <= 50  # never more than a chunk read at once
    rows = torch.cat(batches)
    assert [b.shape[0] for b in batches[:-1]] == [64] * (len(batches) - 1) and rows.shape == (1000, 3)
    assert sorted(rows[:, 0].tolist()) == X[:, 0].tolist()  # each row exactly once
    assert not torch.equal(rows, torch.from_numpy(X))  # shuffled
    again = torch.cat(list(store_batches(X, batch_size=64, seed=1, chunk_rows=50, buffer_chunks=3)))
    assert torch.equal(rows, again)
    other = torch.cat(list(store_batches(X, batch_size=64, seed=2, chunk_rows=50, buffer_chunks=3)))
    assert not torch.equal(rows, other)
    two = list(store_batches(X, batch_size=100, seed=0, epochs=2, drop_last=True))
    assert len(two) == 20 and not torch.equal(torch.cat(two[:10]), torch.cat(two[10:]))
    part = torch.cat(list(store_batches(X, batch_size=64, rows=(100, 300))))
    assert sorted(part[:, 0].tolist()) == X[100:300, 0].tolist()


def test_store_batches_from_an_activation_store(frame_store):
    arr = frame_store[HOOK]
    assert isinstance(arr, np.memmap) or isinstance(getattr(arr, "base", None), np.memmap) or hasattr(arr, "filename")
    rows = torch.cat(list(store_batches(frame_store, HOOK, batch_size=16, chunk_rows=8, seed=0)))
    assert rows.shape == arr.shape and sorted(rows[:, 0].tolist()) == sorted(np.asarray(arr)[:, 0].tolist())
    heads = torch.cat(list(store_batches(frame_store, "blocks.0.attn.hook_z", head=2, batch_size=16)))
    z = np.asarray(frame_store["blocks.0.attn.hook_z"])
    assert heads.shape == (z.shape[0], z.shape[2])
    with pytest.raises(ValueError, match="hook= is required"):
        next(store_batches(frame_store))


@pytest.mark.parametrize("backend", ["torch", pytest.param("sparsify", marks=pytest.mark.skipif(not sparsify_available(), reason="eai-sparsify not installed"))])
def test_topk_sae_reconstructs_planted_sparse_features(backend):
    X, D = planted_sparse()
    sae = train_sae(X[:16000], d_sae=128, k=4, steps=700, batch_size=256, seed=0, backend=backend)
    ev = explained_variance(sae, X[16000:])
    assert ev > 0.9, ev
    cos = (D @ (sae.W_dec / sae.W_dec.norm(dim=1, keepdim=True)).T.detach()).max(1).values
    assert float((cos > 0.9).float().mean()) > 0.9  # the dictionary is found
    z = sae.encode(X[:100])
    assert int((z != 0).sum(1).max()) <= 4
    assert sae.metadata["trainer"] == backend


def _random_sae(d_in=32, d_sae=48, k=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    sae = SAE(d_in, d_sae, k, metadata={"site": "resid_post", "layer": 1, "hook": HOOK})
    with torch.no_grad():
        for p in (sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec):
            p.copy_(torch.randn(p.shape, generator=g))
    return sae


def test_save_load_round_trip_and_foreign_layouts(tmp_path):
    sae = _random_sae()
    x = torch.randn(20, 32, generator=torch.Generator().manual_seed(1))
    back = SAE.load(sae.save(tmp_path / "ours"))
    assert (back.k, back.d_in, back.d_sae, back.metadata["layer"]) == (5, 32, 48, 1)
    assert torch.equal(back(x), sae(x))
    tensors = {n: getattr(sae, n).detach().clone() for n in ("W_enc", "b_enc", "W_dec", "b_dec")}
    # SAELens: cfg.json + sae_weights.safetensors, k in activation_fn_kwargs
    lens = tmp_path / "saelens"
    lens.mkdir()
    save_file(tensors, str(lens / "sae_weights.safetensors"))
    (lens / "cfg.json").write_text(json.dumps({"d_in": 32, "d_sae": 48, "architecture": "topk", "activation_fn_kwargs": {"k": 5},
                                               "hook_name": HOOK, "apply_b_dec_to_input": True}))
    assert torch.equal(SAE.load(lens)(x), sae(x))
    # a standard (ReLU) SAELens SAE
    (lens / "cfg.json").write_text(json.dumps({"d_in": 32, "d_sae": 48, "architecture": "standard", "apply_b_dec_to_input": False}))
    relu = SAE.load(lens)
    assert relu.k is None and torch.allclose(relu.encode(x), torch.relu(x @ tensors["W_enc"] + tensors["b_enc"]))
    # sparsify: cfg.json + sae.safetensors with encoder.weight [d_sae, d_in]
    sp = tmp_path / "sparsify"
    sp.mkdir()
    save_file({"encoder.weight": tensors["W_enc"].T.contiguous(), "encoder.bias": tensors["b_enc"], "W_dec": tensors["W_dec"], "b_dec": tensors["b_dec"]},
              str(sp / "sae.safetensors"))
    (sp / "cfg.json").write_text(json.dumps({"activation": "topk", "k": 5, "num_latents": 48, "d_in": 32}))
    assert torch.allclose(SAE.load(sp)(x), sae(x), atol=1e-6)
    # one file, k as a scalar tensor
    save_file({**tensors, "k": torch.tensor(5)}, str(tmp_path / "one.safetensors"))
    assert torch.equal(SAE.load(tmp_path / "one.safetensors")(x), sae(x))
    with pytest.raises(FileNotFoundError):
        SAE.load(tmp_path)


@pytest.mark.skipif(not sparsify_available(), reason="eai-sparsify not installed")
def test_loads_what_sparsify_saves(tmp_path):
    from sparsify import SparseCoder, SparseCoderConfig

    coder = SparseCoder(16, SparseCoderConfig(k=3, num_latents=24))
    with torch.no_grad():
        coder.b_dec.normal_()
    coder.save_to_disk(tmp_path / "coder")
    x = torch.randn(10, 16)
    ours = SAE.load(tmp_path / "coder")
    torch.testing.assert_close(ours(x), coder(x).sae_out, atol=1e-5, rtol=1e-5)


def test_feature_direction_steering_vector_and_top_activating(model, frame_store):
    sae = _random_sae()
    sv = sae.feature_vector(7, model=model)
    assert isinstance(sv, SteeringVector) and sv.method == "sae" and (sv.site, sv.layer, sv.d) == ("resid_post", 1, model.cfg.d_model)
    assert sv.metadata["feature"] == 7 and sv.model_hash == model.cfg.hash() and sv.weights_hash is not None
    torch.testing.assert_close(sv.vector, sae.W_dec[7].detach() / sae.W_dec[7].detach().norm())
    assert SteeringVector.from_sae(sae, 7, site="resid_post", layer=1, normalize=False).norm == pytest.approx(float(sae.W_dec[7].detach().norm()), rel=1e-6)
    with pytest.raises(ValueError, match="size"):
        SteeringVector.from_sae(sae, 7, site="attn.z", layer=0, model=model)
    steering_hooks(model, [Intervention(sv, alpha=2.0, mode="add"), Intervention(sv, mode="ablate")])
    top = top_activating(sae, frame_store, HOOK, 7, n=5)
    acts = feature_activations(sae, frame_store, HOOK, 7)
    assert acts.shape == (frame_store[HOOK].shape[0],)
    assert [t["activation"] for t in top] == sorted(acts, reverse=True)[:5]
    assert all(0 <= t["frame"] < 10 and t["id"].startswith("x") for t in top)
