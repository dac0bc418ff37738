"""Speech-to-text: faster-whisper (CTranslate2) behind the engine lifecycle, and its asyncio front."""
from engines.exports import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {"async_asr": "AsyncASR",
    "outputs": "Segment TranscribeOptions Transcription Word", "whisper": "WhisperASR",
    "engines.errors": "OptionError"})
