"""Patching metrics (musicgen_lens.patching.metrics): logit_diff, code_logprob, kl_to, probe_score."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from musicgen_lens import patching as P

from patching_helpers import data, m64, one_thread, KW, POS  # noqa: F401 (fixtures)


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
