"""HookedMusicGen: parity with Hugging Face, hook semantics, TransformerLens compatibility, errors."""

from __future__ import annotations

import pytest
import torch
from transformer_lens import ActivationCache
from transformer_lens.utilities import get_act_name
from transformers import MusicgenForConditionalGeneration

from musicgen_lens import Conditioning, HookedMusicGen
from musicgen_lens.decomposition import codebook_logit_attrs, resid_decomposition
from musicgen_lens.loading import convert_hf_decoder, to_hf_decoder

from helpers import CONFIGS, PROMPTS, random_codes


def hf_logits(hf, model, codes, texts=None):
    b, k, p = codes.shape
    with torch.no_grad():
        if texts is None:  # Hugging Face's unconditional input: zero states, mask 0
            d = model.cfg.d_model
            out = hf.decoder(
                input_ids=codes.reshape(b * k, p),
                encoder_hidden_states=torch.zeros(b, 1, d),
                encoder_attention_mask=torch.zeros(b, 1, dtype=torch.long),
            )
        else:
            out = hf(**model.tokenize(texts), decoder_input_ids=codes.reshape(b * k, p))
    return out.logits.reshape(b, k, p, -1)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_logits_match_hugging_face(name, checkpoint_dir, load_model):
    model = load_model(name)
    hf = MusicgenForConditionalGeneration.from_pretrained(checkpoint_dir(name)).eval()
    codes = random_codes(model, batch=2, pos=70)
    with torch.no_grad():
        ours = model(codes, model.condition(PROMPTS))
        ours_uncond = model(codes)
    assert ours.shape == (2, model.cfg.n_codebooks, 70, model.cfg.d_vocab)
    torch.testing.assert_close(ours, hf_logits(hf, model, codes, PROMPTS), atol=1e-4, rtol=0)
    torch.testing.assert_close(ours_uncond, hf_logits(hf, model, codes), atol=1e-4, rtol=0)


def test_config_from_hf(load_model):
    cfg = load_model("stereo").cfg
    assert (cfg.n_codebooks, cfg.audio_channels, cfg.n_codebooks_per_channel) == (8, 2, 4)
    assert (cfg.d_model, cfg.n_heads, cfg.d_head, cfg.d_vocab, cfg.pad_token_id) == (32, 4, 8, 64, 64)
    assert cfg.frame_rate == 50 and cfg.sample_rate == 8000
    assert load_model("no_cond_proj").cfg.has_cond_proj is False
    assert load_model("base").cfg.has_cond_proj is True


def test_state_dict_round_trip(checkpoint_dir, model):
    hf = MusicgenForConditionalGeneration.from_pretrained(checkpoint_dir("base"))
    dec, proj = to_hf_decoder(model.state_dict(), model.cfg)
    for key, value in dec.items():
        assert torch.equal(value, hf.decoder.state_dict()[key]), key
    assert torch.equal(proj["enc_to_dec_proj.weight"], hf.enc_to_dec_proj.weight)
    back = convert_hf_decoder(dec, model.cfg, proj)
    for key, value in back.items():
        assert torch.equal(value, model.state_dict()[key]), key


def test_loading_reports_missing_and_unexpected_keys(model, checkpoint_dir):
    hf = MusicgenForConditionalGeneration.from_pretrained(checkpoint_dir("base"))
    sd = hf.decoder.state_dict()
    sd.pop("model.decoder.layers.1.fc1.weight")
    sd["model.decoder.layers.7.fc1.weight"] = torch.zeros(1)
    proj = hf.enc_to_dec_proj.state_dict(prefix="enc_to_dec_proj.")
    with pytest.raises(KeyError, match=r"missing keys \(1\).*layers\.1\.fc1.*unexpected keys \(1\).*layers\.7\.fc1"):
        convert_hf_decoder(sd, model.cfg, proj)
    with pytest.raises(TypeError, match="MusicgenForConditionalGeneration"):
        HookedMusicGen.from_hf(hf.decoder)


def test_weights_in_transformer_lens_layout(model):
    cfg = model.cfg
    L, H, D, E, M, K, V = cfg.n_layers, cfg.n_heads, cfg.d_model, cfg.d_head, cfg.d_mlp, cfg.n_codebooks, cfg.d_vocab
    assert model.W_Q.shape == model.W_K.shape == model.W_V.shape == (L, H, D, E)
    assert model.W_O.shape == (L, H, E, D)
    assert model.W_Q_cross.shape == (L, H, D, E) and model.W_O_cross.shape == (L, H, E, D)
    assert model.W_in.shape == (L, D, M) and model.W_out.shape == (L, M, D)
    assert model.W_E.shape == (K, V + 1, D) and model.W_U.shape == (K, D, V)
    assert model.OV.shape == (L, H, D, D) and model.QK.shape == (L, H, D, D)
    # OV of head 1 in layer 0 is W_V @ W_O of that head
    torch.testing.assert_close(model.OV[0, 1].AB, model.blocks[0].attn.W_V[1] @ model.blocks[0].attn.W_O[1])


def expected_shapes(cfg, batch, pos, text_pos):
    D, H, E, K, V, M = cfg.d_model, cfg.n_heads, cfg.d_head, cfg.n_codebooks, cfg.d_vocab, cfg.d_mlp
    shapes = {
        "hook_embed": (batch, pos, D),
        "hook_codebook_embed": (batch, pos, K, D),
        "hook_pos_embed": (batch, pos, D),
        "hook_cond": (batch, text_pos, D),
        "text_encoder.hook_out": (batch, text_pos, cfg.d_cond),
        "ln_final.hook_scale": (batch, pos, 1),
        "ln_final.hook_normalized": (batch, pos, D),
        "hook_logits": (batch, K, pos, V),
    }
    for l in range(cfg.n_layers):
        for name in ("hook_resid_pre", "hook_resid_mid", "hook_resid_mid_cross", "hook_resid_post", "hook_attn_out", "hook_cross_attn_out", "hook_mlp_out"):
            shapes[f"blocks.{l}.{name}"] = (batch, pos, D)
        for ln in ("ln1", "ln_cross", "ln2"):
            shapes[f"blocks.{l}.{ln}.hook_scale"] = (batch, pos, 1)
            shapes[f"blocks.{l}.{ln}.hook_normalized"] = (batch, pos, D)
        for attn, kpos in (("attn", pos), ("cross_attn", text_pos)):
            shapes[f"blocks.{l}.{attn}.hook_q"] = (batch, pos, H, E)
            shapes[f"blocks.{l}.{attn}.hook_k"] = (batch, kpos, H, E)
            shapes[f"blocks.{l}.{attn}.hook_v"] = (batch, kpos, H, E)
            shapes[f"blocks.{l}.{attn}.hook_attn_scores"] = (batch, H, pos, kpos)
            shapes[f"blocks.{l}.{attn}.hook_pattern"] = (batch, H, pos, kpos)
            shapes[f"blocks.{l}.{attn}.hook_z"] = (batch, pos, H, E)
            shapes[f"blocks.{l}.{attn}.hook_result"] = (batch, pos, H, D)
        shapes[f"blocks.{l}.mlp.hook_pre"] = (batch, pos, M)
        shapes[f"blocks.{l}.mlp.hook_post"] = (batch, pos, M)
    return shapes


@pytest.fixture()
def attn_result_on(model):
    model.cfg.use_attn_result = True
    yield model
    model.cfg.use_attn_result = False


def test_every_documented_hook_is_cached_with_its_shape(attn_result_on):
    model = attn_result_on
    codes = random_codes(model, batch=2, pos=9)
    logits, cache = model.run_with_cache(codes, PROMPTS)
    assert isinstance(cache, ActivationCache)
    text_pos = model.tokenize(PROMPTS)["input_ids"].shape[1]
    shapes = expected_shapes(model.cfg, 2, 9, text_pos)
    assert set(cache.keys()) == set(shapes) == set(model.hook_dict) - {"codec.hook_latent", "codec.hook_quantized"}
    for name, shape in shapes.items():
        assert tuple(cache[name].shape) == shape, name
    assert torch.equal(cache["hook_logits"], logits)


def test_linked_hooks_agree(attn_result_on):
    model = attn_result_on
    cond = model.condition(PROMPTS)
    _, cache = model.run_with_cache(random_codes(model, pos=12), cond)
    for l in range(model.cfg.n_layers):
        c = lambda n: cache[f"blocks.{l}.{n}"]  # noqa: E731
        if l + 1 < model.cfg.n_layers:
            assert torch.equal(c("hook_resid_post"), cache[f"blocks.{l + 1}.hook_resid_pre"])
        torch.testing.assert_close(c("hook_resid_mid"), c("hook_resid_pre") + c("hook_attn_out"))
        torch.testing.assert_close(c("hook_resid_mid_cross"), c("hook_resid_mid") + c("hook_cross_attn_out"))
        torch.testing.assert_close(c("hook_resid_post"), c("hook_resid_mid_cross") + c("hook_mlp_out"))
        torch.testing.assert_close(c("attn.hook_result").sum(-2), c("hook_attn_out"))
        torch.testing.assert_close(c("cross_attn.hook_result").sum(-2), c("hook_cross_attn_out"))
        pattern = c("attn.hook_pattern")
        assert torch.all(pattern.triu(diagonal=1) == 0), "self-attention must be causal"
        torch.testing.assert_close(pattern.sum(-1), torch.ones_like(pattern.sum(-1)))
        cross = c("cross_attn.hook_pattern")  # [batch, head, pos, text_pos]
        padded = ~cond.mask[:, None, None, :].expand_as(cross)
        assert padded.any(), "the prompts must have different lengths for this test"
        assert torch.all(cross[padded] == 0), "cross-attention must put zero weight on padded text"
        torch.testing.assert_close(cross.sum(-1), torch.ones_like(cross.sum(-1)))
    torch.testing.assert_close(cache["hook_embed"], cache["hook_codebook_embed"].sum(-2))
    torch.testing.assert_close(cache["blocks.0.hook_resid_pre"], cache["hook_embed"] + cache["hook_pos_embed"])


def test_null_conditioning_makes_cross_attention_silent(model):
    _, cache = model.run_with_cache(random_codes(model, pos=5), names_filter=lambda n: "cross" in n)
    for l in range(model.cfg.n_layers):
        assert torch.all(cache[f"blocks.{l}.cross_attn.hook_pattern"] == 0)
        assert torch.all(cache[f"blocks.{l}.hook_cross_attn_out"] == 0)


def test_text_changes_logits_and_conditioning_context(model):
    codes = random_codes(model, pos=6)
    cond = model.condition(PROMPTS)
    with torch.no_grad():
        a, b = model(codes, cond), model(codes, model.condition(PROMPTS[::-1]))
        with model.conditioning(cond):
            c = model(codes)
        d = model(codes)
    assert not torch.allclose(a, b)
    assert torch.equal(a, c)
    torch.testing.assert_close(d, model(codes, model.null_condition(2)))


def test_identity_hook_is_bit_identical_and_ablation_changes(model):
    from musicgen_lens.components import fused_kernels

    codes, cond = random_codes(model, pos=10), model.condition(PROMPTS)
    every_hook = lambda name: True  # noqa: E731
    with fused_kernels(False):  # hooks on scores/pattern/scale switch to the explicit path: compare on it
        base = model(codes, cond)
        same = model.run_with_hooks(codes, cond, fwd_hooks=[(every_hook, lambda act, hook: act)])
    assert torch.equal(base, same)
    torch.testing.assert_close(model(codes, cond), base, atol=1e-5, rtol=0)  # the fused path agrees
    zeroed = model.run_with_hooks(codes, cond, fwd_hooks=[("blocks.1.hook_mlp_out", lambda act, hook: torch.zeros_like(act))])
    assert not torch.allclose(base, zeroed)


def test_hooks_are_removed_after_an_exception(model):
    codes = random_codes(model, pos=4)

    def boom(act, hook):
        raise RuntimeError("inside the hook")

    with pytest.raises(RuntimeError, match="inside the hook"):
        model.run_with_hooks(codes, fwd_hooks=[("blocks.0.hook_resid_pre", boom)])
    assert all(not hp.fwd_hooks for hp in model.hook_dict.values())
    model(codes)  # and the model still runs


def test_unknown_hook_names_raise(model):
    codes = random_codes(model, pos=4)
    with pytest.raises(KeyError, match=r"Unknown hook name 'blocks.0.hook_resid_prе'.*Did you mean"):
        model.run_with_hooks(codes, fwd_hooks=[("blocks.0.hook_resid_prе", lambda a, hook: a)])
    with pytest.raises(KeyError, match="blocks.9.hook_resid_pre"):
        model.run_with_cache(codes, names_filter=["blocks.9.hook_resid_pre"])
    with pytest.raises(KeyError, match="Unknown hook name"):
        model.add_hook("hook_nothing", lambda a, hook: a)


def test_short_act_names_resolve_in_cache(model):
    _, cache = model.run_with_cache(random_codes(model, pos=5), PROMPTS)
    assert torch.equal(cache["resid_pre", 1], cache["blocks.1.hook_resid_pre"])
    assert torch.equal(cache[get_act_name("cross_attn_out", 0)], cache["blocks.0.hook_cross_attn_out"])
    assert torch.equal(cache["pattern", 0], cache["blocks.0.attn.hook_pattern"])


def test_decomposition_with_cross_attention_sums_to_resid(model):
    _, cache = model.run_with_cache(random_codes(model, pos=8), PROMPTS)
    final = cache[f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"]
    for per_head in (False, True):
        stack, labels = resid_decomposition(cache, per_head=per_head)
        assert stack.shape[0] == len(labels)
        torch.testing.assert_close(stack.sum(0), final, atol=1e-5, rtol=0)
    stack, labels = resid_decomposition(cache, layer=1)
    torch.testing.assert_close(stack.sum(0), cache["blocks.1.hook_resid_pre"], atol=1e-5, rtol=0)
    assert labels == ["embed", "pos_embed", "0_attn_out", "0_cross_attn_out", "0_mlp_out"]
    # TransformerLens's own decomposition misses the cross-attention term
    tl = cache.decompose_resid(return_labels=False)
    assert not torch.allclose(tl.sum(0), final, atol=1e-3)


def test_transformer_lens_cache_methods(model):
    codes = random_codes(model, pos=8)
    logits, cache = model.run_with_cache(codes, PROMPTS)
    L, H = model.cfg.n_layers, model.cfg.n_heads
    acc, labels = cache.accumulated_resid(return_labels=True)
    assert acc.shape == (L + 1, 2, 8, model.cfg.d_model) and len(labels) == L + 1
    torch.testing.assert_close(acc[-1], cache[f"blocks.{L - 1}.hook_resid_post"])
    heads = cache.stack_head_results(layer=-1)
    assert heads.shape == (L * H, 2, 8, model.cfg.d_model)
    torch.testing.assert_close(heads[:H].sum(0), cache["blocks.0.hook_attn_out"], atol=1e-5, rtol=0)
    full = cache.get_full_resid_decomposition(expand_neurons=False)
    assert full.shape[1:] == (2, 8, model.cfg.d_model)
    # apply_ln_to_stack on the final resid reproduces ln_final's normalisation (before w, b)
    normed = cache.apply_ln_to_stack(acc[-1:], layer=None)[0]
    expected = (cache["ln_final.hook_normalized"] - model.ln_final.b) / model.ln_final.w
    torch.testing.assert_close(normed, expected, atol=1e-4, rtol=1e-4)
    # logit attribution per codebook: summing the components gives the logit minus ln_final's bias term
    stack, _ = resid_decomposition(cache, apply_ln=True)
    target = codes[:, 2].clamp(max=model.cfg.d_vocab - 1)
    for k in (0, model.cfg.n_codebooks - 1):
        attrs = codebook_logit_attrs(cache, stack, target, codebook=k)
        direct = logits[:, k].gather(-1, target[..., None])[..., 0] - (model.ln_final.b @ model.W_U[k])[target]
        torch.testing.assert_close(attrs.sum(0), direct, atol=1e-4, rtol=1e-4)
        with model.using_codebook(k):  # TransformerLens applies the final LN scale itself
            tl_attrs = cache.logit_attrs(resid_decomposition(cache)[0], target)
        torch.testing.assert_close(tl_attrs, attrs)


def test_logit_attribution_rejects_pad_codes(model):
    _, cache = model.run_with_cache(random_codes(model, pos=4), PROMPTS)
    stack, _ = resid_decomposition(cache, apply_ln=True)
    with pytest.raises(ValueError, match=r"mask the pad/BOS code 64"):
        codebook_logit_attrs(cache, stack, torch.full((2, 4), model.cfg.pad_token_id), codebook=0)


def test_loss_return_type(model):
    codes = random_codes(model, pos=10)
    logits, loss = model(codes, PROMPTS, return_type="both")
    manual = []
    for k in range(model.cfg.n_codebooks):
        tgt = codes[:, k, 1:]
        keep = tgt != model.cfg.pad_token_id
        manual.append(torch.nn.functional.cross_entropy(logits[:, k, :-1][keep], tgt[keep]))
    torch.testing.assert_close(loss, torch.stack(manual).mean())
    assert model(codes, return_type=None) is None


def test_stop_at_layer_returns_the_residual(model):
    codes = random_codes(model, pos=6)
    _, cache = model.run_with_cache(codes)
    torch.testing.assert_close(model(codes, stop_at_layer=1), cache["blocks.1.hook_resid_pre"])


@pytest.mark.parametrize(
    "make_codes, error, match",
    [
        (lambda m: torch.zeros(2, m.cfg.n_codebooks, 5), TypeError, "integer tensor"),
        (lambda m: torch.zeros(m.cfg.n_codebooks, 5, dtype=torch.long), ValueError, r"codes\[None\]"),
        (lambda m: torch.zeros(2, 3, 5, dtype=torch.long), ValueError, r"n_codebooks=4"),
        (lambda m: torch.full((2, m.cfg.n_codebooks, 5), m.cfg.d_vocab + 1), ValueError, r"must lie in \[0, 64\]"),
        (lambda m: torch.full((2, m.cfg.n_codebooks, 5), -1), ValueError, "must lie in"),
        (lambda m: torch.zeros(2, m.cfg.n_codebooks, m.cfg.n_ctx + 1, dtype=torch.long), ValueError, "n_ctx=256"),
        (lambda m: torch.zeros(2, m.cfg.n_codebooks, 5, dtype=torch.long, device="meta"), ValueError, "use codes.to"),
        (lambda m: [[1, 2]], TypeError, "LongTensor"),
    ],
)
def test_bad_codes_give_clear_errors(model, make_codes, error, match):
    with pytest.raises(error, match=match):
        model(make_codes(model))


def test_bad_conditioning_gives_clear_errors(model):
    codes = random_codes(model, batch=3, pos=4)
    with pytest.raises(ValueError, match="batch 3 but the conditioning has batch 2"):
        model(codes, model.condition(PROMPTS))
    with pytest.raises(TypeError, match="Conditioning"):
        model(codes, torch.zeros(3, 2, 24))
    with pytest.raises(ValueError, match="d_cond=24"):
        model(codes, Conditioning(torch.zeros(3, 2, 7), torch.ones(3, 2)))
    with pytest.raises(ValueError, match="non-empty list"):
        model.condition([])
    with pytest.raises(ValueError, match="return_type"):
        model(codes, return_type="probs")


# ---------------------------------------------------------------------------- hardening


def test_stop_at_layer_is_validated_and_counts_from_the_end(model):
    codes = random_codes(model, batch=1, pos=4)
    n = model.cfg.n_layers
    with pytest.raises(ValueError, match="stop_at_layer must be an int"):
        model(codes, stop_at_layer=n + 1)
    with pytest.raises(ValueError, match="stop_at_layer must be an int"):
        model(codes, stop_at_layer=1.0)
    with torch.no_grad():
        _, cache = model.run_with_cache(codes, names_filter=f"blocks.{n - 1}.hook_resid_pre")
        torch.testing.assert_close(model(codes, stop_at_layer=-1), cache[f"blocks.{n - 1}.hook_resid_pre"])


def test_condition_detaches_the_text_encoder_unless_asked(model):
    cond = model.condition(PROMPTS)
    assert not cond.states.requires_grad
    codes = random_codes(model, batch=2, pos=4)
    for _ in range(2):  # a second backward through the same conditioning works
        model(codes, cond, return_type="loss").backward()
    model.zero_grad()
    assert model.condition(PROMPTS, requires_grad=True).states.requires_grad


def test_nan_text_states_are_refused(model):
    cond = model.condition(PROMPTS)
    with pytest.raises(ValueError, match="NaN or inf"):
        Conditioning(cond.states * float("nan"), cond.mask)


def test_a_str_is_one_text_and_batch_one_broadcasts(model):
    codes = random_codes(model, batch=2, pos=4)
    with torch.no_grad():
        a = model(codes, PROMPTS[0])
        b = model(codes, [PROMPTS[0], PROMPTS[0]])
        c = model(codes, model.condition(PROMPTS[:1]))
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, c)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_forward_and_generate_follow_the_modules_dtype(load_model, checkpoint_dir, dtype):
    from musicgen_lens import HookedMusicGen

    model = HookedMusicGen.from_pretrained(checkpoint_dir("base"), device="cpu").to(dtype)
    assert model.dtype == dtype
    codes = random_codes(model, batch=2, pos=5)
    with torch.no_grad():
        logits = model(codes, PROMPTS)
    assert logits.dtype == dtype and torch.isfinite(logits.float()).all()
    out = model.generate(PROMPTS, max_new_frames=3, seed=0, progress=False)
    assert out.shape == (2, model.cfg.n_codebooks, 3)


def test_padded_decoder_attention_mask_is_refused_not_ignored(model):
    codes = random_codes(model, batch=2, pos=5)
    mask = torch.ones(2, 5, dtype=torch.long)
    with torch.no_grad():
        torch.testing.assert_close(model(codes, decoder_attention_mask=mask), model(codes))
    mask[0, :2] = 0  # left padding
    with pytest.raises(NotImplementedError, match="padded"):
        model(codes, decoder_attention_mask=mask)
