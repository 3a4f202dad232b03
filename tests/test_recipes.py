"""Recipes and the steer CLI run end to end (on a tiny random model: the workflow, not the music)."""

from __future__ import annotations

import numpy as np
import soundfile as sf
import torch

from musicgen_lens.cli import main
from musicgen_lens.recipes import add_accompaniment, default_layer, genre_fusion, timbre_transfer
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


def test_steer_cli(checkpoint_dir, tmp_path, model):
    vec = SteeringVector(torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(0)), site="resid_post", layer=1, concept="x", model_hash=model.cfg.hash())
    vec.save(tmp_path / "v.safetensors")
    out, orig = tmp_path / "steered.wav", tmp_path / "orig.wav"
    argv = ["steer", "rock", "--vector", str(tmp_path / "v.safetensors"), "--alpha", "2", "--start", "0.1", "--duration", "0.3",
            "--model", checkpoint_dir("base"), "--out", str(out), "--original", str(orig), "--seed", "0", "--device", "cpu"]
    assert main(argv) == 0
    a, b = sf.read(out)[0], sf.read(orig)[0]
    assert a.shape == b.shape == (15 * 160,)
