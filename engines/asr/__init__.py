"""Speech-to-text: faster-whisper (CTranslate2) behind the engine lifecycle, and its asyncio front."""
from engines.asr.async_asr import AsyncASR
from engines.asr.outputs import Segment, TranscribeOptions, Transcription, Word
from engines.asr.whisper import WhisperASR
from engines.errors import OptionError

__all__ = ["AsyncASR", "OptionError", "Segment", "TranscribeOptions", "Transcription", "WhisperASR", "Word"]
