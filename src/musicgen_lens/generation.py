"""Generation: delay pattern, KV cache, classifier-free guidance and sampling, with hooks live.

Hooks run during generation with the KV cache on, so each hook sees only the new position.
Every HookPoint carries `hook.ctx` (a `HookContext`): the absolute decoder positions the call
covers, the audio frames they write, and which batch rows are the unconditional branch of
classifier-free guidance. That makes "steer from second 5, conditional branch only" exact:

    def add_from_5s(resid, hook):
        ctx = hook.ctx
        when = (ctx.seconds >= 5.0)                     # [pos]
        rows = ctx.cond_rows                            # [batch]
        mask = rows[:, None, None] & when[None, :, None]
        return resid + mask * vector

    model.generate(["classical trumpet"], duration=10, fwd_hooks=[("blocks.18.hook_resid_post", add_from_5s)])

The delay pattern (codebook k of a mono model is shifted right by k positions; a stereo model
interleaves [L0, R0, L1, R1, ...] and shifts pair c by c) lives in `delays`,
`apply_delay_pattern` and `revert_delay_pattern` and nowhere else.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import torch
from jaxtyping import Bool, Float, Int
from tqdm.auto import tqdm

from musicgen_lens.components import KVCache
from musicgen_lens.conditioning import Conditioning, broadcast_melodies

if TYPE_CHECKING:
    from musicgen_lens.model import HookedMusicGen

# ---------------------------------------------------------------------------- delay pattern


def delays(n_codebooks: int, audio_channels: int = 1) -> list[int]:
    """Delay in positions of each codebook: k for mono, k // 2 for interleaved stereo."""
    return [k // audio_channels for k in range(n_codebooks)]


def apply_delay_pattern(
    codes: Int[torch.Tensor, "batch n_codebooks frames"], pad_id: int, audio_channels: int = 1, length: int | None = None
) -> Int[torch.Tensor, "batch n_codebooks length"]:
    """Audio frames -> the decoder's layout: a BOS/pad column, then codebook k shifted by its delay.

    Position t of codebook k holds frame t - 1 - delay(k); everything else is `pad_id`.
    `length` defaults to frames + max delay + 1 (every frame of every codebook present).
    """
    b, k, n = codes.shape
    ds = delays(k, audio_channels)
    length = n + ds[-1] + 1 if length is None else length
    out = torch.full((b, k, length), pad_id, dtype=codes.dtype, device=codes.device)
    for cb, d in enumerate(ds):
        end = min(length, n + d + 1)
        out[:, cb, d + 1 : end] = codes[:, cb, : end - d - 1]
    return out


def revert_delay_pattern(
    seq: Int[torch.Tensor, "batch n_codebooks length"], audio_channels: int = 1, frames: int | None = None
) -> Int[torch.Tensor, "batch n_codebooks frames"]:
    """The inverse of `apply_delay_pattern`: undelayed frames [batch, n_codebooks, frames]."""
    b, k, length = seq.shape
    ds = delays(k, audio_channels)
    frames = length - ds[-1] - 1 if frames is None else frames
    return torch.stack([seq[:, cb, d + 1 : d + 1 + frames] for cb, d in enumerate(ds)], dim=1)


# ---------------------------------------------------------------------------- hook context


@dataclass
class HookContext:
    """Where in time (and in the CFG batch) the current forward call is; read it as `hook.ctx`.

    Decoder position t holds, for codebook k, frame t - 1 - delay(k), and its logits write frame
    t - delay(k). `frames` is the *earliest* frame a position writes (t - max_delay), so
    intervening only at positions with frame >= N leaves every codebook of frames < N unchanged.

    A melody model prepends `prefix` conditioning positions (chroma, then text); they sit at the
    negative positions [-prefix, 0), so codes keep their positions, frames and seconds, and
    time windows (which start at frame 0 or later) never touch the conditioning.
    """

    frame_rate: float
    max_delay: int
    start: int = 0
    length: int = 0
    uncond: Bool[torch.Tensor, "batch"] | None = None
    generating: bool = False
    step: int = 0  # generation step: 0 is the prefill (BOS and any audio prompt)
    n_steps: int = 0
    prefix: int = 0  # melody models: conditioning positions prepended to the codes

    @property
    def positions(self) -> Int[torch.Tensor, "pos"]:
        device = self.uncond.device if self.uncond is not None else None
        return torch.arange(self.start, self.start + self.length, device=device)

    @property
    def frames(self) -> Int[torch.Tensor, "pos"]:
        return self.positions - self.max_delay

    @property
    def seconds(self) -> Float[torch.Tensor, "pos"]:
        return self.frames / self.frame_rate

    @property
    def cond_rows(self) -> Bool[torch.Tensor, "batch"]:
        return ~self.uncond

    @property
    def uncond_rows(self) -> Bool[torch.Tensor, "batch"]:
        return self.uncond

    def rows(self, branch: str) -> Bool[torch.Tensor, "batch"]:
        """'cond', 'uncond' or 'both' -> a [batch] mask."""
        if branch == "cond":
            return self.cond_rows
        if branch == "uncond":
            return self.uncond_rows
        if branch == "both":
            return torch.ones_like(self.uncond)
        raise ValueError(f"branch must be 'cond', 'uncond' or 'both', got {branch!r}")


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
    generator: torch.Generator | None,
) -> Int[torch.Tensor, "batch k"]:
    if not do_sample:
        return logits.argmax(dim=-1)
    logits = filter_logits(logits / temperature, top_k, top_p)
    # Gumbel-max: argmax(logits + Gumbel noise) is a draw from softmax(logits), and the noise does
    # not depend on the logits. Two runs with one seed (steered and unsteered) share every draw, so
    # a code differs only where the intervention moved the distribution enough to change it.
    uniform = torch.rand(logits.shape, generator=generator, device=logits.device).clamp_(min=torch.finfo(torch.float32).tiny)
    return (logits - torch.log(-torch.log(uniform))).argmax(dim=-1)


# ---------------------------------------------------------------------------- generate


def _check_args(*, guidance_scale: float, temperature: float, top_k: int, top_p: float, do_sample: bool) -> None:
    if not 0.0 <= top_p <= 1.0 or math.isnan(top_p):
        raise ValueError(f"top_p must be in [0, 1] (0 disables nucleus sampling), got {top_p}")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0 (0 disables top-k), got {top_k}")
    if do_sample and not (temperature > 0 and math.isfinite(temperature)):
        raise ValueError(f"temperature must be a positive finite number when sampling, got {temperature}")
    if guidance_scale is not None and not math.isfinite(guidance_scale):
        raise ValueError(f"guidance_scale must be finite, got {guidance_scale}")


def _frames_to_generate(model: "HookedMusicGen", duration: float | None, max_new_frames: int | None, n_prompt: int, n_prefix: int = 0) -> int:
    cfg = model.cfg
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
    max_delay = delays(cfg.n_codebooks, cfg.audio_channels)[-1]
    limit = cfg.n_ctx - max_delay - 1 - n_prefix  # frames the positional table can hold, prompt included
    if n_prompt + max_new_frames > limit:
        prefix = f", {n_prefix} conditioning positions" if n_prefix else ""
        raise ValueError(
            f"{n_prompt} prompt frames + {max_new_frames} new frames exceed what the model supports: "
            f"{limit} frames = {limit / cfg.frame_rate:.2f} s in all (n_ctx={cfg.n_ctx}, max delay {max_delay}{prefix})"
        )
    return max_new_frames


def _resolve_conditioning(
    model: "HookedMusicGen",
    texts: Sequence[str] | None,
    cond: Conditioning | None,
    batch_size: int | None,
    melody: Any = None,
    melody_sr: int | None = None,
) -> Conditioning:
    if texts is not None and cond is not None:
        raise ValueError("pass texts or cond, not both")
    chroma = None
    if melody is not None or melody_sr is not None:
        if melody is None:
            raise ValueError("melody_sr= was given without melody=")
        chroma = model.melody_chroma(melody, melody_sr)  # checks that the model is a melody model
    if texts is not None:
        if isinstance(texts, str):
            texts = [texts]
        if len(texts) == 0:
            raise ValueError("texts is empty: pass at least one prompt (or batch_size= for unconditional audio)")
        cond = model.condition(list(texts))
    elif cond is None and chroma is not None:
        cond = model.condition(chroma=chroma)
        if batch_size is not None and cond.batch == 1 and batch_size > 1:
            cond = cond.repeat(batch_size)
        chroma = None
    elif cond is None:
        cond = model.null_condition(batch_size or 1)
    if chroma is not None:
        cond = cond.with_chroma(broadcast_melodies(chroma, cond.batch))
    if batch_size is not None and cond.batch != batch_size:
        raise ValueError(f"batch_size={batch_size} but the conditioning has batch {cond.batch}")
    return model.resolve_cond(cond, cond.batch)


def encode_prompt(
    model: "HookedMusicGen", audio: Any, batch: int, offset: float = 0.0, duration: float | None = None, sr: int | None = None
) -> torch.Tensor:
    """A waveform prompt (path or tensor) -> codes [batch, n_codebooks, frames].

    In-memory audio is at `sr` (default: the model's sample rate) and is resampled if needed.
    """
    from musicgen_lens.audio import load_audio

    clips = list(audio) if isinstance(audio, torch.Tensor) and audio.ndim == 3 else [audio]
    items = []
    for clip in clips:
        # arrays carry no sample rate of their own
        in_memory = {"sr": sr or model.sample_rate} if isinstance(clip, (torch.Tensor, np.ndarray)) else {}
        loaded, _ = load_audio(
            clip, target_sr=model.sample_rate, channels=model.cfg.audio_channels, offset=offset, duration=duration, **in_memory
        )
        items.append(loaded)
    codes = model.encode(torch.stack(items).to(model.device))
    if codes.shape[0] == 1 and batch > 1:
        codes = codes.expand(batch, -1, -1)
    if codes.shape[0] != batch:
        raise ValueError(f"the audio prompt has batch {codes.shape[0]} but there are {batch} prompts")
    return codes


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
    seed: int | None = None,
    audio_prompt_codes: Int[torch.Tensor, "batch n_codebooks frames"] | None = None,
    audio_prompt: Any = None,
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
    Hugging Face). `seed` uses its own torch.Generator, leaving the global RNG alone. Sampling
    is Gumbel-max, so runs with one seed share their noise: a steered and an unsteered generation
    (or a patched one) differ only where the intervention changed a draw, a counterfactual pair.
    `audio_prompt` (a path, or audio [channels, samples] / [batch, channels, samples] at
    model.sample_rate) is encoded with the model's EnCodec and continued, like audiocraft's
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
    _check_args(guidance_scale=guidance_scale, temperature=temperature, top_k=top_k, top_p=top_p, do_sample=do_sample)
    cond = _resolve_conditioning(model, texts, cond, batch_size, melody, melody_sr)
    batch = cond.batch
    if audio_prompt is not None:
        if audio_prompt_codes is not None:
            raise ValueError("pass audio_prompt or audio_prompt_codes, not both")
        audio_prompt_codes = encode_prompt(model, audio_prompt, batch, prompt_offset, prompt_duration)
    n_prompt = 0
    if audio_prompt_codes is not None:
        prompt = audio_prompt_codes.to(model.device)
        if prompt.ndim != 3 or prompt.shape[0] != batch or prompt.shape[1] != cfg.n_codebooks:
            raise ValueError(
                f"audio_prompt_codes must be [batch={batch}, n_codebooks={cfg.n_codebooks}, frames] (undelayed), "
                f"got {tuple(prompt.shape)}"
            )
        model.check_codes(prompt)
        if int(prompt.max()) >= cfg.d_vocab:
            raise ValueError(f"audio_prompt_codes must be audio codes in [0, {cfg.d_vocab}) without pad/BOS codes")
        n_prompt = prompt.shape[-1]
    n_prefix = model.n_prefix(cond)  # melody: chroma + text positions before the codes
    new_frames = _frames_to_generate(model, duration, max_new_frames, n_prompt, n_prefix)
    n_frames = n_prompt + new_frames
    if steering is not None:
        from musicgen_lens.steering import steering_hooks

        # window seconds count from the first frame of the prompt, so the total is passed
        fwd_hooks = steering_hooks(model, steering, n_frames=n_frames) + list(fwd_hooks)

    ds = delays(cfg.n_codebooks, cfg.audio_channels)
    length = n_frames + ds[-1] + 1
    # -1 marks what is to be generated; pads and the prompt are fixed by the template
    todo = torch.full((batch, cfg.n_codebooks, n_frames), -1, dtype=torch.long, device=model.device)
    if n_prompt:
        todo[..., :n_prompt] = prompt
    seq = apply_delay_pattern(todo, cfg.pad_token_id, cfg.audio_channels)
    fixed = seq != -1

    use_cfg = guidance_scale is not None and guidance_scale > 1
    run_cond = Conditioning.cat([cond, cond.null_like()]) if use_cfg else cond
    rows = run_cond.batch
    generator = None
    if seed is not None:
        generator = torch.Generator(device=model.device).manual_seed(seed)

    ctx = model.ctx
    ctx.generating, ctx.uncond, ctx.prefix = True, run_cond.is_null, n_prefix
    first = n_prompt + 1  # positions [0, first) are known: BOS and the prompt's first codebook
    ctx.n_steps = length - first
    melody = cfg.is_melody
    caches = [
        (
            KVCache.empty(rows, n_prefix + length, cfg, model.device),
            None if melody else KVCache.empty(rows, run_cond.states.shape[1], cfg, model.device),
        )
        for _ in range(cfg.n_layers)
    ]
    show = progress and sys.stderr.isatty()
    try:
        with model.hooks(fwd_hooks=list(fwd_hooks)):
            # once: cross-attention K/V are cached too; a melody prefix enters the KV cache at the prefill
            prefix = model.prefix(run_cond) if melody else None
            cond_states = None if melody else model.project_cond(run_cond)
            cond_mask = None if melody else run_cond.mask
            start = 0
            for step, end in enumerate(tqdm(range(first, length), disable=not show, desc="generating", unit="step")):
                tokens = seq[..., start:end]
                if use_cfg:
                    tokens = tokens.repeat(2, 1, 1)
                if step == 0 and melody:
                    ctx.start, ctx.length, ctx.step = -n_prefix, n_prefix + end, step
                    residual = model.embed_codes(tokens, 0, prefix=prefix)
                else:
                    ctx.start, ctx.length, ctx.step = start, end - start, step
                    residual = model.embed_codes(tokens, n_prefix + start)
                residual = model.run_blocks(residual, cond_states, cond_mask, caches)
                logits = model.logits_from_resid(residual[:, -1:])[:, :, -1].float()
                logits = guided_logits(logits, batch, guidance_scale if use_cfg else None)
                nxt = sample_next(logits, do_sample=do_sample, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator)
                seq[..., end] = torch.where(fixed[..., end], seq[..., end], nxt)
                start = end
    finally:
        ctx.generating, ctx.uncond, ctx.start, ctx.length, ctx.prefix = False, None, 0, 0, 0
    if return_delayed:
        return seq
    return revert_delay_pattern(seq, cfg.audio_channels, n_frames)
