"""Activation patching, attribution patching and path patching for MusicGen.

Two runs of the decoder, *clean* and *corrupted* (different codes, different text, or both),
and a metric of the logits. Activation patching copies one activation from one run into the
other and reports the metric of the patched run:

- ``direction="denoise"`` (default, as in TransformerLens): run the corrupted input and patch in
  clean activations ("which activations are sufficient to restore the clean behaviour?");
- ``direction="noise"``: run the clean input and patch in corrupted activations ("which
  activations are necessary?").

Sweeps (each returns a :class:`PatchResult`: a tensor with named, labelled axes and a heatmap):

===========================  ================================================  =================
function                     cells                                             axes
===========================  ================================================  =================
:func:`patch_resid`          ``blocks.{l}.hook_{site}`` at one position        layer, pos
                             (or a time window, or all positions)              layer, window
:func:`patch_windows`        the same over windows in seconds                  layer, window
:func:`patch_heads`          one head's z/q/k/v/pattern/result of self- or     layer, head
                             cross-attention (all positions or per position)   (+ pos)
:func:`patch_codebooks`      one codebook's slice of ``hook_codebook_embed``   codebook (+ pos)
:func:`patch_conditioning`   ``hook_cond`` (the whole text) or one layer's     () or layer
                             ``hook_cross_attn_out``
:func:`patch_site`           any registry site by name (:func:`generic_patch`)
:func:`path_patch`           sender -> receivers only, all else frozen         () / sender / ...
:func:`attribution_patch`    first-order estimate of every cell at once        as above
===========================  ================================================  =================

Layout of the package: `results` (:class:`PatchResult`, plotting), `metrics`, `grid` (the
cells and axes of a sweep, read off the hook-site registry `musicgen_lens.hooks.SITES`),
`engine` (:func:`generic_patch`: the one batched patcher), `sweeps` (the named sweeps above:
partials of it or a few lines each), `attribution` and `path`. Each forward pass runs
``chunk_size`` patched copies of the batch side by side, so a 24-layer x 1500-position sweep
costs about ``24 * 1500 / chunk_size`` forward passes, and ``chunk_size`` bounds the memory.

MusicGen-melody models (no cross-attention; the chroma + text prefix, ``model.n_prefix(cond)``
positions, comes before the codes in every decoder hook): positions and windows are still *code*
positions (decoder index ``n_prefix + pos``), cross-attention sites are refused naming the
architecture, ``patch_conditioning`` swaps ``hook_cond`` and ``hook_chroma``, and
``path_patch`` freezes only the self-attention heads and MLPs. Clean and corrupted texts of
different lengths are padded to one (with a warning on melody, where padding is part of the prefix).

TransformerLens: ``patch_resid`` and ``patch_heads(which="attn")`` accept
``backend="transformer_lens"``; they then simply call ``transformer_lens.patching``
(``generic_activation_patch`` / ``get_act_patch_attn_head_*``) inside
``model.conditioning(target_cond)`` and wrap its tensor in a :class:`PatchResult` with the same
layout as the default backend (one unbatched forward per cell, every position and every layer).
Cross-attention heads, time windows, codebooks, the text conditioning, position subsets,
activation-reading metrics (:func:`probe_score`) and path patching are not expressible in
``transformer_lens.patching`` (it maps q/k/v/z/pattern to ``.attn.`` only and cannot pass a
conditioning) and always use our loop. The two backends agree to float rounding (tested).
Text-to-music models only: on melody the decoder positions include the prefix.

Conditionings of different text lengths are right-padded to a common length (padding is
masked on text models, so outputs are unchanged) so that cross-attention k/v/pattern and
``hook_cond`` line up. The model must be in eval mode (``model.eval()``), as for TransformerLens.
"""

from __future__ import annotations


from musicgen_lens.patching.attribution import AttributionCheck, attribution_patch, check_attribution
from musicgen_lens.patching.engine import generic_patch
from musicgen_lens.patching.grid import ATTENTION, HEAD_ACTS, RESID_SITES, position_seconds
from musicgen_lens.patching.metrics import CodeLogProb, KLTo, LogitDiff, ProbeScore, code_logprob, kl_to, logit_diff, probe_score
from musicgen_lens.patching.path import path_patch
from musicgen_lens.patching.results import PatchResult
from musicgen_lens.patching.sweeps import patch_codebooks, patch_conditioning, patch_heads, patch_resid, patch_site, patch_windows

__all__ = [
    "AttributionCheck",
    "PatchResult",
    "RESID_SITES",
    "HEAD_ACTS",
    "ATTENTION",
    "attribution_patch",
    "check_attribution",
    "code_logprob",
    "generic_patch",
    "kl_to",
    "logit_diff",
    "patch_codebooks",
    "patch_conditioning",
    "patch_heads",
    "patch_resid",
    "patch_site",
    "patch_windows",
    "path_patch",
    "position_seconds",
    "probe_score",
    "CodeLogProb",
    "KLTo",
    "LogitDiff",
    "ProbeScore",
]
