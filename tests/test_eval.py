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

    calls = []
    monkeypatch.setattr(ev, "eval_codec", lambda model: calls.append("codec") or {"instrument_reconstructed": 0.5})
    monkeypatch.setattr(ev, "eval_prompts", lambda model: calls.append("prompts") or {"instrument_accuracy": 0.25})
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
