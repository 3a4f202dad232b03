"""The TransformerLens 4 bridge adapter: boots a tiny MusicGen, matches HF and HookedMusicGen.

Same tiny weights on both sides: the session checkpoint (`checkpoint_dir("base")`), booted as a
TransformerBridge and loaded as our `model` fixture.
"""

from __future__ import annotations

import pytest
import torch
from helpers import PROMPTS, random_codes

from musicgen_lens.bridge import (
    ARCHITECTURE,
    HOOK_MAP,
    RESID_HOOK_MAP,
    MusicgenArchitectureAdapter,
    _expand,
    boot_musicgen_bridge,
    bridge_forward,
    bridge_hook_name,
    bridge_inputs,
    ours_hook_name,
)


@pytest.fixture(scope="module")
def bridge(checkpoint_dir):
    return boot_musicgen_bridge(checkpoint_dir("base"))


@pytest.fixture(scope="module")
def both(bridge, model):
    """(bridge logits, bridge cache, our logits, our cache) on the same codes and padded texts."""
    codes = random_codes(model, batch=2, pos=24)
    with torch.no_grad():
        lb, cb = bridge_forward(bridge, codes, PROMPTS, cache=True)
        lo, co = model.run_with_cache(codes, PROMPTS)
    return lb, cb, lo, co


def test_registered_where_boot_transformers_looks():
    from transformer_lens.factories import architecture_adapter_factory as factory

    assert factory.SUPPORTED_ARCHITECTURES[ARCHITECTURE] is MusicgenArchitectureAdapter
    assert factory.ArchitectureAdapterFactory._adapters[ARCHITECTURE] is MusicgenArchitectureAdapter
    assert MusicgenArchitectureAdapter.supports_generation is False


def test_adapter_structure_without_weights():
    from transformer_lens.config import TransformerBridgeConfig
    from transformer_lens.factories.architecture_adapter_factory import ArchitectureAdapterFactory

    cfg = TransformerBridgeConfig(d_model=32, d_head=8, n_layers=2, n_ctx=64, n_heads=4, d_vocab=64, d_mlp=64, architecture=ARCHITECTURE)
    adapter = ArchitectureAdapterFactory.select_architecture_adapter(cfg)
    assert isinstance(adapter, MusicgenArchitectureAdapter)
    mapping = adapter.component_mapping
    assert list(mapping) == ["embed", "blocks", "ln_final", "unembed"]
    assert mapping["embed"].is_list_item and mapping["unembed"].is_list_item and mapping["blocks"].is_list_item
    block = mapping["blocks"].submodules
    assert list(block) == ["ln1", "attn", "ln_cross", "cross_attn", "ln2", "mlp"]
    assert block["cross_attn"].is_cross_attention and not block["attn"].is_cross_attention


def test_bridge_equals_hf_exactly(bridge, checkpoint_dir, model):
    from transformers import MusicgenForConditionalGeneration

    hf = MusicgenForConditionalGeneration.from_pretrained(checkpoint_dir("base"), attn_implementation="eager").eval()
    codes = random_codes(model, batch=2, pos=24)
    kw = bridge_inputs(bridge, codes, PROMPTS)
    with torch.no_grad():
        ref = hf(**kw).logits
        got = bridge(kw.pop("input_ids"), **kw)
    assert torch.equal(got, ref)


def test_logits_match_hooked_musicgen(both, model):
    lb, _, lo, _ = both
    assert lb.shape == lo.shape == (2, model.cfg.n_codebooks, 24, model.cfg.d_vocab)
    torch.testing.assert_close(lb, lo, atol=1e-5, rtol=0)


def test_residual_stream_hooks_agree(both, model):
    _, cb, _, co = both
    table = _expand(RESID_HOOK_MAP, model.cfg.n_layers)
    assert len(table) >= 4 * model.cfg.n_layers
    for ours_name in (f"blocks.{i}.hook_resid_{s}" for i in range(model.cfg.n_layers) for s in ("pre", "mid", "mid_cross", "post")):
        assert ours_name in table.values()
    for b_name, o_name in table.items():
        torch.testing.assert_close(cb[b_name], co[o_name], atol=1e-5, rtol=0, msg=lambda m: f"{b_name} vs {o_name}: {m}")


def test_every_mapped_hook_agrees(both, model):
    _, cb, _, co = both
    for b_name, o_name in _expand(HOOK_MAP, model.cfg.n_layers).items():
        x, y = cb[b_name], co[o_name]
        assert x.shape == y.shape, (b_name, o_name)
        torch.testing.assert_close(x, y, atol=1e-5, rtol=0, msg=lambda m: f"{b_name} vs {o_name}: {m}")


def test_bridge_attn_scores_are_the_pattern(both):
    """Documented in HOOK_MAP: wrapped HF attention only hands the bridge its softmaxed weights."""
    _, cb, _, co = both
    torch.testing.assert_close(cb["blocks.0.attn.hook_attn_scores"], co["blocks.0.attn.hook_pattern"], atol=1e-6, rtol=0)


def test_codebook_embeddings_and_heads(both, model):
    _, cb, _, co = both
    k = model.cfg.n_codebooks
    for i in range(k):
        torch.testing.assert_close(cb[f"embed.{i}.hook_out"], co["hook_codebook_embed"][:, :, i], atol=1e-6, rtol=0)
        torch.testing.assert_close(cb[f"unembed.{i}.hook_out"], co["hook_logits"][:, i], atol=1e-5, rtol=0)
    summed = sum(cb[f"embed.{i}.hook_out"] for i in range(k))
    torch.testing.assert_close(summed + co["hook_pos_embed"], cb["blocks.0.hook_in"], atol=1e-6, rtol=0)


def test_hook_name_translation(model):
    n = model.cfg.n_layers
    assert bridge_hook_name("blocks.0.hook_resid_mid", n) == "blocks.0.ln_cross.hook_in"
    assert ours_hook_name("blocks.1.ln2.hook_in", n) == "blocks.1.hook_resid_mid_cross"
    assert ours_hook_name("ln_final.hook_in", n) == f"blocks.{n - 1}.hook_resid_post"
    for b_name, o_name in _expand(HOOK_MAP, n).items():
        model._check_hook_name(o_name)
    with pytest.raises(KeyError):
        ours_hook_name("blocks.0.nope", n)


def test_hooks_intervene(bridge, model):
    """A bridge hook that zeroes the block-0 MLP output changes the logits as the same edit on ours does."""
    codes = random_codes(model, batch=1, pos=12)
    zero = lambda act, hook: torch.zeros_like(act)  # noqa: E731
    kw = bridge_inputs(bridge, codes, PROMPTS[:1])
    with torch.no_grad():
        lb = bridge.run_with_hooks(kw.pop("input_ids"), **kw, fwd_hooks=[("blocks.0.mlp.out.hook_out", zero)])
        lo = model.run_with_hooks(codes, PROMPTS[:1], fwd_hooks=[("blocks.0.hook_mlp_out", zero)])
        plain = model(codes, PROMPTS[:1])
    lb = lb.reshape(lo.shape)
    torch.testing.assert_close(lb, lo, atol=1e-5, rtol=0)
    assert (lo - plain).abs().max() > 1e-4


def test_boot_from_loaded_hf_model(checkpoint_dir, model):
    from transformers import MusicgenForConditionalGeneration

    hf = MusicgenForConditionalGeneration.from_pretrained(checkpoint_dir("base"))
    q_proj, head = hf.decoder.model.decoder.layers[0].self_attn.q_proj, hf.decoder.lm_heads[2]
    bridge = boot_musicgen_bridge(hf)  # wrapped in place: the bridge delegates to HF's own modules
    assert bridge.blocks[0].attn.q.original_component is q_proj
    assert bridge.unembed[2].original_component is head
    assert bridge.original_model is hf
    codes = random_codes(model, batch=1, pos=10)
    with torch.no_grad():
        torch.testing.assert_close(bridge_forward(bridge, codes, PROMPTS[:1]), model(codes, PROMPTS[:1]), atol=1e-5, rtol=0)
    with pytest.raises(TypeError):
        boot_musicgen_bridge(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("name", ["stereo"])  # also checked by hand: no_cond_proj, relu_odd_heads, five_heads_3_layers
def test_other_shapes(name, checkpoint_dir, load_model):
    """8 codebooks (stereo, 2 audio channels): same parity."""
    ours = load_model(name)
    bridge = boot_musicgen_bridge(checkpoint_dir(name))
    codes = random_codes(ours, batch=2, pos=12)
    with torch.no_grad():
        lb, cb = bridge_forward(bridge, codes, PROMPTS, cache=True)
        lo, co = ours.run_with_cache(codes, PROMPTS)
    torch.testing.assert_close(lb, lo, atol=1e-5, rtol=0)
    for b_name, o_name in _expand(RESID_HOOK_MAP, ours.cfg.n_layers).items():
        torch.testing.assert_close(cb[b_name], co[o_name], atol=1e-5, rtol=0)
