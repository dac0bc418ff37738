"""Text to speech: a backend interface, the VITS backend, the sentence splitter and the asyncio front."""
from engines.exports import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {"async_tts": "AsyncTTS AudioChunk SpeechStream TTSEvent",
    "backend": "OPENAI_VOICES TTSBackend Voice", "text_split": "SentenceSplitter split_text", "vits": "VitsBackend",
    "engines.errors": "UnknownVoiceError"})
