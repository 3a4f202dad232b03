"""The patching engine and its named sweeps (musicgen_lens.patching.engine / .sweeps) on tiny random models."""

from __future__ import annotations

import pytest
import torch
import transformer_lens.patching as tlp

from musicgen_lens import patching as P

from helpers import PROMPTS, random_codes
from patching_helpers import data, m64, one_thread, KW, POS, run_metric  # noqa: F401 (fixtures)


SITES = ["resid_pre", "resid_mid_cross", "mlp_out", "attn.z", "attn.pattern", "cross_attn.q", "cross_attn.v", "codebook_embed", "cond"]


@pytest.mark.parametrize("site", SITES)
def test_patching_own_values_gives_unpatched_metric(m64, data, site):
    """Patching a run with its own activations (clean into clean) leaves the metric unchanged everywhere."""
    clean, _, cond = data
    metric = P.code_logprob(clean)
    expected = run_metric(m64, metric, clean, cond)
    for direction in ("denoise", "noise"):
        r = P.patch_site(m64, clean, clean, metric, site, clean_cond=cond, corrupted_cond=cond, direction=direction, chunk_size=5, **KW)
        assert r.clean_metric == pytest.approx(expected, abs=1e-12) and r.corrupted_metric == pytest.approx(expected, abs=1e-12)
        torch.testing.assert_close(r.values, torch.full(r.shape, expected, dtype=r.values.dtype), atol=1e-10, rtol=0)
    windows = P.patch_windows(m64, clean, clean, metric, [(-0.1, 0.0), (0.0, 0.1), (0.1, 1.0)], clean_cond=cond, corrupted_cond=cond, **KW)
    torch.testing.assert_close(windows.values, torch.full(windows.shape, expected, dtype=windows.values.dtype), atol=1e-10, rtol=0)


def test_full_patches_give_clean_or_corrupted_metric(m64, data):
    clean, corrupted, cond = data
    metric = P.code_logprob(clean)
    m_clean, m_corr = run_metric(m64, metric, clean, cond), run_metric(m64, metric, corrupted, cond)
    # resid_pre of layer 0 at every position is the whole input (same text): clean metric when denoising,
    # corrupted when noising; likewise a window covering every position, at every layer
    r = P.patch_resid(m64, clean, corrupted, metric, clean_cond=cond, corrupted_cond=cond, per_position=False, **KW)
    assert r.axes == ("layer",) and float(r.values[0]) == pytest.approx(m_clean, abs=1e-10)
    r = P.patch_resid(m64, clean, corrupted, metric, clean_cond=cond, corrupted_cond=cond, per_position=False, direction="noise", **KW)
    assert float(r.values[0]) == pytest.approx(m_corr, abs=1e-10)
    w = P.patch_windows(m64, clean, corrupted, metric, [(-10.0, 10.0)], site="resid_post", clean_cond=cond, corrupted_cond=cond, **KW)
    assert w.axes == ("layer", "window") and w.labels["window"] == [(-10.0, 10.0)]
    assert float(w.values[-1, 0]) == pytest.approx(m_clean, abs=1e-10)
    n = r.normalized()  # noising: patched == corrupted -> 0
    assert float(n.values[0]) == pytest.approx(0.0, abs=1e-8)
    assert float(P.patch_resid(m64, clean, corrupted, metric, clean_cond=cond, corrupted_cond=cond, per_position=False, normalize=True, **KW).values[0]) == pytest.approx(1.0, abs=1e-8)


def test_self_attention_heads_of_layer_0_ignore_the_text(m64, data):
    """Same codes, different prompts: layer-0 self-attention is identical in both runs, so patching it does nothing."""
    clean, _, cond = data
    other = m64.condition(["violin", "jazz piano"])
    metric = P.code_logprob(clean)
    m_corr = run_metric(m64, metric, clean, other)
    for act in ("z", "q", "k", "v", "pattern"):
        r = P.patch_heads(m64, clean, clean, metric, clean_cond=cond, corrupted_cond=other, act=act, layers=[0], **KW)
        torch.testing.assert_close(r.values, torch.full((1, 4), m_corr, dtype=r.values.dtype), atol=1e-10, rtol=0)
    cross = P.patch_heads(m64, clean, clean, metric, clean_cond=cond, corrupted_cond=other, which="cross_attn", **KW)
    assert cross.shape == (2, 4) and (cross.values - m_corr).abs().max() > 1e-6


def test_chunking_does_not_change_results(m64, data):
    clean, corrupted, cond = data
    metric = P.code_logprob(clean)
    a = P.patch_heads(m64, clean, corrupted, metric, clean_cond=cond, corrupted_cond=cond, per_position=True, chunk_size=1, **KW)
    b = P.patch_heads(m64, clean, corrupted, metric, clean_cond=cond, corrupted_cond=cond, per_position=True, chunk_size=13, **KW)
    assert a.axes == ("layer", "pos", "head") and a.shape == (2, POS, 4)
    torch.testing.assert_close(a.values, b.values, atol=1e-10, rtol=0)


def test_matches_transformer_lens(model):
    clean, corrupted = random_codes(model, batch=2, pos=12, seed=0), random_codes(model, batch=2, pos=12, seed=1)
    clean_cond = model.condition(PROMPTS)
    corrupted_cond = model.condition(["violin", "jazz"])
    metric = P.code_logprob(clean)
    kw = dict(clean_cond=clean_cond, corrupted_cond=corrupted_cond, **KW)
    with torch.no_grad():
        _, clean_cache = model.run_with_cache(clean, clean_cond)
        _, corrupted_cache = model.run_with_cache(corrupted, corrupted_cond)
        with model.conditioning(corrupted_cond):
            tl = tlp.get_act_patch_resid_pre(model, corrupted, clean_cache, metric)
            tl_heads = tlp.get_act_patch_attn_head_out_all_pos(model, corrupted, clean_cache, metric)
            tl_pattern = tlp.get_act_patch_attn_head_pattern_by_pos(model, corrupted, clean_cache, metric)
        with model.conditioning(clean_cond):
            tl_noise = tlp.get_act_patch_resid_pre(model, clean, corrupted_cache, metric)
    ours = P.patch_resid(model, clean, corrupted, metric, **kw)
    assert ours.axes == ("layer", "pos") and ours.labels == {"layer": [0, 1], "pos": list(range(12))}
    torch.testing.assert_close(ours.values, tl, atol=2e-6, rtol=0)
    torch.testing.assert_close(P.patch_resid(model, clean, corrupted, metric, direction="noise", **kw).values, tl_noise, atol=2e-6, rtol=0)
    torch.testing.assert_close(P.patch_heads(model, clean, corrupted, metric, **kw).values, tl_heads, atol=2e-6, rtol=0)
    pattern = P.patch_heads(model, clean, corrupted, metric, act="pattern", per_position=True, **kw)
    assert pattern.axes == ("layer", "head", "pos")
    torch.testing.assert_close(pattern.values, tl_pattern, atol=2e-6, rtol=0)
    # backend="transformer_lens" calls it for us
    via_tl = P.patch_resid(model, clean, corrupted, metric, backend="transformer_lens", **kw)
    torch.testing.assert_close(via_tl.values, ours.values, atol=2e-6, rtol=0)
    assert via_tl.axes == ours.axes and via_tl.clean_metric == ours.clean_metric
    via_tl = P.patch_heads(model, clean, corrupted, metric, act="pattern", per_position=True, backend="transformer_lens", **kw)
    torch.testing.assert_close(via_tl.values, pattern.values, atol=2e-6, rtol=0)
    assert via_tl.axes == pattern.axes


@pytest.mark.parametrize("prompts", [("trumpet", "violin"), ("violin", PROMPTS[0]), (PROMPTS[0], "violin")])
def test_swapping_the_conditioning_equals_running_the_other_prompt(m64, data, prompts):
    clean, _, _ = data
    a, b = prompts  # different text lengths in the last two cases
    metric = P.code_logprob(clean)
    with_a, with_b = (run_metric(m64, metric, clean, m64.condition([text]).repeat(2)) for text in (a, b))
    r = P.patch_conditioning(m64, clean, [a], [b], metric, **KW)
    assert r.axes == () and r.item() == pytest.approx(with_a, abs=1e-10)
    assert r.clean_metric == pytest.approx(with_a, abs=1e-10) and r.corrupted_metric == pytest.approx(with_b, abs=1e-10)
    assert P.patch_conditioning(m64, clean, [a], [b], metric, direction="noise", **KW).item() == pytest.approx(with_b, abs=1e-10)
    layers = P.patch_conditioning(m64, clean, [a], [b], metric, mode="layer", **KW)
    assert layers.axes == ("layer",) and layers.shape == (2,)
    # layer-wise: the same as patching hook_cross_attn_out at every position
    same = P.patch_resid(m64, clean, clean, metric, site="cross_attn_out", per_position=False, clean_cond=[a], corrupted_cond=[b], **KW)
    torch.testing.assert_close(layers.values, same.values, atol=1e-10, rtol=0)
    if a != "trumpet":
        # cross-attention heads with different text lengths: k/v over the padded text axis
        kv = P.patch_heads(m64, clean, clean, metric, clean_cond=[a], corrupted_cond=[b], which="cross_attn", act="v", per_position=True, **KW)
        assert kv.axes == ("layer", "text_pos", "head") and kv.shape[1] == max(len(a.split()), len(b.split())) + 1


def test_errors(m64, data):
    clean, corrupted, cond = data
    metric = P.code_logprob(clean)
    with pytest.raises(ValueError, match="same shape"):
        P.patch_resid(m64, clean, corrupted[..., :-1], metric, **KW)
    with pytest.raises(ValueError, match=r"unknown site 'resid_pr'.*resid_pre"):
        P.patch_site(m64, clean, corrupted, metric, "resid_pr", **KW)
    with pytest.raises(ValueError, match="patch_resid site"):
        P.patch_resid(m64, clean, corrupted, metric, site="attn.z", **KW)
    with pytest.raises(ValueError, match="direction"):
        P.patch_resid(m64, clean, corrupted, metric, direction="both", **KW)
    with pytest.raises(ValueError, match="n_codebooks"):
        P.patch_resid(m64, clean[:, :2], corrupted[:, :2], metric, **KW)
    with pytest.raises(ValueError, match="batch"):
        P.patch_resid(m64, clean, corrupted, metric, clean_cond=m64.condition(["a", "b", "c"]), **KW)
    with pytest.raises(ValueError, match="out of range"):
        P.patch_heads(m64, clean, corrupted, metric, layers=[5], **KW)
    with pytest.raises(ValueError, match="windows"):
        P.patch_heads(m64, clean, corrupted, metric, which="cross_attn", act="k", per_position=True, windows=[(0, 1)], **KW)
    with pytest.raises(ValueError, match="positions= or windows="):
        P.patch_resid(m64, clean, corrupted, metric, positions=[1], windows=[(0, 1)], **KW)
    with pytest.raises(ValueError, match="start < end"):
        P.patch_windows(m64, clean, corrupted, metric, [(1.0, 0.5)], **KW)
    with pytest.raises(ValueError, match="sweeps every"):
        P.patch_resid(m64, clean, corrupted, metric, layers=[0], backend="transformer_lens", **KW)
    with pytest.raises(ValueError, match="scalar"):
        P.patch_resid(m64, clean, corrupted, lambda logits: logits.mean(dim=(1, 2, 3)), **KW)
    with pytest.raises(ValueError, match="chunk_size"):
        P.patch_resid(m64, clean, corrupted, metric, chunk_size=0, **KW)
    with pytest.raises(ValueError, match="unknown receiver"):
        P.path_patch(m64, clean, corrupted, metric, sender=("attn", 0, 0), receivers=[("logits", 0)], **KW)
    with pytest.raises(ValueError, match="sender"):
        P.path_patch(m64, clean, corrupted, metric, sender=("attn_heads", 0, 0), receivers=[("resid_pre", 1)], **KW)
    m64.train()
    try:
        with pytest.raises(RuntimeError, match="eval"):
            P.patch_resid(m64, clean, corrupted, metric, **KW)
    finally:
        m64.eval()
