"""The embedded toy model: it ships, loads by name, and is actually trained."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from musicgen_lens import HookedMusicGen
from musicgen_lens.toy import TOY_MODEL, resolve


@pytest.fixture(scope="module")
def toy():
    return HookedMusicGen.from_pretrained("toy", device="cpu")


def test_ships_under_the_size_limit_with_a_card():
    size = sum(f.stat().st_size for f in TOY_MODEL.iterdir()) / 2**20
    assert 1 < size <= 30
    card = (TOY_MODEL / "README.md").read_text()
    assert "synthetic" in card and "steps" in card


def test_loads_by_name_and_by_default(toy):
    cfg = toy.cfg
    assert cfg.model_name == "toy"
    assert (cfg.sample_rate, cfg.frame_rate, cfg.n_codebooks, cfg.d_vocab) == (16000, 100, 4, 256)
    assert HookedMusicGen.from_pretrained(device="cpu").cfg.hash() == cfg.hash()
    assert json.loads((TOY_MODEL / "config.json").read_text())["model_type"] == "musicgen"


def test_toy_is_reserved_a_local_folder_named_toy_does_not_shadow_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve("toy") == TOY_MODEL
    (tmp_path / "toy").mkdir()
    assert resolve("toy") == TOY_MODEL  # the folder is loaded as "./toy" (tests/test_loading.py)
    assert resolve("./toy") == "./toy"


def test_the_text_prompt_matters(toy):
    """Trained, not random: codes of a clip are likelier under its own description."""
    from musicgen_lens.data.synth import ClipSpec, describe, render_clip
    from musicgen_lens.generation import apply_delay_pattern

    losses = {}
    for inst in ("trumpet", "violin", "xylophone"):
        spec = ClipSpec(inst, "classical", tempo_bpm=100, seed=5, duration_s=2.0, sample_rate=16000)
        codes = toy.encode(torch.from_numpy(render_clip(spec))[None, None])
        seq = apply_delay_pattern(codes, toy.cfg.pad_token_id)
        with torch.no_grad():
            for prompt in ("trumpet", "violin", "xylophone"):
                losses[inst, prompt] = toy(seq, [f"classical {prompt} melody"], return_type="loss").item()
    for inst in ("trumpet", "violin", "xylophone"):
        others = [losses[inst, p] for p in ("trumpet", "violin", "xylophone") if p != inst]
        assert losses[inst, inst] < min(others), (inst, losses)


def test_generation_is_not_noise(toy):
    codes = toy.generate(["classical flute melody"], duration=2.0, seed=0, progress=False)
    assert codes.shape == (1, 4, 200)
    # a trained model reuses a small part of each codebook: 200 uniform draws from 256 codes
    # would hit ~139 distinct ones in every codebook (measured: 35-50 in the first, <=117 in all)
    uniform = 256 * (1 - (1 - 1 / 256) ** 200)
    distinct = [len(torch.unique(codes[0, k])) for k in range(4)]
    assert distinct[0] < 0.5 * uniform and max(distinct) < 0.95 * uniform, distinct
    with torch.no_grad():
        audio = toy.decode(codes)[0, 0].numpy()
    assert np.isfinite(audio).all() and np.abs(audio).max() > 1e-3


def test_steering_evaluation_compares_a_counterfactual_pair(toy):
    from musicgen_lens.eval import eval_steering
    from musicgen_lens.recipes import timbre_concept

    concept = timbre_concept(toy, "trumpet", "violin", n_clips=4, clip_seconds=1.0, layer=3, method="probe")
    off, on = eval_steering(toy, alphas=(0.0, 2.0), n=2, duration=2.0, start=1.0, concept=concept, codec_judge=False)
    # alpha 0 is the identity intervention: one seed, one sample
    assert off["codes_kept_after_start"] == 1.0 and off["fidelity_drop"] == 0.0 and off["fidelity_drop_se"] == 0.0
    assert off["chroma_corr"] > 0.99 and off["target_rate_steered"] == off["target_rate_unsteered"]
    assert on["frames_before_start_identical"] == 1.0
    assert on["codes_kept_after_start"] < 1.0
    assert on["method"] == "probe" and on["mode"] == "norm_relative" and "fidelity_drop_codec_judge" not in on


def test_loading_does_not_warn_about_musicgens_pad_token():
    """pad/BOS = codebook_size is MusicGen's convention; transformers' generic check flags it."""
    import logging

    import transformers.utils.logging as hf_logging
    from transformers import MusicgenForConditionalGeneration

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_warning()  # importing transformer_lens.model_bridge sets it to ERROR for the whole process
    hf_logging.warning_once.cache_clear()
    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    check = logging.getLogger("transformers.configuration_utils")
    check.addHandler(handler)
    try:
        HookedMusicGen.from_pretrained("toy", device="cpu")
        assert not [m for m in seen if "token_id" in m]
        hf_logging.warning_once.cache_clear()
        MusicgenForConditionalGeneration.from_pretrained(resolve("toy"))  # the check itself is still on
        assert [m for m in seen if "pad_token_id" in m]
    finally:
        check.removeHandler(handler)
        hf_logging.set_verbosity(verbosity)


def test_every_steering_verdict_is_also_given_by_the_codec_judge(toy, monkeypatch):
    import musicgen_lens.eval as ev
    from musicgen_lens.recipes import timbre_concept

    # a codec judge that is the clean judge: the two sets of verdicts must agree key for key
    monkeypatch.setattr("musicgen_lens.eval.measure.codec_classifier", lambda model, concept="instrument": ev.clean_classifier(concept))
    concept = timbre_concept(toy, "trumpet", "violin", n_clips=4, clip_seconds=1.0, layer=3, method="diff_means")
    (result,) = ev.eval_steering(toy, alphas=(1.0,), n=2, duration=2.0, start=1.0, concept=concept)
    assert result["method"] == "diff_means" and result["mode"] == "add"
    judged = [k for k in result if k.endswith("_codec_judge") or "_codec_judge_" in k]
    assert len(judged) == 7
    for key in judged:
        assert result[key] == result[key.replace("_codec_judge", "")], key


def test_the_recipes_defaults_are_the_stored_measurement_for_these_weights(toy, checkpoint_dir):
    import json
    import warnings

    from musicgen_lens.provenance import weights_fingerprint
    from musicgen_lens.recipes import STEERING_DEFAULTS, default_layer, default_setting, relative_depth_layer, stored_recommendation

    stored = json.loads(STEERING_DEFAULTS.read_text())
    assert stored["weights"] == weights_fingerprint(toy)
    passed = [t for t, r in stored["recommended"].items() if r is not None]
    failed = [t for t, r in stored["recommended"].items() if r is None]
    assert passed, "make eval found no steering setting that passes the verdict for any target"
    rec = stored_recommendation(toy, passed[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # measured: no warning
        d = default_setting(toy, passed[0])
    assert d["measured"] and (d["layer"], d["alpha"], d["method"], d["site"], d["vector_text"]) == (
        rec["layer"], rec["alpha"], rec["method"], rec["site"], rec.get("vector_text"))
    assert default_layer(toy, passed[0]) == rec["layer"]
    # the recipes follow a stored setting whole: its site, every one of its layers, its alpha and the clips' text
    from musicgen_lens.recipes import add_accompaniment, concept_vector

    tabla = stored_recommendation(toy, "tabla")
    if tabla is not None:
        r = add_accompaniment(toy, "tabla", n_clips=4, clip_seconds=0.5, duration=0.4, start=0.2, plot=False)
        layers = tabla["layer"] if isinstance(tabla["layer"], list) else [tabla["layer"]]
        assert [(iv.vector.site, iv.vector.layer, iv.alpha) for iv in r.interventions] == [(tabla["site"], la, tabla["alpha"]) for la in layers]
        if len(layers) > 1:  # one vector cannot hold a several-layer setting: a clear error, not a wrong hook
            with pytest.raises(ValueError, match="not one layer of"):
                concept_vector(toy, [], [], concept="+tabla")
    for target in failed:  # measured, and nothing passed: said so, not "never measured"
        with pytest.warns(UserWarning, match="no steering setting towards .* passed"):
            assert not default_setting(toy, target)["measured"]
    # other weights of the same kind: the relative depth, with a warning
    other = HookedMusicGen.from_pretrained(checkpoint_dir("base"))
    assert stored_recommendation(other, "violin") is None
    with pytest.warns(UserWarning, match="relative depth"):
        assert default_layer(other) == relative_depth_layer(other)


def test_a_stored_demo_setting_is_given_only_for_the_weights_it_was_measured_on(toy, tmp_path, checkpoint_dir):
    """`recipes.stored_demo`: the per-demo view of `steering_defaults.json` (what `make demo` runs), checked by fingerprint."""
    import json

    from musicgen_lens.provenance import weights_fingerprint
    from musicgen_lens.recipes import stored_demo

    entry = {"key": "resid_post@2:probe:0.5", "held_out": {"seeds": [16, 31], "success_rate": 0.5}}
    path = tmp_path / "defaults.json"
    path.write_text(json.dumps({"weights": weights_fingerprint(toy), "recommended": {}, "demos": {"tabla_audio_prompt": entry, "xylophone_text": None}}))
    assert stored_demo(toy, "tabla_audio_prompt", path) == entry
    assert stored_demo(toy, "xylophone_text", path) is None and stored_demo(toy, "never_measured", path) is None
    assert stored_demo(HookedMusicGen.from_pretrained(checkpoint_dir("base")), "tabla_audio_prompt", path) is None
    path.write_text(json.dumps({"weights": weights_fingerprint(toy), "recommended": {}}))  # written before demos were stored
    assert stored_demo(toy, "tabla_audio_prompt", path) is None


def test_shipping_a_retrained_checkpoint_keeps_the_shipped_judges_and_defaults(tmp_path):
    """training/ship.py swaps the checkpoint; judges/ and steering_defaults.json are not in an export."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("ship", Path(__file__).resolve().parents[1] / "training" / "ship.py")
    ship = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ship)
    target, export = tmp_path / "toy", tmp_path / "export"
    (target / "judges").mkdir(parents=True)
    (target / "judges" / "clean-x.json").write_text("{}")
    (target / "steering_defaults.json").write_text('{"old": 1}')
    (target / "config.json").write_text("old")
    export.mkdir()
    (export / "config.json").write_text("new")
    ship.main(["--export", str(export), "--to", str(target)])
    assert (target / "config.json").read_text() == "new"
    assert (target / "judges" / "clean-x.json").read_text() == "{}"
    assert (target / "steering_defaults.json").read_text() == '{"old": 1}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export", "toy"]  # no staging or previous left


def test_the_demo_reports_only_what_it_ran(tmp_path, capsys):
    """make demo's report: one section per demo run (one of `eval.DEMOS` each), its own counts in the
    summary, frames before the start untouched, the chain's first step named."""
    import re

    from musicgen_lens.demo import main

    assert main(["--out", str(tmp_path), "--seeds", "2", "--demos", "tabla", "chain"]) == 0
    # the setting is printed in the sweep's own spelling (a several-layer one as "@1+2+3", not "@[1, 2, 3]")
    assert re.search(r"^tabla: tabla_audio_prompt steering \w[\w.]*@\d+(\+\d+)*(h\d+)?:\w+:[\d.]+(:\w+)? \(", capsys.readouterr().out, re.M)
    report = (tmp_path / "report.md").read_text()
    assert "## tabla" in report and "## chain" in report and "## violin" not in report
    assert "violin" not in report.split("## what this means")[1].split("##")[0]
    assert "Here tabla passed in " in report and "; chain passed in " in report
    assert "seeds 16-17 (one batch)" in report and "continuing each seed's steered `electronic` step" in report
    assert "on the melody's tempo (100 BPM" in report  # the audio prompt's tempo is known: it is checked
    from musicgen_lens import HookedMusicGen
    from musicgen_lens.recipes import stored_demo

    rec = stored_demo(HookedMusicGen.from_pretrained("toy"), "tabla_audio_prompt")
    if rec is not None:  # make eval re-measures every recommendation on held-out seeds; the report gives that rate as the one to expect
        lo, hi = rec["held_out"]["seeds"]
        assert f"re-measured on seeds {lo}-{hi}, which picked nothing: success {rec['held_out']['success_rate']:.2f}" in report
    else:
        assert "`make eval` found no setting of this demo that passes the verdict" in report
    assert any(tmp_path.glob("tabla_seed*_steered.wav")) and any(tmp_path.glob("tabla_spectrogram_*.png"))


def test_the_demo_report_says_what_a_count_does_not():
    """`demo.caveats`: a target the unsteered runs already have, a tempo no better than the melody's own
    onsets, an attribute kept only as the unsteered run had it — each said; none for a clean result."""
    from musicgen_lens.demo import caveats

    outcomes = ["success"] * 15 + ["not_heard"]
    row = dict(n=16, heard_rate=1.0, heard_rate_unsteered=13 / 16, on_tempo_rate=6 / 16, on_tempo_rate_unsteered=7 / 16, kept_rate_unsteered=1 / 16,
               outcomes=outcomes, moved=0.2, moved_successes=0.1)
    notes = caveats(row, "rock", "instrument", "trumpet")
    assert len(notes) == 4
    assert "the successes moved the sound 0.10 of the way to real rock clips" in notes[0]  # the successes' move, not all seeds' 0.2
    assert "already have rock in 13/16 (steered: 16/16): the steering adds it to 3 more seeds, not 16" in notes[1]
    assert "6/16 steered vs 7/16 unsteered" in notes[2] and "(trumpet) is heard in 1/16 unsteered runs" in notes[3]
    clean = dict(n=16, heard_rate=0.75, heard_rate_unsteered=0.0, on_tempo_rate=0.75, on_tempo_rate_unsteered=0.25, kept_rate_unsteered=1.0,
                 outcomes=outcomes)
    assert caveats(dict(clean, moved_successes=1.0), "tabla", "instrument", "flute") == [] == caveats(clean, "tabla", "instrument", "flute")
    assert caveats(dict(clean, on_tempo_rate=None), "violin", "style", "classical") == []


def test_toward_target_is_zero_for_no_change_and_about_one_for_real_target_clips(toy):
    """`eval.toward_target`: how far steering moved the sound, in units of the real source-to-target distance."""
    import numpy as np

    from musicgen_lens.data.synth import render_clip
    from musicgen_lens.eval import toward_target
    from musicgen_lens.recipes import _specs

    def clips(instrument, seed):
        return [np.asarray(render_clip(c), np.float32) for c in _specs(toy, 8, seed, 1.5, instrument=instrument, style="classical")]

    trumpet, violin = clips("trumpet", 7), clips("violin", 8)
    assert np.allclose(toward_target(toy, trumpet, trumpet, "trumpet", "violin", n_clips=8), 0.0)
    moved = toward_target(toy, violin, trumpet, "trumpet", "violin", n_clips=8)
    assert moved.shape == (8,) and 0.6 < moved.mean() < 1.4  # other clips than the reference's: about one unit, not exactly
    assert np.allclose(toward_target(toy, trumpet, violin, "trumpet", "violin", n_clips=8), -moved)
    with pytest.raises(ValueError, match="fusion has two genres"):
        toward_target(toy, trumpet, trumpet, "classical", "rock+jazz", concept="fusion")
