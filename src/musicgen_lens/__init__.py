"""musicgen-lens: TransformerLens for MusicGen."""

from musicgen_lens.conditioning import Conditioning
from musicgen_lens.config import MusicGenConfig
from musicgen_lens.model import HookedMusicGen

__version__ = "0.1.0"
__all__ = ["Conditioning", "HookedMusicGen", "MusicGenConfig", "__version__"]
