"""The hook-site registry: every HookPoint of HookedMusicGen, declared once.

A *site* is a hook point up to its layer: ``"resid_post"`` is ``blocks.{layer}.hook_resid_post``
in every block. Steering, patching, probes and activation stores all name sites through this
table, so one activation has one spelling everywhere and the architecture decides which sites
exist (a MusicGen-melody checkpoint has no cross-attention).

The canonical name of a site is its hook name without ``blocks.{layer}.`` and without the
``hook_`` of its last part: ``"attn.z"``, ``"cross_attn.z"``, ``"mlp.post"``, ``"ln1.scale"``,
``"resid_post"``, ``"logits"``, ``"text_encoder.out"``. TransformerLens's short names resolve
too (``"z"``, ``"q"``, ``"pattern"``, ``"pre"``, ``"post"`` ... mean self-attention / MLP, as
``transformer_lens.utilities.get_act_name`` maps them), and so do two older spellings kept for
saved steering vectors (``"cross_z"``, ``"cross_result"``).

Each site records the axes of its activation (``shape``), hence its feature width, head axis and
position axis, and what its position axis counts:

- ``"decoder"``: every position the decoder reads. For a text MusicGen these are the codes'
  positions; a melody model prepends its conditioning (chroma, then text), which sits at the
  negative positions of ``hook.ctx.positions``.
- ``"codes"``: the code positions only (``hook_embed``, ``hook_logits``): on a melody model these
  are the last ``pos`` decoder positions.
- ``"text"``: text-token positions (``hook_cond``, cross-attention keys/values, ``text_encoder``).
- ``"chroma"``: the melody prefix (``hook_chroma``); ``None``: no position axis (codec hooks).

``SITES`` is the table; `site`, `hook_name`, `parse_hook_name` and `hook_names` read it. The
hook table in ``docs/design.md`` is generated from it (`markdown_table`) and a test keeps the two
equal, and another test checks `hook_names(cfg)` against a built model's ``hook_dict``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from musicgen_lens.config import MusicGenConfig

__all__ = ["Site", "SITES", "ALIASES", "site", "hook_name", "parse_hook_name", "hook_names", "sites_for", "markdown_table"]

Positions = Literal["decoder", "codes", "text", "chroma"] | None
TEXT, MELODY = "text", "melody"
_BOTH = frozenset({TEXT, MELODY})
_TEXT_ONLY = frozenset({TEXT})
_MELODY_ONLY = frozenset({MELODY})

# Axis names whose size is a config field: the feature width of a site is its last axis.
_WIDTHS = {"d_model": "d_model", "d_head": "d_head", "d_mlp": "d_mlp", "d_vocab": "d_vocab", "d_cond": "d_cond"}


@dataclass(frozen=True)
class Site:
    """One hook site: where it is (``template``), what it holds (``shape``) and who has it."""

    name: str
    template: str  # hook name, with "{layer}" for per-block sites
    shape: tuple[str, ...]  # axis names of the activation, batch first
    positions: Positions
    archs: frozenset[str] = _BOTH
    opt_in: str | None = None  # a cfg flag the hook needs to fire (TransformerLens's use_attn_result)
    doc: str = ""

    @property
    def per_layer(self) -> bool:
        return "{layer}" in self.template

    @property
    def head_axis(self) -> int | None:
        """Index of the head axis (``head_index``), or None."""
        return self.shape.index("head_index") if "head_index" in self.shape else None

    @property
    def pos_axis(self) -> int | None:
        """Index of the axis that ``positions`` counts (the query axis of a pattern), or None."""
        for axis in ("pos", "query_pos", "text_pos", "chroma_pos"):
            if axis in self.shape:
                return self.shape.index(axis)
        return None

    @property
    def width_axis(self) -> str:
        return self.shape[-1]

    @property
    def is_head(self) -> bool:
        """A per-head vector site ([batch, pos, head_index, width]): steerable per head."""
        return self.head_axis is not None and self.shape[-1] in ("d_head", "d_model")

    @property
    def is_vector(self) -> bool:
        """Whose last axis is a feature vector at each decoder position: steerable and probeable.

        Keys/values of cross-attention (text positions), patterns and scores are not.
        """
        return self.positions == "decoder" and self.per_layer and self.shape[-1] in ("d_model", "d_head", "d_mlp")

    def width(self, cfg: "MusicGenConfig") -> int:
        """The size of the last axis for this config (1 for LayerNorm scales)."""
        axis = self.shape[-1]
        if axis == "one":
            return 1
        if axis not in _WIDTHS:
            raise ValueError(f"site {self.name!r} has no feature width (its last axis is {axis!r})")
        return int(getattr(cfg, _WIDTHS[axis]))

    def available(self, cfg: "MusicGenConfig") -> bool:
        return (MELODY if cfg.is_melody else TEXT) in self.archs

    def hook_name(self, layer: int | None = None) -> str:
        if self.per_layer:
            if layer is None or isinstance(layer, bool) or not isinstance(layer, int):
                raise ValueError(f"site {self.name!r} is in every block: pass an int layer, got {layer!r}")
            return self.template.format(layer=layer)
        if layer is not None:
            raise ValueError(f"site {self.name!r} is not per-layer ({self.template}); got layer={layer!r}")
        return self.template


def _attn_sites(which: str, archs: frozenset[str]) -> list[Site]:
    cross = which == "cross_attn"
    kv = ("batch", "text_pos", "head_index", "d_head") if cross else ("batch", "pos", "head_index", "d_head")
    kv_pos: Positions = "text" if cross else "decoder"
    key_axis = "text_pos" if cross else "key_pos"
    what = "cross-attention to the text" if cross else "causal self-attention"
    t = f"blocks.{{layer}}.{which}.hook_"
    return [
        Site(f"{which}.q", t + "q", ("batch", "pos", "head_index", "d_head"), "decoder", archs, doc=f"queries of {what}"),
        Site(f"{which}.k", t + "k", kv, kv_pos, archs, doc="keys"),
        Site(f"{which}.v", t + "v", kv, kv_pos, archs, doc="values"),
        Site(f"{which}.attn_scores", t + "attn_scores", ("batch", "head_index", "query_pos", key_axis), "decoder", archs,
             doc="scaled, masked scores before softmax"),
        Site(f"{which}.pattern", t + "pattern", ("batch", "head_index", "query_pos", key_axis), "decoder", archs,
             doc="attention weights" + (" (rows of the null text are all zero)" if cross else "")),
        Site(f"{which}.z", t + "z", ("batch", "pos", "head_index", "d_head"), "decoder", archs, doc="per-head mix of values"),
        Site(f"{which}.result", t + "result", ("batch", "pos", "head_index", "d_model"), "decoder", archs, opt_in="use_attn_result",
             doc="per-head output (z @ W_O); fires only with cfg.use_attn_result"),
    ]


def _ln_sites(ln: str, archs: frozenset[str]) -> list[Site]:
    t = f"blocks.{{layer}}.{ln}.hook_" if ln != "ln_final" else "ln_final.hook_"
    return [
        Site(f"{ln}.scale", t + "scale", ("batch", "pos", "one"), "decoder", archs, doc="sqrt(var + eps)"),
        Site(f"{ln}.normalized", t + "normalized", ("batch", "pos", "d_model"), "decoder", archs, doc="LayerNorm output"),
    ]


_D = ("batch", "pos", "d_model")
_SITE_LIST: list[Site] = [
    Site("codebook_embed", "hook_codebook_embed", ("batch", "pos", "n_codebooks", "d_model"), "codes", doc="one embedding per codebook"),
    Site("embed", "hook_embed", _D, "codes", doc="sum of the codebook embeddings"),
    Site("pos_embed", "hook_pos_embed", _D, "decoder", doc="sinusoidal positions"),
    Site("text_encoder.out", "text_encoder.hook_out", ("batch", "text_pos", "d_cond"), "text", doc="T5 output"),
    Site("cond", "hook_cond", ("batch", "text_pos", "d_model"), "text",
         doc="projected text: what cross-attention reads (melody: the prepended text)"),
    Site("chroma", "hook_chroma", ("batch", "chroma_pos", "d_model"), "chroma", _MELODY_ONLY, doc="projected chroma prefix"),
    Site("resid_pre", "blocks.{layer}.hook_resid_pre", _D, "decoder", doc="residual stream entering the block"),
    *_ln_sites("ln1", _BOTH),
    *_attn_sites("attn", _BOTH),
    Site("attn_out", "blocks.{layer}.hook_attn_out", _D, "decoder", doc="self-attention output"),
    Site("resid_mid", "blocks.{layer}.hook_resid_mid", _D, "decoder", doc="after self-attention"),
    *_ln_sites("ln_cross", _TEXT_ONLY),
    *_attn_sites("cross_attn", _TEXT_ONLY),
    Site("cross_attn_out", "blocks.{layer}.hook_cross_attn_out", _D, "decoder", _TEXT_ONLY, doc="cross-attention output"),
    Site("resid_mid_cross", "blocks.{layer}.hook_resid_mid_cross", _D, "decoder", _TEXT_ONLY, doc="after cross-attention"),
    *_ln_sites("ln2", _BOTH),
    Site("mlp.pre", "blocks.{layer}.mlp.hook_pre", ("batch", "pos", "d_mlp"), "decoder", doc="MLP pre-activation"),
    Site("mlp.post", "blocks.{layer}.mlp.hook_post", ("batch", "pos", "d_mlp"), "decoder", doc="MLP activation"),
    Site("mlp_out", "blocks.{layer}.hook_mlp_out", _D, "decoder", doc="MLP output"),
    Site("resid_post", "blocks.{layer}.hook_resid_post", _D, "decoder", doc="residual stream leaving the block"),
    *_ln_sites("ln_final", _BOTH),
    Site("logits", "hook_logits", ("batch", "n_codebooks", "pos", "d_vocab"), "codes", doc="next-code logits per codebook"),
    Site("codec.latent", "codec.hook_latent", ("batch", "d_latent", "frames"), None, doc="EnCodec encoder output (encode only)"),
    Site("codec.quantized", "codec.hook_quantized", ("batch", "d_latent", "frames"), None, doc="dequantised codes (decode only)"),
]
SITES: dict[str, Site] = {s.name: s for s in _SITE_LIST}

# Other spellings that resolve to a canonical site: TransformerLens's short names (self-attention
# and the MLP, as get_act_name maps them) and two older steering names kept for saved vectors.
ALIASES: dict[str, str] = {
    **{a: f"attn.{a}" for a in ("q", "k", "v", "z", "pattern", "attn_scores", "result")},
    "attn": "attn.pattern", "attn_logits": "attn.attn_scores", "query": "attn.q", "key": "attn.k", "value": "attn.v",
    "pre": "mlp.pre", "post": "mlp.post", "mlp_pre": "mlp.pre", "mlp_post": "mlp.post",
    "cross_z": "cross_attn.z", "cross_result": "cross_attn.result",
}

_BY_TEMPLATE = {s.template: s for s in _SITE_LIST}
_BLOCK_RE = re.compile(r"^blocks\.(\d+)\.(.+)$")


def site(name: "str | Site") -> Site:
    """A site by canonical name, alias, or ``hook_``-prefixed name (``"hook_resid_post"``)."""
    if isinstance(name, Site):
        return name
    if not isinstance(name, str):
        raise TypeError(f"a site name must be a str, got {type(name).__name__}")
    key = ALIASES.get(name, name)
    if key not in SITES:
        key = ALIASES.get(name.removeprefix("hook_"), name.removeprefix("hook_"))
    if key not in SITES:
        import difflib

        close = difflib.get_close_matches(name, [*SITES, *ALIASES], n=3)
        raise ValueError(
            f"unknown hook site {name!r}" + (f"; did you mean {close}?" if close else "")
            + f". Sites: {sorted(SITES)} (see musicgen_lens.hooks.SITES), or pass a full hook name"
        )
    return SITES[key]


def hook_name(name: "str | Site", layer: int | None = None) -> str:
    """``("resid_post", 18)`` -> ``"blocks.18.hook_resid_post"``; ``"logits"`` -> ``"hook_logits"``."""
    return site(name).hook_name(layer)


def parse_hook_name(name: str) -> tuple[Site, int | None]:
    """``"blocks.3.attn.hook_z"`` -> ``(SITES["attn.z"], 3)``; ValueError for names that are not hooks."""
    if not isinstance(name, str):
        raise TypeError(f"a hook name must be a str, got {type(name).__name__}")
    m = _BLOCK_RE.match(name)
    template, layer = (f"blocks.{{layer}}.{m.group(2)}", int(m.group(1))) if m else (name, None)
    found = _BY_TEMPLATE.get(template)
    if found is None:
        raise ValueError(
            f"{name!r} is not a HookedMusicGen hook name; expected e.g. 'blocks.3.hook_resid_post', "
            f"'blocks.0.attn.hook_z' or 'hook_logits' (musicgen_lens.hooks.SITES lists them)"
        )
    return found, layer


def sites_for(cfg: "MusicGenConfig") -> list[Site]:
    """The sites this architecture has (all but cross-attention on melody; chroma only on melody)."""
    return [s for s in _SITE_LIST if s.available(cfg)]


def hook_names(cfg: "MusicGenConfig", *, codec: bool = True, text_encoder: bool = True) -> list[str]:
    """Every hook name a model with this config has (grouped by site, layers in order)."""
    names = []
    for s in sites_for(cfg):
        if (s.name.startswith("codec.") and not codec) or (s.name.startswith("text_encoder.") and not text_encoder):
            continue
        names.extend(s.hook_name(layer) for layer in range(cfg.n_layers)) if s.per_layer else names.append(s.template)
    return names


def markdown_table() -> str:
    """The hook table of docs/design.md (a test checks that the doc holds exactly this)."""
    rows = ["| site | hook name | shape | positions | architectures | note |", "|---|---|---|---|---|---|"]
    for s in _SITE_LIST:
        archs = "both" if s.archs == _BOTH else ("text only" if s.archs == _TEXT_ONLY else "melody only")
        rows.append(f"| `{s.name}` | `{s.template}` | [{', '.join(s.shape)}] | {s.positions or '-'} | {archs} | {s.doc} |")
    return "\n".join(rows)
