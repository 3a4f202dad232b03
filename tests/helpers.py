"""Shared test helpers (import them: `from helpers import ...`); fixtures live in conftest.py.

The tiny checkpoint configurations are declared here once: the text-to-music set (`CONFIGS`)
and the melody set (`MELODY_CONFIGS`), both built by `musicgen_lens.tiny` and loaded through
the same `from_pretrained` path users call.
"""

from __future__ import annotations

import torch

from musicgen_lens import HookedMusicGen

# name -> tiny_hf_config overrides. Together they cover what the parity issue asks for:
# 4 and 8 (stereo) codebooks, gelu and relu, odd head counts, text width == d_model (no
# projection), dropout/layerdrop that must be inactive in eval mode.
CONFIGS: dict[str, dict] = {
    "base": {},
    "stereo": {"n_codebooks": 8, "audio_channels": 2},
    "relu_odd_heads": {"act_fn": "relu", "d_model": 36, "n_heads": 3, "d_mlp": 50},
    "five_heads_3_layers": {"d_model": 40, "n_heads": 5, "n_layers": 3, "d_mlp": 72},
    "dropout_layerdrop": {"dropout": 0.3, "layerdrop": 0.5},
    "no_cond_proj": {"d_text": 32, "d_model": 32},
}

MELODY_CONFIGS: dict[str, dict] = {
    "melody": {},
    # text width == d_model and n_chroma == d_model: neither projection exists
    "melody_no_proj": {"d_model": 24, "n_heads": 3, "d_mlp": 48, "d_text": 24, "n_chroma": 24},
    "melody_stereo": {"n_codebooks": 8, "audio_channels": 2},
}
MELODY_SR = 8000  # the tiny codec's rate (and the tiny chroma extractor's)

PROMPTS = ["classical trumpet melody at 120 bpm", "rock"]


def random_codes(model: HookedMusicGen, batch: int = 2, pos: int = 70, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, model.cfg.d_vocab + 1, (batch, model.cfg.n_codebooks, pos), generator=gen)


def assert_cached_steps_equal_full_forward(model: HookedMusicGen, cond, frames: int) -> list[int]:
    """Every KV-cached generation step's logits equal the full forward's at the position the step
    ends on; returns each step's start position (negative while a melody prefix is read)."""
    seq = model.generate(cond=cond, max_new_frames=frames, seed=3, return_delayed=True, guidance_scale=1.0)
    steps = []

    def grab(logits, hook):
        if hook.ctx.generating:
            steps.append((hook.ctx.start, hook.ctx.length, logits.clone()))

    model.generate(cond=cond, max_new_frames=frames, seed=3, guidance_scale=1.0, fwd_hooks=[("hook_logits", grab)])
    with torch.no_grad():
        full = model(seq, cond)
    assert len(steps) == seq.shape[-1] - 1
    for start, length, logits in steps:
        torch.testing.assert_close(logits[:, :, -1], full[:, :, start + length - 1], atol=1e-4, rtol=0)
    return [start for start, _, _ in steps]


def hf_generate_codes(hf, model, texts, n_frames, **kwargs):
    """Codes from Hugging Face's generate, captured where it hands them to EnCodec (texts may be
    None when the inputs come in kwargs)."""
    captured = []
    original = hf.audio_encoder.decode

    def spy(codes, *args, **kw):
        captured.append(codes[0])
        return original(codes, *args, **kw)

    hf.audio_encoder.decode = spy
    try:
        max_delay = model.pattern.max_delay
        inputs = model.tokenize(texts) if texts is not None else {}
        hf.generate(**inputs, max_new_tokens=n_frames + max_delay, **kwargs)
    finally:
        hf.audio_encoder.decode = original
    if len(captured) == 1:
        return captured[0]
    return torch.stack(captured, dim=2).flatten(1, 2)  # stereo: [L0, R0, L1, R1, ...]
