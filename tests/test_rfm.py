"""RFM / AGOP directions (MusicRFM): planted-concept recovery with both back ends, steering
vectors with provenance, layer weighting and multi-concept interventions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from musicgen_lens.rfm import RFMProbe, layer_weights, multi_concept_interventions, rfm_directions, xrfm_available
from musicgen_lens.steering import Intervention, SteeringVector, steering_hooks

BACKENDS = ["torch", pytest.param("xrfm", marks=pytest.mark.skipif(not xrfm_available(), reason="xrfm not installed"))]


def planted(n=500, d=24, seed=0):
    """Anisotropic Gaussian features; the targets depend nonlinearly on x·v only."""
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(d, generator=g, dtype=torch.float64)
    v /= v.norm()
    X = torch.randn(n, d, generator=g, dtype=torch.float64) * (0.5 + torch.rand(d, generator=g, dtype=torch.float64))
    t = X @ v
    y_reg = torch.tanh(2 * t) + 0.3 * t**2  # not monotone, not linear
    y_clf = (t + 0.5 * torch.sin(3 * t) > 0.2).long()
    return X.numpy(), y_reg.numpy(), y_clf.numpy(), v


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("task", ["regression", "classification"])
def test_agop_top_eigenvector_recovers_the_planted_direction(backend, task):
    X, y_reg, y_clf, v = planted()
    y = y_reg if task == "regression" else y_clf
    probe = RFMProbe(task, backend=backend, iters=3, seed=0).fit(X, y)
    assert probe.agop.shape == (24, 24) and probe.M.shape == (24, 24)
    top = probe.direction()
    cos = float(top.double() @ v / top.double().norm())
    assert cos > 0.9, cos  # and the sign agrees with the concept
    assert probe.score(X, y) > 0.9
    evals = torch.linalg.eigvalsh(probe.agop)
    assert evals[-1] > 10 * evals[-2]  # the concept is one direction: the AGOP is ~rank one


def test_sign_follows_the_class_difference():
    X, _, y, v = planted(seed=1)
    probe = RFMProbe("classification", backend="torch", iters=2).fit(X, y)
    up, down = probe.direction(1), probe.direction(0)
    torch.testing.assert_close(up, -down)
    diff = torch.from_numpy(X[y == 1].mean(0) - X[y == 0].mean(0)).float()
    assert float(up @ diff) > 0
    # relabelled classes flip it
    flipped = RFMProbe("classification", backend="torch", iters=2).fit(X, 1 - y)
    assert float(flipped.direction() @ up) < -0.99


def test_multiclass_directions_per_class():
    X, _, _, v = planted(seed=2)
    t = torch.from_numpy(X) @ v
    y = np.where(t.numpy() < -0.5, "low", np.where(t.numpy() > 0.5, "high", "mid"))
    probe = RFMProbe("classification", backend="torch", iters=2).fit(X, y)
    hi = probe.direction("high")
    assert float(hi.double() @ v) > 0.9
    assert float(probe.direction("low").double() @ v) < -0.9
    assert probe.directions(3, "high").shape == (3, 24)


def test_rfm_directions_are_steering_vectors_with_provenance(model):
    d = model.cfg.d_model
    X, _, y, v = planted(d=d, n=500, seed=3)
    vecs = rfm_directions(acts=X, labels=y, k=2, site="resid_post", layer=1, concept="planted", model=model, backend="torch", iters=2)
    assert len(vecs) == 2
    for rank, sv in enumerate(vecs):
        assert sv.method == "rfm" and sv.site == "resid_post" and sv.layer == 1 and sv.concept == "planted"
        assert sv.model_hash == model.cfg.hash() and sv.weights_hash is not None
        assert sv.metadata["rank"] == rank and sv.metadata["backend"] == "torch" and sv.d == d
        assert sv.norm == pytest.approx(1.0, abs=1e-5)
    assert vecs[0].metadata["eigenvalue"] >= vecs[1].metadata["eigenvalue"]
    probe = RFMProbe("classification", backend="torch", iters=2).fit(X, y)
    sv = SteeringVector.from_rfm(probe, site="resid_post", layer=0, model=model)
    torch.testing.assert_close(sv.vector, probe.direction())
    assert sv.method == "rfm"
    assert SteeringVector.from_probe(probe, site="resid_post", layer=0).method == "probe"  # duck-typed too
    steering_hooks(model, [Intervention(sv, alpha=0.3)])  # steerable as is
    with pytest.raises(ValueError, match="size"):
        rfm_directions(probe, site="attn.z", layer=0, model=model)


def test_layer_weights():
    scores = {0: 0.6, 1: 0.9, 2: 0.8, 3: 0.9}
    assert layer_weights(scores, top_k=2) == {1: 0.5, 3: 0.5}
    w = layer_weights(scores, temperature=0.1)
    assert sum(w.values()) == pytest.approx(1.0)
    assert w[1] == pytest.approx(w[3]) and w[2] / w[1] == pytest.approx(np.exp(-1.0)) and w[0] / w[1] == pytest.approx(np.exp(-3.0))
    w = layer_weights(scores, top_k=3, temperature=0.1)
    assert sorted(w) == [1, 2, 3]
    plain = layer_weights(scores, baseline=0.5)
    assert plain == pytest.approx({0: 0.1 / 1.2, 1: 0.4 / 1.2, 2: 0.3 / 1.2, 3: 0.4 / 1.2})
    with pytest.raises(ValueError):
        layer_weights({})


def test_multi_concept_interventions(model):
    d = model.cfg.d_model
    g = torch.Generator().manual_seed(0)
    dirs = {c: {layer: SteeringVector(torch.randn(d, generator=g), site="resid_post", layer=layer, concept=c, method="rfm") for layer in range(2)}
            for c in ("trumpet", "jazz")}
    ivs = multi_concept_interventions(
        {
            "trumpet": {"directions": dirs["trumpet"], "scores": {0: 0.7, 1: 0.9}, "alpha": 0.4, "top_k": 1},
            "jazz": {"directions": dirs["jazz"], "scores": {0: 0.8, 1: 0.8}, "start": 0.1, "inject_chance": 0.5},
        },
        alpha=0.6, mode="norm_relative",
    )
    assert [(iv.vector.concept, iv.vector.layer, round(iv.alpha, 6)) for iv in ivs] == [("trumpet", 1, 0.4), ("jazz", 0, 0.3), ("jazz", 1, 0.3)]
    assert ivs[1].start == 0.1 and ivs[1].inject_chance == 0.5 and ivs[0].start is None
    hooks = steering_hooks(model, ivs)
    assert [name for name, _ in hooks] == ["blocks.1.hook_resid_post", "blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    codes = model.generate(["rock"], max_new_frames=8, seed=0, steering=ivs)
    assert codes.shape[-1] == 8


def test_validation():
    with pytest.raises(ValueError, match="task"):
        RFMProbe("ranking")
    with pytest.raises(RuntimeError, match="not fitted"):
        RFMProbe().agop
    with pytest.raises(ValueError, match="two classes"):
        RFMProbe(backend="torch").fit(np.zeros((5, 3)), np.ones(5))
