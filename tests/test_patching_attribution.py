"""Attribution patching (musicgen_lens.patching.attribution)."""

from __future__ import annotations

import torch

from musicgen_lens import Conditioning
from musicgen_lens import patching as P

from patching_helpers import data, m64, one_thread, KW  # noqa: F401 (fixtures)


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
