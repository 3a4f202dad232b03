"""`HookPoint`: TransformerLens's hook point, plus a check on what a forward hook returns.

A hook that returns a tensor of another shape than the activation it was given (fewer
positions, a broadcastable batch, a transposed head axis) would otherwise flow on silently and
give wrong numbers downstream; here it raises at once, naming the hook point and both shapes.
Returning None (read-only hooks, caching) or the same shape is what hooks are for.

Speed: a HookPoint with nothing attached returns its input directly, without going through
`nn.Module.__call__` (about 10x cheaper; a step of musicgen-small calls ~600 of them).
"Nothing attached" means no torch forward/backward (pre-)hooks on the module, which is where
TransformerLens puts its hooks, and no global module hooks.

torch.compile: while dynamo traces, the forward hooks are called directly (`_traced_call`), so
a compiled model (`torch.compile(model)`, `block.compile()`) runs its hooks and recompiles when
they change, instead of silently dropping them.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Literal

import torch
from torch.nn.modules.module import (  # mutated in place by torch: holding the dicts is enough
    _global_backward_hooks,
    _global_backward_pre_hooks,
    _global_forward_hooks,
    _global_forward_pre_hooks,
)
from transformer_lens.hook_points import HookPoint as _TLHookPoint

__all__ = ["HookPoint"]

_is_compiling = torch.compiler.is_compiling


class _ShapeChecked:
    """Calls a forward hook and refuses a changed shape; reprs as the hook (TL names handles by repr)."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable):
        self.fn = fn

    def __call__(self, tensor: Any, *, hook: Any) -> Any:
        out = self.fn(tensor, hook=hook)
        if out is not None and isinstance(out, torch.Tensor) and isinstance(tensor, torch.Tensor) and out.shape != tensor.shape:
            raise ValueError(
                f"the hook {self.fn!r} on {hook.name} returned a tensor of shape {tuple(out.shape)}, but the activation "
                f"has shape {tuple(tensor.shape)}: a hook must return None or a tensor of the same shape"
            )
        return out

    def __repr__(self) -> str:
        # TransformerLens names each torch hook by this repr; a partial's repr would print its
        # (possibly huge) arguments, so it gets the short form TL itself uses for partials.
        return f"partial({self.fn.func!r},...)" if isinstance(self.fn, functools.partial) else repr(self.fn)


class HookPoint(_TLHookPoint):
    """A TransformerLens HookPoint whose forward hooks may not change the activation's shape."""

    def __call__(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        # identity with nothing attached: skip nn.Module.__call__'s hook machinery. The checks are
        # is_live()'s inlined (the torch-hook half): a method call here costs +0.1 us x ~600 calls per step.
        d = self.__dict__
        if _is_compiling():  # ~60 ns in eager; under dynamo a constant
            return self._traced_call(x)
        if (
            args or kwargs or d["_forward_hooks"] or d["_forward_pre_hooks"] or d["_backward_hooks"] or d["_backward_pre_hooks"]
            or _global_forward_hooks or _global_forward_pre_hooks or _global_backward_hooks or _global_backward_pre_hooks
        ):
            return super().__call__(x, *args, **kwargs)
        return x

    def _traced_call(self, x: Any) -> Any:
        """The forward hooks, called in plain Python while torch.compile traces.

        Measured (torch 2.13): through nn.Module.__call__, dynamo leaves a HookPoint's hooks out of
        the graph (with its default `skip_nnmodule_hook_guards`) whether they were attached before
        or after compiling: a compiled model silently ran unhooked. Iterating the hook dict here
        puts every hook in the graph and makes dynamo guard on the dict, so adding or removing a
        hook recompiles (up to dynamo's recompile limit, then that frame runs eagerly). Backward,
        pre-forward and global hooks are not traced: the error raised here makes dynamo (2.13)
        run the frame eagerly, where they fire; a dynamo that surfaced it would say why."""
        d = self.__dict__
        # TransformerLens's bwd_hooks list as well as torch's dict: dynamo's view of the latter is empty
        if (d["bwd_hooks"] or d["_forward_pre_hooks"] or d["_backward_hooks"] or d["_backward_pre_hooks"] or _global_forward_hooks
                or _global_forward_pre_hooks or _global_backward_hooks or _global_backward_pre_hooks):
            raise RuntimeError(
                f"{self.name}: under torch.compile musicgen_lens calls only forward hooks (TransformerLens 'fwd' hooks); this "
                "hook point (or torch globally) also has backward, pre-forward or global module hooks: run without torch.compile"
            )
        for hook in tuple(d["_forward_hooks"].values()):
            out = hook(self, (x,), x)
            if out is not None:
                x = out
        return x

    def is_live(self) -> bool:
        """Whether anything (a TransformerLens fwd/bwd hook, a torch hook, a global hook) would see this activation.

        Components use it to pick a fused path when an intermediate (attention scores and
        pattern, LayerNorm scale) that only exists for the hook need not be materialised."""
        d = self.__dict__  # plain dict reads: this runs per LayerNorm / attention call
        return bool(
            d["_forward_hooks"] or d["_backward_hooks"] or d["fwd_hooks"] or d["bwd_hooks"] or d["_forward_pre_hooks"]
            or d["_backward_pre_hooks"] or _global_forward_hooks or _global_forward_pre_hooks or _global_backward_hooks
            or _global_backward_pre_hooks
        )

    def clear_context(self) -> None:
        """TransformerLens resets `hook.ctx` to {} here (`reset_hooks()` does it by default); the
        model's `HookContext` is kept: it is per-call time state the model rewrites on every forward,
        and time-aware hooks (steering windows) read it."""
        from musicgen_lens.hook_context import HookContext

        if not isinstance(self.__dict__.get("ctx"), HookContext):
            super().clear_context()

    def add_hook(
        self, hook: Callable, dir: Literal["fwd", "bwd"] = "fwd", is_permanent: bool = False, level: int | None = None,
        prepend: bool = False, **kwargs: Any,
    ) -> Any:
        if dir == "fwd":
            hook = _ShapeChecked(hook)
        return super().add_hook(hook, dir=dir, is_permanent=is_permanent, level=level, prepend=prepend, **kwargs)
