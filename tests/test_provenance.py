"""provenance: the weights fingerprint (dtype-independent, sensitive to any retraining, cached
until a weight changes) and tensor checksums."""

from __future__ import annotations

import pytest
import torch

from musicgen_lens import HookedMusicGen
from musicgen_lens.provenance import check_model, tensor_checksum, verify_checksum, weights_fingerprint


def test_fingerprint_ignores_dtype_and_follows_every_edit(checkpoint_dir):
    model = HookedMusicGen.from_pretrained(checkpoint_dir("base"), device="cpu")
    fp = weights_fingerprint(model)
    assert weights_fingerprint(HookedMusicGen.from_pretrained(checkpoint_dir("base"), device="cpu", dtype=torch.bfloat16)) == fp
    assert weights_fingerprint(model) == fp  # cached: same answer
    with torch.no_grad():
        model.blocks[0].mlp.W_in_T.mul_(1.5)  # an in-place edit bumps the version counter: the cache notices
    edited = weights_fingerprint(model)
    assert edited != fp
    with pytest.raises(ValueError, match="other trained weights"):
        check_model(model, model.cfg.hash(), fp, "vector 'x'")
    check_model(model, model.cfg.hash(), edited, "vector 'x'")


def test_codec_counts_only_when_asked(checkpoint_dir):
    model = HookedMusicGen.from_pretrained(checkpoint_dir("base"), device="cpu")
    plain, with_codec = weights_fingerprint(model), weights_fingerprint(model, include_codec=True)
    assert plain != with_codec
    with torch.no_grad():
        next(p for n, p in model.named_parameters() if n.startswith("codec.")).add_(1.0)
    assert weights_fingerprint(model) == plain  # the codec never changes an activation
    assert weights_fingerprint(model, include_codec=True) != with_codec


def test_codec_fingerprint_follows_the_codec_alone(checkpoint_dir):
    from musicgen_lens.provenance import codec_fingerprint

    model = HookedMusicGen.from_pretrained(checkpoint_dir("base"), device="cpu")
    codec = codec_fingerprint(model)
    assert codec not in (weights_fingerprint(model), weights_fingerprint(model, include_codec=True))
    with torch.no_grad():
        model.blocks[0].mlp.W_in_T.mul_(1.5)  # a retrained decoder keeps the codec judge
    assert codec_fingerprint(model) == codec
    with torch.no_grad():
        next(p for n, p in model.named_parameters() if n.startswith("codec.")).add_(1.0)
    assert codec_fingerprint(model) != codec


def test_checksum_catches_a_flipped_bit():
    tensors = {"a": torch.arange(6.0), "b": torch.ones(2, 2, dtype=torch.int64)}
    digest = tensor_checksum(tensors)
    verify_checksum(tensors, digest, "x.safetensors")
    verify_checksum(tensors, None, "x.safetensors")  # nothing recorded: nothing to check
    flipped = dict(tensors, a=tensors["a"].clone())
    flipped["a"].view(torch.int32)[2] ^= 1
    with pytest.raises(ValueError, match=r"x.safetensors: the tensors do not match the checksum"):
        verify_checksum(flipped, digest, "x.safetensors")
