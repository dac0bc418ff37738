"""Voice activity detection: Silero VAD, shared by many streams, each with its own state."""
from engines.vad.async_vad import AsyncVAD
from engines.vad.detector import VADEvent
from engines.vad.silero import SileroVAD
from engines.vad.stream import VADStream

__all__ = ["AsyncVAD", "SileroVAD", "VADEvent", "VADStream"]
