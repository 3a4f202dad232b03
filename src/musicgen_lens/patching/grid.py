"""The cells of a patching sweep and their axes, read off the hook-site registry.

A *grid* is the list of cells one sweep patches, each a list of ``(hook name, index)`` ops
(index: what to copy, after the batch dimension), with one named, labelled axis per swept
dimension. Every axis comes from the site's entry in `musicgen_lens.hooks.SITES`:

- ``"layer"`` for per-block sites; ``"codebook"`` for sites with an ``n_codebooks`` axis;
- ``"head"`` at the site's ``head_axis``;
- a position axis at the site's ``pos_axis`` when sweeping per position: ``"pos"`` (code
  positions) or ``"window"`` (time windows in seconds, through ``model.pattern``) for decoder
  and code sites, ``"text_pos"`` for text sites (``cond``, cross-attention k/v), ``"chroma_pos"``
  for ``chroma``.

Head and position axes follow the order of the activation's axes (``attn.z``: layer, pos, head;
``attn.pattern``: layer, head, pos, as TransformerLens's ``get_act_patch_attn_head_*_by_pos``).

Positions are *code* positions. On a MusicGen-melody model the decoder's sites (``positions ==
"decoder"``) also hold the ``model.n_prefix(cond)`` conditioning positions first, so code
position p is decoder index ``n_prefix + p`` there; code sites (``codebook_embed``, ``embed``,
``logits``) are indexed by p itself. Without a position axis a cell patches the whole activation
(on melody, the prefix positions too).
"""

from __future__ import annotations

import difflib
import itertools
import math
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from musicgen_lens.hooks import ALIASES, SITES, Site, site as registry_site
from musicgen_lens.patching.options import Selection

if TYPE_CHECKING:
    from musicgen_lens.model import HookedMusicGen
    from musicgen_lens.patching.engine import Setup

__all__ = ["RESID_SITES", "HEAD_ACTS", "ATTENTION", "Cell", "Grid", "build_grid", "position_seconds", "patch_site_of"]

ALL = slice(None)
Window = tuple[float, float]

# Documented aliases, derived from the registry (kept for users who import them):
#: per-block residual-stream sites [batch, pos, d_model]: resid_pre, attn_out, resid_mid, ...
RESID_SITES: tuple[str, ...] = tuple(
    s.name for s in SITES.values() if s.per_layer and s.shape == ("batch", "pos", "d_model") and "." not in s.name
)
#: per-head activations of an attention layer: "q", "k", "v", "attn_scores", "pattern", "z", "result"
HEAD_ACTS: tuple[str, ...] = tuple(dict.fromkeys(s.name.split(".", 1)[1] for s in SITES.values() if s.head_axis is not None))
#: attention layers with heads: "attn" (self-attention), "cross_attn" (text models only)
ATTENTION: tuple[str, ...] = tuple(dict.fromkeys(s.name.split(".", 1)[0] for s in SITES.values() if s.head_axis is not None))

# Older patching spellings of the codebook embeddings.
_PATCH_ALIASES = {"codebook": "codebook_embed", "codebooks": "codebook_embed"}
_POS_AXIS_NAMES = {"decoder": "pos", "codes": "pos", "text": "text_pos", "chroma": "chroma_pos"}
# The whole conditioning (patch_conditioning): the text, plus the chroma on melody models.
CONDITIONING = "conditioning"


def _arch(cfg: Any) -> str:
    return "MusicGen-melody (architecture 'melody')" if cfg.is_melody else "text-to-music MusicGen (architecture 'text')"


def _patchable() -> list[str]:
    return [n for n, s in SITES.items() if s.positions is not None and not n.startswith("text_encoder.")]


def unknown_site(name: Any) -> ValueError:
    known = _patchable()
    close = difflib.get_close_matches(str(name), [*known, *ALIASES], n=3)
    return ValueError(
        f"unknown site {name!r}." + (f" Did you mean {close}?" if close else "") + f" Known sites: {known} (musicgen_lens.hooks.SITES)"
    )


def patch_site_of(name: "str | Site", cfg: Any) -> Site:
    """The registry site that `name` patches on this architecture; clear errors otherwise."""
    if isinstance(name, str):
        try:
            s = registry_site(_PATCH_ALIASES.get(name, name))
        except ValueError:
            raise unknown_site(name) from None
    elif isinstance(name, Site):
        s = name
    else:
        raise unknown_site(name)
    if not s.available(cfg):
        if "melody" in s.archs:
            raise ValueError(f"site {s.name!r} exists only on MusicGen-melody models; this is a {_arch(cfg)}")
        raise ValueError(
            f"site {s.name!r} does not exist on this {_arch(cfg)}: it has no cross-attention. Its chroma and text "
            "are a prefix of the decoder sequence, read by self-attention: patch 'cond' / 'chroma' (the prefix), "
            "'attn.*' heads or residual sites instead"
        )
    if s.positions is None or s.name.startswith("text_encoder."):
        raise ValueError(
            f"site {s.name!r} does not fire in the decoder's forward pass that patching runs "
            "(conditionings are encoded once, before it): patch 'cond' for the text"
        )
    return s


def _fired(s: Site, cfg: Any) -> Site:
    # hook_result only fires with cfg.use_attn_result; patching (or differentiating) a head's z is
    # the same intervention, since result = z @ W_O[head].
    if s.opt_in and not getattr(cfg, s.opt_in) and s.name.endswith(".result"):
        return SITES[s.name.removesuffix("result") + "z"]
    return s


# ---------------------------------------------------------------------------- indices


def norm_index(i: Any, n: int, what: str) -> int:
    if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
        raise TypeError(f"{what} must be ints, got {i!r}")
    i = int(i)
    if not -n <= i < n:
        raise ValueError(f"{what} {i} out of range [0, {n})")
    return i % n


def indices(values: Any, n: int, what: str) -> list[int]:
    if values is None:
        return list(range(n))
    if isinstance(values, (int, np.integer)):
        values = [values]
    if isinstance(values, torch.Tensor):
        values = values.tolist()
    out = [norm_index(v, n, what) for v in values]
    if not out:
        raise ValueError(f"{what}: empty selection")
    return out


def as_windows(windows: Any) -> list[Window]:
    if (
        isinstance(windows, (tuple, list))
        and len(windows) == 2
        and all(isinstance(t, (int, float, np.number)) and not isinstance(t, bool) for t in windows)
    ):
        windows = [tuple(windows)]
    out = []
    for w in windows:
        try:
            t0, t1 = (float(t) for t in w)
        except (TypeError, ValueError):
            raise ValueError(f"windows must be (start_s, end_s) pairs, got {w!r}") from None
        if math.isnan(t0) or math.isnan(t1) or not t0 < t1:
            raise ValueError(f"window {w!r} must have start < end (seconds)")
        out.append((t0, t1))
    if not out:
        raise ValueError("windows is empty")
    return out


def position_seconds(model: "HookedMusicGen", n_pos: int) -> torch.Tensor:
    """Time in seconds of each code position: ``model.pattern.position_seconds(n_pos)``
    ((pos - max_delay) / frame_rate: the earliest frame it writes)."""
    return model.pattern.position_seconds(n_pos)


def _code_position_axis(model: "HookedMusicGen", n_pos: int, positions: Any, windows: Any) -> tuple[str, list, list]:
    """(axis name, labels, code-position indices) for a sweep over positions or time windows."""
    if positions is not None and windows is not None:
        raise ValueError("pass positions= or windows=, not both")
    if windows is None:
        pos = indices(positions, n_pos, "positions")
        return "pos", pos, pos
    pattern = model.pattern
    seconds = pattern.position_seconds(n_pos)
    labels, idx = [], []
    for t0, t1 in as_windows(windows):
        where = torch.nonzero((seconds >= t0) & (seconds < t1)).flatten()
        if where.numel() == 0:
            raise ValueError(
                f"window [{t0:g}, {t1:g}) s contains no position; these codes cover {float(seconds[0]):g} to "
                f"{float(seconds[-1]):g} s (frame_rate={pattern.frame_rate:g}, max_delay={pattern.max_delay})"
            )
        labels.append((t0, t1))
        idx.append(where.to(model.device))
    return "window", labels, idx


# ---------------------------------------------------------------------------- cells


@dataclass
class Cell:
    ops: list[tuple[str, tuple]]  # (hook name, index after the batch dim)
    swap_mask: bool = False  # run with the source conditioning's mask (whole-conditioning swap)


@dataclass
class Grid:
    site: str
    axes: tuple[str, ...]
    labels: dict[str, list]
    cells: list[Cell]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(self.labels[a]) for a in self.axes)

    @property
    def hooks(self) -> list[str]:
        return sorted({h for c in self.cells for h, _ in c.ops})

    def cell_labels(self) -> list[tuple]:
        return list(itertools.product(*(self.labels[a] for a in self.axes)))


def _conditioning_grid(setup: "Setup", sel: Selection) -> Grid:
    given = [f.name for f in fields(sel) if f.name != "per_position" and getattr(sel, f.name) is not None]
    if given:
        raise ValueError(f"the whole conditioning has no {'/'.join(given)} to select")
    hooks = ["hook_cond"] + (["hook_chroma"] if setup.model.cfg.is_melody else [])
    return Grid("cond", (), {}, [Cell([(h, ()) for h in hooks], swap_mask=True)])


def build_grid(setup: "Setup", site: "str | Site", sel: Selection = Selection()) -> Grid:
    """The cells of `site` (any patchable registry site, or ``"conditioning"``: the whole
    conditioning swap). ``sel.per_position`` None: per position for residual sites, else not;
    ``positions`` / ``windows`` imply per position."""
    cfg = setup.model.cfg
    if site == CONDITIONING:
        return _conditioning_grid(setup, sel)
    layers, heads, codebooks, positions, windows = sel.layers, sel.heads, sel.codebooks, sel.positions, sel.windows
    s = patch_site_of(site, cfg)
    fired = _fired(s, cfg)
    per_position = s.name in RESID_SITES if sel.per_position is None else bool(sel.per_position)
    per_position = per_position or positions is not None or windows is not None
    cb_axis = s.shape.index("n_codebooks") if "n_codebooks" in s.shape else None
    for what, value, has in (("layers", layers, s.per_layer), ("heads", heads, s.head_axis is not None), ("codebooks", codebooks, cb_axis is not None)):
        if value is not None and not has:
            hint = "; use patch_conditioning(mode='layer') per layer" if s.name == "cond" else ""
            raise ValueError(f"site {s.name!r} has no {what} to select{hint}")

    # (axis name, labels, activation axis, index per label), in the order of the result's axes
    dims: list[tuple[str, list, int | None, list]] = []
    if s.per_layer:
        ls = indices(layers, cfg.n_layers, "layers")
        dims.append(("layer", ls, None, ls))
    if cb_axis is not None:
        ks = indices(codebooks, cfg.n_codebooks, "codebooks")
        dims.append(("codebook", ks, cb_axis, ks))
    inner = []
    if s.head_axis is not None:
        hs = indices(heads, cfg.n_heads, "heads")
        inner.append(("head", hs, s.head_axis, hs))
    if per_position:
        inner.append(_position_axis(setup, s, positions, windows))
    dims += sorted(inner, key=lambda d: d[2])

    cells = []
    for combo in itertools.product(*(range(len(d[1])) for d in dims)):
        index: list[Any] = [ALL] * (len(fired.shape) - 1)
        layer = None
        for (name, _, axis, values), i in zip(dims, combo):
            if name == "layer":
                layer = values[i]
            else:
                index[axis - 1] = values[i]
        while index and index[-1] is ALL:
            index.pop()
        cells.append(Cell([(fired.hook_name(layer), tuple(index))], swap_mask=s.name == "cond" and not per_position))
    return Grid(s.name, tuple(d[0] for d in dims), {d[0]: d[1] for d in dims}, cells)


def fit_selection(sel: Selection, site: "str | Site", cfg: Any) -> Selection:
    """`sel` without the selections `site` has no axis for (attribution patching's several sites)."""
    if site == CONDITIONING:
        return Selection()
    s = patch_site_of(site, cfg)
    timed = s.positions in ("decoder", "codes")  # positions/windows are code positions
    return Selection(
        sel.layers if s.per_layer else None,
        sel.heads if s.head_axis is not None else None,
        sel.codebooks if "n_codebooks" in s.shape else None,
        sel.positions if timed else None,
        sel.windows if timed else None,
        sel.per_position,
    )


def _position_axis(setup: "Setup", s: Site, positions: Any, windows: Any) -> tuple[str, list, int, list]:
    """(axis name, labels, activation axis, indices into the activation) of `s`'s positions."""
    axis = _POS_AXIS_NAMES[s.positions]
    if s.positions in ("text", "chroma"):
        if windows is not None:
            raise ValueError(f"site {s.name!r} is indexed by {s.positions} position: windows (seconds) do not apply")
        n = setup.n_text if s.positions == "text" else setup.model.cfg.chroma_length
        what = f"positions ({s.positions})"
        idx = indices(positions, n, what)
        return axis, idx, s.pos_axis, idx
    name, labels, idx = _code_position_axis(setup.model, setup.n_pos, positions, windows)
    offset = setup.n_prefix if s.positions == "decoder" else 0  # melody: the prefix comes first
    return name, labels, s.pos_axis, [i + offset for i in idx]
