"""Tiny random MusicGen checkpoints, built offline from `transformers` config classes.

Used by the tests and by anyone who wants a model that loads in a second (teaching, CI).
The checkpoint goes through `save_pretrained`, so it loads through the same
`HookedMusicGen.from_pretrained` path as `facebook/musicgen-small`. The weights are random.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

# Words the local tokenizer knows; others become <unk>. T5's ids: pad 0, eos 1, unk 2.
WORDS = (
    "a an and the with of in at to for from music melody song track piece beat solo "
    "classical rock electronic jazz pop indian folk hip hop lofi ambient techno orchestral "
    "trumpet violin xylophone flute piano guitar tabla drums bass synth organ cello sitar saw "
    "fast slow upbeat calm happy sad bright dark loud soft distorted acoustic electric drone "
    "bpm key major minor c d e f g b one two three four 60 80 90 100 120 140 160 180 "
    "generate continuing given audio genre style accompaniment steady energetic"
).split()


def build_tokenizer(words: tuple[str, ...] = tuple(WORDS)) -> Any:
    """A word-level T5-style tokenizer (lower-cases, appends </s>) built with `tokenizers`."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for w in words:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def tiny_hf_config(*, melody: bool = False, n_chroma: int = 12, chroma_length: int = 24, **kwargs: Any) -> Any:
    """A tiny `MusicgenConfig`, or with melody=True a `MusicgenMelodyConfig` (same sizes; the melody
    decoder has no cross-attention, and `chroma_length` chroma positions are prepended)."""
    from transformers import MusicgenConfig, MusicgenDecoderConfig, MusicgenMelodyConfig, MusicgenMelodyDecoderConfig

    text, audio, decoder = _tiny_sub_configs(**kwargs)
    if melody:
        return MusicgenMelodyConfig(
            text_encoder=text, audio_encoder=audio, decoder=MusicgenMelodyDecoderConfig(**decoder),
            num_chroma=n_chroma, chroma_length=chroma_length,
        )
    return MusicgenConfig(text_encoder=text, audio_encoder=audio, decoder=MusicgenDecoderConfig(**decoder))


def tiny_melody_hf_config(**kwargs: Any) -> Any:
    """A tiny `MusicgenMelodyConfig` (see `tiny_hf_config`)."""
    return tiny_hf_config(melody=True, **kwargs)


def _tiny_sub_configs(
    *,
    n_layers: int = 2,
    d_model: int = 32,
    n_heads: int = 4,
    d_mlp: int = 64,
    n_codebooks: int = 4,
    codebook_size: int = 64,
    audio_channels: int = 1,
    act_fn: str = "gelu",
    n_ctx: int = 256,
    d_text: int = 24,
    text_layers: int = 1,
    sampling_rate: int = 8000,
    upsampling_ratios: tuple[int, ...] = (8, 5, 4),
    dropout: float = 0.0,
    layerdrop: float = 0.0,
    vocab_size_text: int | None = None,
) -> tuple[Any, Any, dict[str, Any]]:
    """(T5 config, EnCodec config, decoder config kwargs): shared by the text and melody checkpoints."""
    from transformers import EncodecConfig, T5Config

    hop = 1
    for r in upsampling_ratios:
        hop *= r
    frame_rate = -(-sampling_rate // hop)
    per_channel = n_codebooks // audio_channels
    nbits = (codebook_size - 1).bit_length()
    # EnCodec picks its number of quantizers from the bandwidth (kbps)
    bandwidth = per_channel * frame_rate * nbits / 1000
    text = T5Config(
        vocab_size=vocab_size_text or len(WORDS) + 3,
        d_model=d_text,
        d_kv=8,
        d_ff=2 * d_text,
        num_layers=text_layers,
        num_heads=max(1, d_text // 8),
        relative_attention_num_buckets=8,
        relative_attention_max_distance=16,
        dropout_rate=0.0,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    audio = EncodecConfig(
        sampling_rate=sampling_rate,
        audio_channels=1,
        num_filters=4,
        hidden_size=16,
        num_residual_layers=1,
        upsampling_ratios=list(upsampling_ratios),
        codebook_size=codebook_size,
        target_bandwidths=[bandwidth],
        num_lstm_layers=1,
        normalize=False,
        chunk_length_s=None,
        overlap=None,
    )
    decoder = dict(
        vocab_size=codebook_size,
        max_position_embeddings=n_ctx,
        num_hidden_layers=n_layers,
        ffn_dim=d_mlp,
        num_attention_heads=n_heads,
        hidden_size=d_model,
        num_codebooks=n_codebooks,
        audio_channels=audio_channels,
        activation_function=act_fn,
        dropout=dropout,
        attention_dropout=dropout,
        activation_dropout=dropout,
        layerdrop=layerdrop,
        pad_token_id=codebook_size,
        bos_token_id=codebook_size,
    )
    return text, audio, decoder


@torch.no_grad()
def calibrate_codebooks(encodec: Any, seed: int = 0) -> None:
    """Give a random EnCodec usable codebooks (they are zero buffers until trained).

    Like EnCodec's k-means init: each level's vectors are jittered samples of that level's
    residual on calibration noise, so every level splits the latents non-trivially (plain
    random vectors would quantise almost everything to the same few codes).
    """
    gen = torch.Generator().manual_seed(seed)
    calib = torch.randn(8, 1, 4000, generator=gen) * torch.linspace(0.05, 1.0, 8)[:, None, None]
    residual = encodec.encoder(calib).permute(0, 2, 1).reshape(-1, encodec.config.hidden_size)
    for layer in encodec.quantizer.layers:
        book = layer.codebook
        picks = residual[torch.randint(0, residual.shape[0], (book.embed.shape[0],), generator=gen)]
        book.embed.copy_(picks + 0.1 * residual.std(0) * torch.randn(picks.shape, generator=gen))
        book.embed_avg.copy_(book.embed)
        book.cluster_size.fill_(1.0)
        book.inited.fill_(1.0)
        residual = residual - book.decode(book.encode(residual))


def tiny_hf_model(seed: int = 0, melody: bool = False, **config_kwargs: Any) -> Any:
    """A random `MusicgenForConditionalGeneration` (melody=True: `MusicgenMelodyForConditionalGeneration`)
    with non-trivial EnCodec codebooks."""
    from transformers import MusicgenForConditionalGeneration, MusicgenMelodyForConditionalGeneration

    torch.manual_seed(seed)
    hf_class = MusicgenMelodyForConditionalGeneration if melody else MusicgenForConditionalGeneration
    model = hf_class(tiny_hf_config(melody=melody, **config_kwargs)).eval()
    calibrate_codebooks(model.audio_encoder, seed)
    gen = torch.Generator().manual_seed(seed)
    # Unlike the decoder, T5's output is small and near-constant at this init; widen it so the
    # text actually moves the conditioning in tests.
    with torch.no_grad():
        model.text_encoder.shared.weight.normal_(0, 1.0, generator=gen)
        if melody and hasattr(model, "audio_enc_to_dec_proj"):  # likewise: the melody must visibly steer the decoder
            model.audio_enc_to_dec_proj.weight.normal_(0, 1.0, generator=gen)
    model.generation_config.pad_token_id = model.config.decoder.pad_token_id
    model.generation_config.decoder_start_token_id = model.config.decoder.bos_token_id
    return model


def save_tiny_checkpoint(path: str | os.PathLike, seed: int = 0, **config_kwargs: Any) -> Path:
    """Write a tiny random checkpoint (model + tokenizer) that `from_pretrained(path)` loads."""
    path = Path(path)
    tiny_hf_model(seed=seed, **config_kwargs).save_pretrained(path)
    build_tokenizer().save_pretrained(path)
    return path


def tiny_melody_hf_model(seed: int = 0, **config_kwargs: Any) -> Any:
    """A random `MusicgenMelodyForConditionalGeneration` (see `tiny_hf_model`)."""
    return tiny_hf_model(seed=seed, melody=True, **config_kwargs)


# Chroma settings of the tiny melody checkpoints: HF's defaults (n_fft 16384, hop 4096 at 32 kHz)
# scaled to the tiny codec's 8 kHz, so that a second of melody gives ~8 chroma frames as there.
TINY_CHROMA = dict(n_fft=4096, hop_length=1024, chunk_length=30.0)


def save_tiny_melody_checkpoint(path: str | os.PathLike, seed: int = 0, **config_kwargs: Any) -> Path:
    """Write a tiny random melody checkpoint (model, tokenizer and `preprocessor_config.json`, the
    settings of Hugging Face's chroma feature extractor) that `from_pretrained(path)` loads."""
    from musicgen_lens.chroma import ChromaExtractor

    path = Path(path)
    hf = tiny_melody_hf_model(seed=seed, **config_kwargs)
    hf.save_pretrained(path)
    build_tokenizer().save_pretrained(path)
    ChromaExtractor(sample_rate=hf.config.audio_encoder.sampling_rate, n_chroma=hf.config.num_chroma, **TINY_CHROMA).save(path)
    return path
