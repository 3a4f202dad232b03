"""What the codec and decoder trainers share: the LR schedule and resumable run state.

A run directory holds `state.pt` (every module, optimiser and random generator by name, plus the
step) and `log.jsonl` (one line per step). Resuming restores the objects in place and drops log
lines past the saved step, which the interrupted process wrote but will now redo.

`state.pt` holds only tensors and plain Python data (numpy generator states keep their arrays as
tensors), so it is read with `torch.load(weights_only=True)`: a crafted file cannot run code, it
is refused with a ValueError.
"""

from __future__ import annotations

import json
import math
import pickle
import re
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from musicgen_lens._atomic import atomic_path, atomic_write_text


def lr_at(step: int, steps: int, lr: float, warmup: int = 100) -> float:
    """Linear warm-up, then cosine decay to 10% of `lr`."""
    if step < warmup:
        return lr * (step + 1) / warmup
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup))))


def _plain(value: Any) -> Any:
    """A numpy bit generator's state with its arrays (MT19937's key, Philox's counter) as tensors."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.copy())
    if isinstance(value, np.generic):
        return value.item()
    return value


def _unplain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _unplain(v) for k, v in value.items()}
    if isinstance(value, torch.Tensor):
        return value.numpy().copy()
    return value


def _state_of(obj: Any) -> Any:
    if isinstance(obj, torch.Generator):
        return obj.get_state()
    if isinstance(obj, np.random.Generator):
        return _plain(obj.bit_generator.state)
    return obj.state_dict()


def _kind(obj: Any) -> str:
    if isinstance(obj, torch.Generator):
        return "a torch.Generator"
    if isinstance(obj, np.random.Generator):
        return "a numpy Generator"
    return f"a {type(obj).__name__} (state_dict)"


def _saved_kind(state: Any) -> str:
    if isinstance(state, torch.Tensor):
        return "a torch.Generator's state"
    if isinstance(state, dict) and "bit_generator" in state:
        return "a numpy Generator's state"
    return "a state_dict"


def _restore(obj: Any, state: Any, name: str, path: Path) -> None:
    expected = "a torch.Generator's state" if isinstance(obj, torch.Generator) else (
        "a numpy Generator's state" if isinstance(obj, np.random.Generator) else "a state_dict")
    found = _saved_kind(state)
    if found != expected:
        raise TypeError(f"{name!r} in {str(path)!r} is {found}, but it is being restored into {_kind(obj)}; expected {expected}")
    if isinstance(obj, torch.Generator):
        obj.set_state(state)
    elif isinstance(obj, np.random.Generator):
        obj.bit_generator.state = _unplain(state)
    else:
        obj.load_state_dict(state)


def save_checkpoint(path: Path, step: int, **objects: Any) -> None:
    """Atomically write `step` and the state of each object (module, optimiser, generator)."""
    if "step" in objects:
        raise ValueError("'step' is reserved for the step number; name the object something else")
    with atomic_path(path) as tmp:
        torch.save({**{name: _state_of(obj) for name, obj in objects.items()}, "step": int(step)}, tmp)


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The saved dict, read weights-only (tensors and plain data; nothing in it can run code).

    Raises ValueError naming the file when it holds anything else (e.g. a pickled object whose
    loading would run code) or is not a checkpoint written by `save_checkpoint`."""
    path = Path(path)
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as err:
        # torch's message is a page of advice; its reason is the "Unsupported global: ..." part
        reason = re.search(r"Unsupported [^.]*|WeightsUnpickler error: [^.]*", str(err))
        why = reason.group(0) if reason else type(err).__name__
        raise ValueError(
            f"refusing to load {str(path)!r}: it is not a plain checkpoint ({why}); it may run code when unpickled; "
            "expected a state.pt written by save_checkpoint, holding only tensors and plain data"
        ) from None
    except (RuntimeError, EOFError, OSError) as err:
        raise ValueError(f"could not read checkpoint {str(path)!r} ({type(err).__name__}: {err}); expected a state.pt written by save_checkpoint") from err
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        raise ValueError(
            f"{str(path)!r} is not a save_checkpoint file: expected a dict with an integer 'step', "
            f"got {type(state).__name__}{' with keys ' + ', '.join(map(str, state)) if isinstance(state, dict) else ''}"
        )
    return state


def load_checkpoint(path: Path, **objects: Any) -> int:
    """Restore each object from `path` in place and return its step; 0 (nothing touched) if absent.

    Nothing is restored unless every requested name is in the file."""
    path = Path(path)
    if not path.exists():
        return 0
    state = read_checkpoint(path)
    missing = [name for name in objects if name not in state]
    if missing:
        has = ", ".join(k for k in state if k != "step") or "nothing"
        raise KeyError(f"{', '.join(map(repr, missing))} not in checkpoint {str(path)!r}; it has: {has}")
    for name, obj in objects.items():
        _restore(obj, state[name], name, path)
    return state["step"]


def open_log(path: Path, step: int) -> IO[str]:
    """`log.jsonl` opened for appending after `step`: lines an interrupted run wrote past its last
    checkpoint are dropped, so a resumed run logs each step once."""
    if path.exists():
        lines = path.read_text().splitlines(keepends=True)
        kept = [line for line in lines if json.loads(line)["step"] <= step]
        if len(kept) != len(lines):
            atomic_write_text(path, "".join(kept))
    return open(path, "a")
