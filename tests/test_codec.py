"""Codec (hooked EnCodec) against Hugging Face's EncodecModel / MusicGen code paths, on tiny random models."""

from __future__ import annotations

import copy

import pytest
import torch
from transformer_lens import HookedRootModule
from transformers import (
    EncodecConfig,
    EncodecModel,
    MusicgenConfig,
    MusicgenDecoderConfig,
    MusicgenForConditionalGeneration,
    T5Config,
)

from musicgen_lens.codec import Codec
from musicgen_lens.loading import _quiet_special_token_check
from musicgen_lens.tiny import calibrate_codebooks

HOP = 8 * 5 * 4  # product of upsampling_ratios
# 16 kHz / 160 = 100 frames/s; 64 codes = 6 bits, so 600 bit/s per codebook:
# 2.4 kbps -> 4 codebooks (the default, target_bandwidths[0]); 4.8 kbps -> all 8 quantizers.
BANDWIDTHS = [2.4, 4.8]


def encodec_config(**overrides) -> EncodecConfig:
    kwargs = dict(
        sampling_rate=16000,
        audio_channels=1,
        num_filters=4,
        hidden_size=16,
        upsampling_ratios=[8, 5, 4],
        codebook_size=64,
        target_bandwidths=BANDWIDTHS,
        normalize=False,
        chunk_length_s=None,
        use_causal_conv=False,  # as MusicGen's 32 kHz EnCodec
        num_lstm_layers=1,
    )
    kwargs.update(overrides)
    return EncodecConfig(**kwargs)


@torch.no_grad()
def fill_codebooks(encodec: EncodecModel, seed: int) -> None:
    calibrate_codebooks(encodec, seed)


def audio(*shape, seed=0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 0.5


@pytest.fixture(scope="module")
def encodec_pair(tmp_path_factory):
    """(original, reloaded) tiny EnCodec: the reload goes through save_pretrained / from_pretrained."""
    torch.manual_seed(0)
    original = EncodecModel(encodec_config()).eval()
    fill_codebooks(original, seed=1)
    path = tmp_path_factory.mktemp("encodec")
    original.save_pretrained(path)
    loaded = EncodecModel.from_pretrained(path).eval()
    return original, loaded


@pytest.fixture(scope="module")
def encodec(encodec_pair):
    return encodec_pair[1]


@pytest.fixture(scope="module")
def codec(encodec):
    return Codec(encodec)


@pytest.fixture(scope="module")
def stereo_musicgen():
    with _quiet_special_token_check():  # pad = vocab_size, as in MusicGen
        torch.manual_seed(0)
        config = MusicgenConfig(
            text_encoder=T5Config(vocab_size=32, d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=2),
            audio_encoder=encodec_config(),
            decoder=MusicgenDecoderConfig(
                vocab_size=64,
                hidden_size=16,
                num_hidden_layers=1,
                ffn_dim=32,
                num_attention_heads=2,
                num_codebooks=8,
                audio_channels=2,
                pad_token_id=64,
                bos_token_id=64,
                max_position_embeddings=64,
            ),
        )
        model = MusicgenForConditionalGeneration(config).eval()
    fill_codebooks(model.audio_encoder, seed=2)
    return model


@pytest.fixture(scope="module")
def stereo_codec(stereo_musicgen):
    return Codec(stereo_musicgen.audio_encoder, audio_channels=2, n_codebooks=stereo_musicgen.decoder.num_codebooks)


class Root(HookedRootModule):
    """What HookedMusicGen will be, reduced to its codec submodule."""

    def __init__(self, codec: Codec):
        super().__init__()
        self.codec = codec
        self.setup()

    def forward(self, audio):
        return self.codec(audio)


# ------------------------------------------------------------------------------------------------
# Hugging Face equivalence


def test_from_pretrained_keeps_codebooks(encodec_pair):
    original, loaded = encodec_pair
    for (name, a), (_, b) in zip(original.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    x = audio(2, 1, 1600)
    assert torch.equal(Codec(original).encode(x), Codec(loaded).encode(x))


def test_attributes(codec, stereo_codec):
    assert (codec.sample_rate, codec.frame_rate, codec.hop_length) == (16000, 100.0, HOP)
    assert (codec.n_codebooks, codec.codebook_size, codec.audio_channels, codec.d_latent) == (4, 64, 1, 16)
    assert (stereo_codec.n_codebooks, stereo_codec.n_codebooks_per_channel, stereo_codec.audio_channels) == (8, 4, 2)
    assert codec.frames_for_samples(1) == 1 and codec.frames_for_samples(HOP) == 1
    assert codec.frames_for_samples(HOP + 1) == 2 and codec.samples_for_frames(3) == 3 * HOP


@pytest.mark.parametrize("n_samples", [1600, 1234])
def test_mono_encode_decode_match_hf(encodec, codec, n_samples):
    x = audio(3, 1, n_samples)
    hf = encodec.encode(x)  # bandwidth=None -> target_bandwidths[0], as MusicGen calls it
    assert hf.audio_codes.shape == (1, 3, 4, codec.frames_for_samples(n_samples))
    codes = codec.encode(x)
    assert codes.dtype == torch.long
    assert torch.equal(codes, hf.audio_codes[0])
    assert codes.unique().numel() > 10, "quantisation should be non-trivial"

    with torch.no_grad():
        expected = encodec.decode(hf.audio_codes, hf.audio_scales).audio_values
        got = codec.decode(codes)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_n_codebooks_follows_bandwidth(encodec):
    x = audio(2, 1, 1000)
    hf = encodec.encode(x, bandwidth=4.8).audio_codes[0]
    assert hf.shape[1] == 8
    assert torch.equal(Codec(encodec, n_codebooks=8).encode(x), hf)


def test_stereo_encode_matches_hf_generation_path(stereo_musicgen, stereo_codec):
    # MusicgenForConditionalGeneration._prepare_audio_encoder_kwargs_for_generation: left and right
    # encoded separately, codebooks interleaved, flattened to [batch * num_codebooks, frames].
    x = audio(2, 2, 1500)
    kwargs = stereo_musicgen._prepare_audio_encoder_kwargs_for_generation(x, {})
    expected = kwargs["decoder_input_ids"].reshape(2, 8, -1)
    codes = stereo_codec.encode(x)
    assert torch.equal(codes, expected)
    mono = Codec(stereo_musicgen.audio_encoder)
    assert torch.equal(codes[:, 0::2], mono.encode(x[:, :1]))  # even codebooks = left
    assert torch.equal(codes[:, 1::2], mono.encode(x[:, 1:]))  # odd codebooks = right


def test_mono_into_stereo_matches_hf_forward(stereo_musicgen, stereo_codec):
    # MusicgenForConditionalGeneration.forward encodes mono audio and repeat_interleaves the codes;
    # capture the decoder_input_ids it builds.
    captured = {}
    handle = stereo_musicgen.decoder.register_forward_pre_hook(
        lambda module, args, kwargs: captured.update(ids=kwargs["input_ids"]), with_kwargs=True
    )
    x = audio(2, 1, 1500)
    try:
        with torch.no_grad():
            stereo_musicgen(input_ids=torch.tensor([[1, 2, 3], [4, 5, 6]]), input_values=x)
    finally:
        handle.remove()
    codes = stereo_codec.encode(x)
    assert torch.equal(codes, captured["ids"].reshape(2, 8, -1))
    assert torch.equal(codes[:, 0::2], codes[:, 1::2])


def test_stereo_decode_matches_hf_generate(stereo_musicgen, stereo_codec):
    # End to end: generate() decodes left (codes[:, ::2]) and right (codes[:, 1::2]) separately and
    # concatenates them on the channel axis. Spy on its audio_encoder.decode calls to recover the codes.
    calls = []
    original_decode = stereo_musicgen.audio_encoder.decode

    def spy(audio_codes, *args, **kwargs):
        calls.append(audio_codes.clone())
        return original_decode(audio_codes, *args, **kwargs)

    stereo_musicgen.audio_encoder.decode = spy
    try:
        torch.manual_seed(0)
        waveform = stereo_musicgen.generate(
            input_ids=torch.tensor([[1, 2, 3], [4, 5, 6]]), max_new_tokens=12, do_sample=True
        )
    finally:
        del stereo_musicgen.audio_encoder.decode  # back to the class method
    left, right = calls
    codes = torch.empty(2, 8, left.shape[-1], dtype=torch.long)
    codes[:, 0::2], codes[:, 1::2] = left[0], right[0]
    assert codes.unique().numel() > 10
    with torch.no_grad():
        got = stereo_codec.decode(codes)
    assert got.shape == waveform.shape == (2, 2, stereo_codec.samples_for_frames(codes.shape[-1]))
    torch.testing.assert_close(got, waveform, atol=1e-5, rtol=0)


def test_stereo_decode_matches_hf_decode_lines(stereo_musicgen, stereo_codec):
    # The same as generate's tail (modeling_musicgen.py, the audio_channels == 2 branch), called directly.
    codes = torch.randint(0, 64, (3, 8, 9), generator=torch.Generator().manual_seed(5))
    output_ids = codes[None]
    with torch.no_grad():
        left = stereo_musicgen.audio_encoder.decode(output_ids[:, :, ::2, :], audio_scales=[None] * 3).audio_values
        right = stereo_musicgen.audio_encoder.decode(output_ids[:, :, 1::2, :], audio_scales=[None] * 3).audio_values
        got = stereo_codec.decode(codes)
    torch.testing.assert_close(got, torch.cat([left, right], dim=1), atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------------------------
# shapes and padding


@pytest.mark.parametrize("n_samples", [1, 159, 160, 161, 1000])
def test_round_trip_shape(codec, stereo_codec, n_samples):
    frames = codec.frames_for_samples(n_samples)
    with torch.no_grad():
        assert codec.encode(audio(2, 1, n_samples)).shape == (2, 4, frames)
        assert codec.decode(codec.encode(audio(2, 1, n_samples))).shape == (2, 1, frames * HOP)
        assert stereo_codec(audio(2, 2, n_samples)).shape == (2, 2, frames * HOP)
        assert stereo_codec(audio(2, 1, n_samples)).shape == (2, 2, frames * HOP)  # mono -> stereo


def test_list_of_clips_matches_hf_padding_mask(encodec, codec):
    clips = [audio(1, 1600, seed=1), audio(1, 900, seed=2), audio(1, 1234, seed=3)]
    padded = torch.zeros(3, 1, 1600)
    mask = torch.zeros(3, 1600, dtype=torch.bool)
    for i, clip in enumerate(clips):
        padded[i, :, : clip.shape[-1]] = clip
        mask[i, : clip.shape[-1]] = True
    garbage = padded + (~mask[:, None]) * 7.0  # masked samples must be ignored
    expected = encodec.encode(garbage, padding_mask=mask).audio_codes[0]
    codes = codec.encode(clips)
    assert codes.shape == (3, 4, codec.frames_for_samples(1600))
    assert torch.equal(codes, expected)
    assert torch.equal(codec.encode(garbage, padding_mask=mask), expected)
    assert torch.equal(codec.encode(garbage, padding_mask=mask[:, None]), expected)
    # The longest clip has no padding: same codes as alone.
    assert torch.equal(codes[0], codec.encode(clips[0][None])[0])


def test_stereo_list_of_clips(stereo_codec):
    clips = [audio(2, 800, seed=1), audio(2, 480, seed=2)]
    codes = stereo_codec.encode(clips)
    assert codes.shape == (2, 8, 5)
    assert torch.equal(codes[0], stereo_codec.encode(clips[0][None])[0])


def test_follows_module_dtype(encodec):
    codec64 = Codec(copy.deepcopy(encodec).double())
    x = audio(1, 1, 800)  # float32 in, moved to the module's dtype
    codes = codec64.encode(x)
    assert codec64.decode(codes).dtype == torch.float64


# ------------------------------------------------------------------------------------------------
# hooks


def test_hooks_cache_layout(codec, encodec):
    root = Root(codec)
    assert {"codec.hook_latent", "codec.hook_quantized"} <= set(root.hook_dict)
    x = audio(2, 1, 1000)
    out, cache = root.run_with_cache(x)
    frames = codec.frames_for_samples(1000)
    assert cache["codec.hook_latent"].shape == (2, 1, 16, frames)
    assert cache["codec.hook_quantized"].shape == (2, 1, 16, frames)
    with torch.no_grad():
        torch.testing.assert_close(cache["codec.hook_latent"][:, 0], encodec.encoder(x))
        codes = codec.encode(x)
        # hook_quantized on decode is the sum of the chosen codebook vectors
        torch.testing.assert_close(cache["codec.hook_quantized"][:, 0], encodec.quantizer.decode(codes.transpose(0, 1)))
    torch.testing.assert_close(out, codec.decode(codes))


def test_hooks_fire_in_order_on_encode_and_decode(codec):
    root = Root(codec)
    seen = []
    hooks = [(name, lambda t, hook: seen.append((hook.name, tuple(t.shape)))) for name in root.hook_dict]
    with root.hooks(fwd_hooks=hooks), torch.no_grad():
        codes = codec.encode(audio(1, 1, 480))
        assert [name for name, _ in seen] == ["codec.hook_latent", "codec.hook_quantized"]
        codec.decode(codes)
    assert [name for name, _ in seen] == ["codec.hook_latent", "codec.hook_quantized", "codec.hook_quantized"]
    assert len({shape for _, shape in seen}) == 1  # same layout everywhere: [1, 1, 16, 3]


def test_stereo_latent_layout(stereo_codec, stereo_musicgen):
    root = Root(stereo_codec)
    x = audio(2, 2, 1000)
    _, cache = root.run_with_cache(x)
    latent = cache["codec.hook_latent"]
    assert latent.shape == (2, 2, 16, stereo_codec.frames_for_samples(1000))
    with torch.no_grad():
        torch.testing.assert_close(latent[:, 1], stereo_musicgen.audio_encoder.encoder(x[:, 1:]))
    _, cache = root.run_with_cache(x[:, :1])  # mono into stereo: both streams equal
    assert torch.equal(cache["codec.hook_latent"][:, 0], cache["codec.hook_latent"][:, 1])


def test_ablating_quantized_changes_decoded_audio(stereo_codec):
    root = Root(stereo_codec)
    codes = stereo_codec.encode(audio(2, 2, 1000))
    with torch.no_grad():
        clean = stereo_codec.decode(codes)

        def zero_right(t, hook):
            t = t.clone()
            t[:, 1] = 0.0
            return t

        with root.hooks(fwd_hooks=[("codec.hook_quantized", zero_right)]):
            ablated = stereo_codec.decode(codes)
    torch.testing.assert_close(ablated[:, 0], clean[:, 0])  # left untouched
    assert not torch.allclose(ablated[:, 1], clean[:, 1], atol=1e-5)


def test_editing_latent_changes_codes(codec):
    root = Root(codec)
    x = audio(2, 1, 1000)
    clean = codec.encode(x)
    with root.hooks(fwd_hooks=[("codec.hook_latent", lambda t, hook: torch.zeros_like(t))]), torch.no_grad():
        edited = codec.encode(x)
    assert not torch.equal(clean, edited)
    assert (edited == edited[..., :1]).all()  # a constant latent quantises to constant codes


# ------------------------------------------------------------------------------------------------
# errors


@pytest.mark.parametrize(
    "bad, match",
    [
        (audio(1, 800), r"3-D \[batch, channels, samples\], got shape \(1, 800\).*audio\[None\]"),
        (audio(800), r"got shape \(800,\).*audio\[None, None\]"),
        (audio(1, 2, 800), r"2 channels.*mono model expects 1"),
        (torch.zeros(1, 1, 800, dtype=torch.int16), r"floating-point.*int16"),
        (torch.zeros(1, 1, 0), r"empty"),
        (torch.tensor([[[0.0, float("nan"), float("inf")]]]), r"2 NaN/inf"),
        ([audio(800)], r"clip 0 is \(800,\)"),
        ([audio(1, 800), audio(2, 800)], r"same channel count"),
    ],
)
def test_bad_audio(codec, bad, match):
    with pytest.raises(ValueError, match=match):
        codec.encode(bad)


def test_bad_audio_stereo(stereo_codec):
    with pytest.raises(ValueError, match=r"3 channels.*stereo model expects 1 \(mono, duplicated\) or 2"):
        stereo_codec.encode(audio(1, 3, 800))


def test_bad_padding_mask(codec):
    with pytest.raises(ValueError, match=r"padding_mask must be .* got shape \(2, 799\)"):
        codec.encode(audio(2, 1, 800), padding_mask=torch.ones(2, 799))
    with pytest.raises(ValueError, match="not both"):
        codec.encode([audio(1, 800)], padding_mask=torch.ones(1, 800))


@pytest.mark.parametrize(
    "bad, match",
    [
        (torch.zeros(1, 4, 5), r"integer tensor.*float32"),
        (torch.zeros(1, 4, 5, dtype=torch.bool), r"integer tensor.*bool"),
        (torch.zeros(4, 5, dtype=torch.long), r"3-D.*\(4, 5\).*codes\[None\]"),
        (torch.zeros(1, 2, 4, 5, dtype=torch.long), r"3-D.*\[1, batch, n_codebooks, frames\]: use codes\[0\]"),
        (torch.zeros(1, 3, 5, dtype=torch.long), r"3 codebooks.*expected 4"),
        (torch.full((1, 4, 5), 64), r"\[0, 64\), got values in \[64, 64\].*delay pattern"),
        (torch.full((1, 4, 5), -1), r"\[0, 64\), got values in \[-1, -1\]"),
        (torch.zeros(1, 4, 0, dtype=torch.long), r"empty"),
    ],
)
def test_bad_codes(codec, bad, match):
    with pytest.raises(ValueError, match=match):
        codec.decode(bad)


def test_bad_codes_stereo(stereo_codec):
    with pytest.raises(ValueError, match=r"4 codebooks.*expected 8 \(stereo: left/right interleaved"):
        stereo_codec.decode(torch.zeros(1, 4, 5, dtype=torch.long))


def test_accepts_any_integer_codes(codec):
    codes = codec.encode(audio(1, 1, 800))
    with torch.no_grad():
        torch.testing.assert_close(codec.decode(codes.int()), codec.decode(codes))


def test_unsupported_configs(encodec):
    with pytest.raises(NotImplementedError, match="chunk"):
        Codec(EncodecModel(encodec_config(chunk_length_s=1.0, overlap=0.01)))
    with pytest.raises(NotImplementedError, match="normalize"):
        Codec(EncodecModel(encodec_config(normalize=True)))
    with pytest.raises(ValueError, match="audio_channels must be 1"):
        Codec(encodec, audio_channels=3)
    with pytest.raises(ValueError, match="multiple of audio_channels"):
        Codec(encodec, audio_channels=2, n_codebooks=7)
    with pytest.raises(ValueError, match="only 8"):
        Codec(encodec, n_codebooks=9)
