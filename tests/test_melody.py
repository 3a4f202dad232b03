"""MusicGen-melody: config, loading, logit and generation parity with Hugging Face, chroma, hooks, errors, CLI.

The melody model is decoder-only: chroma (tiled to chroma_length) and text are prepended to the
codes. Hugging Face's chroma extractor needs torchaudio (not installed), so parity runs on the
same chroma features given to both sides, and our extractor is checked against a numpy
reimplementation of the recipe and on pure tones.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from scipy.signal import get_window
from transformers import MusicgenMelodyForConditionalGeneration
from transformers.audio_utils import chroma_filter_bank

from musicgen_lens import Conditioning, HookedMusicGen
from musicgen_lens.chroma import ChromaExtractor, load_melody
from musicgen_lens.cli import main
from musicgen_lens.conditioning import null_chroma
from musicgen_lens.config import MELODY_FIELDS, MusicGenConfig
from musicgen_lens.decomposition import codebook_logit_attrs, resid_decomposition
from musicgen_lens.generation import delays
from musicgen_lens.loading import convert_hf_decoder, to_hf_decoder
from musicgen_lens.steering import Intervention
from musicgen_lens.tiny import tiny_hf_config

from helpers import MELODY_SR, PROMPTS, assert_cached_steps_equal_full_forward, hf_generate_codes, random_codes

SR = MELODY_SR


@pytest.fixture(scope="module")
def load_pair(checkpoint_dir):
    loaded: dict[str, tuple[HookedMusicGen, MusicgenMelodyForConditionalGeneration]] = {}

    def load(name: str = "melody"):
        if name not in loaded:
            path = checkpoint_dir(name)
            ours = HookedMusicGen.from_pretrained(path, device="cpu")
            hf = MusicgenMelodyForConditionalGeneration.from_pretrained(path).eval()
            loaded[name] = (ours, hf)
        return loaded[name]

    return load


@pytest.fixture(scope="module")
def mel(load_pair) -> HookedMusicGen:
    return load_pair("melody")[0]


def tone(freq: float, seconds: float = 1.0, sr: int = SR, amp: float = 0.5) -> torch.Tensor:
    t = torch.arange(int(seconds * sr), dtype=torch.float64) / sr
    return (amp * torch.sin(2 * torch.pi * freq * t)).float()


def pitch_hz(pitch_class: int, octave: int = 4) -> float:
    """Equal temperament, A4 = 440 Hz; pitch class 0 is C."""
    return 440.0 * 2 ** ((pitch_class - 9) / 12 + (octave - 4))


def random_chroma(batch: int, frames: int, n_chroma: int, seed: int = 0, one_hot: bool = True) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    if one_hot:
        return torch.nn.functional.one_hot(torch.randint(0, n_chroma, (batch, frames), generator=gen), n_chroma).float()
    return torch.rand(batch, frames, n_chroma, generator=gen)


def hf_logits(hf, model, codes, **inputs):
    """HF's logits cover [prefix + codes]; keep the codes' positions."""
    b, k, p = codes.shape
    with torch.no_grad():
        out = hf(**inputs, decoder_input_ids=codes.reshape(b * k, p))
    return out.logits.reshape(b, k, -1, model.cfg.d_vocab)[:, :, -p:]


# ----------------------------------------------------------------------------- config and loading


def test_config_from_melody_checkpoint(load_pair):
    model, hf = load_pair("melody")
    cfg = model.cfg
    assert cfg.is_melody and cfg.n_chroma == hf.config.num_chroma and cfg.chroma_length == hf.config.chroma_length
    assert cfg.has_chroma_proj and cfg.has_cond_proj
    assert all(not b.has_cross_attn for b in model.blocks)
    assert model.chroma_extractor.sample_rate == SR and model.chroma_extractor.n_fft == 4096
    no_proj = load_pair("melody_no_proj")[0].cfg
    assert not no_proj.has_chroma_proj and not no_proj.has_cond_proj
    assert load_pair("melody_no_proj")[0].W_chroma is None


def test_text_only_config_hash_ignores_melody_fields():
    cfg = MusicGenConfig.from_hf(tiny_hf_config())
    assert not cfg.is_melody
    # the hash as computed before melody support: the same fields minus the melody ones
    d = cfg.to_dict()
    for k in ("device", "dtype", "model_name", "use_attn_result", "use_split_qkv_input", *MELODY_FIELDS):
        d.pop(k)
    assert cfg.hash() == hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]
    melody = MusicGenConfig.from_hf(tiny_hf_config(melody=True))
    assert melody.is_melody and melody.hash() != cfg.hash()


def test_state_dict_round_trip(load_pair):
    model, hf = load_pair("melody")
    dec, proj = to_hf_decoder(model.state_dict(), model.cfg)
    hf_dec = hf.decoder.state_dict()
    assert set(dec) == set(hf_dec) and not any("encoder_attn" in k for k in dec)
    for key, value in dec.items():
        assert torch.equal(value, hf_dec[key]), key
    assert torch.equal(proj["audio_enc_to_dec_proj.weight"], hf.audio_enc_to_dec_proj.weight)
    assert torch.equal(proj["enc_to_dec_proj.bias"], hf.enc_to_dec_proj.bias)
    back = convert_hf_decoder(dec, model.cfg, proj)
    assert set(back) == {k for k in model.state_dict() if not k.startswith(("text_encoder.", "codec."))}
    for key, value in back.items():
        assert torch.equal(value, model.state_dict()[key]), key
    proj.pop("audio_enc_to_dec_proj.bias")
    with pytest.raises(KeyError, match=r"missing keys \(1\).*audio_enc_to_dec_proj\.bias"):
        convert_hf_decoder(dec, model.cfg, proj)


# ----------------------------------------------------------------------------- logit parity


@pytest.mark.parametrize("name", ["melody", "melody_no_proj"])
@pytest.mark.parametrize("frames", [5, 40])  # shorter than chroma_length (tiled) and longer (cut)
def test_logits_match_hugging_face(name, frames, load_pair):
    model, hf = load_pair(name)
    codes = random_codes(model, batch=2, pos=30)
    tok = model.tokenize(PROMPTS)
    n_chroma = model.cfg.n_chroma
    for one_hot in (True, False):  # the extractor's one-hot output, and arbitrary features
        chroma = random_chroma(2, frames, n_chroma, seed=frames, one_hot=one_hot)
        both = model.condition(PROMPTS, chroma=chroma)
        cases = {
            "text": (model.condition(PROMPTS), dict(**tok)),
            "chroma": (model.condition(chroma=chroma), dict(input_features=chroma)),
            "both": (both, dict(**tok, input_features=chroma)),
            # HF's unconditional CFG branch: zero text of the same length, the null melody
            "uncond": (both.null_like(), dict(input_ids=tok["input_ids"], attention_mask=torch.zeros_like(tok["attention_mask"]),
                                               input_features=null_chroma(2, frames, n_chroma))),
        }
        for case, (cond, inputs) in cases.items():
            with torch.no_grad():
                ours = model(codes, cond)
            ref = hf_logits(hf, model, codes, **inputs)
            assert ours.shape == (2, model.cfg.n_codebooks, 30, model.cfg.d_vocab)
            torch.testing.assert_close(ours, ref, atol=1e-4, rtol=0, msg=lambda m: f"{case}: {m}")
    # model(codes) = the null conditioning: the null melody and one zero text position
    null_prefix = model.chroma_proj(null_chroma(2, 1, n_chroma)).repeat(1, model.cfg.chroma_length, 1)
    hidden = torch.cat([null_prefix, torch.zeros(2, 1, model.cfg.d_model)], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(model(codes), hf_logits(hf, model, codes, encoder_hidden_states=hidden), atol=1e-4, rtol=0)


def test_conditions_change_logits(mel):
    codes = random_codes(mel, batch=2, pos=10)
    chroma = random_chroma(2, 6, 12)
    with torch.no_grad():
        text = mel(codes, mel.condition(PROMPTS))
        both = mel(codes, mel.condition(PROMPTS, chroma=chroma))
        other = mel(codes, mel.condition(PROMPTS, chroma=random_chroma(2, 6, 12, seed=1)))
    assert not torch.allclose(text, both) and not torch.allclose(both, other)


# ----------------------------------------------------------------------------- hooks


def test_run_with_cache_covers_prefix_and_codes(mel):
    mel.cfg.use_attn_result = True
    try:
        codes = random_codes(mel, batch=2, pos=9)
        cond = mel.condition(PROMPTS, chroma=random_chroma(2, 7, 12))
        logits, cache = mel.run_with_cache(codes, cond)
    finally:
        mel.cfg.use_attn_result = False
    cfg = mel.cfg
    text_pos = cond.states.shape[1]
    P = mel.n_prefix(cond)
    assert P == cfg.chroma_length + text_pos
    D, H, E = cfg.d_model, cfg.n_heads, cfg.d_head
    assert not any("cross" in name for name in mel.hook_dict)
    # the text encoder ran in condition(), before this call
    assert set(cache.keys()) == set(mel.hook_dict) - {"codec.hook_latent", "codec.hook_quantized", "text_encoder.hook_out"}
    assert cache["hook_chroma"].shape == (2, cfg.chroma_length, D)
    assert cache["hook_cond"].shape == (2, text_pos, D)
    assert cache["hook_embed"].shape == (2, 9, D) and cache["hook_pos_embed"].shape == (2, P + 9, D)
    assert cache["hook_logits"].shape == (2, cfg.n_codebooks, 9, cfg.d_vocab) and torch.equal(cache["hook_logits"], logits)
    assert cache["ln_final.hook_scale"].shape == (2, P + 9, 1)
    prefix = torch.cat([cache["hook_chroma"], cache["hook_cond"]], dim=1)
    torch.testing.assert_close(cache["blocks.0.hook_resid_pre"], torch.cat([prefix, cache["hook_embed"]], 1) + cache["hook_pos_embed"])
    # the chroma prefix is the projected chroma tiled to chroma_length
    tiled = cond.chroma.repeat(1, 4, 1)[:, : cfg.chroma_length]
    torch.testing.assert_close(cache["hook_chroma"], tiled @ mel.W_chroma + mel.b_chroma)
    for l in range(cfg.n_layers):
        c = lambda n: cache[f"blocks.{l}.{n}"]  # noqa: E731
        assert c("hook_resid_pre").shape == (2, P + 9, D) and c("attn.hook_q").shape == (2, P + 9, H, E)
        torch.testing.assert_close(c("hook_resid_mid"), c("hook_resid_pre") + c("hook_attn_out"))
        torch.testing.assert_close(c("hook_resid_post"), c("hook_resid_mid") + c("hook_mlp_out"))
        torch.testing.assert_close(c("attn.hook_result").sum(-2), c("hook_attn_out"))
        pattern = c("attn.hook_pattern")
        assert pattern.shape == (2, H, P + 9, P + 9) and torch.all(pattern.triu(diagonal=1) == 0)
        assert torch.all(pattern[:, :, P:, :P].sum(-1) > 0), "codes must attend to the conditioning"
    # decomposition: prefix + embed + pos_embed + attn/mlp outs sum to the final residual stream
    final = cache[f"blocks.{cfg.n_layers - 1}.hook_resid_post"]
    for per_head in (False, True):
        stack, labels = resid_decomposition(cache, per_head=per_head)
        torch.testing.assert_close(stack.sum(0), final, atol=1e-5, rtol=0)
    assert labels[:3] == ["prefix", "embed", "pos_embed"] and not any("C" in lab[2:] for lab in labels if lab.startswith("L"))
    stack, _ = resid_decomposition(cache, apply_ln=True)
    target = codes[:, 1].clamp(max=cfg.d_vocab - 1)
    attrs = codebook_logit_attrs(cache, stack, target, codebook=1)
    direct = logits[:, 1].gather(-1, target[..., None])[..., 0] - (mel.ln_final.b @ mel.W_U[1])[target]
    torch.testing.assert_close(attrs.sum(0), direct, atol=1e-4, rtol=1e-4)


def test_hook_ctx_puts_the_prefix_at_negative_positions(mel):
    cond = mel.condition(PROMPTS, chroma=random_chroma(2, 3, 12))
    seen = {}

    def look(act, hook):
        seen["length"], seen["positions"], seen["pos"] = hook.ctx.length, hook.ctx.positions.clone(), act.shape[1]

    mel.run_with_hooks(random_codes(mel, pos=6), cond, fwd_hooks=[("blocks.1.hook_resid_post", look)])
    P = mel.n_prefix(cond)
    assert seen["length"] == seen["pos"] == P + 6
    assert seen["positions"].tolist() == list(range(-P, 6))


def test_cross_attention_names_give_clear_errors(mel):
    codes = random_codes(mel, pos=4)
    with pytest.raises(KeyError, match="no cross-attention"):
        mel.run_with_hooks(codes, fwd_hooks=[("blocks.0.hook_resid_mid_cross", lambda a, hook: a)])
    with pytest.raises(KeyError, match="no cross-attention"):
        mel.run_with_cache(codes, names_filter=["blocks.0.cross_attn.hook_pattern"])
    with pytest.raises(ValueError, match="no cross-attention"):
        mel.W_Q_cross


# ----------------------------------------------------------------------------- chroma


def numpy_chroma(wav: np.ndarray, sr: int, n_fft: int, hop: int, n_chroma: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """The same recipe written independently: numpy framing + rfft, scipy's Hann window."""
    if wav.shape[-1] < n_fft:
        short = n_fft - wav.shape[-1]
        wav = np.pad(wav, ((0, 0), (short // 2, short - short // 2)))
    window = get_window("hann", n_fft)  # periodic, like torch.hann_window
    padded = np.pad(wav.astype(np.float64), ((0, 0), (n_fft // 2, n_fft // 2)), mode="reflect")
    n_frames = 1 + (padded.shape[-1] - n_fft) // hop
    frames = np.stack([padded[:, i * hop : i * hop + n_fft] for i in range(n_frames)], axis=1) * window
    power = np.abs(np.fft.rfft(frames, axis=-1)) ** 2 / np.sum(window**2)  # [batch, frames, freq]
    bank = chroma_filter_bank(num_frequency_bins=n_fft, num_chroma=n_chroma, sampling_rate=sr, tuning=0)
    raw = power @ bank.T  # [batch, frames, n_chroma]
    norm = raw / np.maximum(raw.max(-1, keepdims=True), 1e-6)
    return raw, np.eye(n_chroma)[norm.argmax(-1)]


@pytest.mark.parametrize("sr, n_fft, hop, seconds", [(8000, 4096, 1024, 1.3), (8000, 1024, 256, 0.05), (32000, 16384, 4096, 1.0)])
def test_chroma_matches_numpy_reference(sr, n_fft, hop, seconds):
    ex = ChromaExtractor(sample_rate=sr, n_fft=n_fft, hop_length=hop)
    gen = torch.Generator().manual_seed(0)
    n = int(seconds * sr)
    t = torch.arange(n) / sr
    # noise plus two tones, so that the argmax is decided by the spectrum rather than by ties
    wav = 0.1 * torch.randn(2, n, generator=gen) + torch.stack([torch.sin(2 * torch.pi * 392 * t), torch.sin(2 * torch.pi * 277 * t)])
    raw_ref, onehot_ref = numpy_chroma(wav.numpy(), sr, n_fft, hop)
    raw = ex.raw_chroma(wav)
    assert raw.shape == raw_ref.shape and raw.shape[1] == ex.frames_for(n)
    np.testing.assert_allclose(raw.double().numpy(), raw_ref, rtol=2e-4, atol=1e-5 * raw_ref.max())
    np.testing.assert_array_equal(ex(wav).numpy(), onehot_ref)


@pytest.mark.parametrize("sr, n_fft, hop", [(8000, 4096, 1024), (32000, 16384, 4096)])
def test_pure_tone_gives_its_pitch_class(sr, n_fft, hop):
    ex = ChromaExtractor(sample_rate=sr, n_fft=n_fft, hop_length=hop)
    for octave in (3, 4, 5):
        for pc in range(12):
            chroma = ex(tone(pitch_hz(pc, octave), seconds=0.6, sr=sr)[None])
            assert chroma.shape[-1] == 12 and torch.all(chroma.sum(-1) == 1)
            assert torch.all(chroma.argmax(-1) == pc), (octave, pc, chroma.argmax(-1))


def test_load_melody_downmixes_pads_and_broadcasts(mel):
    ex = mel.chroma_extractor
    a4, e4 = tone(pitch_hz(9)), tone(pitch_hz(4), seconds=0.5)
    stereo = torch.stack([a4, a4])
    torch.testing.assert_close(load_melody(stereo, ex, sr=SR), ex(a4[None]))
    chroma = load_melody([a4, e4], ex, sr=SR)  # two clips: the shorter is padded with silence
    assert chroma.shape[0] == 2 and torch.all(chroma[0].argmax(-1) == 9)
    short = ex.frames_for(e4.shape[-1])
    assert torch.all(chroma[1, : short - 2].argmax(-1) == 4)
    assert torch.all(chroma[1, short + 1 :].argmax(-1) == 0), "silence reads as bin 0, the null melody"
    assert load_melody(a4, ex, sr=SR, batch=3).shape[0] == 3
    # audio at another rate is resampled to the extractor's
    assert torch.all(load_melody(tone(pitch_hz(9), sr=16000), ex, sr=16000).argmax(-1) == 9)


def test_melody_path_and_array_agree(mel, tmp_path):
    from musicgen_lens.audio import save_audio

    path = save_audio(tmp_path / "m.wav", tone(pitch_hz(2))[None], SR, subtype="FLOAT")
    from_file = mel.condition(PROMPTS, melody=path)
    from_array = mel.condition(PROMPTS, melody=tone(pitch_hz(2)), melody_sr=SR)
    torch.testing.assert_close(from_file.chroma, from_array.chroma)
    assert from_file.chroma.shape[0] == 2 and torch.all(from_file.chroma.argmax(-1) == 2)


def test_conditioning_cat_pads_chroma_with_the_null_melody(mel):
    a = mel.condition(PROMPTS[:1], chroma=random_chroma(1, 5, 12))
    b = mel.condition(PROMPTS[1:])
    both = Conditioning.cat([a, b])
    assert both.chroma.shape == (2, 5, 12)
    assert both.has_melody.tolist() == [True, False] and both.is_null.tolist() == [False, False]
    assert torch.equal(both.chroma[1], null_chroma(1, 5, 12)[0])
    assert a.null_like().is_null.all() and mel.condition(chroma=random_chroma(1, 3, 12)).is_null.tolist() == [False]


# ----------------------------------------------------------------------------- generation


@pytest.mark.parametrize("name", ["melody", "melody_stereo"])
@pytest.mark.parametrize("guidance_scale", [1.0, 3.0])
def test_greedy_generation_equals_hugging_face(name, guidance_scale, load_pair):
    model, hf = load_pair(name)
    melody = torch.cat([tone(pitch_hz(9), 0.5), tone(pitch_hz(4), 0.5)]) + 0.05 * torch.randn(SR, generator=torch.Generator().manual_seed(1))
    chroma = model.melody_chroma(melody, SR)
    assert len(set(chroma[0].argmax(-1).tolist())) > 1, "the melody should move"
    ours = model.generate(PROMPTS, melody=melody, melody_sr=SR, max_new_frames=20, do_sample=False, guidance_scale=guidance_scale)
    ref = hf_generate_codes(hf, model, None, 20, **model.tokenize(PROMPTS), input_features=chroma.expand(2, -1, -1),
                            do_sample=False, guidance_scale=guidance_scale)
    assert ours.shape == (2, model.cfg.n_codebooks, 20)
    assert torch.equal(ours, ref)
    text_only = model.generate(PROMPTS, max_new_frames=20, do_sample=False, guidance_scale=guidance_scale)
    assert torch.equal(text_only, hf_generate_codes(hf, model, None, 20, **model.tokenize(PROMPTS), do_sample=False, guidance_scale=guidance_scale))


def test_cached_steps_equal_full_forward(mel):
    cond = mel.condition(PROMPTS, chroma=random_chroma(2, 4, 12))
    starts = assert_cached_steps_equal_full_forward(mel, cond, frames=15)
    assert starts[0] == -mel.n_prefix(cond)  # the first step reads the melody prefix


def test_melody_only_generation_and_steering_window(mel):
    melody = tone(pitch_hz(7))
    alone = mel.generate(melody=melody, melody_sr=SR, max_new_frames=12, do_sample=False, batch_size=2)
    assert alone.shape == (2, mel.cfg.n_codebooks, 12) and torch.equal(alone[0], alone[1])
    # steering from frame 10 (0.2 s) leaves every earlier frame identical: the prefix does not shift time
    base = mel.generate(PROMPTS, melody=melody, melody_sr=SR, max_new_frames=25, seed=0)
    vec = torch.randn(mel.cfg.d_model, generator=torch.Generator().manual_seed(0))
    steered = mel.generate(PROMPTS, melody=melody, melody_sr=SR, max_new_frames=25, seed=0,
                           steering=[Intervention(vec, site="resid_post", layer=1, alpha=20.0, mode="add", start=10 / mel.frame_rate)])
    assert torch.equal(steered[..., :10], base[..., :10])
    assert not torch.equal(steered[..., 10:], base[..., 10:])


# ----------------------------------------------------------------------------- errors


def test_melody_errors(mel, model, tmp_path):
    a4 = tone(pitch_hz(9))
    with pytest.raises(ValueError, match="needs a MusicGen-melody checkpoint"):
        model.generate(PROMPTS, melody=a4, melody_sr=SR, max_new_frames=3)
    with pytest.raises(ValueError, match="needs a MusicGen-melody checkpoint"):
        model.condition(PROMPTS, melody=a4, melody_sr=SR)
    with pytest.raises(ValueError, match="text-only MusicGen"):
        model(random_codes(model, pos=3), Conditioning(torch.zeros(2, 1, 24), torch.ones(2, 1), chroma=random_chroma(2, 2, 12)))
    with pytest.raises(ValueError, match="all-silent"):
        mel.generate(PROMPTS, melody=torch.zeros(SR), melody_sr=SR, max_new_frames=3)
    nan = a4.clone()
    nan[100] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        mel.condition(PROMPTS, melody=nan, melody_sr=SR)
    for bad_sr in (0, -8000, 44100.5):
        with pytest.raises(ValueError, match="melody_sr must be"):
            mel.condition(PROMPTS, melody=a4, melody_sr=bad_sr)
    from musicgen_lens.audio import save_audio

    path = save_audio(tmp_path / "a.wav", a4[None], SR)
    with pytest.raises(ValueError, match="only for in-memory audio"):
        mel.condition(PROMPTS, melody=path, melody_sr=SR)
    with pytest.raises(FileNotFoundError):
        mel.condition(PROMPTS, melody=tmp_path / "missing.wav")
    with pytest.raises(ValueError, match="melody_sr= was given without melody="):
        mel.generate(PROMPTS, melody_sr=SR, max_new_frames=3)
    with pytest.raises(ValueError, match="3 melodies for 2 prompts"):
        mel.generate(PROMPTS, melody=torch.stack([a4[None]] * 3), melody_sr=SR, max_new_frames=3)
    with pytest.raises(ValueError, match="n_chroma=12"):
        mel.condition(PROMPTS, chroma=torch.zeros(2, 4, 7))
    with pytest.raises(ValueError, match="NaN"):
        mel.condition(PROMPTS, chroma=torch.full((2, 4, 12), float("nan")))
    with pytest.raises(ValueError, match="conditioning positions"):
        mel.generate(PROMPTS, melody=a4, melody_sr=SR, max_new_frames=mel.cfg.n_ctx - mel.cfg.chroma_length)


# ----------------------------------------------------------------------------- CLI


def test_cli_generate_with_melody(checkpoint_dir, tmp_path, capsys):
    import soundfile as sf

    from musicgen_lens.audio import save_audio

    melody = save_audio(tmp_path / "m.wav", tone(pitch_hz(0))[None], SR)
    out = tmp_path / "out.wav"
    rc = main(["generate", "classical trumpet", "--melody", str(melody), "--model", checkpoint_dir("melody"),
               "--duration", "0.2", "--out", str(out), "--seed", "0", "--device", "cpu"])
    assert rc == 0 and out.exists() and "wrote" in capsys.readouterr().out
    audio, sr = sf.read(out)
    assert sr == SR and len(audio) == int(0.2 * 50) * 160  # 10 frames of 160 samples
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:  # a usage error (exit 2), said on stderr before any generation
        main(["generate", "rock", "--melody", str(melody), "--model", checkpoint_dir("base"), "--duration", "0.1",
              "--out", str(tmp_path / "x.wav"), "--device", "cpu"])
    assert exit_.value.code == 2 and "needs a MusicGen-melody checkpoint" in capsys.readouterr().err


def test_transformer_lens_decompositions_refuse_melody_clearly(mel):
    codes = torch.randint(0, mel.cfg.d_vocab, (1, mel.cfg.n_codebooks, 5))
    _, cache = mel.run_with_cache(codes, ["rock"])
    for what in ("decompose_resid", "get_full_resid_decomposition"):
        with pytest.raises(NotImplementedError, match="resid_decomposition"):
            getattr(cache, what)()
    with pytest.warns(UserWarning, match="musicgen_lens.patching"):
        with mel.conditioning(mel.condition(["rock"])):
            pass
