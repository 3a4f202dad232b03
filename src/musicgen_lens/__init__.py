"""musicgen-lens: TransformerLens for MusicGen."""

from musicgen_lens.conditioning import Conditioning
from musicgen_lens.config import MusicGenConfig
from musicgen_lens.delay_pattern import DelayPattern
from musicgen_lens.hook_context import HookContext
from musicgen_lens.kv_cache import KVCache
from musicgen_lens.model import HookedMusicGen

__version__ = "0.1.0"
__all__ = ["Conditioning", "DelayPattern", "HookContext", "HookedMusicGen", "KVCache", "MusicGenConfig", "__version__"]
