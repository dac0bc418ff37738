"""Text to speech: a backend interface, the VITS backend, the sentence splitter and the asyncio front."""
from engines.exports import lazy_exports

_HOMES = {
    "UnknownVoiceError": "engines.errors",
    "AsyncTTS": "engines.tts.async_tts",
    "AudioChunk": "engines.tts.async_tts",
    "SpeechStream": "engines.tts.async_tts",
    "TTSEvent": "engines.tts.async_tts",
    "OPENAI_VOICES": "engines.tts.backend",
    "TTSBackend": "engines.tts.backend",
    "Voice": "engines.tts.backend",
    "SentenceSplitter": "engines.tts.text_split",
    "split_text": "engines.tts.text_split",
    "VitsBackend": "engines.tts.vits",
}
__all__ = sorted(_HOMES)
__getattr__ = lazy_exports(__name__, _HOMES)
