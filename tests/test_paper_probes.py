"""Probe comparison (same metrics for every kind) and the authors' probe files (layer mapping)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from musicgen_lens.paper.probes import (
    PROBE_LAYER_OFFSET, OrdinalProbe, authors_hook_layer, authors_trained_layer, compare_probes, load_authors_probes,
)


def _planted(n=80, d=12, k=4, seed=0):
    rng = np.random.default_rng(seed)
    dirs = np.linalg.qr(rng.normal(size=(d, k)))[0].T
    y = np.repeat(np.arange(k), n // k)
    X = rng.normal(size=(n, d)) * 0.3 + 2.0 * dirs[y] + 1.0
    names = np.array(["classical", "electronic", "rock", "jazz"])[y]
    return X, names


def test_compare_reports_same_metrics_for_every_kind():
    X, y = _planted()
    acts = {"blocks.0.hook_resid_post": X, "blocks.1.hook_resid_post": np.random.default_rng(1).normal(size=X.shape)}
    res = compare_probes(acts, y, kinds=("mse", "ordinal", "ce", "logistic"), seeds=(0, 1), lrs=(5e-2,), epochs=150)
    assert {(r["layer"], r["kind"]) for r in res.table} == {(l, k) for l in (0, 1) for k in ("mse", "ordinal", "ce", "logistic")}
    good = {r["kind"]: r for r in res.table if r["layer"] == 0}
    for kind in ("mse", "ce", "logistic"):
        assert good[kind]["accuracy"] > 0.9 and good[kind]["agreement"] > 0.8, good[kind]
    noise = {r["kind"]: r for r in res.table if r["layer"] == 1}
    assert noise["logistic"]["accuracy"] < 0.7
    assert res.best("mse")["layer"] == 0 and res.chance == 0.25
    fig = res.plot()
    assert len(fig.axes) == 2


def test_ordinal_probe_is_one_direction():
    X, y = _planted()
    p = OrdinalProbe(lr=5e-2, epochs=300).fit(X, y)
    assert p.coef_.shape == (1, X.shape[1])
    lo, hi = p.direction(p.classes_[0]), p.direction(p.classes_[-1])
    torch.testing.assert_close(lo, -hi)


def test_authors_probe_files_and_layer_mapping(tmp_path):
    W = torch.randn(4, 8)
    torch.save({"linear.weight": W}, tmp_path / "probe_17.pt")
    probes = load_authors_probes(tmp_path / "probe_17.pt", classes=["classical", "electronic", "rock", "jazz"])
    p = probes[17]
    # key L-1 = 17 was trained on layer L-2 = 16's output; their notebook hooks layer L = 18
    assert (p.trained_layer, p.hook_layer, p.layer) == (16, 18, 16)
    assert authors_hook_layer(17) - authors_trained_layer(17) == PROBE_LAYER_OFFSET == 2
    torch.testing.assert_close(p.direction("rock"), W[2] / W[2].norm())
    assert load_authors_probes(tmp_path / "probe_17.pt", match="authors")[17].layer == 18
    torch.save({"16": {"linear.weight": W}, "18.linear.weight": W[:1]}, tmp_path / "all.pt")
    assert sorted(load_authors_probes(tmp_path / "all.pt")) == [16, 18]
    with pytest.raises(ValueError, match="embeddings"):
        authors_trained_layer(0)


def test_authors_loader_refuses_pickled_objects(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"linear.weight": torch.zeros(2, 2), "x": Evil()}, tmp_path / "evil_3.pt")
    with pytest.raises(Exception, match="(?i)weights_only|unpickl|global"):
        load_authors_probes(tmp_path / "evil_3.pt")
