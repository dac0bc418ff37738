"""Speech-to-text: faster-whisper (CTranslate2) behind the engine lifecycle, and its asyncio front."""
from engines.exports import lazy_exports

_HOMES = {
    "AsyncASR": "engines.asr.async_asr",
    "Segment": "engines.asr.outputs",
    "TranscribeOptions": "engines.asr.outputs",
    "Transcription": "engines.asr.outputs",
    "Word": "engines.asr.outputs",
    "WhisperASR": "engines.asr.whisper",
    "OptionError": "engines.errors",
}
__all__ = sorted(_HOMES)
__getattr__ = lazy_exports(__name__, _HOMES)
