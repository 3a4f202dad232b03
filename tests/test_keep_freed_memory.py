"""fast.keep_freed_memory: freed CPU blocks are reused instead of being faulted in afresh."""

from __future__ import annotations

import subprocess
import sys

import pytest

from musicgen_lens import fast

# Allocate, touch and free eight 8 MB tensors (the size of a cached MLP activation), then count
# the page faults of doing it again.
_PROBE = """
import resource, sys, torch
if sys.argv[1] == "keep":
    from musicgen_lens.fast import keep_freed_memory
    keep_freed_memory()
def touch():
    xs = [torch.empty(2 * 2**20).fill_(1.0) for _ in range(8)]
    del xs
touch()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
touch()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt is Linux-only")
def test_freed_block_is_reused_without_page_faults():
    pages = (64 << 20) // 4096
    default = _faults("default")
    if default < pages // 10:  # huge pages or an allocator that already keeps it: nothing to show
        pytest.skip(f"this allocator already reuses the block ({default} faults)")
    # kept: at most a block or two re-faulted (seen: 0, sometimes 2048 = one block), not all of them
    assert _faults("keep") < pages // 4 < default


@pytest.mark.parametrize("kw", [{"mmap_threshold_mb": 0}, {"trim_threshold_mb": 2048}, {"mmap_threshold_mb": 1.5}, {"trim_threshold_mb": True}])
def test_bad_thresholds_are_refused_by_name(kw):
    name = next(iter(kw))
    with pytest.raises(ValueError, match=name):
        fast.keep_freed_memory(**kw)


def test_non_linux_gets_a_clear_error(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    with pytest.raises(RuntimeError, match="Linux with glibc"):
        fast.keep_freed_memory()
