"""Voice activity detection: Silero VAD, shared by many streams, each with its own state."""
from engines.exports import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {"async_vad": "AsyncVAD", "detector": "VADEvent",
    "silero": "SileroVAD", "stream": "VADStream"})
