"""The paper's protocol as stages (`reproduce`)."""

from musicgen_lens.paper.protocol.reproduce import PaperSettings, reproduce

__all__ = ["PaperSettings", "reproduce"]
