"""The hook-site registry against real models: every hook point declared once, shapes as declared."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from helpers import PROMPTS, random_codes

from musicgen_lens.hooks import SITES, hook_name, hook_names, markdown_table, parse_hook_name, site


@pytest.mark.parametrize("name", ["base", "melody"])
def test_registry_lists_exactly_the_models_hook_points(load_model, name):
    model = load_model(name)
    assert sorted(hook_names(model.cfg)) == sorted(model.hook_dict)


@pytest.mark.parametrize("name", ["base", "melody"])
def test_every_activation_has_its_declared_shape(load_model, name):
    model = load_model(name)
    model.set_use_attn_result(True)
    try:
        codes = random_codes(model, batch=2, pos=7)
        cond = model.condition(PROMPTS)
        _, cache = model.run_with_cache(codes, cond, return_cache_object=False)
    finally:
        model.set_use_attn_result(False)
    cfg = model.cfg
    n_prefix = model.n_prefix(cond)
    sizes = {
        "batch": 2, "pos": n_prefix + 7, "head_index": cfg.n_heads, "d_model": cfg.d_model, "d_head": cfg.d_head,
        "d_mlp": cfg.d_mlp, "d_vocab": cfg.d_vocab, "d_cond": cfg.d_cond, "n_codebooks": cfg.n_codebooks, "one": 1,
        "query_pos": n_prefix + 7, "key_pos": n_prefix + 7, "text_pos": cond.states.shape[1], "chroma_pos": cfg.chroma_length,
    }
    checked = 0
    for name_, act in cache.items():
        s, _ = parse_hook_name(name_)
        expected = [sizes.get(a) for a in s.shape]
        if s.positions == "codes":  # hook_embed / hook_logits: the codes only, never the melody prefix
            expected = [7 if a == "pos" else sizes.get(a) for a in s.shape]
        assert list(act.shape) == expected, (name_, s.shape)
        if s.shape[-1] in ("d_model", "d_head", "d_mlp", "d_vocab", "d_cond", "one"):
            assert s.width(cfg) == act.shape[-1], name_
        checked += 1
    assert checked == len([n for n in model.hook_dict if not n.startswith(("codec.", "text_encoder."))])


def test_names_aliases_and_errors():
    assert hook_name("resid_post", 3) == "blocks.3.hook_resid_post"
    assert hook_name("z", 1) == "blocks.1.attn.hook_z" == hook_name("attn.z", 1)
    assert hook_name("cross_z", 1) == "blocks.1.cross_attn.hook_z"  # the old steering spelling
    assert hook_name("hook_logits") == "hook_logits" and hook_name("post", 0) == "blocks.0.mlp.hook_post"
    assert parse_hook_name("blocks.12.ln_cross.hook_scale") == (SITES["ln_cross.scale"], 12)
    assert parse_hook_name("hook_cond") == (SITES["cond"], None)
    with pytest.raises(ValueError, match="did you mean"):
        site("resid_pots")
    with pytest.raises(ValueError, match="pass an int layer"):
        hook_name("resid_post")
    with pytest.raises(ValueError, match="not per-layer"):
        hook_name("logits", 2)
    with pytest.raises(ValueError, match="not a HookedMusicGen hook name"):
        parse_hook_name("blocks.0.hook_nothing")


def test_site_axes_and_architectures(model, melody_model):
    z, k_cross = SITES["attn.z"], SITES["cross_attn.k"]
    assert (z.head_axis, z.pos_axis, z.is_head, z.is_vector) == (2, 1, True, True)
    assert k_cross.positions == "text" and not k_cross.is_vector  # keys over text tokens: not steerable per frame
    assert SITES["attn.pattern"].pos_axis == 2 and SITES["logits"].pos_axis == 2
    assert SITES["cross_attn_out"].available(model.cfg) and not SITES["cross_attn_out"].available(melody_model.cfg)
    assert SITES["chroma"].available(melody_model.cfg) and not SITES["chroma"].available(model.cfg)
    assert SITES["mlp.post"].width(model.cfg) == model.cfg.d_mlp and SITES["ln1.scale"].width(model.cfg) == 1


def test_design_doc_hook_table_is_the_registry():
    doc = (Path(__file__).resolve().parents[1] / "docs" / "design.md").read_text()
    table = re.search(r"<!-- hook-table:start -->\n(.*?)\n<!-- hook-table:end -->", doc, re.S)
    assert table is not None, "docs/design.md lost its generated hook table markers"
    assert table.group(1).strip() == markdown_table().strip(), "regenerate: python -c 'from musicgen_lens.hooks import markdown_table; print(markdown_table())'"


def test_pos_slice_slices_each_hook_on_its_position_axis(model):
    """TransformerLens guesses the axis from the name; codebook / text / latent axes must stay whole."""
    codes = random_codes(model, batch=1, pos=9)
    cond = model.condition(PROMPTS[:1])
    _, full = model.run_with_cache(codes, cond, return_cache_object=False)
    for i in (0, 5, -1):
        _, sliced = model.run_with_cache(codes, cond, pos_slice=i, return_cache_object=False)
        assert sliced.keys() == full.keys()
        for name, act in full.items():
            s, _ = parse_hook_name(name)
            if s.positions in ("decoder", "codes"):
                ref = act.narrow(s.pos_axis, i % act.shape[s.pos_axis], 1)
            else:
                ref = act
            torch.testing.assert_close(sliced[name], ref, msg=name)


def test_hook_result_refused_while_off_and_fires_once_on(model):
    codes = random_codes(model, batch=1, pos=4)
    with pytest.raises(ValueError, match="use_attn_result"):
        model.run_with_hooks(codes, fwd_hooks=[("blocks.0.attn.hook_result", lambda a, hook: None)])
    seen = []
    model.set_use_attn_result(True)
    try:
        model.run_with_hooks(codes, fwd_hooks=[("blocks.0.attn.hook_result", lambda a, hook: seen.append(a.shape))])
    finally:
        model.set_use_attn_result(False)
    assert seen == [torch.Size([1, 4, model.cfg.n_heads, model.cfg.d_model])]
