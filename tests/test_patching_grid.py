"""Cells and axes of patching sweeps (musicgen_lens.patching.grid): codebooks, positions, time windows."""

from __future__ import annotations

import pytest
import torch

from musicgen_lens import patching as P

from helpers import random_codes
from patching_helpers import data, m64, one_thread, KW, POS, run_metric  # noqa: F401 (fixtures)


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
