"""PatchResult: plots and conversions (musicgen_lens.patching.results)."""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.figure import Figure

from musicgen_lens import patching as P

from patching_helpers import data, m64, one_thread, KW  # noqa: F401 (fixtures)


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
