"""Patching on MusicGen-melody (no cross-attention; the chroma + text prefix comes before the codes)."""

from __future__ import annotations

import pytest
import torch

from musicgen_lens import HookedMusicGen
from musicgen_lens import patching as P
from musicgen_lens.patching.path import frozen_hooks

from helpers import PROMPTS, random_codes
from patching_helpers import KW, POS, m64, one_thread, run_metric  # noqa: F401 (fixtures)

DIFF = 9  # the one code position where clean and corrupted codes differ


@pytest.fixture(scope="module")
def mel64(checkpoint_dir) -> HookedMusicGen:
    """float64 tiny melody model with larger weights, so that patching effects are far above rounding."""
    m = HookedMusicGen.from_pretrained(checkpoint_dir("melody"), device="cpu", dtype=torch.float64).eval()
    m.init_weights(std=0.15, seed=1)
    return m


def chroma(model, seed: int) -> torch.Tensor:
    return torch.rand(2, 5, model.cfg.n_chroma, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.fixture(scope="module")
def mdata(mel64):
    clean = random_codes(mel64, batch=2, pos=POS, seed=0)
    corrupted = clean.clone()
    corrupted[..., DIFF] = random_codes(mel64, batch=2, pos=POS, seed=1)[..., DIFF]
    cond = mel64.condition(PROMPTS, chroma=chroma(mel64, 0))
    other = mel64.condition(["violin solo melody at 90 bpm", "jazz"], chroma=chroma(mel64, 1))
    assert other.states.shape[1] == cond.states.shape[1]  # same prefix length: no padding
    return clean, corrupted, cond, other


SITES = ["resid_pre", "mlp_out", "attn.z", "attn.pattern", "attn.k", "codebook_embed", "cond", "chroma", "mlp.post"]


@pytest.mark.parametrize("site", SITES)
def test_self_patching_gives_the_clean_metric(mel64, mdata, site):
    clean, _, cond, _ = mdata
    metric = P.code_logprob(clean)
    expected = run_metric(mel64, metric, clean, cond)
    for per_position in (False, True):
        r = P.patch_site(mel64, clean, clean, metric, site, clean_cond=cond, corrupted_cond=cond, per_position=per_position, chunk_size=7, **KW)
        assert r.clean_metric == pytest.approx(expected, abs=1e-12)
        torch.testing.assert_close(r.values, torch.full(r.shape, expected, dtype=r.values.dtype), atol=1e-10, rtol=0)
        if per_position and site not in ("cond", "chroma"):
            assert "pos" in r.axes and len(r.labels["pos"]) == POS  # code positions, not prefix + codes
    w = P.patch_windows(mel64, clean, clean, metric, [(-0.1, 0.0), (0.0, 1.0)], clean_cond=cond, corrupted_cond=cond, **KW)
    torch.testing.assert_close(w.values, torch.full(w.shape, expected, dtype=w.values.dtype), atol=1e-10, rtol=0)


def test_whole_first_layer_gives_clean_or_corrupted_metric(mel64, mdata):
    """resid_pre 0 at every position (the prefix included) is the whole input: clean when denoising, corrupted when noising."""
    clean, corrupted, cond, other = mdata
    metric = P.code_logprob(clean)
    m_clean, m_corr = run_metric(mel64, metric, clean, cond), run_metric(mel64, metric, corrupted, other)
    kw = dict(clean_cond=cond, corrupted_cond=other, per_position=False, **KW)
    r = P.patch_resid(mel64, clean, corrupted, metric, **kw)
    assert r.clean_metric == pytest.approx(m_clean, abs=1e-12) and r.corrupted_metric == pytest.approx(m_corr, abs=1e-12)
    assert float(r.values[0]) == pytest.approx(m_clean, abs=1e-10)
    noise = P.patch_resid(mel64, clean, corrupted, metric, direction="noise", **kw)
    assert float(noise.values[0]) == pytest.approx(m_corr, abs=1e-10)
    assert float(noise.normalized().values[0]) == pytest.approx(0.0, abs=1e-8)


def test_patching_the_differing_code_position_restores_it(mel64, mdata):
    """Positions are code positions: the decoder index is n_prefix + position."""
    clean, corrupted, cond, _ = mdata
    metric = P.code_logprob(clean)
    m_clean, m_corr = run_metric(mel64, metric, clean, cond), run_metric(mel64, metric, corrupted, cond)
    assert abs(m_clean - m_corr) > 1e-6
    kw = dict(clean_cond=cond, corrupted_cond=cond, **KW)
    r = P.patch_resid(mel64, clean, corrupted, metric, layers=[0], **kw)
    assert r.axes == ("layer", "pos") and r.labels["pos"] == list(range(POS))
    expected = torch.full((1, POS), m_corr, dtype=r.values.dtype)
    expected[0, DIFF] = m_clean
    torch.testing.assert_close(r.values, expected, atol=1e-10, rtol=0)
    noise = P.patch_resid(mel64, clean, corrupted, metric, layers=[0], positions=[DIFF - 1, DIFF], direction="noise", **kw)
    torch.testing.assert_close(noise.values, torch.tensor([[m_clean, m_corr]], dtype=r.values.dtype), atol=1e-10, rtol=0)
    # the same cell by hand, at decoder index n_prefix + DIFF of a later layer
    n_prefix = mel64.n_prefix(cond)
    with torch.no_grad():
        _, cache = mel64.run_with_cache(clean, cond, names_filter=["blocks.1.hook_resid_pre"])
    src = cache["blocks.1.hook_resid_pre"]
    assert src.shape[1] == n_prefix + POS

    def put(act, hook):
        act = act.clone()
        act[:, n_prefix + DIFF] = src[:, n_prefix + DIFF]
        return act

    one = P.patch_resid(mel64, clean, corrupted, metric, layers=[1], positions=[DIFF], **kw)
    assert float(one.values[0, 0]) == pytest.approx(run_metric(mel64, metric, corrupted, cond, [("blocks.1.hook_resid_pre", put)]), abs=1e-10)
    # code sites are not offset: the codebook embeddings of the differing position restore the clean run
    one_cb = clean.clone()
    one_cb[:, 2, DIFF] = (clean[:, 2, DIFF] + 1) % mel64.cfg.d_vocab
    m_one = run_metric(mel64, metric, one_cb, cond)
    cb = P.patch_codebooks(mel64, clean, one_cb, metric, positions=[DIFF - 1, DIFF], **kw)
    assert cb.axes == ("codebook", "pos")
    expected = torch.full((mel64.cfg.n_codebooks, 2), m_one, dtype=cb.values.dtype)
    expected[2, 1] = m_clean
    torch.testing.assert_close(cb.values, expected, atol=1e-10, rtol=0)
    heads = P.patch_heads(mel64, clean, corrupted, metric, layers=[0], positions=[DIFF], **kw)
    assert heads.axes == ("layer", "pos", "head") and heads.shape == (1, 1, mel64.cfg.n_heads)


def test_patch_conditioning_swaps_text_and_chroma(mel64, mdata):
    clean, _, cond, other = mdata
    metric = P.code_logprob(clean)
    with_a, with_b = run_metric(mel64, metric, clean, cond), run_metric(mel64, metric, clean, other)
    r = P.patch_conditioning(mel64, clean, cond, other, metric, **KW)
    assert r.axes == () and r.item() == pytest.approx(with_a, abs=1e-10) and r.corrupted_metric == pytest.approx(with_b, abs=1e-10)
    assert P.patch_conditioning(mel64, clean, cond, other, metric, direction="noise", **KW).item() == pytest.approx(with_b, abs=1e-10)
    # the text alone or the chroma alone restore only part of it
    text = P.patch_site(mel64, clean, clean, metric, "cond", clean_cond=cond, corrupted_cond=other, **KW).item()
    melody = P.patch_site(mel64, clean, clean, metric, "chroma", clean_cond=cond, corrupted_cond=other, **KW).item()
    assert text != pytest.approx(with_a, abs=1e-8) and melody != pytest.approx(with_a, abs=1e-8)
    per_chroma = P.patch_site(mel64, clean, clean, metric, "chroma", clean_cond=cond, corrupted_cond=other, per_position=True, **KW)
    assert per_chroma.axes == ("chroma_pos",) and per_chroma.shape == (mel64.cfg.chroma_length,)
    # texts of different lengths are padded (with a warning: padding is part of the melody prefix)
    short = mel64.condition(["a", "b"], chroma=chroma(mel64, 2))
    with pytest.warns(UserWarning, match="padded"):
        padded = P.patch_conditioning(mel64, clean, short, cond, metric, **KW)
    assert padded.item() == pytest.approx(padded.clean_metric, abs=1e-10)


def test_path_patching_freezes_only_what_melody_has(mel64, mdata, m64):
    clean, corrupted, cond, _ = mdata
    frozen = frozen_hooks(mel64)
    assert frozen and not any("cross" in h for h in frozen)
    assert len(frozen) == 2 * mel64.cfg.n_layers  # attn.z and mlp_out per layer
    assert any("cross_attn" in h for h in frozen_hooks(m64))
    metric = P.code_logprob(clean)
    h = 1
    with torch.no_grad():
        _, cc = mel64.run_with_cache(clean, cond)
        _, xc = mel64.run_with_cache(corrupted, cond)
    delta = (cc["blocks.0.attn.hook_z"][:, :, h] - xc["blocks.0.attn.hook_z"][:, :, h]) @ mel64.blocks[0].attn.W_O[h]
    target = xc["blocks.1.hook_resid_pre"] + delta
    expected = run_metric(mel64, metric, corrupted, cond, [("blocks.1.hook_resid_pre", lambda a, hook: target)])
    kw = dict(clean_cond=cond, corrupted_cond=cond, **KW)
    p = P.path_patch(mel64, clean, corrupted, metric, sender=("attn", 0, h), receivers=[("resid_pre", 1)], **kw)
    assert p.item() == pytest.approx(expected, abs=1e-10) and p.item() != pytest.approx(p.corrupted_metric, abs=1e-8)
    grid = P.path_patch(mel64, clean, corrupted, metric, sender="attn", receivers=[("resid_pre", 1)], **kw)
    assert grid.axes == ("layer", "head")
    torch.testing.assert_close(grid.values[1], torch.full((mel64.cfg.n_heads,), grid.corrupted_metric, dtype=grid.values.dtype), atol=1e-10, rtol=0)
    mlp = P.path_patch(mel64, clean, corrupted, metric, sender="mlp", receivers=[("resid_post", 1), ("attn", 1, None, "q")], **kw)
    assert mlp.axes == ("layer",) and mlp.shape == (2,)


def test_attribution_on_melody_uses_code_positions(mel64, mdata):
    clean, corrupted, cond, other = mdata
    metric = P.code_logprob(clean)
    attr = P.attribution_patch(mel64, clean, corrupted, metric, ["resid_pre", "attn.z", "cond", "chroma"], clean_cond=cond, corrupted_cond=other)
    assert attr["resid_pre"].axes == ("layer", "pos") and attr["resid_pre"].shape == (2, POS)
    assert attr["chroma"].axes == () and attr["cond"].axes == ()
    check = P.check_attribution(mel64, clean, corrupted, metric, "attn.z", clean_cond=cond, corrupted_cond=cond, n_samples=6)
    assert check.correlation > 0.5


@pytest.mark.parametrize(
    "call",
    [
        lambda m, c, x, mt, kw: P.patch_heads(m, c, x, mt, which="cross_attn", **kw),
        lambda m, c, x, mt, kw: P.patch_resid(m, c, x, mt, site="cross_attn_out", **kw),
        lambda m, c, x, mt, kw: P.patch_site(m, c, x, mt, "resid_mid_cross", **kw),
        lambda m, c, x, mt, kw: P.attribution_patch(m, c, x, mt, "cross_attn.z", clean_cond=kw["clean_cond"], corrupted_cond=kw["corrupted_cond"]),
        lambda m, c, x, mt, kw: P.path_patch(m, c, x, mt, sender=("cross_attn", 0, 0), receivers=[("resid_pre", 1)], **kw),
        lambda m, c, x, mt, kw: P.path_patch(m, c, x, mt, sender="mlp", receivers=[("cross_attn", 1, 0, "q")], **kw),
        lambda m, c, x, mt, kw: P.path_patch(m, c, x, mt, sender="mlp", receivers=[("resid_mid_cross", 1)], **kw),
        lambda m, c, x, mt, kw: P.patch_conditioning(m, c, kw["clean_cond"], kw["clean_cond"], mt, mode="layer", progress=False),
        lambda m, c, x, mt, kw: P.patch_resid(m, c, x, mt, backend="transformer_lens", **kw),
    ],
)
def test_cross_attention_sites_are_refused_naming_the_architecture(mel64, mdata, call):
    clean, corrupted, cond, _ = mdata
    with pytest.raises(ValueError, match="MusicGen-melody"):
        call(mel64, clean, corrupted, P.code_logprob(clean), dict(clean_cond=cond, corrupted_cond=cond, progress=False))


def test_chroma_site_is_refused_on_text_models(m64):
    clean = random_codes(m64, batch=2, pos=POS, seed=0)
    with pytest.raises(ValueError, match="only on MusicGen-melody"):
        P.patch_site(m64, clean, clean, P.code_logprob(clean), "chroma", **KW)


def test_probe_score_reads_the_code_positions(mel64, mdata):
    clean, corrupted, cond, _ = mdata
    hook = "blocks.1.hook_resid_post"
    w = torch.randn(mel64.cfg.d_model, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with torch.no_grad():
        _, cache = mel64.run_with_cache(clean, cond, names_filter=[hook])
    codes_only = cache[hook][:, mel64.n_prefix(cond) :]
    assert codes_only.shape[1] == POS
    for positions, expected in ((None, codes_only @ w), ([DIFF], codes_only[:, DIFF] @ w)):
        metric = P.probe_score(w, hook, positions=positions)
        r = P.patch_resid(mel64, clean, corrupted, metric, clean_cond=cond, corrupted_cond=cond, per_position=False, **KW)
        assert r.clean_metric == pytest.approx(float(expected.mean()), abs=1e-9)
        assert float(r.values[0]) == pytest.approx(float(expected.mean()), abs=1e-9)  # layer 0, all positions: the clean run
    attr = P.attribution_patch(mel64, clean, corrupted, P.probe_score(w, hook), "resid_pre", clean_cond=cond, corrupted_cond=cond)
    assert attr.shape == (2, POS)
