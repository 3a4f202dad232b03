"""Hook management of HookedMusicGen: name checks, opt-in hooks, caching with TransformerLens.

A mixin in front of `HookedRootModule`: unknown names fail with suggestions, a cross-attention
name on a melody model says why it does not exist, `hook_result` refuses to be hooked while
`cfg.use_attn_result` is off (it would never fire), `run_with_cache` returns an
`ActivationCache`, and `pos_slice` slices each hook on its real position axis (from
`musicgen_lens.hooks`).
"""

from __future__ import annotations

import difflib
from typing import Any, Callable, Literal

import torch
from transformer_lens import ActivationCache

from musicgen_lens.hooks import parse_hook_name

__all__ = ["HooksMixin", "MusicGenActivationCache"]


class MusicGenActivationCache(ActivationCache):
    """TransformerLens's ActivationCache, refusing the decompositions that are wrong for MusicGen-melody.

    On a melody model `hook_embed` covers the codes while the residual stream covers the
    prepended chroma + text too, so TL's `decompose_resid` / `get_full_resid_decomposition`
    cannot line up (they crashed with a stacking error); they now say so and point to
    `musicgen_lens.decomposition.resid_decomposition`, which includes the prefix.
    """

    def _refuse_on_melody(self, what: str) -> None:
        if getattr(self.model.cfg, "is_melody", False):
            raise NotImplementedError(
                f"ActivationCache.{what} does not fit MusicGen-melody: its residual stream starts with the chroma + text "
                "prefix, which hook_embed does not cover. Use musicgen_lens.decomposition.resid_decomposition(cache), "
                "which includes the prefix and sums to the residual stream exactly."
            )

    def decompose_resid(self, *args: Any, **kwargs: Any) -> Any:
        self._refuse_on_melody("decompose_resid")
        return super().decompose_resid(*args, **kwargs)

    def get_full_resid_decomposition(self, *args: Any, **kwargs: Any) -> Any:
        self._refuse_on_melody("get_full_resid_decomposition")
        return super().get_full_resid_decomposition(*args, **kwargs)


class HooksMixin:
    """Name-checked hooks and registry-aware caching (mixed in before HookedRootModule)."""

    def _check_hook_name(self, name: str) -> None:
        """Unknown names, sites this architecture lacks, and opt-in hooks that would never fire raise."""
        if name not in self.hook_dict:
            try:
                known, _ = parse_hook_name(name)
            except ValueError:
                known = None
            if known is not None and not known.available(self.cfg):
                raise KeyError(
                    f"Unknown hook name {name!r}: this is a MusicGen-melody model, which has no cross-attention. Its chroma "
                    "(hook_chroma) and text (hook_cond) are prepended to the codes and read by self-attention: see "
                    "blocks.{l}.attn.* (the first model.n_prefix(cond) key positions are the conditioning)."
                )
            close = difflib.get_close_matches(name, list(self.hook_dict), n=3)
            raise KeyError(
                f"Unknown hook name {name!r}." + (f" Did you mean {close}?" if close else "") + " See model.hook_dict for all names."
            )
        if not self._fires(name):
            # TransformerLens asserts here too: the hook point exists but nothing would ever reach it
            raise ValueError(f"{name} only fires with cfg.use_attn_result = True (it costs memory); call model.set_use_attn_result(True) first")

    def _fires(self, name: str) -> bool:
        opt_in = parse_hook_name(name)[0].opt_in
        return opt_in is None or bool(getattr(self.cfg, opt_in))

    def set_use_attn_result(self, use_attn_result: bool) -> None:
        """Compute per-head outputs (`hook_result`, [batch, pos, head_index, d_model]), as TransformerLens."""
        self.cfg.use_attn_result = bool(use_attn_result)

    def get_caching_hooks(
        self, names_filter: Any = None, incl_bwd: bool = False, device: Any = None, remove_batch_dim: bool = False,
        cache: dict | None = None, pos_slice: Any = None,
    ) -> tuple[dict, list, list]:
        """TransformerLens's caching hooks, with `pos_slice` applied on each site's own position axis.

        TransformerLens guesses the axis from the name (-3 for q/k/v/z/result, else -2), which on
        MusicGen slices codebooks (`hook_codebook_embed`), text tokens (`hook_cond`,
        cross-attention keys/values) or latent channels. Here the registry says where positions
        are: decoder and code positions are sliced (on a melody model the decoder axis starts with
        the prefix), and hooks without them (text, chroma, codec) are cached whole.
        """
        cache, fwd, bwd = super().get_caching_hooks(names_filter, incl_bwd, device, remove_batch_dim, cache, pos_slice=None)
        # opt-in hooks that are off never fire: leave them out rather than refuse a broad filter
        fwd, bwd = [(n, h) for n, h in fwd if self._fires(n)], [(n, h) for n, h in bwd if self._fires(n)]
        if pos_slice is None:
            return cache, fwd, bwd
        from transformer_lens.utilities import Slice

        sl = Slice.unwrap(pos_slice)

        def sliced(inner: Callable) -> Callable:
            def save(tensor: torch.Tensor, hook: Any) -> None:
                found, _ = parse_hook_name(hook.name)
                axis = found.pos_axis if found.positions in ("decoder", "codes") else None
                if axis is not None:
                    tensor = sl.apply(tensor, dim=axis)  # before TL's save hook drops the batch axis
                inner(tensor, hook=hook)

            return save

        return cache, [(n, sliced(h)) for n, h in fwd], [(n, sliced(h)) for n, h in bwd]

    def _enable_hook_with_name(self, name: str, hook: Callable, dir: Literal["fwd", "bwd"]) -> None:
        self._check_hook_name(name)
        super()._enable_hook_with_name(name, hook, dir)

    def add_hook(self, name: Any, hook: Callable, dir: Literal["fwd", "bwd"] = "fwd", is_permanent: bool = False, level: int | None = None, prepend: bool = False) -> None:
        if isinstance(name, str):
            self._check_hook_name(name)
        super().add_hook(name, hook, dir=dir, is_permanent=is_permanent, level=level, prepend=prepend)

    def run_with_cache(self, *model_args: Any, names_filter: Any = None, return_cache_object: bool = True, remove_batch_dim: bool = False, **kwargs: Any) -> tuple[Any, ActivationCache | dict]:
        """As TransformerLens: returns (output, ActivationCache). Unknown names in names_filter raise."""
        names = [names_filter] if isinstance(names_filter, str) else names_filter
        if isinstance(names, (list, tuple)):
            for name in names:
                self._check_hook_name(name)
        out, cache = super().run_with_cache(*model_args, names_filter=names_filter, remove_batch_dim=remove_batch_dim, **kwargs)
        if return_cache_object:
            return out, MusicGenActivationCache(cache, self, has_batch_dim=not remove_batch_dim)
        return out, cache
