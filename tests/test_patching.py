"""Activation, attribution and path patching (musicgen_lens.patching) on tiny random models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformer_lens.patching as tlp
from matplotlib.figure import Figure

from musicgen_lens import Conditioning, HookedMusicGen
from musicgen_lens import patching as P

from helpers import PROMPTS, random_codes

POS = 14  # decoder positions: with 4 codebooks (max_delay 3) and 50 frames/s, -0.06 s to 0.2 s


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # These models are tiny: one thread avoids thread-pool stalls on a shared, busy CPU.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def m64(checkpoint_dir) -> HookedMusicGen:
    """float64 copy of the base model with larger weights, so that patching effects are far above rounding."""
    m = HookedMusicGen.from_pretrained(checkpoint_dir("base"), device="cpu", dtype=torch.float64).eval()
    m.init_weights(std=0.15, seed=1)
    return m


@pytest.fixture(scope="module")
def data(m64):
    clean = random_codes(m64, batch=2, pos=POS, seed=0)
    corrupted = random_codes(m64, batch=2, pos=POS, seed=1)
    cond = m64.condition(PROMPTS)
    return clean, corrupted, cond


def run_metric(model, metric, codes, cond, fwd_hooks=()):
    with torch.no_grad():
        return float(metric(model.run_with_hooks(codes, cond, fwd_hooks=list(fwd_hooks))))


KW = dict(progress=False)

# ------------------------------------------------------------------------------ metrics


def test_metrics(m64, data):
    clean, corrupted, cond = data
    with torch.no_grad():
        logits = m64(clean, cond)
    torch.testing.assert_close(P.code_logprob(clean)(logits), -m64.loss_fn(logits, clean))
    per_k = m64.loss_fn(logits, clean, per_codebook=True)
    torch.testing.assert_close(P.code_logprob(clean, codebook=2)(logits), -per_k[2])
    assert float(P.kl_to(logits)(logits)) == pytest.approx(0.0, abs=1e-12)
    with torch.no_grad():
        other = m64(corrupted, cond)
    assert float(P.kl_to(logits)(other)) > 0
    # logit diff by hand at codebook 1: logits at t predict codes at t+1; pads excluded
    ld = P.logit_diff(clean, corrupted, codebook=1)(logits)
    c, x = clean[:, 1, 1:], corrupted[:, 1, 1:]
    v = m64.cfg.d_vocab
    diffs = [
        float(logits[b, 1, t, c[b, t]] - logits[b, 1, t, x[b, t]])
        for b in range(2)
        for t in range(POS - 1)
        if c[b, t] != x[b, t] and c[b, t] < v and x[b, t] < v
    ]
    assert float(ld) == pytest.approx(float(np.mean(diffs)), abs=1e-10)
    with pytest.raises(ValueError, match="agree at every target"):
        P.logit_diff(clean, clean)


# ------------------------------------------------------------------------------ identity / exactness


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


def test_codebook_patch_restores_exactly_the_changed_codebook(m64, data):
    clean, _, cond = data
    corrupted = clean.clone()
    corrupted[:, 2] = random_codes(m64, batch=2, pos=POS, seed=7)[:, 2]
    metric = P.code_logprob(clean)
    m_clean, m_corr = run_metric(m64, metric, clean, cond), run_metric(m64, metric, corrupted, cond)
    r = P.patch_codebooks(m64, clean, corrupted, metric, clean_cond=cond, corrupted_cond=cond, **KW)
    assert r.axes == ("codebook",) and r.labels["codebook"] == [0, 1, 2, 3]
    expected = torch.tensor([m_corr, m_corr, m_clean, m_corr], dtype=r.values.dtype)
    torch.testing.assert_close(r.values, expected, atol=1e-10, rtol=0)
    per_pos = P.patch_codebooks(m64, clean, corrupted, metric, clean_cond=cond, corrupted_cond=cond, per_position=True, **KW)
    assert per_pos.axes == ("codebook", "pos") and per_pos.shape == (4, POS)
    torch.testing.assert_close(per_pos.values[[0, 1, 3]], torch.full((3, POS), m_corr, dtype=r.values.dtype), atol=1e-10, rtol=0)


def test_windows_select_positions_by_seconds(m64, data):
    clean, corrupted, cond = data
    # codes identical up to position 8: patching any position before it changes nothing
    corrupted = torch.cat([clean[..., :8], corrupted[..., 8:]], dim=-1)
    metric = P.code_logprob(clean)
    m_corr = run_metric(m64, metric, corrupted, cond)
    seconds = P.position_seconds(m64, POS)
    assert float(seconds[m64.ctx.max_delay]) == 0.0 and float(seconds[1] - seconds[0]) == pytest.approx(1 / m64.cfg.frame_rate)
    early, late = (-1.0, float(seconds[8])), (float(seconds[8]), 1.0)  # positions 0-7, positions 8-13
    r = P.patch_windows(m64, clean, corrupted, metric, [early, late], clean_cond=cond, corrupted_cond=cond, **KW)
    torch.testing.assert_close(r.values[:, 0], torch.full((2,), m_corr, dtype=r.values.dtype), atol=1e-10, rtol=0)
    # the late window equals patching positions 8..13 together, done by hand
    src = {}
    with torch.no_grad():
        m64.run_with_hooks(clean, cond, fwd_hooks=[("blocks.1.hook_resid_pre", lambda a, hook: src.__setitem__("a", a.clone()))])

    def put(act, hook):
        act = act.clone()
        act[:, 8:] = src["a"][:, 8:]
        return act

    assert float(r.values[1, 1]) == pytest.approx(run_metric(m64, metric, corrupted, cond, [("blocks.1.hook_resid_pre", put)]), abs=1e-10)
    with pytest.raises(ValueError, match="contains no position"):
        P.patch_windows(m64, clean, corrupted, metric, [(5.0, 6.0)], clean_cond=cond, corrupted_cond=cond, **KW)


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


# ------------------------------------------------------------------------------ TransformerLens parity


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


# ------------------------------------------------------------------------------ text conditioning


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


# ------------------------------------------------------------------------------ probes as metrics


class DuckProbe:
    """Anything with decision_function works (here: a fixed linear map)."""

    def __init__(self, w):
        self.w = w

    def decision_function(self, X):
        return X @ self.w


def test_probe_score_reads_the_patched_run(m64, data):
    clean, corrupted, cond = data
    d = m64.cfg.d_model
    w = torch.randn(d, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    hook = "blocks.1.hook_resid_post"
    for probe in (w, DuckProbe(w.numpy())):
        metric = P.probe_score(probe, hook)
        with torch.no_grad():
            _, cache = m64.run_with_cache(clean, cond, names_filter=[hook])
        expected = float((cache[hook] @ w).mean())
        r = P.patch_resid(m64, clean, corrupted, metric, clean_cond=cond, corrupted_cond=cond, per_position=False, **KW)
        assert r.clean_metric == pytest.approx(expected, abs=1e-9)
        assert float(r.values[0]) == pytest.approx(expected, abs=1e-9)  # layer 0, all positions: the clean run
        # a probe on the patched hook itself sees the patch
        own = P.patch_resid(m64, clean, corrupted, P.probe_score(probe, "blocks.1.hook_resid_pre"), clean_cond=cond, corrupted_cond=cond, per_position=False, layers=[1], **KW)
        assert float(own.values[0]) == pytest.approx(own.clean_metric, abs=1e-9)
    with pytest.raises(ValueError, match="transformer_lens"):
        P.patch_resid(m64, clean, corrupted, P.probe_score(w, hook), clean_cond=cond, corrupted_cond=cond, backend="transformer_lens", **KW)
    with pytest.raises(TypeError, match="decision_function"):
        P.probe_score(object(), hook)
    with pytest.raises(TypeError, match="differentiable"):
        P.attribution_patch(m64, clean, corrupted, P.probe_score(DuckProbe(w.numpy()), hook), clean_cond=cond, corrupted_cond=cond)


# ------------------------------------------------------------------------------ attribution patching


def test_attribution_patching_matches_patching_for_small_perturbations(m64, data):
    """Linearised regime: clean and corrupted differ by a tiny change of the text states."""
    clean, _, _ = data
    c1 = m64.condition(["trumpet", "violin"])
    noise = torch.randn(c1.states.shape, generator=torch.Generator().manual_seed(0), dtype=c1.states.dtype)
    c2 = Conditioning(c1.states + 1e-5 * noise, c1.mask)
    metric = P.code_logprob(clean)
    kw = dict(clean_cond=c1, corrupted_cond=c2)
    sites = ["resid_pre", "mlp_out", "attn.z", "cross_attn.z", "cross_attn.v", "attn.pattern", "codebook_embed", "cond"]
    attr = P.attribution_patch(m64, clean, clean, metric, sites, **kw)
    for site in sites:
        real = P.patch_site(m64, clean, clean, metric, site, **kw, **KW).effect()
        est = attr[site]
        assert est.axes == real.axes and est.quantity == "change", site
        scale = real.values.abs().max()
        assert scale > 0 or site == "codebook_embed", site  # same codes: embeddings do not change
        torch.testing.assert_close(est.values, real.values, atol=1e-3 * float(scale) + 1e-12, rtol=0, msg=lambda m: f"{site}: {m}")
    check = P.check_attribution(m64, clean, clean, metric, "cross_attn.z", n_samples=6, **kw)
    assert check.correlation > 0.999 and len(check.cells) == 6 and check.axes == ("layer", "head")
    # larger differences (different codes): first order only, still strongly correlated
    _, corrupted, cond = data
    loose = P.check_attribution(m64, clean, corrupted, metric, "attn.z", clean_cond=cond, corrupted_cond=cond, n_samples=8)
    assert loose.correlation > 0.5


# ------------------------------------------------------------------------------ path patching


def test_path_patching_equals_plain_patching_into_the_next_residual(m64, data):
    clean, corrupted, cond = data
    other = m64.condition(["violin", "jazz piano"])
    metric = P.code_logprob(clean)
    kw = dict(clean_cond=cond, corrupted_cond=other, **KW)
    # cross-attention head -> the residual right after its block's cross-attention: nothing else in between
    heads = P.patch_heads(m64, clean, corrupted, metric, which="cross_attn", **kw)
    for layer in (0, 1):
        for head in (0, 3):
            p = P.path_patch(m64, clean, corrupted, metric, sender=("cross_attn", layer, head), receivers=("resid_mid_cross", layer), **kw)
            assert p.axes == () and p.item() == pytest.approx(float(heads.values[layer, head]), abs=1e-10)
    # all senders at once: an MLP -> resid_post of its layer is the MLP output patch
    mlp = P.patch_resid(m64, clean, corrupted, metric, site="mlp_out", per_position=False, **kw)
    paths = P.path_patch(m64, clean, corrupted, metric, sender="mlp", receivers=[("resid_post", 0), ("resid_post", 1)], **kw)
    assert paths.axes == ("layer",)
    torch.testing.assert_close(paths.values[1], mlp.values[1], atol=1e-10, rtol=0)


def test_path_patching_residual_receiver_is_exact(m64, data):
    """attn head (0, h) -> resid_pre 1: resid_pre 1 gets exactly (clean z_h - corrupted z_h) @ W_O[h] added."""
    clean, corrupted, cond = data
    metric = P.code_logprob(clean)
    h = 2
    with torch.no_grad():
        _, cc = m64.run_with_cache(clean, cond)
        _, xc = m64.run_with_cache(corrupted, cond)
    delta = (cc["blocks.0.attn.hook_z"][:, :, h] - xc["blocks.0.attn.hook_z"][:, :, h]) @ m64.blocks[0].attn.W_O[h]
    target = xc["blocks.1.hook_resid_pre"] + delta
    expected = run_metric(m64, metric, corrupted, cond, [("blocks.1.hook_resid_pre", lambda a, hook: target)])
    p = P.path_patch(m64, clean, corrupted, metric, sender=("attn", 0, h), receivers=[("resid_pre", 1)], clean_cond=cond, corrupted_cond=cond, **KW)
    assert p.item() == pytest.approx(expected, abs=1e-10)
    assert p.item() != pytest.approx(p.corrupted_metric, abs=1e-8)


def test_path_patching_without_a_path_has_no_effect(m64, data):
    clean, corrupted, cond = data
    metric = P.code_logprob(clean)
    kw = dict(clean_cond=cond, corrupted_cond=cond, **KW)
    grid = P.path_patch(m64, clean, corrupted, metric, sender="attn", receivers=[("resid_pre", 1)], **kw)
    assert grid.axes == ("layer", "head") and grid.shape == (2, 4)
    # layer-1 heads come after resid_pre 1: no effect; layer-0 heads have one
    torch.testing.assert_close(grid.values[1], torch.full((4,), grid.corrupted_metric, dtype=grid.values.dtype), atol=1e-10, rtol=0)
    assert (grid.values[0] - grid.corrupted_metric).abs().min() > 1e-8
    listed = P.path_patch(
        m64, clean, corrupted, metric, sender=[("mlp", 1), ("codebook_embed", 0)], receivers=[("attn", 1, None, "q"), ("cross_attn", 1, 0, "q")], **kw
    )
    assert listed.axes == ("sender",) and listed.labels["sender"] == ["('mlp', 1)", "('codebook_embed', 0)"]
    assert float(listed.values[0]) == pytest.approx(listed.corrupted_metric, abs=1e-10)
    assert abs(float(listed.values[1]) - listed.corrupted_metric) > 1e-8
    with pytest.raises(ValueError, match="only 'q'"):
        P.path_patch(m64, clean, corrupted, metric, sender=("attn", 0, 0), receivers=[("cross_attn", 1, 0, "k")], **kw)


# ------------------------------------------------------------------------------ results, plots, errors


def test_result_plot_and_conversions(m64, data):
    clean, corrupted, cond = data
    metric = P.code_logprob(clean)
    kw = dict(clean_cond=cond, corrupted_cond=cond, **KW)
    results = [
        P.patch_resid(m64, clean, corrupted, metric, **kw),
        P.patch_heads(m64, clean, corrupted, metric, per_position=True, windows=[(-1, 0), (0, 1)], **kw),
        P.patch_codebooks(m64, clean, corrupted, metric, **kw),
        P.patch_conditioning(m64, clean, ["trumpet"], ["violin"], metric, **KW),
        P.attribution_patch(m64, clean, corrupted, metric, "resid_mid", clean_cond=cond, corrupted_cond=cond),
    ]
    assert results[1].axes == ("layer", "window", "head")
    for r in results:
        fig = r.plot(title="t")
        assert isinstance(fig, Figure) and fig.axes[0].get_title() == "t"
        assert isinstance(r.to_numpy(), np.ndarray) and r.to_numpy().shape == r.shape
        assert len(r.to_dataframe()) == max(1, int(np.prod(r.shape)))
    fig = Figure()
    ax = fig.add_subplot()
    assert results[0].plot(ax=ax) is fig
    n = results[0].normalized()
    expected = (results[0].values.double() - results[0].corrupted_metric) / (results[0].clean_metric - results[0].corrupted_metric)
    torch.testing.assert_close(n.values, expected.to(n.values.dtype))


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
