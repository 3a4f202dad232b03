"""Generation: the loop around the model's cached step, with classifier-free guidance and sampling.

`generate` builds the delayed template (BOS/pad columns and any audio prompt fixed), batches the
conditional and unconditional branches of classifier-free guidance as [cond; uncond] rows, and
calls `model(new_codes, cond, kv_cache=cache)` once per step: the model owns the cached step and
sets `hook.ctx` (see `musicgen_lens.hook_context`), so hooks run during generation with the KV
cache on, each seeing only the new position, and know its frame, second and CFG rows.
The delay pattern and the position <-> frame <-> second arithmetic live in
`musicgen_lens.delay_pattern` (re-exported here for the first API's users).
"""

from __future__ import annotations

import math
import numbers
import sys
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import torch
from jaxtyping import Float, Int
from tqdm.auto import tqdm

from musicgen_lens.conditioning import Conditioning, broadcast_melodies
from musicgen_lens.delay_pattern import (
    apply_delay_pattern,
    delays,
    revert_delay_pattern,
)
from musicgen_lens.kv_cache import KVCache

if TYPE_CHECKING:
    from musicgen_lens.model import HookedMusicGen

__all__ = ["apply_delay_pattern", "delays", "filter_logits", "generate", "guided_logits", "revert_delay_pattern", "sample_next"]


# ---------------------------------------------------------------------------- sampling


def guided_logits(logits: Float[torch.Tensor, "rows k vocab"], n: int, guidance_scale: float | None) -> Float[torch.Tensor, "batch k vocab"]:
    """Classifier-free guidance: rows [0, n) conditional, [n, 2n) unconditional."""
    if guidance_scale is None or guidance_scale <= 1:
        return logits
    cond, uncond = logits[:n], logits[n:]
    return uncond + (cond - uncond) * guidance_scale


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 0.0) -> torch.Tensor:
    """Top-k then nucleus filtering (as Hugging Face's warpers, in that order); 0 disables each."""
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if 0.0 < top_p < 1.0:
        sorted_logits, sorted_idx = torch.sort(logits, descending=False)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        remove_sorted = cumulative <= (1 - top_p)
        remove_sorted[..., -1] = False  # always keep the most likely code
        remove = remove_sorted.scatter(-1, sorted_idx, remove_sorted)
        logits = logits.masked_fill(remove, float("-inf"))
    return logits


def sample_next(
    logits: Float[torch.Tensor, "batch k vocab"],
    *,
    do_sample: bool,
    temperature: float,
    top_k: int,
    top_p: float,
    generator: torch.Generator | Sequence[torch.Generator] | None,
) -> Int[torch.Tensor, "batch k"]:
    """Greedy, or one Gumbel-max draw per row. `generator` may be one per row (`row_generators`)."""
    if not do_sample:
        return logits.argmax(dim=-1)
    logits = filter_logits(logits / temperature, top_k, top_p)
    # Gumbel-max: argmax(logits + Gumbel noise) is a draw from softmax(logits), and the noise does
    # not depend on the logits. Two runs with one seed (steered and unsteered) share every draw, so
    # a code differs only where the intervention moved the distribution enough to change it.
    if isinstance(generator, (list, tuple)):
        # one stream per row: a row's draws do not depend on the batch it is in
        uniform = torch.stack([torch.rand(logits.shape[1:], generator=g, device=logits.device) for g in generator])
    else:
        uniform = torch.rand(logits.shape, generator=generator, device=logits.device)
    uniform = uniform.clamp_(min=torch.finfo(torch.float32).tiny)
    return (logits - torch.log(-torch.log(uniform))).argmax(dim=-1)


def row_generators(seed: int | Sequence[int], batch: int, device: torch.device | str) -> list[torch.Generator]:
    """One torch.Generator per row: an int seed s gives row i the seed s + i; a list gives each row its own.

    So row i of a batch generated with seed s is reproduced alone with seed s + i (or seed=[s + i])."""
    seeds = [seed + i for i in range(batch)] if isinstance(seed, numbers.Integral) else list(seed)
    if len(seeds) != batch:
        raise ValueError(f"seed has {len(seeds)} per-row seeds but the batch has {batch} rows")
    return [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]


# ---------------------------------------------------------------------------- generate


def _is_int(x: Any) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _is_real(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _check_args(
    *, guidance_scale: Any, temperature: Any, top_k: Any, top_p: Any, do_sample: Any, seed: Any, duration: Any, max_new_frames: Any
) -> None:
    """Every sampling argument is checked for type and range before anything runs."""
    for name, value in (("top_p", top_p), ("temperature", temperature)):
        if not _is_real(value):
            raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    if guidance_scale is not None and not _is_real(guidance_scale):
        raise TypeError(f"guidance_scale must be a number or None, got {guidance_scale!r} ({type(guidance_scale).__name__})")
    if not _is_int(top_k):
        raise TypeError(f"top_k must be an int (0 disables top-k), got {top_k!r} ({type(top_k).__name__})")
    if not isinstance(do_sample, bool):
        raise TypeError(f"do_sample must be True or False, got {do_sample!r}")
    if not 0.0 <= top_p <= 1.0 or math.isnan(top_p):
        raise ValueError(f"top_p must be in [0, 1] (0 disables nucleus sampling), got {top_p}")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0 (0 disables top-k), got {top_k}")
    if do_sample and not (temperature > 0 and math.isfinite(temperature)):
        raise ValueError(f"temperature must be a positive finite number when sampling, got {temperature}")
    if guidance_scale is not None and not (math.isfinite(guidance_scale) and guidance_scale >= 0):
        raise ValueError(
            f"guidance_scale must be a finite number >= 0 (values > 1 turn on classifier-free guidance; 0-1 or None "
            f"run the conditional branch alone), got {guidance_scale}"
        )
    if seed is not None and not _is_int(seed):
        if not (isinstance(seed, (list, tuple)) and seed and all(_is_int(x) for x in seed)):
            raise TypeError(f"seed must be an int, a list of ints (one per row) or None, got {seed!r} ({type(seed).__name__})")
    if duration is not None and not _is_real(duration):
        raise TypeError(f"duration must be a number of seconds, got {duration!r} ({type(duration).__name__})")
    if max_new_frames is not None and not _is_int(max_new_frames):
        raise TypeError(f"max_new_frames must be an int, got {max_new_frames!r} ({type(max_new_frames).__name__})")


def _frames_to_generate(model: "HookedMusicGen", duration: float | None, max_new_frames: int | None, n_prompt: int, n_prefix: int = 0) -> int:
    cfg, pattern = model.cfg, model.pattern
    if (duration is None) == (max_new_frames is None):
        raise ValueError("pass exactly one of duration= (seconds of new audio) or max_new_frames=")
    if duration is not None:
        if not (duration > 0 and math.isfinite(duration)):
            raise ValueError(f"duration must be a positive number of seconds, got {duration}")
        max_new_frames = int(duration * cfg.frame_rate)
        if max_new_frames < 1:
            raise ValueError(f"duration {duration}s is shorter than one frame (1/{cfg.frame_rate} s)")
    if max_new_frames < 1:
        raise ValueError(f"max_new_frames must be >= 1, got {max_new_frames}")
    limit = pattern.max_frames(cfg.n_ctx, n_prefix)  # frames the positional table can hold, prompt included
    if n_prompt + max_new_frames > limit:
        prefix = f", {n_prefix} conditioning positions" if n_prefix else ""
        raise ValueError(
            f"{n_prompt} prompt frames + {max_new_frames} new frames exceed what the model supports: "
            f"{limit} frames = {limit / cfg.frame_rate:.2f} s in all (n_ctx={cfg.n_ctx}, max delay {pattern.max_delay}{prefix})"
        )
    return max_new_frames


def _conditioning(
    model: "HookedMusicGen",
    texts: Sequence[str] | str | None,
    cond: Conditioning | None,
    batch_size: int | None,
    melody: Any = None,
    melody_sr: int | None = None,
) -> Conditioning:
    """generate's inputs -> one Conditioning: texts or cond (one rule: `model.resolve_cond`), plus a melody."""
    if texts is not None and cond is not None:
        raise ValueError("pass texts or cond, not both")
    if isinstance(texts, (list, tuple)) and len(texts) == 0:
        raise ValueError("texts is empty: pass at least one prompt (or batch_size= for unconditional audio)")
    chroma = None
    if melody is not None or melody_sr is not None:
        if melody is None:
            raise ValueError("melody_sr= was given without melody=")
        chroma = model.melody_chroma(melody, melody_sr)  # checks that the model is a melody model
    source = texts if texts is not None else cond
    if source is None and chroma is not None:
        source, chroma = model.condition(chroma=chroma), None  # melody only
    resolved = model.resolve_cond(source, None if source is not None else batch_size)
    if chroma is not None:
        resolved = resolved.with_chroma(broadcast_melodies(chroma, resolved.batch))
    if batch_size is not None and resolved.batch != batch_size:
        if resolved.batch != 1:
            raise ValueError(f"batch_size={batch_size} but the conditioning has batch {resolved.batch}")
        resolved = resolved.repeat(batch_size)
    return resolved


def _check_prompt_codes(model: "HookedMusicGen", codes: Any, batch: int, n_prefix: int) -> torch.Tensor:
    cfg = model.cfg
    if not isinstance(codes, torch.Tensor) or codes.dtype.is_floating_point or codes.dtype == torch.bool:
        raise TypeError(f"audio_prompt_codes must be an integer tensor [batch, n_codebooks, frames], got {type(codes).__name__}")
    prompt = codes.to(model.device)
    if prompt.ndim != 3 or prompt.shape[0] != batch or prompt.shape[1] != cfg.n_codebooks:
        raise ValueError(
            f"audio_prompt_codes must be [batch={batch}, n_codebooks={cfg.n_codebooks}, frames] (undelayed), got {tuple(prompt.shape)}"
        )
    limit = model.pattern.max_frames(cfg.n_ctx, n_prefix)
    if prompt.shape[-1] >= limit:
        raise ValueError(
            f"the audio prompt is {prompt.shape[-1]} frames ({prompt.shape[-1] / cfg.frame_rate:.2f} s) but the model holds at "
            f"most {limit} frames ({limit / cfg.frame_rate:.2f} s) in all, new audio included: cut it (prompt_offset= / "
            "prompt_duration=) or pass fewer frames"
        )
    if prompt.shape[-1] == 0 or int(prompt.min()) < 0 or int(prompt.max()) >= cfg.d_vocab:
        raise ValueError(f"audio_prompt_codes must be >= 1 frame of audio codes in [0, {cfg.d_vocab}) without pad/BOS codes")
    return prompt.long()


@torch.no_grad()
def generate(
    model: "HookedMusicGen",
    texts: Sequence[str] | None = None,
    *,
    cond: Conditioning | None = None,
    duration: float | None = None,
    max_new_frames: int | None = None,
    guidance_scale: float = 3.0,
    temperature: float = 1.0,
    top_k: int = 250,
    top_p: float = 0.0,
    do_sample: bool = True,
    seed: int | Sequence[int] | None = None,
    audio_prompt_codes: Int[torch.Tensor, "batch n_codebooks frames"] | None = None,
    audio_prompt: Any = None,
    audio_prompt_sr: int | None = None,
    melody: Any = None,
    melody_sr: int | None = None,
    prompt_offset: float = 0.0,
    prompt_duration: float | None = None,
    fwd_hooks: Sequence[tuple[str | Callable[[str], bool], Callable]] = (),
    steering: Any = None,
    progress: bool = True,
    return_delayed: bool = False,
    batch_size: int | None = None,
) -> Int[torch.Tensor, "batch n_codebooks frames"]:
    """Generate codes [batch, n_codebooks, frames] (undelayed; the audio prompt included verbatim).

    duration / max_new_frames count *new* audio. guidance_scale > 1 turns on classifier-free
    guidance: the batch runs as [conditional rows; unconditional rows] and hooks see both
    (`hook.ctx.cond_rows`). top_k / top_p of 0 disable them; both may be on (top-k first, as
    Hugging Face). `seed` gives every row its own torch.Generator (row i: seed + i, or a list of
    per-row seeds), leaving the global RNG alone, so a row's draws do not depend on the batch it is
    in: row i of a batch is reproduced alone with seed + i. Sampling is Gumbel-max, so runs with
    one seed share their noise: a steered and an unsteered generation (or a patched one) differ
    only where the intervention changed a draw, a counterfactual pair.
    `audio_prompt` (a path, or audio [channels, samples] / [batch, channels, samples] at
    `audio_prompt_sr`, which in-memory audio must give) is encoded with the model's EnCodec and continued, like audiocraft's
    `generate_continuation`; `prompt_offset` / `prompt_duration` (seconds) cut it first, e.g.
    seconds 5-10 of a track as in the paper's recipe.
    `fwd_hooks` are active for the whole generation and removed afterwards, even on error.
    `steering` takes `musicgen_lens.steering.Intervention`s (validated before anything runs);
    their hooks run before `fwd_hooks` on the same hook point.
    `melody` (melody checkpoints only: a path, or audio [channels, samples] /
    [batch, channels, samples] at `melody_sr`, default the model's rate) conditions on its
    chroma, like Hugging Face's `generate(input_features=...)`; with guidance the unconditional
    branch gets zero text and the null melody, as there. A melody without texts is melody-only.
    """
    cfg = model.cfg
    _check_args(
        guidance_scale=guidance_scale, temperature=temperature, top_k=top_k, top_p=top_p, do_sample=do_sample, seed=seed,
        duration=duration, max_new_frames=max_new_frames,
    )
    cond = _conditioning(model, texts, cond, batch_size, melody, melody_sr)
    batch = cond.batch
    n_prefix = model.n_prefix(cond)  # melody: chroma + text positions before the codes
    if audio_prompt is not None:
        if audio_prompt_codes is not None:
            raise ValueError("pass audio_prompt or audio_prompt_codes, not both")
        if isinstance(audio_prompt, (torch.Tensor, np.ndarray)) and audio_prompt_sr is None:
            raise ValueError(
                "audio_prompt is an array, which carries no sample rate: pass audio_prompt_sr= (e.g. "
                f"audio_prompt_sr={model.sample_rate} if it is already at the model's rate); a file path needs none"
            )
        audio_prompt_codes = model.encode_prompt(audio_prompt, batch, prompt_offset, prompt_duration, sr=audio_prompt_sr)
    elif audio_prompt_sr is not None:
        raise ValueError("audio_prompt_sr= was given without audio_prompt=")
    n_prompt = 0
    if audio_prompt_codes is not None:
        prompt = _check_prompt_codes(model, audio_prompt_codes, batch, n_prefix)
        n_prompt = prompt.shape[-1]
    new_frames = _frames_to_generate(model, duration, max_new_frames, n_prompt, n_prefix)
    n_frames = n_prompt + new_frames
    if steering is not None:
        from musicgen_lens.steering import steering_hooks

        # window seconds count from the first frame of the prompt, so the total is passed
        fwd_hooks = steering_hooks(model, steering, n_frames=n_frames) + list(fwd_hooks)

    pattern = model.pattern
    length = pattern.length_for(n_frames)
    # -1 marks what is to be generated; pads and the prompt are fixed by the template
    todo = torch.full((batch, cfg.n_codebooks, n_frames), -1, dtype=torch.long, device=model.device)
    if n_prompt:
        todo[..., :n_prompt] = prompt
    seq = pattern.apply(todo, cfg.pad_token_id)
    fixed = seq != -1

    use_cfg = guidance_scale is not None and guidance_scale > 1
    run_cond = Conditioning.cat([cond, cond.null_like()]) if use_cfg else cond
    generators = row_generators(seed, batch, model.device) if seed is not None else None

    first = n_prompt + 1  # positions [0, first) are known: BOS and the prompt's first codebook
    cache = KVCache.for_model(
        cfg, run_cond.batch, n_prefix + length, text_pos=run_cond.states.shape[1], n_steps=length - first,
        device=model.device, dtype=model.dtype,
    )
    show = progress and sys.stderr.isatty()
    # the first step with non-finite logits, kept on the device (-1: none) so no step waits on a sync
    bad_step = torch.full((), -1, dtype=torch.long, device=model.device)
    with model.hooks(fwd_hooks=list(fwd_hooks)):
        start = 0
        for step, end in enumerate(tqdm(range(first, length), disable=not show, desc="generating", unit="step")):
            tokens = seq[..., start:end]
            if use_cfg:
                tokens = tokens.repeat(2, 1, 1)
            logits = model(tokens, run_cond, kv_cache=cache)[:, :, -1].float()
            logits = guided_logits(logits, batch, guidance_scale if use_cfg else None)
            bad_step = torch.where((bad_step < 0) & ~torch.isfinite(logits).all(), step, bad_step)
            nxt = sample_next(logits, do_sample=do_sample, temperature=temperature, top_k=top_k, top_p=top_p, generator=generators)
            seq[..., end] = torch.where(fixed[..., end], seq[..., end], nxt)
            start = end
    if int(bad_step) >= 0:
        step = int(bad_step)
        names = [n if isinstance(n, str) else getattr(n, "__name__", repr(n)) for n, _ in fwd_hooks]
        raise FloatingPointError(
            f"non-finite logits (NaN or inf) at generation step {step} (frame {pattern.frame_of(first + step)}, "
            f"{pattern.seconds_of(first + step):.2f} s); hooks active: {names or 'none'}. A hook returned NaN/inf, or a "
            "steering alpha overflowed the activations; the generation is discarded"
        )
    if return_delayed:
        return seq
    return pattern.revert(seq, n_frames)
