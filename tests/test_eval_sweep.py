"""musicgen_lens.eval.sweep: the steering sweep's table, its bookkeeping and `recommend`'s rule
(on the tiny random model: the workflow, not the music)."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(autouse=True)
def _judge_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MUSICGEN_LENS_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def small_judges():
    import musicgen_lens.eval as ev

    return {c: ev.clean_classifier(c, n=28, seed=1, cache=False) for c in ("instrument", "style")}


def _patch_judges(monkeypatch, judges):
    monkeypatch.setattr("musicgen_lens.eval.sweep.clean_classifier", lambda concept="instrument": judges[concept])


def test_sweep_table_has_one_row_per_setting_and_consistent_rates(model, monkeypatch, small_judges):
    from musicgen_lens.eval import OUTCOMES, recommend, steering_sweep, sweep_figure, sweep_table_markdown
    from musicgen_lens.eval.sweep import setting_key

    _patch_judges(monkeypatch, small_judges)
    seen = []
    rows = steering_sweep(model, layers=[0, 1], alphas=(0.5, 2.0), methods=("probe",), n=2, start=0.2, duration=0.5,
                          n_clips=3, clip_seconds=0.5, n_reference=4, on_row=seen.append)
    assert len(rows) == 4 and seen == rows
    assert [(r["layer"], r["alpha"]) for r in rows] == [(0, 0.5), (0, 2.0), (1, 0.5), (1, 2.0)]
    assert len({r["key"] for r in rows}) == 4 and all(r["key"] == setting_key(r) for r in rows)
    for r in rows:
        assert r["n"] == 2 and sum(r["counts"].values()) == 2 and set(r["outcomes"]) <= set(OUTCOMES)
        rates = [r[f"{o}_rate"] for o in ("collapse", "not_heard", "abstain", "attribute_lost", "off_tempo")] + [r["success_rate_per_clip"]]
        assert abs(sum(rates) - 1) < 1e-9
        assert 0 <= r["success_rate"] <= r["success_rate_per_clip"] <= r["heard_rate"] + r["collapse_rate"] + 1e-9
        for key in ("success_rate_se", "collapse_rate_se", "heard_rate_se"):
            p = r[key.removesuffix("_se")]
            assert r[key] == pytest.approx(np.sqrt(p * (1 - p) / 2))
        assert np.isfinite(r["entropy_ratio"]) and r["entropy_ratio"] > 0 and r["frames_before_start_identical"] == 1.0
        # how far the sound moved towards the target's real clips (`toward_target`), over all seeds and over the successes
        assert np.isfinite(r["moved"]) and (r["moved_successes"] is None) == (r["counts"]["success"] == 0)
        assert len(r["moved_per_seed"]) == 2 and r["moved"] == pytest.approx(np.mean(r["moved_per_seed"]))
    # resuming: measured settings are skipped, and nothing runs when every one is
    again = steering_sweep(model, layers=[0, 1], alphas=(0.5, 2.0), methods=("probe",), n=2, start=0.2, duration=0.5,
                           n_clips=3, clip_seconds=0.5, n_reference=4, skip={r["key"] for r in rows})
    assert again == []
    md = sweep_table_markdown(rows)
    assert md.count("\n") == len(rows) + 1
    fig = sweep_figure(rows)
    assert len(fig.axes) == 3  # success rate, heard rate, moved towards the target
    assert len(fig.axes[2].lines) + len(fig.axes[2].containers) >= len(rows)  # every row with a move is drawn
    best = recommend(rows)
    assert best is None or best in rows


def test_sweep_per_head_rows_and_accompaniment_concept(model, monkeypatch, small_judges):
    from musicgen_lens.eval import steering_sweep

    judges = dict(small_judges, accompaniment=small_judges["instrument"])
    _patch_judges(monkeypatch, judges)
    rows = steering_sweep(model, layers=[1], alphas=(1.0,), sites=("attn.z",), heads=[0, 1], methods=("diff_means",), n=2,
                          start=0.2, duration=0.4, n_clips=3, clip_seconds=0.5, n_reference=4)
    assert [r["key"] for r in rows] == ["attn.z@1h0:diff_means:1", "attn.z@1h1:diff_means:1"]
    rows = steering_sweep(model, "", "tabla", concept="accompaniment", instrument="flute", layers=[0], alphas=(0.5,),
                          methods=("probe",), n=2, start=0.2, duration=0.4, n_clips=3, clip_seconds=0.5, n_reference=4)
    assert rows[0]["prompt"] == "classical flute melody" and rows[0]["n"] == 2
    assert rows[0]["on_tempo_rate"] is None and rows[0]["tempo_bpm"] is None  # no known tempo: not checked
    # a known tempo: each steered window's beat test, in the verdict and the row
    rows = steering_sweep(model, "", "tabla", concept="accompaniment", instrument="flute", layers=[0], alphas=(0.5,),
                          methods=("probe",), n=2, start=0.2, duration=1.6, n_clips=3, clip_seconds=0.5, n_reference=4, tempo_bpm=100.0)
    r = rows[0]
    assert r["tempo_bpm"] == 100.0 and r["on_tempo_rate"] in (0.0, 0.5, 1.0) and 0.0 <= r["beat_rank"] <= 1.0
    assert 0.0 <= r["on_tempo_rate_unsteered"] <= 1.0
    assert r["counts"]["off_tempo"] <= round((1 - r["on_tempo_rate"]) * 2)
    with pytest.raises(ValueError, match="too short for a beat test"):
        steering_sweep(model, "", "tabla", concept="accompaniment", instrument="flute", layers=[0], alphas=(0.5,),
                       methods=("probe",), n=2, start=0.2, duration=0.6, n_clips=3, clip_seconds=0.5, n_reference=4, tempo_bpm=100.0)


def test_a_tuple_of_layers_is_one_setting_that_steers_each_layer_with_its_own_vector(model, monkeypatch, small_judges):
    from musicgen_lens.eval import recommend, steering_sweep
    from musicgen_lens.eval.sweep import setting_key

    _patch_judges(monkeypatch, small_judges)
    calls = []
    generate = model.generate

    def spy(*args, steering=None, **kw):
        calls.append(None if steering is None else [(iv.vector.layer, iv.alpha) for iv in steering])
        return generate(*args, steering=steering, **kw)

    monkeypatch.setattr(model, "generate", spy)
    rows = steering_sweep(model, layers=[(0, 1), 1], alphas=(0.5,), methods=("diff_means",), n=2, start=0.2, duration=0.4,
                          n_clips=3, clip_seconds=0.5, n_reference=4)
    assert [r["key"] for r in rows] == ["resid_post@0+1:diff_means:0.5", "resid_post@1:diff_means:0.5"]
    assert rows[0]["layer"] == [0, 1] and rows[1]["layer"] == 1 and setting_key(rows[0]) == rows[0]["key"]
    assert calls == [None, [(0, 0.5), (1, 0.5)], [(1, 0.5)]]  # unsteered once, then both layers together
    assert recommend([dict(r, success_rate=0.5, collapse_rate=0.0, entropy_ratio=1.0, frechet_ok=True) for r in rows]) is not None


def _row(key, success, alpha, collapse=0.0, entropy_ratio=1.0, frechet_ok=True, layer=0):
    return dict(key=key, success_rate=success, alpha=alpha, collapse_rate=collapse, entropy_ratio=entropy_ratio, frechet_ok=frechet_ok, layer=layer)


def test_recommend_takes_the_best_success_within_the_quality_tolerance_and_the_lower_alpha_on_ties():
    from musicgen_lens.eval import Tolerance, recommend

    rows = [
        _row("drone", 0.9, 1.0, collapse=0.8, entropy_ratio=0.6),  # the judge hears it, but it collapsed
        _row("off-manifold", 0.8, 1.0, frechet_ok=False),
        _row("strong", 0.5, 1.0, layer=1),
        _row("gentle", 0.5, 0.5, layer=2),
        _row("weak", 0.25, 0.25),
    ]
    assert recommend(rows)["key"] == "gentle"
    assert recommend(rows, Tolerance(entropy_ratio=0.5), max_collapse_rate=1.0)["key"] == "drone"
    assert recommend([_row("nothing", 0.0, 0.5), _row("drone", 1.0, 1.0, collapse=1.0, entropy_ratio=0.3)]) is None
    assert recommend([]) is None


def test_the_prompted_reference_row_and_caption_vectors(model, monkeypatch, small_judges):
    """`prompted=True`: a first row generated with the target in the prompt (no steering), judged
    against the same unsteered runs, never recommended; `vector_text="caption"` reads the vectors
    with each clip's caption and says so in the key."""
    from musicgen_lens.data import caption
    from musicgen_lens.eval import recommend, steering_sweep
    from musicgen_lens.eval.sweep import PROMPTED, setting_key
    import musicgen_lens.recipes as recipes

    _patch_judges(monkeypatch, small_judges)
    prompts, texts = [], []
    generate, concept_vector = model.generate, recipes.concept_vector

    def spy(prompt, *args, steering=None, **kw):
        prompts.append((prompt[0], steering is not None))
        return generate(prompt, *args, steering=steering, **kw)

    def spy_cv(*args, text=None, **kw):
        texts.append(text)
        return concept_vector(*args, text=text, **kw)

    monkeypatch.setattr(model, "generate", spy)
    monkeypatch.setattr(recipes, "concept_vector", spy_cv)
    rows = steering_sweep(model, layers=[(0, 1)], alphas=(1.0,), sites=("cross_attn_out",), methods=("diff_means",), n=2, start=0.2,
                          duration=0.4, n_clips=3, clip_seconds=0.5, n_reference=4, vector_text="caption", prompted=True)
    assert [r["key"] for r in rows] == ["prompted: classical violin melody", "cross_attn_out@0+1:diff_means:1:caption"]
    assert prompts == [("classical trumpet melody", False), ("classical violin melody", False), ("classical trumpet melody", True)]
    assert texts == [caption, caption]  # one vector per layer, both read with the captions
    ref = rows[0]
    assert ref["method"] == PROMPTED and ref["source_prompt"] == "classical trumpet melody" and setting_key(ref) == ref["key"]
    assert ref["n"] == 2 and sum(ref["counts"].values()) == 2
    # the reference is never the recommendation, however well it does
    best = recommend([dict(r, success_rate=1.0 if r is ref else 0.5, collapse_rate=0.0, entropy_ratio=1.0, frechet_ok=True) for r in rows])
    assert best["key"] == rows[1]["key"]
    # resumable: nothing runs again
    assert steering_sweep(model, layers=[(0, 1)], alphas=(1.0,), sites=("cross_attn_out",), methods=("diff_means",), n=2, start=0.2,
                          duration=0.4, n_clips=3, clip_seconds=0.5, n_reference=4, vector_text="caption", prompted=True,
                          skip={r["key"] for r in rows}) == []
    with pytest.raises(ValueError, match="vector_text must be one of"):
        steering_sweep(model, layers=[0], alphas=(1.0,), n=2, vector_text="captions")


def test_target_prompt_swaps_the_source_word_or_adds_the_accompaniment():
    from musicgen_lens.eval.sweep import _task, target_prompt

    task = _task("instrument", "trumpet", "violin", "classical", "trumpet")
    assert target_prompt(task, "classical trumpet melody", "trumpet", "violin") == "classical violin melody"
    style = _task("style", "classical", "electronic", "classical", "trumpet")
    assert target_prompt(style, "classical trumpet melody", "classical", "electronic") == "electronic trumpet melody"
    acc = _task("accompaniment", "", "tabla", "classical", "flute")
    assert target_prompt(acc, "classical flute melody at 100 BPM in D major", "", "tabla") == "classical flute melody at 100 BPM in D major with tabla"
    with pytest.raises(ValueError, match="source 'trumpet' as a word of the prompt"):
        target_prompt(task, "a brass melody", "trumpet", "violin")


def test_a_sweep_can_continue_one_prompt_of_codes_per_seed(model, monkeypatch, small_judges):
    """`audio_prompt_codes` [n, K, T]: seed i continues row i (a chain's next step continues each
    seed's steered codes); the prompt's frames come back unchanged and both runs share them."""
    import torch

    from musicgen_lens.eval import steering_sweep

    _patch_judges(monkeypatch, small_judges)
    K, T = model.cfg.n_codebooks, int(0.2 * model.frame_rate)
    prompts = torch.randint(0, model.cfg.d_vocab, (2, K, T), generator=torch.Generator().manual_seed(0))
    seen = []
    generate = model.generate

    def spy(*args, audio_prompt_codes=None, **kw):
        seen.append(None if audio_prompt_codes is None else audio_prompt_codes.clone())
        return generate(*args, audio_prompt_codes=audio_prompt_codes, **kw)

    monkeypatch.setattr(model, "generate", spy)
    (row,) = steering_sweep(model, layers=[0], alphas=(1.0,), methods=("diff_means",), n=2, start=0.2, duration=0.4, n_clips=3,
                            clip_seconds=0.5, n_reference=4, audio_prompt_codes=prompts, return_audio=True)
    assert len(seen) == 2 and all(torch.equal(s, prompts) for s in seen)  # unsteered and steered, one row per seed
    assert row["audio_prompt"] and row["frames_before_start_identical"] == 1.0
    for i in range(2):
        assert torch.equal(row["codes_unsteered"][i][:, :T], prompts[i]) and torch.equal(row["codes_steered"][i][:, :T], prompts[i])
    with pytest.raises(ValueError, match=r"one row per seed"):
        steering_sweep(model, layers=[0], alphas=(1.0,), n=3, start=0.2, duration=0.4, audio_prompt_codes=prompts)
    with pytest.raises(ValueError, match="not both"):
        steering_sweep(model, layers=[0], alphas=(1.0,), n=2, start=0.2, duration=0.4, audio_prompt_codes=prompts,
                       audio_prompt=np.zeros((1, 3200), dtype=np.float32), audio_prompt_sr=model.sample_rate)


def test_a_fusion_is_heard_when_its_two_genres_are_the_judges_top_two(small_judges):
    from musicgen_lens.eval.judges import ABSTAIN, FusionJudge

    judge = small_judges["style"]
    classes = list(judge.classes_)
    fusion = FusionJudge(judge, ("rock", "jazz"))
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, judge.pipeline.n_features_in_)) * 0.5
    got = fusion.predict_features(X)
    own = judge.predict_features(X)
    top2 = np.argsort(-judge.pipeline.predict_proba(X), axis=1)[:, :2]
    want = np.array(["rock+jazz" if {classes[a], classes[b]} == {"rock", "jazz"} and o != ABSTAIN else o for (a, b), o in zip(top2, own)], dtype=object)
    assert list(got) == list(want) and fusion.standardize(X).shape == X.shape  # the rest is the wrapped judge's
    with pytest.raises(ValueError, match="two of the judge's classes"):
        FusionJudge(judge, ("rock", "polka"))


def test_a_fusion_sweep_steers_with_the_mean_of_the_genres_vectors(model, monkeypatch, small_judges):
    import torch

    import musicgen_lens.recipes as recipes
    from musicgen_lens.eval import steering_sweep

    _patch_judges(monkeypatch, small_judges)
    made = []
    concept_vector = recipes.concept_vector

    def spy(model, pos, neg, **kw):
        cv = concept_vector(model, pos, neg, **kw)
        made.append((pos[0].style, neg[0].style, cv.vector.vector.clone()))
        return cv

    monkeypatch.setattr(recipes, "concept_vector", spy)
    steered = []
    generate = model.generate
    monkeypatch.setattr(model, "generate", lambda *a, steering=None, **kw: (steered.append(steering), generate(*a, steering=steering, **kw))[1])
    rows = steering_sweep(model, "classical", "rock+jazz", concept="fusion", instrument="trumpet", layers=[1], alphas=(1.0,),
                          methods=("diff_means",), n=2, start=0.2, duration=0.4, n_clips=3, clip_seconds=0.5, n_reference=4, prompted=True)
    assert [r["key"] for r in rows] == ["resid_post@1:diff_means:1"]  # no prompted row: no caption names two styles
    assert [(a, b) for a, b, _ in made] == [("rock", "classical"), ("jazz", "classical")]
    (iv,) = steered[-1]
    assert iv.mode == "add" and torch.allclose(iv.vector.vector, (made[0][2] + made[1][2]) / 2)
    assert rows[0]["prompt"] == "classical trumpet melody" and set(rows[0]["labels"]) <= set(small_judges["style"].classes_) | {"rock+jazz", "abstain"}


def test_a_layer_shared_by_several_settings_is_read_from_the_clips_once(model, monkeypatch, small_judges):
    import musicgen_lens.recipes as recipes
    from musicgen_lens.eval import steering_sweep

    _patch_judges(monkeypatch, small_judges)
    layers = []
    concept_vector = recipes.concept_vector
    monkeypatch.setattr(recipes, "concept_vector", lambda *a, layer, **kw: (layers.append(layer), concept_vector(*a, layer=layer, **kw))[1])
    rows = steering_sweep(model, layers=[(0, 1), 1, (1, 0)], alphas=(0.5,), methods=("diff_means",), n=2, start=0.2, duration=0.4,
                          n_clips=3, clip_seconds=0.5, n_reference=4)
    assert len(rows) == 3 and sorted(layers) == [0, 1]  # three settings, two vectors
