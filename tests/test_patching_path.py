"""Path patching (musicgen_lens.patching.path)."""

from __future__ import annotations

import pytest
import torch

from musicgen_lens import patching as P

from patching_helpers import data, m64, one_thread, KW, run_metric  # noqa: F401 (fixtures)


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
