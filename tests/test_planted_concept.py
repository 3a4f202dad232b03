"""End to end on a planted concept: model -> ActivationStore -> probes -> steering vector.

A tiny model gets a marker code in codebook 0 whose embedding is the mean of the other codes'
embeddings plus a known direction v; items with label 1 put the marker at exactly 8 of their
16 frames, items with label 0 never use it. The class means of the residual stream then differ
exactly along v (a varying marker count or marker-specific noise would tilt what a linear probe
finds, the within-class covariance, away from v), and the pipeline must find v and steer with it.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from musicgen_lens.activations import Item, cache_activations
from musicgen_lens.probes import LinearProbe
from musicgen_lens.steering import Intervention, SteeringVector

MARKER = 0  # the codebook-0 code that carries the concept


@pytest.fixture(scope="module")
def planted(model):
    planted = copy.deepcopy(model)
    planted.setup()  # re-attach hook context to the copied hook points
    v = torch.randn(planted.cfg.d_model, generator=torch.Generator().manual_seed(42))
    v = v / v.norm()
    with torch.no_grad():
        planted.embed.W_E.mul_(10.0)  # embedding noise comparable to the concept, as in real models
        planted.embed.W_E[0, MARKER] = planted.embed.W_E[0, 1 : planted.cfg.d_vocab].mean(0) + v
    return planted, v


def concept_items(model, n, seed):
    gen = torch.Generator().manual_seed(seed)
    items = []
    for i in range(n):
        label = i % 2
        codes = torch.randint(MARKER + 1, model.cfg.d_vocab, (model.cfg.n_codebooks, 16), generator=gen)
        if label:
            codes[0, torch.randperm(16, generator=gen)[:8]] = MARKER
        items.append(Item(f"x{i}", codes=codes, text="rock", labels={"concept": label, "signed": 2.0 * label - 1}))
    return items


@pytest.fixture(scope="module")
def store(planted, tmp_path_factory):
    model, _ = planted
    path = tmp_path_factory.mktemp("planted") / "store"
    return cache_activations(model, concept_items(model, 1200, seed=0), path, ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre"], progress=False)


@pytest.mark.parametrize("hook", ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre"])
@pytest.mark.parametrize(
    "probe",
    [
        LinearProbe(task="classification", method="sklearn", normalize="standardize"),
        LinearProbe(task="classification", method="torch", bias=False, normalize="l2", lr=5e-2),
        LinearProbe(task="regression", method="sklearn", normalize="standardize"),
        LinearProbe(task="regression", method="torch", bias=False, normalize="l2", lr=5e-2),
    ],
    ids=["clf-sklearn", "clf-torch-paper", "reg-sklearn", "reg-torch-paper"],
)
def test_probes_find_the_planted_direction(store, planted, hook, probe):
    _, v = planted
    X = np.asarray(store[hook])
    target = "signed" if probe.task == "regression" else "concept"
    y = store.labels(target)
    train, test = slice(0, 900), slice(900, None)
    probe.fit(X[train], y[train])
    if probe.task == "classification":
        accuracy = probe.score(X[test], y[test])
    else:
        accuracy = float(np.mean(np.sign(probe.decision_function(X[test]).ravel()) == y[test]))
    assert accuracy >= 0.95
    direction = probe.direction(1 if probe.task == "classification" else None)
    cosine = float(torch.nn.functional.cosine_similarity(direction.float(), v, dim=0))
    assert cosine >= 0.9, f"cosine {cosine:.3f}"


def test_probe_vector_steers_generation_monotonically(store, planted):
    """Steering with the probe's direction raises that probe's score on generated activations."""
    model, _ = planted
    hook = "blocks.1.hook_resid_pre"
    probe = LinearProbe(task="regression", method="sklearn", normalize=None).fit(np.asarray(store[hook]), store.labels("signed"))
    vector = SteeringVector.from_probe(probe, site="resid_post", layer=0, concept="marker", model=model)
    scores = []
    for alpha in (0.0, 0.5, 1.0, 2.0):
        seen = []
        model.generate(
            ["rock"], max_new_frames=20, seed=0, guidance_scale=3.0,
            steering=[Intervention(vector, alpha=alpha, mode="norm_relative")] if alpha else None,
            fwd_hooks=[(hook, lambda act, hook: seen.append(act[hook.ctx.cond_rows][:, -1].clone()))],
        )
        scores.append(float(probe.decision_function(torch.cat(seen).numpy()).mean()))
    assert all(a < b for a, b in zip(scores, scores[1:])), scores
