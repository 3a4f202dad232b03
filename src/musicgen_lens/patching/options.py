"""The keyword arguments every patching function shares, declared once.

`RunOptions` (the two conditionings, direction, normalisation, batching, progress bar) and
`Selection` (which cells of a site: layers, heads, codebooks, positions, windows, per_position)
are the only places these options are written down. `takes_options` gives a function that takes
``**options`` those keywords: its signature lists them (for ``help()`` and IDEs), unknown names
raise a TypeError naming the close ones, and the function receives ``run=`` and ``sel=`` objects.
"""

from __future__ import annotations

import difflib
import functools
import inspect
from dataclasses import MISSING, dataclass, fields
from typing import Any, Callable, Literal

__all__ = ["RunOptions", "Selection", "takes_options"]

Direction = Literal["denoise", "noise"]
_DIRECTIONS = ("denoise", "noise")


@dataclass(frozen=True)
class RunOptions:
    """How to run a sweep.

    ``clean_cond`` / ``corrupted_cond`` follow ``model.resolve_cond`` (a text, a list of texts, a
    Conditioning, or None: the model's default, else the null text) and are padded to a common
    text length. ``direction="denoise"`` runs the corrupted input and patches in clean activations,
    ``"noise"`` the reverse. ``normalize=True`` returns ``(patched - corrupted) / (clean - corrupted)``.
    ``chunk_size`` cells run side by side per forward pass; ``progress`` shows a tqdm bar.
    """

    clean_cond: Any = None
    corrupted_cond: Any = None
    direction: Direction = "denoise"
    normalize: bool = False
    chunk_size: int = 8
    progress: bool = True

    def __post_init__(self) -> None:
        if self.direction not in _DIRECTIONS:
            raise ValueError(f"direction must be 'denoise' (patch clean into corrupted) or 'noise' (corrupted into clean), got {self.direction!r}")
        if isinstance(self.chunk_size, bool) or not isinstance(self.chunk_size, int) or self.chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive int, got {self.chunk_size!r}")


@dataclass(frozen=True)
class Selection:
    """Which cells of a site to patch (None: all).

    ``positions`` are code positions (on a melody model the decoder index is
    ``model.n_prefix(cond) + position``); ``windows=[(t0, t1), ...]`` patches together all
    positions whose time (``model.pattern.seconds_of``) lies in [t0, t1). ``per_position`` adds a
    position axis (None: on for residual sites, off otherwise; implied by positions/windows).
    """

    layers: Any = None
    heads: Any = None
    codebooks: Any = None
    positions: Any = None
    windows: Any = None
    per_position: bool | None = None


def _params(cls: type, names: set[str], defaults: dict[str, Any]) -> list[inspect.Parameter]:
    hints = {"Direction": Direction}
    out = []
    for f in fields(cls):
        if f.name in names:
            default = defaults.get(f.name, f.default if f.default is not MISSING else inspect.Parameter.empty)
            out.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=hints.get(f.type, f.type)))
    return out


def takes_options(*, selection: bool = True, exclude: tuple[str, ...] = (), **defaults: Any) -> Callable[[Callable], Callable]:
    """Decorate ``fn(..., *, run, sel, **own)``: callers pass the `RunOptions` (and, with
    ``selection``, `Selection`) fields as keywords; ``defaults`` override the dataclass defaults."""
    run_names = {f.name for f in fields(RunOptions)} - set(exclude)
    sel_names = ({f.name for f in fields(Selection)} if selection else set()) - set(exclude)

    def decorate(fn: Callable) -> Callable:
        own = inspect.signature(fn)
        own_params = [p for n, p in own.parameters.items() if n not in ("run", "sel")]
        own_names = {p.name for p in own_params}

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            unknown = [k for k in kwargs if k not in run_names | sel_names | own_names]
            if unknown:
                known = sorted(run_names | sel_names | {p.name for p in own_params if p.kind == p.KEYWORD_ONLY})
                close = {k: difflib.get_close_matches(k, known, n=2) for k in unknown}
                hint = "; ".join(f"{k!r} (did you mean {c}?)" if c else repr(k) for k, c in close.items())
                raise TypeError(f"{fn.__name__}() got unexpected keyword arguments: {hint}. Options: {known}")
            run = RunOptions(**{k: v for k, v in {**defaults, **kwargs}.items() if k in run_names})
            sel = Selection(**{k: v for k, v in {**defaults, **kwargs}.items() if k in sel_names})
            rest = {k: v for k, v in kwargs.items() if k not in run_names | sel_names}
            return fn(*args, run=run, sel=sel, **rest)

        params = [p for p in own_params if p.kind != p.VAR_KEYWORD]
        params += _params(Selection, sel_names, defaults) + _params(RunOptions, run_names, defaults)
        wrapper.__signature__ = own.replace(parameters=params)  # type: ignore[attr-defined]
        return wrapper

    return decorate
