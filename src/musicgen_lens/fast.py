"""Opt-in fast paths: CPU int8 weights, a static-shape decode step for CUDA graphs, and CPU memory reuse for caching loops.

    from musicgen_lens import fast
    fast.quantize_int8(model)              # CPU: int8 dynamic-quantized matmuls, hooks unchanged
    codes, info = fast.generate_static(model, cond, max_new_frames=500, return_info=True)
    info.graphed, info.reason              # CUDA graph used? if not, why
    fast.keep_freed_memory()               # Linux CPU: run_with_cache in a loop 1.66x -> 1.13x a bare forward

`quantize_int8` swaps the decoder's matmuls (attention, MLP, unembedding) for
`torch.ao.quantization.quantize_dynamic` int8 kernels. Every HookPoint fires exactly as before
(activations stay float); the float parameters stay in place for analysis (`W_Q`, `W_U`, ...),
but editing them afterwards does not reach the int8 copies: call `quantize_int8` again (or
`dequantize` to go back). Accuracy is what `benchmarks/bench_int8.py` measures.

`generate_static` is generation with a decode step whose shapes never change: the KV cache is
read whole with a mask built on the device from a device position tensor, and the position
itself is a device tensor (`hook.ctx.device_start`, so `hook.ctx.positions/frames/seconds` are
device-computed). On CUDA it captures that step once as a CUDA graph and replays it; on CPU, or
when a hook is not graph-safe, it runs the same step eagerly and says why (`StaticInfo.reason`).
A hook is graph-safe when it only does tensor work (no Python branching on `hook.ctx.step` /
`start`, no host syncs, no prints) and says so: `fn.graph_safe = True` (or `graph_safe(fn)`).
Greedy codes equal `model.generate`'s (checked on CPU in tests/test_speed_paths.py; on GPU by
benchmarks/gpu_bench.py, prepared but not yet run).

`keep_freed_memory` is for CPU analysis loops on Linux: `run_with_cache` on every hook keeps
~0.8 GB alive per musicgen-small call at 250 positions, and glibc hands each freed block back to
the kernel, so every call pays first-touch page faults on fresh memory (measured: 1.66x a bare
forward; 1.13x once freed memory is kept; `benchmarks/bench_forward.py --keep-freed-memory`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from musicgen_lens.components import MLP, Attention, Unembed, fused_kernels
from musicgen_lens.conditioning import Conditioning
from musicgen_lens.kv_cache import KVCache, LayerKVCache

if TYPE_CHECKING:
    from musicgen_lens.model import HookedMusicGen

__all__ = ["StaticInfo", "StaticStep", "dequantize", "fused_kernels", "generate_static", "graph_safe", "is_quantized", "keep_freed_memory", "quantize_int8"]

_LINEAR_NAMES = {Attention: ("W_Q_T", "W_K_T", "W_V_T", "W_O_T"), MLP: ("W_in_T", "W_out_T")}


# ---------------------------------------------------------------------------- CPU int8


def _int8_linear(weight: torch.Tensor, per_channel: bool) -> nn.Module:
    """One [out, in] weight -> a dynamic-quantized int8 torch Linear (no bias)."""
    import warnings

    with warnings.catch_warnings():  # torch.ao.quantization's deprecation notices (the kernels remain)
        warnings.simplefilter("ignore")
        from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig, quantize_dynamic

        return _quantize(weight, per_channel, default_dynamic_qconfig, per_channel_dynamic_qconfig, quantize_dynamic)


def _quantize(weight: torch.Tensor, per_channel: bool, default_dynamic_qconfig: Any, per_channel_dynamic_qconfig: Any, quantize_dynamic: Any) -> nn.Module:
    lin = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    with torch.no_grad():
        lin.weight.copy_(weight.detach().float())
    qconfig = per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return quantize_dynamic(nn.Sequential(lin), {nn.Linear: qconfig}, dtype=torch.qint8)[0]


def _reduce_range() -> bool:
    return torch.backends.quantized.engine in ("fbgemm", "x86")


def _quantized_linear(packed: dict[str, Any], reduce_range: bool, x: torch.Tensor, name: str) -> torch.Tensor:
    return torch.ops.quantized.linear_dynamic(x.contiguous(), packed[name], reduce_range)


def _quantized_unembed(packed: list[Any], reduce_range: bool, x: torch.Tensor) -> torch.Tensor:
    x = x.contiguous()
    # [batch, pos, vocab] per codebook -> [batch, n_codebooks, pos, vocab]
    return torch.stack([torch.ops.quantized.linear_dynamic(x, p, reduce_range) for p in packed], dim=1)


def quantize_int8(model: "HookedMusicGen", *, per_channel: bool = True, unembed: bool = True) -> "HookedMusicGen":
    """Int8 dynamic quantization of the decoder's matmuls (CPU, fp32 model), in place; returns the model.

    Activations stay fp32 and every hook point fires as before. Per-channel weight scales by
    default (more accurate than per-tensor at the same speed)."""
    if model.device.type != "cpu" or model.dtype != torch.float32:
        raise ValueError(f"int8 dynamic quantization runs on CPU fp32 models; this one is {model.device} {model.dtype}")
    dequantize(model)
    rr = _reduce_range()
    with torch.no_grad():
        for module in model.modules():
            names = _LINEAR_NAMES.get(type(module))
            if names is not None:
                packed = {n: _int8_linear(getattr(module, n), per_channel)._packed_params._packed_params for n in names}
                module.__dict__["_linear"] = functools.partial(_quantized_linear, packed, rr)
            elif isinstance(module, Unembed) and unembed:
                packed_u = [_int8_linear(module.W_U[k].T, per_channel)._packed_params._packed_params for k in range(module.W_U.shape[0])]
                module.__dict__["forward"] = functools.partial(_quantized_unembed, packed_u, rr)
    model.__dict__["_int8"] = True
    return model


def dequantize(model: "HookedMusicGen") -> "HookedMusicGen":
    """Undo `quantize_int8` (the float weights were never touched)."""
    for module in model.modules():
        module.__dict__.pop("_linear", None)
        if isinstance(module, Unembed):
            module.__dict__.pop("forward", None)
    model.__dict__.pop("_int8", None)
    return model


def is_quantized(model: "HookedMusicGen") -> bool:
    return bool(model.__dict__.get("_int8", False))


# ---------------------------------------------------------------------------- CPU memory


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc <malloc.h>


def keep_freed_memory(mmap_threshold_mb: int = 1024, trim_threshold_mb: int = 2047) -> None:
    """Make glibc keep freed CPU memory for reuse instead of returning it to the kernel (process-wide).

    Blocks up to `mmap_threshold_mb` come from the heap rather than a fresh `mmap`, and up to
    `trim_threshold_mb` of free heap is kept, so the next `run_with_cache` reuses pages that are
    already mapped (measured with glibc 2.36: eight 8 MB tensors re-made with 0 page faults
    instead of 16k; a single 64 MB block, such as a long-context attention pattern, was still
    mapped afresh). The same as starting Python with `MALLOC_MMAP_THRESHOLD_` /
    `MALLOC_TRIM_THRESHOLD_` set. It changes no result, only where memory comes from; the cost is
    that the process's resident memory stays at its peak. CUDA memory is unaffected (PyTorch's
    caching allocator already reuses it). Raises on platforms without glibc's `mallopt`.
    """
    import ctypes
    import ctypes.util
    import sys

    settings = (("mmap_threshold_mb", mmap_threshold_mb, _M_MMAP_THRESHOLD, "M_MMAP_THRESHOLD"),
                ("trim_threshold_mb", trim_threshold_mb, _M_TRIM_THRESHOLD, "M_TRIM_THRESHOLD"))
    for name, value, _, _ in settings:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2048:
            raise ValueError(f"keep_freed_memory: {name} must be an int of megabytes in 1..2047 (mallopt takes a C int), got {value!r}")
    if not sys.platform.startswith("linux"):
        raise RuntimeError(f"keep_freed_memory needs Linux with glibc (mallopt); this is {sys.platform}")
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError) as err:
        raise RuntimeError(f"keep_freed_memory needs glibc's mallopt, not found in this C library ({err})") from err
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    for _, mb, param, c_name in settings:
        if mallopt(param, mb << 20) != 1:
            raise RuntimeError(f"keep_freed_memory: glibc refused mallopt({c_name}, {mb << 20})")


# ---------------------------------------------------------------------------- static decode step


def graph_safe(fn: Callable) -> Callable:
    """Mark a hook function as safe to capture in a CUDA graph (tensor work only, no host syncs)."""
    fn.graph_safe = True  # type: ignore[attr-defined]
    return fn


def _is_graph_safe(fn: Any) -> bool:
    while isinstance(fn, functools.partial):
        if getattr(fn, "graph_safe", False):
            return True
        fn = fn.func
    return bool(getattr(fn, "graph_safe", False))


@dataclass
class StaticInfo:
    graphed: bool
    reason: str | None  # why not graphed (None when graphed)
    path: str  # "graph", "static-eager" or "eager" (model's normal cached step)


class StaticStep:
    """One decode position with fixed shapes: tokens [batch, n_codebooks, 1] -> logits [batch, n_codebooks, 1, vocab].

    Reads the whole preallocated self-attention cache with a mask `key_pos <= pos` built from the
    device tensor `self.pos`, writes the new keys/values at `pos` with index_copy_, reads the
    frozen cross-attention cache. `capture()` records it as a CUDA graph; `__call__` then replays.
    """

    def __init__(self, model: "HookedMusicGen", cache: KVCache, cond_mask: torch.Tensor | None):
        self.model, self.cache, self.cond_mask = model, cache, cond_mask
        device = model.device
        self.max_pos = cache.max_pos
        self.pos = torch.zeros((), dtype=torch.long, device=device)
        self.key_pos = torch.arange(self.max_pos, device=device)
        self.tokens = torch.zeros(cache.batch, model.cfg.n_codebooks, 1, dtype=torch.long, device=device)
        self.graph: Any = None
        self.out: torch.Tensor | None = None
        for self_cache, _ in cache.layers:  # unwritten slots are read (masked): they must be finite
            self_cache.k[:, :, self_cache.length :].zero_()
            self_cache.v[:, :, self_cache.length :].zero_()

    # the step itself ------------------------------------------------------------
    def _self_attn(self, attn: Attention, x: torch.Tensor, layer_cache: LayerKVCache, valid: torch.Tensor) -> torch.Tensor:
        q = attn._project(x, "W_Q_T", attn.hook_q)  # [batch, head, 1, d_head]
        k = attn._project(x, "W_K_T", attn.hook_k)
        v = attn._project(x, "W_V_T", attn.hook_v)
        index = self.pos.view(1)
        layer_cache.k.index_copy_(2, index, k)
        layer_cache.v.index_copy_(2, index, v)
        z = F.scaled_dot_product_attention(q, layer_cache.k, layer_cache.v, attn_mask=valid)
        return attn._output(z)

    def _forward(self, tokens: torch.Tensor) -> torch.Tensor:
        m = self.model
        b = tokens.shape[0]
        per_codebook = m.hook_codebook_embed(m.embed(tokens))
        resid = m.hook_embed(per_codebook.sum(dim=-2))
        pos_embed = m.pos_embed.W_pos.index_select(0, self.pos.view(1)).unsqueeze(0).expand(b, -1, -1)
        resid = resid + m.hook_pos_embed(pos_embed)
        valid = (self.key_pos <= self.pos).view(1, 1, 1, -1)
        for block, (self_cache, cross_cache) in zip(m.blocks, self.cache.layers):
            resid_pre = block.hook_resid_pre(resid)
            attn_out = block.hook_attn_out(self._self_attn(block.attn, block.ln1(resid_pre), self_cache, valid))
            resid = block.hook_resid_mid(resid_pre + attn_out)
            if block.has_cross_attn:
                cross_out = block.hook_cross_attn_out(
                    block.cross_attn(block.ln_cross(resid), key_mask=self.cond_mask, cache=cross_cache)
                )
                resid = block.hook_resid_mid_cross(resid + cross_out)
            mlp_out = block.hook_mlp_out(block.mlp(block.ln2(resid)))
            resid = block.hook_resid_post(resid + mlp_out)
        return m.logits_from_resid(resid)

    def _enter(self, position: int, step: int) -> None:
        cache = self.cache
        self.model.ctx.enter(start=position, length=1, uncond=cache.uncond, prefix=0, step=step, n_steps=cache.n_steps)
        self.model.ctx.device_start = self.pos

    def _advance(self, position: int) -> None:
        for self_cache, _ in self.cache.layers:
            self_cache.length = position + 1
        self.cache.step += 1

    def eager(self, tokens: torch.Tensor, position: int, step: int) -> torch.Tensor:
        self.pos.fill_(position)
        self._enter(position, step)
        try:
            out = self._forward(tokens)
        finally:
            self.model.ctx.reset()
        self._advance(position)
        return out

    def capture(self, tokens: torch.Tensor, position: int, step: int) -> None:
        """Record the step as a CUDA graph (warm-up on a side stream first). Writes the cache at
        `position` with `tokens`, as the replay of that same step then does again."""
        self.tokens.copy_(tokens)
        self.pos.fill_(position)
        self._enter(position, step)
        try:
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(2):
                    self._forward(self.tokens)
            torch.cuda.current_stream().wait_stream(stream)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.out = self._forward(self.tokens)
        finally:
            self.model.ctx.reset()

    def replay(self, tokens: torch.Tensor, position: int, step: int) -> torch.Tensor:
        self.tokens.copy_(tokens)
        self.pos.fill_(position)
        self.graph.replay()
        self._advance(position)
        return self.out


def _not_graphable(model: "HookedMusicGen", fwd_hooks: Sequence[tuple[Any, Callable]], graph: bool | str) -> str | None:
    if graph is False:
        return "graph=False"
    if model.device.type != "cuda":
        return f"CUDA graphs need a CUDA device; the model is on {model.device}"
    for name, fn in fwd_hooks:
        if not _is_graph_safe(fn):
            label = name if isinstance(name, str) else getattr(name, "__name__", repr(name))
            return f"the hook {getattr(fn, '__name__', repr(fn))} on {label} is not marked graph_safe (see musicgen_lens.fast.graph_safe)"
    live = [n for n, hp in model.hook_dict.items() if hp.is_live()]
    if live:
        return f"hooks attached outside generate_static's fwd_hooks cannot be vetted for graph safety: {live[:3]}"
    return None


def generate_static(
    model: "HookedMusicGen",
    cond: Conditioning | Sequence[str] | str | None = None,
    *,
    max_new_frames: int,
    guidance_scale: float = 3.0,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int = 250,
    top_p: float = 0.0,
    seed: int | Sequence[int] | None = None,
    fwd_hooks: Sequence[tuple[Any, Callable]] = (),
    graph: bool | str = "auto",
    return_info: bool = False,
) -> Any:
    """`model.generate(cond=..., max_new_frames=...)` (text MusicGen, no audio prompt) with the static decode step.

    Same sampling as `generate` (greedy by default here). `graph`: "auto"/True capture a CUDA
    graph when possible, False never. Returns undelayed codes, or (codes, StaticInfo)."""
    from musicgen_lens.generation import _check_args, _conditioning, _frames_to_generate, guided_logits, row_generators, sample_next

    cfg = model.cfg
    if cfg.is_melody:
        raise NotImplementedError("generate_static covers text MusicGen; use model.generate for melody checkpoints")
    _check_args(guidance_scale=guidance_scale, temperature=temperature, top_k=top_k, top_p=top_p, do_sample=do_sample, seed=seed,
                duration=None, max_new_frames=max_new_frames)
    cond = _conditioning(model, cond if isinstance(cond, (str, list, tuple)) else None, cond if isinstance(cond, Conditioning) else None, None)
    batch = cond.batch
    n_frames = _frames_to_generate(model, None, max_new_frames, 0)
    pattern = model.pattern
    length = pattern.length_for(n_frames)
    todo = torch.full((batch, cfg.n_codebooks, n_frames), -1, dtype=torch.long, device=model.device)
    seq = pattern.apply(todo, cfg.pad_token_id)
    fixed = seq != -1
    use_cfg = guidance_scale is not None and guidance_scale > 1
    run_cond = Conditioning.cat([cond, cond.null_like()]) if use_cfg else cond
    generators = row_generators(seed, batch, model.device) if seed is not None else None
    first = 1
    cache = KVCache.for_model(cfg, run_cond.batch, length, text_pos=run_cond.states.shape[1], n_steps=length - first,
                              device=model.device, dtype=model.dtype)
    reason = _not_graphable(model, fwd_hooks, graph)
    path = "graph" if reason is None else "static-eager"

    def sample(logits: torch.Tensor, end: int) -> None:
        logits = guided_logits(logits[:, :, -1].float(), batch, guidance_scale if use_cfg else None)
        nxt = sample_next(logits, do_sample=do_sample, temperature=temperature, top_k=top_k, top_p=top_p, generator=generators)
        seq[..., end] = torch.where(fixed[..., end], seq[..., end], nxt)

    def tokens_at(start: int, end: int) -> torch.Tensor:
        tokens = seq[..., start:end]
        return tokens.repeat(2, 1, 1) if use_cfg else tokens

    with model.hooks(fwd_hooks=list(fwd_hooks)):
        if any(b.attn.hook_attn_scores.is_live() or b.attn.hook_pattern.is_live() for b in model.blocks):
            # their key axis would be the whole static cache: keep the normal step
            reason, path = "hooks on self-attention scores/pattern need the normal step (static key axis)", "eager"
        sample(model(tokens_at(0, first), run_cond, kv_cache=cache), first)  # prefill: normal step, fills the cross cache
        step_fn = StaticStep(model, cache, run_cond.mask) if path != "eager" else None
        for step, end in enumerate(range(first + 1, length), start=1):
            position = end - 1
            tokens = tokens_at(position, end)
            if path == "eager":
                logits = model(tokens, run_cond, kv_cache=cache)
            elif path == "graph" and step_fn.graph is None:
                try:
                    step_fn.capture(tokens, position, step)
                    logits = step_fn.replay(tokens, position, step)
                except Exception as err:  # noqa: BLE001 - any capture failure: eager, with the reason
                    reason, path = f"CUDA graph capture failed: {type(err).__name__}: {err}", "static-eager"
                    step_fn.graph = None
                    logits = step_fn.eager(tokens, position, step)
            elif path == "graph":
                logits = step_fn.replay(tokens, position, step)
            else:
                logits = step_fn.eager(tokens, position, step)
            sample(logits, end)
    codes = pattern.revert(seq, n_frames)
    info = StaticInfo(graphed=path == "graph", reason=reason, path=path)
    return (codes, info) if return_info else codes
