"""Recipes and the steer CLI run end to end (on a tiny random model: the workflow, not the music)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import soundfile as sf
import torch

from musicgen_lens.cli import main
from musicgen_lens.recipes import add_accompaniment, default_layer, genre_fusion, genre_transfer, timbre_transfer
from musicgen_lens.steering import SteeringVector


def test_timbre_transfer_from_a_second(model):
    result = timbre_transfer(model, "trumpet", "violin", n_clips=6, clip_seconds=0.5, layer=1, alpha=0.9, start=0.2, duration=0.6)
    frames = int(0.6 * model.frame_rate)
    assert result.codes_original.shape == result.codes_steered.shape == (model.cfg.n_codebooks, frames)
    assert result.original.shape == result.steered.shape == (1, frames * 160)
    start = int(0.2 * model.frame_rate)
    assert torch.equal(result.codes_original[:, :start], result.codes_steered[:, :start])
    assert not torch.equal(result.codes_original, result.codes_steered)
    assert result.score_original.shape == result.score_steered.shape == (frames,)
    np.testing.assert_array_equal(result.score_original[:start], result.score_steered[:start])
    assert result.figure is not None and len(result.figure.axes) == 3
    assert result.interventions[0].vector.concept == "violin" and result.interventions[0].vector.method == "probe"


def test_accompaniment_and_fusion_run(model):
    acc = add_accompaniment(model, "tabla", n_clips=4, clip_seconds=0.5, layer=0, duration=0.3, plot=False)
    assert acc.interventions[0].vector.concept == "+tabla" and acc.figure is None
    fused = genre_fusion(model, ("rock", "jazz"), n_clips=4, clip_seconds=0.5, layer=0, duration=0.3, plot=False)
    assert fused.interventions[0].vector.method == "combined"
    assert abs(fused.interventions[0].vector.norm - 1.0) < 1e-5
    assert default_layer(model) == 1


def test_genre_chain_continues_the_steered_generation(model):
    calls = []
    generate = model.generate

    def spy(*args, **kwargs):  # record what each generation continues
        calls.append(kwargs.get("audio_prompt_codes"))
        return generate(*args, **kwargs)

    model.generate = spy
    try:
        first, second = genre_transfer(model, ("classical", "electronic", "rock"), n_clips=4, clip_seconds=0.5, layer=1, alpha=0.9, duration=0.3, plot=False)
    finally:
        del model.generate
    n = int(0.3 * model.frame_rate)
    assert [c is None for c in calls] == [True, True, False, False]  # step 1 from the prompt, step 2 from step 1
    assert torch.equal(calls[2][0], first.codes_steered) and torch.equal(calls[3][0], first.codes_steered)
    # step 2's input is step 1's steered output, kept verbatim; it is steered towards rock from there on
    assert (first.interventions[0].vector.concept, second.interventions[0].vector.concept) == ("electronic", "rock")
    assert second.codes_original.shape == second.codes_steered.shape == (model.cfg.n_codebooks, 2 * n)
    assert torch.equal(second.codes_original[:, :n], first.codes_steered) and torch.equal(second.codes_steered[:, :n], first.codes_steered)
    assert second.interventions[0].start == n / model.frame_rate and first.interventions[0].start is None
    assert not torch.equal(second.codes_original, second.codes_steered)


def test_steer_cli(checkpoint_dir, tmp_path, model):
    vec = SteeringVector(torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(0)), site="resid_post", layer=1, concept="x", model_hash=model.cfg.hash())
    vec.save(tmp_path / "v.safetensors")
    out, orig = tmp_path / "steered.wav", tmp_path / "orig.wav"
    argv = ["steer", "rock", "--vector", str(tmp_path / "v.safetensors"), "--alpha", "2", "--start", "0.1", "--duration", "0.3",
            "--model", checkpoint_dir("base"), "--out", str(out), "--original", str(orig), "--seed", "0", "--device", "cpu",
            "--every", "5", "--count", "calls"]
    assert main(argv) == 0
    a, b = sf.read(out)[0], sf.read(orig)[0]
    assert a.shape == b.shape == (15 * 160,)


def test_concept_vector_by_difference_of_means(model):
    from musicgen_lens.recipes import concept_vector, timbre_concept

    probe = timbre_concept(model, "trumpet", "violin", n_clips=6, clip_seconds=0.5, layer=1)
    dm = timbre_concept(model, "trumpet", "violin", n_clips=6, clip_seconds=0.5, layer=1, method="diff_means")
    assert probe.mode == "norm_relative" and abs(probe.vector.norm - 1.0) < 1e-5
    assert dm.vector.method == "diff_means" and dm.mode == "add" and dm.hook == probe.hook == "blocks.1.hook_resid_post"
    # same clips, same probe: the two differ only in the steering vector
    np.testing.assert_allclose(dm.probe.decision_function(np.eye(model.cfg.d_model)), probe.probe.decision_function(np.eye(model.cfg.d_model)), rtol=1e-5, atol=1e-6)
    assert dm.vector.metadata["n_pos"] + dm.vector.metadata["n_neg"] == 10  # the 12 clips less the 15% held out
    assert not torch.allclose(dm.vector.vector / dm.vector.norm, probe.vector.vector)
    with pytest.raises(ValueError, match="method must be one of"):
        concept_vector(model, [], [], method="pca")
    result = timbre_transfer(model, "trumpet", "violin", n_clips=6, clip_seconds=0.5, layer=1, alpha=1.0, start=0.2, duration=0.4, method="diff_means", plot=False)
    assert result.interventions[0].mode == "add" and result.interventions[0].vector.method == "diff_means"


def test_a_clamp_concept_sets_the_projection_between_the_two_sides_means(model):
    """method "clamp": the difference of means' direction, and alpha 0 / 1 set every steered
    position's projection on it to the source's / the target's mean projection (an affine edit)."""
    from musicgen_lens.recipes import timbre_concept
    from musicgen_lens.steering import Intervention, steering_hooks

    dm = timbre_concept(model, "trumpet", "violin", n_clips=6, clip_seconds=0.5, layer=1, method="diff_means")
    cl = timbre_concept(model, "trumpet", "violin", n_clips=6, clip_seconds=0.5, layer=1, method="clamp")
    torch.testing.assert_close(cl.vector.vector, dm.vector.vector)  # same clips, same direction
    assert cl.mode == "clamp" and dm.mode == "add" and dm.strength(0.7) == 0.7
    neg, pos = cl.projections
    assert pos > neg  # the target's clips lie further along their own direction
    assert cl.strength(0.0) == pytest.approx(neg) and cl.strength(1.0) == pytest.approx(pos)
    assert cl.strength(0.5) == pytest.approx((neg + pos) / 2)
    unit = cl.vector.vector / cl.vector.vector.norm()
    seen = {}
    iv = Intervention(cl.vector, alpha=cl.strength(1.0), mode=cl.mode, branch="both")
    tokens = torch.randint(0, model.cfg.d_vocab, (1, model.cfg.n_codebooks, 12))
    hooks = steering_hooks(model, [iv]) + [(cl.hook, lambda a, hook: seen.setdefault("a", a.clone()))]  # runs after the steering
    with torch.no_grad():
        model.run_with_hooks(tokens, ["classical trumpet melody"], fwd_hooks=hooks)
    proj = seen["a"][0] @ unit.to(seen["a"].dtype)
    torch.testing.assert_close(proj, torch.full_like(proj, pos), atol=1e-4, rtol=1e-4)
    broken = dataclasses.replace(cl, projections=None)
    with pytest.raises(ValueError, match="needs projections"):
        broken.strength(1.0)


def test_steer_and_compare_converts_alpha_only_for_the_concepts_own_mode(model):
    """A clamp concept's relative alpha becomes a projection value only in mode "clamp"; a caller
    who overrides the mode (e.g. "add") gets their alpha as given, not a projection."""
    from musicgen_lens.recipes import steer_and_compare, timbre_concept

    cl = timbre_concept(model, "trumpet", "violin", n_clips=6, clip_seconds=0.5, layer=1, method="clamp")
    kw = dict(alpha=0.5, start=0.2, duration=0.4, plot=False)
    own = steer_and_compare(model, "classical trumpet melody", cl, **kw)
    assert own.interventions[0].mode == "clamp" and own.interventions[0].alpha == pytest.approx(cl.strength(0.5))
    added = steer_and_compare(model, "classical trumpet melody", cl, mode="add", **kw)
    assert added.interventions[0].mode == "add" and added.interventions[0].alpha == 0.5


def test_a_cross_attention_vector_needs_the_clips_captions(model):
    """With the null text cross-attention adds only its bias, so every clip has the same
    cross_attn_out and a difference of means is zero: a clear error, not a vector that steers
    nothing. With each clip's caption the two sides differ."""
    from musicgen_lens.data import caption
    from musicgen_lens.recipes import _specs, concept_vector, vector_text

    pos = _specs(model, 4, 0, 0.5, instrument="violin", style="classical")
    neg = _specs(model, 4, 1, 0.5, instrument="trumpet", style="classical")
    with pytest.raises(ValueError, match="same activation at 'blocks.1.hook_cross_attn_out'.*text=caption"):
        concept_vector(model, pos, neg, layer=1, site="cross_attn_out", method="diff_means")
    cv = concept_vector(model, pos, neg, layer=1, site="cross_attn_out", method="diff_means", text=caption)
    assert cv.hook == "blocks.1.hook_cross_attn_out" and cv.vector.norm > 0
    seen = []
    from musicgen_lens import recipes

    items = recipes._clip_items(model, pos[:2], 1.0, caption)
    seen = [it.text for it in items]
    assert seen == ["classical violin melody"] * 2
    assert vector_text("caption") is caption and vector_text(None) is None
    with pytest.raises(ValueError, match="vector_text must be one of"):
        vector_text("describe")


def test_timbre_transfer_on_several_layers_steers_each_with_its_own_vector(model):
    result = timbre_transfer(model, "trumpet", "violin", n_clips=4, clip_seconds=0.5, layer=[0, 1], alpha=1.0, start=0.2, duration=0.4,
                             method="diff_means", plot=False)
    assert [iv.vector.layer for iv in result.interventions] == [0, 1]
    assert all(iv.start == 0.2 and iv.mode == "add" and iv.alpha == 1.0 for iv in result.interventions)
    assert not torch.equal(result.interventions[0].vector.vector, result.interventions[1].vector.vector)


def test_fuse_vectors_normalises_a_weighted_sum_or_takes_the_weighted_mean(model):
    from musicgen_lens.recipes import fuse_vectors

    a = SteeringVector(torch.tensor([3.0, 0.0] + [0.0] * (model.cfg.d_model - 2)), site="resid_post", layer=1, concept="a")
    b = SteeringVector(torch.tensor([0.0, 4.0] + [0.0] * (model.cfg.d_model - 2)), site="resid_post", layer=1, concept="b")
    summed = fuse_vectors([a, b], [1.0, 2.0])
    torch.testing.assert_close(summed.vector[:2], torch.tensor([3.0, 8.0]) / (73 ** 0.5))
    torch.testing.assert_close(fuse_vectors([a, b], [1.0, 3.0], mean=True).vector[:2], torch.tensor([0.75, 3.0]))
    with pytest.raises(ValueError, match="one weight per vector"):
        fuse_vectors([a, b], [1.0])
