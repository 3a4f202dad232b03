"""musicgen_lens.eval: the concept classifier (judge) and the fidelity metrics."""

from __future__ import annotations

import numpy as np
import torch
import pytest

from musicgen_lens.data.synth import ClipSpec, render_clip
from musicgen_lens.eval import ConceptClassifier, degrade, features, fidelity, tempo

SR = 16000


def clip(instrument="trumpet", style="classical", seed=0, tempo_bpm=100.0, duration_s=2.0, **kw):
    return render_clip(ClipSpec(instrument, style, tempo_bpm=tempo_bpm, seed=seed, duration_s=duration_s, sample_rate=SR, **kw))


def test_features_are_length_and_loudness_independent_and_reject_bad_audio():
    a = clip()
    f = features(a, SR)
    assert f.shape == features(a[: SR], SR).shape
    np.testing.assert_allclose(features(0.1 * a, SR), f, rtol=1e-3, atol=1e-3)
    with pytest.raises(ValueError, match="silent"):
        features(np.zeros(SR, dtype=np.float32), SR)
    with pytest.raises(ValueError, match="NaN"):
        features(np.full(SR, np.nan, dtype=np.float32), SR)
    with pytest.raises(ValueError, match="samples"):
        features(np.zeros((2, 2, 10)), SR)


def test_features_resample_other_rates():
    a = render_clip(ClipSpec("violin", "classical", seed=1, duration_s=1.0, sample_rate=32000))
    b = render_clip(ClipSpec("violin", "classical", seed=1, duration_s=1.0, sample_rate=SR))
    # same music at two rates: far closer to each other than to another instrument
    other = render_clip(ClipSpec("xylophone", "classical", seed=1, duration_s=1.0, sample_rate=SR))
    fa, fb, fo = features(a, 32000), features(b, SR), features(other, SR)
    assert np.linalg.norm(fa - fb) < 0.5 * np.linalg.norm(fb - fo)


def test_classifier_separates_instruments_on_held_out_clips():
    train = [(clip(i, seed=s, duration_s=1.0), i) for i in ("trumpet", "xylophone", "flute") for s in range(8)]
    test = [(clip(i, seed=100 + s, duration_s=1.0), i) for i in ("trumpet", "xylophone", "flute") for s in range(4)]
    clf = ConceptClassifier("instrument").fit([a for a, _ in train], [y for _, y in train], sr=SR)
    assert list(clf.classes_) == ["flute", "trumpet", "xylophone"]
    assert clf.score([a for a, _ in test], [y for _, y in test], sr=SR) >= 0.9
    p = clf.proba_of([test[0][0]], "trumpet", sr=SR)
    assert p.shape == (1,) and 0 <= p[0] <= 1
    with pytest.raises(ValueError, match="not a class"):
        clf.proba_of([test[0][0]], "tuba", sr=SR)


def test_fidelity_is_one_for_identical_audio_and_lower_for_other_music():
    a = clip(seed=1)
    same = fidelity(a, a, SR)
    assert same.chroma_corr == pytest.approx(1.0, abs=1e-5) and same.onset_corr == pytest.approx(1.0, abs=1e-5)
    assert same.tempo_kept and same.score == pytest.approx(1.0, abs=1e-5)
    # same melody on another instrument keeps pitch content better than unrelated music
    timbre = fidelity(a, clip("violin", seed=1), SR)
    other = fidelity(a, clip("violin", "rock", seed=7, tempo_bpm=150, key="F#"), SR)
    assert timbre.chroma_corr > other.chroma_corr + 0.3


@pytest.mark.parametrize("bpm", [90.0, 120.0])
def test_tempo_of_a_drum_groove(bpm):
    est = tempo(clip("guitar", "rock", seed=2, tempo_bpm=bpm, duration_s=6.0, backing_gain=1.0), SR)
    assert any(abs(est / bpm - m) <= 0.04 * m for m in (0.5, 1.0, 2.0)), est


def test_beat_rank_tells_a_tabla_on_the_melody_tempo_from_one_off_it():
    """On 2-s windows, where a free tempo estimate is unreliable: a tabla at 100 BPM fits a 100 BPM
    beat better than any other lag in range; tabla clips at other tempi do not."""
    from musicgen_lens.eval import ON_TEMPO_RANK, beat_rank, on_tempo

    def window(bpm, seed):
        return clip("flute", seed=seed, tempo_bpm=bpm, duration_s=4.0, accompaniment="tabla")[2 * SR:]

    on = [beat_rank(window(100.0, s), SR, 100.0) for s in range(3)]
    off = [beat_rank(window(bpm, 50 + s), SR, 100.0) for s, bpm in enumerate((70.0, 83.0, 122.0, 140.0))]
    assert min(on) >= ON_TEMPO_RANK > max(off), (on, off)
    assert on_tempo(window(100.0, 0), SR, 100.0) and not on_tempo(window(140.0, 0), SR, 100.0)
    assert beat_rank(np.zeros(2 * SR, np.float32), SR, 100.0) == 0.0  # no onsets follow no beat
    with pytest.raises(ValueError, match="too short for a beat test"):
        beat_rank(window(100.0, 0)[: SR // 2], SR, 100.0)
    with pytest.raises(ValueError, match="bpm must be in"):
        beat_rank(window(100.0, 0), SR, 300.0)


def test_degrade_keeps_length_and_adds_bounded_noise():
    a = clip(duration_s=1.0)
    rng = np.random.default_rng(0)
    b = degrade(a, SR, rng)
    assert b.shape == a.shape and b.dtype == np.float32
    snr = 10 * np.log10(np.mean(a**2) / np.mean((b - a) ** 2))
    assert -3 < snr < 45


class _IdentityCodec(torch.nn.Module):
    """encode/decode that give the audio back: a lossless codec."""


class _LosslessModel:
    sample_rate, device = SR, "cpu"

    def __init__(self, noise: float = 0.0):
        self.codec, self.noise = _IdentityCodec(), noise
        self.calls = 0

    def encode(self, x):
        self.calls += 1
        return x

    def decode(self, codes):
        return codes + self.noise * torch.randn_like(codes)


def test_reconstruct_runs_clips_through_the_codec_in_batches():
    from musicgen_lens.eval import reconstruct

    audio = np.stack([clip(seed=s, duration_s=0.5) for s in range(5)])
    model = _LosslessModel()
    out = reconstruct(model, audio, batch_size=2)
    assert model.calls == 3 and out.shape == audio.shape and out.dtype == np.float32
    np.testing.assert_array_equal(out, audio)


def test_codec_judge_equals_the_clean_judge_for_a_lossless_codec_and_differs_for_a_lossy_one():
    from musicgen_lens.eval import clean_classifier, codec_classifier

    test = [clip(i, seed=50 + s, duration_s=1.0) for i in ("trumpet", "violin", "xylophone") for s in range(3)]
    clean = clean_classifier("instrument", n=28, seed=1)
    lossless = codec_classifier(_LosslessModel(), "instrument", n=28, seed=1)
    assert list(lossless.classes_) == list(clean.classes_)
    np.testing.assert_allclose(lossless.predict_proba(test, sr=SR), clean.predict_proba(test, sr=SR), rtol=1e-6, atol=1e-9)
    torch.manual_seed(0)
    lossy = codec_classifier(_LosslessModel(noise=0.05), "instrument", n=28, seed=1)
    assert not np.allclose(lossy.predict_proba(test, sr=SR), clean.predict_proba(test, sr=SR), atol=1e-3)


def test_eval_main_keeps_finished_parts_and_starts_over_for_other_weights(tmp_path, monkeypatch, checkpoint_dir):
    import json

    import musicgen_lens.eval as ev
    import musicgen_lens.eval.cli as cli

    calls = []
    # main looks the measurements up in musicgen_lens.eval.cli, where it lives
    monkeypatch.setattr(cli, "eval_codec", lambda model: calls.append("codec") or {"instrument_reconstructed": 0.5})
    monkeypatch.setattr(cli, "eval_prompts", lambda model: calls.append("prompts") or {"instrument_accuracy": 0.25})
    out = tmp_path / "results.json"
    argv = ["codec", "prompts", "--model", checkpoint_dir("base"), "--out", str(out)]
    assert ev.main(argv) == 0
    assert ev.main(argv) == 0  # nothing left to measure: both parts kept
    assert calls == ["codec", "prompts"]
    saved = json.loads(out.read_text())
    assert saved["codec"] == {"instrument_reconstructed": 0.5} and saved["settings"]["n"] == 30
    saved["weights"] = "another model"
    out.write_text(json.dumps(saved))
    assert ev.main(argv) == 0
    assert calls == ["codec", "prompts", "codec", "prompts"]


# ------------------------------------------------------------------ quality, abstain, verdict, cache


@pytest.fixture(autouse=True)
def _judge_cache(tmp_path, monkeypatch):
    """Every test gets its own judge cache: none reads or writes the user's."""
    monkeypatch.setenv("MUSICGEN_LENS_CACHE", str(tmp_path / "cache"))


def tone(freq=440.0, seconds=2.0, sr=SR):
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * sum(np.sin(2 * np.pi * k * freq * t) / k for k in range(1, 6))).astype(np.float32)


def test_code_entropy_is_zero_for_constant_codes_and_log2_v_for_uniform_ones():
    from musicgen_lens.eval import code_entropy

    V = 16
    codes = np.stack([np.zeros(64, int), np.tile(np.arange(V), 4), np.r_[np.zeros(32, int), np.ones(32, int)]])
    np.testing.assert_allclose(code_entropy(codes), [0.0, np.log2(V), 1.0], atol=1e-12)
    # a window, torch input, a batch
    np.testing.assert_allclose(code_entropy(torch.from_numpy(codes), start=32), [0.0, np.log2(V), 0.0], atol=1e-12)
    assert code_entropy(np.stack([codes, codes])).shape == (2, 3)
    with pytest.raises(ValueError, match="empty"):
        code_entropy(codes, start=64)
    with pytest.raises(ValueError, match="n_codebooks"):
        code_entropy(np.zeros(5))


def test_stationarity_of_a_held_tone_is_near_one_and_of_a_melody_lower():
    from musicgen_lens.eval import audio_quality, spectral_flux, stationarity

    held = audio_quality(tone(), SR)
    melody = audio_quality(clip("flute", seed=3), SR)
    assert held.stationarity > 0.99 and held.flux < 0.02
    assert melody.stationarity < 0.9 and melody.flux > 5 * held.flux
    assert stationarity(tone(), SR) == held.stationarity and spectral_flux(tone(), SR) == held.flux
    assert audio_quality(np.zeros(SR, np.float32), SR).stationarity == 1.0  # silence: as stationary as it gets


def test_frechet_distance_is_zero_for_a_set_against_itself_and_grows_with_a_shift():
    from musicgen_lens.eval import frechet_distance, gaussian_stats

    X = np.random.default_rng(0).standard_normal((200, 8))
    assert frechet_distance(X, X) == pytest.approx(0.0, abs=1e-6)
    d1, d2 = frechet_distance(X, X + 0.5), frechet_distance(X, X + 1.0)
    assert d1 == pytest.approx(8 * 0.25, rel=1e-6) and d2 == pytest.approx(8.0, rel=1e-6)
    assert frechet_distance(gaussian_stats(X), gaussian_stats(2 * X)) > 1.0  # a wider spread
    # fewer clips than dimensions: singular covariances still give a finite, non-negative value
    small = np.random.default_rng(1).standard_normal((5, 30))
    d = frechet_distance(small, small + 0.1)
    assert np.isfinite(d) and d >= 0
    with pytest.raises(ValueError, match="at least 2"):
        gaussian_stats(X[:1])


@pytest.fixture(scope="module")
def small_judge():
    from musicgen_lens.eval import clean_classifier

    return clean_classifier("instrument", n=56, seed=1, cache=False)


def test_the_judge_abstains_on_noise_and_silence_but_not_on_real_clips(small_judge):
    from musicgen_lens.data.synth import make_dataset
    from musicgen_lens.training.data import WORLD

    real = [c.audio for c in make_dataset(12, **{**WORLD, "seed": 1}, split="test")]
    rng = np.random.default_rng(0)
    ood = [rng.standard_normal(2 * SR).astype(np.float32) * 0.1, np.zeros(2 * SR, np.float32), np.full(2 * SR, 1e-8, np.float32)]
    pred_real, pred_ood = small_judge.predict(real, SR), small_judge.predict(ood, SR)
    assert list(pred_ood) == ["abstain"] * 3
    assert np.mean(pred_real == "abstain") <= 1 / 12
    assert "abstain" not in small_judge.predict(real, SR, abstain=False)
    X = small_judge.featurize(real + ood[:1], SR)
    dist = small_judge.ood_distance(X)
    assert dist[-1] > 2 * small_judge.ood_threshold and small_judge.ood_threshold > np.median(dist[:-1])


def test_a_collapsed_run_is_a_collapse_even_when_the_judge_hears_the_target():
    from musicgen_lens.eval import Tolerance, audio_quality, code_entropy, steering_verdict, summarize_verdicts

    rng = np.random.default_rng(0)
    unsteered = rng.integers(0, 64, (4, 200))
    collapsed = np.zeros((4, 200), int)  # one code held: a stationary texture
    drone = audio_quality(tone(220.0), SR).stationarity
    kw = dict(entropy_reference=code_entropy(unsteered)[0], kept_label="classical", kept="classical")
    v = steering_verdict("violin", "violin", entropy=code_entropy(collapsed)[0], stationarity=0.5, **kw)
    assert v.outcome == "collapse" and v.collapsed and not v.success
    # entropy kept but the audio a drone: also a collapse
    assert steering_verdict("violin", "violin", entropy=kw["entropy_reference"], stationarity=drone, **kw).outcome == "collapse"
    ok = dict(entropy=kw["entropy_reference"], stationarity=0.8)
    assert steering_verdict("violin", "violin", **ok, **kw).outcome == "success"
    assert steering_verdict("abstain", "violin", **ok, **kw).outcome == "abstain"
    assert steering_verdict("trumpet", "violin", **ok, **kw).outcome == "not_heard"
    assert steering_verdict("violin", "violin", **ok, **{**kw, "kept_label": "rock"}).outcome == "attribute_lost"
    # a known tempo: heard and kept but off it is a failure; None does not check; a collapse stays a collapse
    assert steering_verdict("violin", "violin", **ok, **kw, on_tempo=False).outcome == "off_tempo"
    assert steering_verdict("violin", "violin", **ok, **kw, on_tempo=True).outcome == "success"
    assert steering_verdict("violin", "violin", **ok, **kw, on_tempo=None).outcome == "success"
    assert steering_verdict("violin", "violin", entropy=0.0, stationarity=0.5, **kw, on_tempo=False).outcome == "collapse"
    # the tolerance is the 0.8x: 0.85x passes, 0.75x does not
    ref = kw["entropy_reference"]
    assert steering_verdict("violin", "violin", entropy=0.85 * ref, stationarity=0.8, **{**kw, "entropy_reference": ref}).success
    assert not steering_verdict("violin", "violin", entropy=0.75 * ref, stationarity=0.8, **{**kw, "entropy_reference": ref}).success
    verdicts = [steering_verdict("violin", "violin", **ok, **kw)] * 3 + [v]
    summary = summarize_verdicts(verdicts, frechet=10.0, frechet_reference=10.0)
    assert summary["counts"] == {"success": 3, "collapse": 1, "not_heard": 0, "abstain": 0, "attribute_lost": 0, "off_tempo": 0}
    assert summary["success_rate"] == 0.75 and summary["success_rate_se"] == pytest.approx(np.sqrt(0.75 * 0.25 / 4))
    assert summary["frechet_ok"] is True
    worse = summarize_verdicts(verdicts, frechet=12.5, frechet_reference=10.0, tolerance=Tolerance())
    assert worse["frechet_ok"] is False and worse["success_rate"] == 0.0 and worse["success_rate_per_clip"] == 0.75


def test_judge_cache_round_trip_is_bit_identical_and_a_tampered_file_is_rebuilt(tmp_path):
    import musicgen_lens.eval as ev

    test = [clip(i, seed=60 + s, duration_s=1.0) for i in ("trumpet", "violin", "xylophone") for s in range(2)]
    test.append(np.random.default_rng(0).standard_normal(SR).astype(np.float32))
    built = ev.clean_classifier.__wrapped__("instrument", n=28, seed=2)
    files = sorted((tmp_path / "cache" / "judges").iterdir())
    assert [f.suffix for f in files] == [".json", ".safetensors"]
    loaded = ev.clean_classifier.__wrapped__("instrument", n=28, seed=2)
    assert loaded is not built
    np.testing.assert_array_equal(loaded.predict_proba(test, SR), built.predict_proba(test, SR))
    np.testing.assert_array_equal(loaded.predict(test, SR), built.predict(test, SR))
    X = built.featurize(test, SR)
    np.testing.assert_array_equal(loaded.ood_distance(X), built.ood_distance(X))
    assert loaded.ood_threshold == built.ood_threshold and list(loaded.classes_) == list(built.classes_)
    # tamper with the weights: the checksum fails, the judge is rebuilt (and equal) with a warning
    st = files[1]
    blob = bytearray(st.read_bytes())
    blob[-3] ^= 0xFF
    st.write_bytes(bytes(blob))
    with pytest.warns(RuntimeWarning, match="checksum"):
        rebuilt = ev.clean_classifier.__wrapped__("instrument", n=28, seed=2)
    np.testing.assert_array_equal(rebuilt.predict_proba(test, SR), built.predict_proba(test, SR))
    assert ev.load_judge(st.stem, ev.judge_key(kind="clean", concept="instrument", n=28, seed=2)[1]) is not None  # rewritten
    # a truncated JSON record too
    files[0].write_text("{")
    with pytest.warns(RuntimeWarning, match="rebuilding"):
        ev.clean_classifier.__wrapped__("instrument", n=28, seed=2)
    # another key (e.g. another model's weights) never reads this file
    with pytest.raises(ValueError, match="another judge"):
        ev.load_judge(st.stem, ev.judge_key(kind="clean", concept="instrument", n=28, seed=3)[1])


def test_eval_steering_and_eval_prompts_report_quality_and_verdicts(model, monkeypatch):
    import musicgen_lens.eval as ev
    from musicgen_lens.recipes import timbre_concept

    judges = {c: ev.clean_classifier(c, n=28, seed=1, cache=False) for c in ("instrument", "style")}
    monkeypatch.setattr("musicgen_lens.eval.measure.clean_classifier", lambda concept="instrument": judges[concept])
    monkeypatch.setattr("musicgen_lens.eval.measure.codec_classifier", lambda model, concept="instrument": judges[concept])
    concept = timbre_concept(model, "trumpet", "violin", n_clips=3, clip_seconds=0.5, method="diff_means")
    (r,) = ev.eval_steering(model, n=2, alphas=(1.0,), duration=1.0, start=0.5, concept=concept, n_reference=4)
    q = r["quality"]
    for key in ("entropy_cb0", "stationarity", "flux", "frechet_clean", "frechet_codec"):
        assert np.isfinite(q[f"{key}_unsteered"]) and np.isfinite(q[f"{key}_steered"]), key
    for space in ("clean", "codec"):
        v = r["verdict"][space]
        assert sum(v["counts"].values()) == 2 and len(v["outcomes"]) == 2 and set(v["outcomes"]) <= set(ev.OUTCOMES)
        assert v["frechet_ok"] in (True, False) and 0 <= v["success_rate"] <= v["success_rate_per_clip"] <= 1
    monkeypatch.setattr("musicgen_lens.data.synth.INSTRUMENTS", ("trumpet", "violin"))
    monkeypatch.setattr("musicgen_lens.data.synth.STYLES", ("classical", "rock"))
    p = ev.eval_prompts(model, seeds_per_prompt=1, duration=0.5, codec_judge=False, n_reference=4)
    assert set(p["verdict_instrument"]) == {"clean"} and sum(p["verdict_instrument"]["clean"]["counts"].values()) == 2
    assert p["verdict_style"]["clean"]["frechet_ok"] is None and np.isfinite(p["quality_style"]["entropy_cb0"])


def test_the_kept_attribute_is_judged_against_the_unsteered_run_when_that_lacked_the_prompted_value():
    from musicgen_lens.eval import steering_verdict

    kw = dict(entropy=4.0, entropy_reference=4.0, stationarity=0.8, kept="classical")
    assert steering_verdict("violin", "violin", kept_label="classical", kept_unsteered="classical", **kw).outcome == "success"
    assert steering_verdict("violin", "violin", kept_label="rock", kept_unsteered="classical", **kw).outcome == "attribute_lost"
    # the unsteered run was already "indian": keeping it is enough, changing it is not
    assert steering_verdict("violin", "violin", kept_label="indian", kept_unsteered="indian", **kw).outcome == "success"
    assert steering_verdict("violin", "violin", kept_label="rock", kept_unsteered="indian", **kw).outcome == "attribute_lost"
    assert steering_verdict("violin", "violin", kept_label="rock", kept_unsteered="abstain", **kw).outcome == "success"


def test_the_packaged_judges_are_the_ones_clean_classifier_asks_for(monkeypatch):
    """make demo in a fresh clone: the shipped clean judges load (key and checksum) instead of being trained."""
    import musicgen_lens.eval as ev
    import musicgen_lens.eval.judges as judges

    for concept in ("instrument", "style", "accompaniment"):
        stem, desc = ev.judge_key(kind="clean", concept=concept, n=700, seed=1)
        clf = ev.load_judge(stem, desc, judges.PACKAGED_JUDGES)
        assert len(clf.classes_) >= 2
    monkeypatch.setattr(judges, "_fit_judge", lambda *a, **k: pytest.fail("the packaged judge was not used"))
    monkeypatch.setattr(judges, "_clean_features", lambda *a, **k: pytest.fail("the packaged judge was not used"))
    ev.clean_classifier.cache_clear()
    try:
        assert ev.clean_classifier("style").classes_ is not None
    finally:
        ev.clean_classifier.cache_clear()


def test_the_chain_demo_continues_each_seeds_steered_first_step(monkeypatch):
    """`chain_from`: the first step is the named demo's recommended setting (each seed's steered
    codes), and every setting of the chain's step continues those codes, one row per seed."""
    import musicgen_lens.eval.cli as cli

    calls = []
    first = dict(key="cross_attn_out@1+2:diff_means:2:caption", site="cross_attn_out", layer=[1, 2], head=None, method="diff_means",
                 alpha=2.0, vector_text="caption", success_rate=0.5, collapse_rate=0.0, entropy_ratio=1.0, frechet_ok=True)
    codes = [torch.full((4, 10), i) for i in range(3)]

    def fake_sweep(model, **kw):
        calls.append(kw)
        if kw.get("return_audio"):
            return [dict(first, heard_rate=1.0, codes_steered=codes)]
        if kw.get("on_row") is None:  # the held-out measurement of one setting
            return [dict(state["rows"][0], counts={"success": 1})]
        return []

    monkeypatch.setattr(cli, "steering_sweep", fake_sweep)
    kw = {k: v for k, v in cli.DEMOS["chain_electronic_then_rock"].items() if k != "grids"}
    with pytest.raises(ValueError, match="run that demo first"):
        cli._sweep_part(None, lambda: None, {}, 3, [{}], previous=None, **kw)
    state: dict = {}
    cli._sweep_part(None, lambda: None, state, 3, cli.DEMOS["chain_electronic_then_rock"]["grids"], previous={"rows": [first]}, **kw)
    step1, *step2 = calls
    assert (step1["source"], step1["target"], step1["sites"], step1["layers"], step1["vector_text"]) == (
        "classical", "electronic", ("cross_attn_out",), [[1, 2]], "caption")
    assert len(step2) == 2 and all(torch.equal(c["audio_prompt_codes"], torch.stack(codes)) for c in step2)
    assert all(c["target"] == "rock" and c["start"] == 4.0 and "chain_from" not in c for c in step2)
    assert state["first_step"]["key"] == first["key"] and state["done"]
    assert state["first_step"]["seeds"] == [0, 2] and "held_out" not in state  # the fake grid recommended nothing
    n_calls = len(calls)
    state["rows"] = [dict(first, key="resid_post@3:diff_means:0.5", site="resid_post", layer=3, vector_text=None, n=3, success_rate_se=0.1,
                          kept_rate=1.0, heard_rate=1.0, collapse_rate_se=0.0, frechet_ratio=1.0, tempo_kept=1.0, counts={"success": 1},
                          target="rock", audio_prompt=True, start=4.0, judge="clean")]
    cli._sweep_part(None, lambda: None, state, 3, [{}], previous={"rows": [first]}, **kw)  # resumed, done, with a recommendation
    # held out: the first step again on seeds 3-5, then the chain's recommendation continuing each of those seeds
    grid, held_first, held = calls[n_calls:]
    assert grid.get("on_row") is not None and "audio_prompt_codes" not in grid  # done: the first step is not run again for the grid
    assert (held_first["seed"], held_first["target"], held_first["return_audio"]) == (3, "electronic", True)
    assert (held["seed"], held["target"], held["layers"]) == (3, "rock", [3]) and torch.equal(held["audio_prompt_codes"], torch.stack(codes))
    assert state["held_out"]["seeds"] == [3, 5] and state["held_out"]["first_step"]["seeds"] == [3, 5]
    assert "on held-out seeds 3-5, continuing the `electronic` step run on those seeds" in cli._held_out_note(state, state["recommended"])
    d = cli.steering_defaults({"demos": {"chain_electronic_then_rock": state}}, "fp")["demos"]["chain_electronic_then_rock"]
    assert d["key"] == "resid_post@3:diff_means:0.5" and d["held_out"]["seeds"] == [3, 5] and d["first_step"]["seeds"] == [0, 2]


def test_demo_row_runs_one_setting_of_a_named_demo_and_a_chains_first_step_on_the_same_seeds(monkeypatch):
    """What `make demo` runs: `demo_row` names a demo of `DEMOS` and a setting; a chain runs its first step first."""
    import musicgen_lens.eval.cli as cli

    calls = []
    codes = [torch.full((4, 10), i) for i in range(2)]

    def fake_sweep(model, **kw):
        calls.append(kw)
        return [dict(key="k", success_rate=0.5, heard_rate=1.0, codes_steered=codes)]

    monkeypatch.setattr(cli, "steering_sweep", fake_sweep)
    setting = dict(site="resid_post", layer=2, head=None, method="diff_means", alpha=0.5)
    with pytest.raises(ValueError, match="unknown demo 'violin'.*choose from"):
        cli.demo_row(None, "violin", setting, n=2)
    with pytest.raises(ValueError, match="continues the 'electronic' demo: pass first_setting="):
        cli.demo_row(None, "chain_electronic_then_rock", setting, n=2)
    row, first = cli.demo_row(None, "violin_from_second_5", setting, n=2, seed=16, return_audio=True)
    (call,) = calls
    assert first is None and (call["start"], call["duration"], call["seed"], call["n"], call["return_audio"]) == (5.0, 10.0, 16, 2, True)
    assert (call["sites"], call["layers"], call["methods"], call["alphas"]) == (("resid_post",), [2], ("diff_means",), (0.5,))
    calls.clear()
    row, first = cli.demo_row(None, "chain_electronic_then_rock", setting, n=2, seed=16, first_setting=dict(setting, layer=3))
    step1, step2 = calls
    assert (step1["target"], step1["layers"], step1["seed"]) == ("electronic", [3], 16) and first["seeds"] == [16, 17]
    assert (step2["target"], step2["seed"]) == ("rock", 16) and torch.equal(step2["audio_prompt_codes"], torch.stack(codes))


def test_measuring_some_demos_keeps_the_other_demos_results(tmp_path, monkeypatch, checkpoint_dir):
    """`--demos X` measures X and must not drop the demos already in the results file."""
    import json

    import musicgen_lens.eval as ev
    import musicgen_lens.eval.cli as cli

    def fake_part(model, save, state, n, grids, previous=None, **kw):
        state["rows"], state["done"] = [{"key": kw["target"]}], True
        save()
        return state

    monkeypatch.setattr(cli, "_sweep_part", fake_part)
    monkeypatch.setattr(cli, "markdown", lambda results: "")
    out = tmp_path / "results.json"
    assert ev.main(["demos", "--demos", "tabla", "--model", checkpoint_dir("base"), "--out", str(out)]) == 0
    assert ev.main(["demos", "--demos", "electronic", "--model", checkpoint_dir("base"), "--out", str(out)]) == 0
    assert sorted(json.loads(out.read_text())["demos"]) == ["electronic", "tabla"]


def test_steering_defaults_take_the_clean_judged_text_demo_whatever_order_the_file_has():
    from musicgen_lens.eval.cli import steering_defaults

    def row(judge, success):
        return dict(key=f"resid_post@2:diff_means:0.5:{judge}", site="resid_post", layer=2, head=None, method="diff_means", alpha=0.5,
                    target="xylophone", audio_prompt=False, start=2.0, judge=judge, success_rate=success, collapse_rate=0.0,
                    entropy_ratio=1.0, frechet_ok=True)

    results = {"demos": {"xylophone_text_codec_judge": {"rows": [row("codec", 0.9)]}, "xylophone_text": {"rows": [row("clean", 0.5)]}}}
    d = steering_defaults(results, "fp")
    assert d["recommended"]["xylophone"]["key"].endswith(":clean") and len(d["tables"]["xylophone"]) == 1


def test_a_demos_best_setting_is_measured_again_on_seeds_it_was_not_picked_on(monkeypatch):
    """The best of several settings on seeds 0..n-1 is optimistic: `_sweep_part` re-measures it on
    seeds n..2n-1 once (again when the recommendation changes), and the table and stored defaults say so."""
    import musicgen_lens.eval.cli as cli

    def row(key, alpha, success):
        return dict(key=key, site="cross_attn_out", layer=[1, 2], head=None, method="diff_means", alpha=alpha, vector_text="caption",
                    success_rate=success, success_rate_se=0.1, collapse_rate=0.0, heard_rate=1.0, entropy_ratio=1.0, frechet_ok=True,
                    on_tempo_rate=0.5, counts={"success": 1}, target="tabla", audio_prompt=False, start=2.0, judge="clean",
                    prompt="classical flute melody", duration=4.0, n=16, heard_rate_unsteered=0.0, kept_rate_unsteered=1.0,
                    collapse_rate_se=0.0, kept_rate=1.0, frechet_ratio=1.0, tempo_kept=0.5)

    grid_rows = [row("a", 2.0, 0.25), row("b", 3.0, 0.75)]
    calls = []

    def fake_sweep(model, **kw):
        calls.append(kw)
        if kw.get("on_row") is not None:
            for r in grid_rows:
                if r["key"] not in kw["skip"]:
                    kw["on_row"](r)
            return []
        return [dict(row(f"held:{kw['alphas'][0]:g}", kw["alphas"][0], 0.25), key="b" if kw["alphas"] == (3.0,) else "c")]

    monkeypatch.setattr(cli, "steering_sweep", fake_sweep)
    state: dict = {}
    cli._sweep_part(None, lambda: None, state, 16, [{}], source="", target="tabla")
    held = calls[-1]
    assert held["seed"] == 16 and held["n"] == 16 and held["alphas"] == (3.0,) and held["layers"] == [[1, 2]] and "on_row" not in held
    assert state["held_out"]["key"] == "b" and state["held_out"]["seeds"] == [16, 31] and state["held_out"]["success_rate"] == 0.25
    n_calls = len(calls)
    cli._sweep_part(None, lambda: None, state, 16, [{}], source="", target="tabla")  # resumed: nothing new is measured
    assert all(c.get("on_row") is not None for c in calls[n_calls:])
    note = cli.markdown({"demos": {"tabla": state}})
    assert "best: `b`; on held-out seeds 16-31: success 0.25 ± 0.10 (heard 1.00, unsteered 0.00, collapse 0.00, on tempo 0.50)" in note
    assert state["held_out"]["kept_rate_unsteered"] == 1.0
    d = cli.steering_defaults({"demos": {"tabla": state}}, "fp")
    assert d["recommended"]["tabla"]["key"] == "b" and d["recommended"]["tabla"]["held_out"]["success_rate"] == 0.25
    # a better setting added later changes the recommendation: it is held out again
    grid_rows.append(row("c", 4.0, 0.9))
    cli._sweep_part(None, lambda: None, state, 16, [{}], source="", target="tabla")
    assert calls[-1]["alphas"] == (4.0,) and state["held_out"]["key"] == "c"
