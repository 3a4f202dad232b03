"""What the codec and decoder trainers share: the LR schedule and resumable run state.

A run directory holds `state.pt` (every module, optimiser and random generator by name, plus the
step) and `log.jsonl` (one line per step). Resuming restores the objects in place and drops log
lines past the saved step, which the interrupted process wrote but will now redo.
"""

from __future__ import annotations

import json
import math
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


def _state_of(obj: Any) -> Any:
    if isinstance(obj, torch.Generator):
        return obj.get_state()
    if isinstance(obj, np.random.Generator):
        return obj.bit_generator.state
    return obj.state_dict()


def _restore(obj: Any, state: Any) -> None:
    if isinstance(obj, torch.Generator):
        obj.set_state(state)
    elif isinstance(obj, np.random.Generator):
        obj.bit_generator.state = state
    else:
        obj.load_state_dict(state)


def save_checkpoint(path: Path, step: int, **objects: Any) -> None:
    """Atomically write `step` and the state of each object (module, optimiser, generator)."""
    with atomic_path(path) as tmp:
        torch.save({**{name: _state_of(obj) for name, obj in objects.items()}, "step": step}, tmp)


def load_checkpoint(path: Path, **objects: Any) -> int:
    """Restore each object from `path` in place and return its step; 0 (nothing touched) if absent."""
    if not path.exists():
        return 0
    state = torch.load(path, weights_only=False)
    for name, obj in objects.items():
        _restore(obj, state[name])
    return int(state["step"])


def open_log(path: Path, step: int) -> IO[str]:
    """`log.jsonl` opened for appending after `step`: lines an interrupted run wrote past its last
    checkpoint are dropped, so a resumed run logs each step once."""
    if path.exists():
        lines = path.read_text().splitlines(keepends=True)
        kept = [line for line in lines if json.loads(line)["step"] <= step]
        if len(kept) != len(lines):
            atomic_write_text(path, "".join(kept))
    return open(path, "a")
