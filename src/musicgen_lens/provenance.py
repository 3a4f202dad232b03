"""Provenance: which model made an artefact, and is a saved payload what was written.

Steering vectors, probes, activation stores and cached measurements are only comparable with
the model whose activations made them. `cfg.hash()` covers the architecture; two trained models
of one architecture (the toy model before and after retraining, musicgen-small vs a fine-tune)
share it, so every artefact also records `weights_fingerprint(model)` and is checked against
both (`check_model`; each loader keeps an explicit override).

The fingerprint reads a strided sample of every tensor that shapes the decoder's activations
(decoder, conditioning projections, text encoder; not the codec), rounded to bfloat16 first, so
the same checkpoint loaded in float32 on CPU or in bfloat16 on a GPU gets the same fingerprint,
while any retraining (which moves every weight) changes it. It is a guard against mix-ups, not
a cryptographic identity.

`tensor_checksum` is a full SHA-256 of named tensors (names, dtypes, shapes, bytes): saved in a
file's metadata and verified on load, so a bit-flipped or tampered payload is refused instead of
read as values off by 1e30.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Mapping

import torch

if TYPE_CHECKING:
    from musicgen_lens.model import HookedMusicGen

__all__ = ["weights_fingerprint", "codec_fingerprint", "check_model", "tensor_checksum", "verify_checksum"]

_SAMPLES_PER_TENSOR = 4096
_NOT_ACTIVATIONS = ("codec.",)  # the codec turns codes into audio; it never changes an activation


def weights_fingerprint(model: "HookedMusicGen", *, include_codec: bool = False) -> str:
    """16 hex digits identifying the trained weights (see the module docstring).

    `include_codec=True` also covers the codec: for what depends on the audio it makes (a judge
    trained on its reconstructions, measurements of generated audio), not only on activations.
    The result is cached on the model and recomputed when any tensor is replaced or edited in
    place (torch's version counters), so checking a vector at every `resolve` costs no reads.
    """
    return _fingerprint(model, "all" if include_codec else "activations")


def codec_fingerprint(model: "HookedMusicGen") -> str:
    """16 hex digits identifying the codec's weights alone: what a judge trained on codec
    reconstructions depends on (retraining the decoder keeps it; retraining the codec changes it)."""
    return _fingerprint(model, "codec")


def _fingerprint(model: "HookedMusicGen", which: str) -> str:
    """The fingerprint of the tensors `which` selects: "activations" (all but the codec), "all", "codec"."""
    state = model.state_dict(keep_vars=True)
    key = (which, tuple((name, t.data_ptr(), t._version) for name, t in state.items()))
    cached = model.__dict__.get("_weights_fingerprint_cache", {})
    if key in cached:
        return cached[key]
    h = hashlib.sha256()
    with torch.no_grad():
        for name, t in sorted(state.items()):
            is_codec = name.startswith(_NOT_ACTIVATIONS)
            if not t.dtype.is_floating_point or (which == "activations" and is_codec) or (which == "codec" and not is_codec):
                continue
            flat = t.detach().reshape(-1)
            step = max(1, flat.numel() // _SAMPLES_PER_TENSOR)
            sample = flat[::step].to(torch.bfloat16).view(torch.int16).cpu().numpy()
            h.update(f"{name}:{tuple(t.shape)}:".encode())
            h.update(sample.tobytes())
    fingerprint = h.hexdigest()[:16]
    # a plain attribute (not a buffer); one entry per selection, replaced when the weights change
    model.__dict__["_weights_fingerprint_cache"] = {k: v for k, v in cached.items() if k[0] != which} | {key: fingerprint}
    return fingerprint


def check_model(
    model: "HookedMusicGen", arch_hash: str | None, weights_hash: str | None, what: str, *, override: str = "check_hash=False"
) -> None:
    """Refuse an artefact made on another architecture or other trained weights.

    `what` names the artefact in the message ("steering vector 'violin'"); `override` says how
    to accept it anyway. A missing hash (artefacts from before fingerprints) is not checked.
    """
    if arch_hash is not None and arch_hash != model.cfg.hash():
        raise ValueError(
            f"{what} was made on a model with architecture hash {arch_hash!r}, but this model's cfg.hash() is "
            f"{model.cfg.hash()!r}: its activations are not comparable (pass {override} to override)"
        )
    if weights_hash is not None and weights_hash != weights_fingerprint(model):
        raise ValueError(
            f"{what} was made on other trained weights (fingerprint {weights_hash!r}; this model's is "
            f"{weights_fingerprint(model)!r}): same architecture, but its activations live elsewhere "
            f"(pass {override} to override)"
        )


def tensor_checksum(tensors: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 of named tensors: names, dtypes, shapes and every byte, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        h.update(f"{name}:{str(t.dtype)}:{tuple(t.shape)}:".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def verify_checksum(tensors: Mapping[str, torch.Tensor], expected: str | None, path: object) -> None:
    """Raise if the payload read from `path` is not what was written (None: no checksum recorded)."""
    if expected is None:
        return
    found = tensor_checksum(tensors)
    if found != expected:
        raise ValueError(
            f"{path}: the tensors do not match the checksum saved with them (file damaged or edited; "
            f"expected sha256 {expected[:12]}..., found {found[:12]}...). Recreate the file."
        )
