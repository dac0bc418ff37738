"""Voice activity detection: Silero VAD, shared by many streams, each with its own state."""
from engines.exports import lazy_exports

_HOMES = {
    "AsyncVAD": "engines.vad.async_vad",
    "VADEvent": "engines.vad.detector",
    "SileroVAD": "engines.vad.silero",
    "VADStream": "engines.vad.stream",
}
__all__ = sorted(_HOMES)
__getattr__ = lazy_exports(__name__, _HOMES)
