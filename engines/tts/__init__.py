"""Text to speech: a backend interface, the VITS backend, the sentence splitter and the asyncio front."""
from engines.errors import UnknownVoiceError
from engines.tts.async_tts import AsyncTTS, AudioChunk, SpeechStream, TTSEvent
from engines.tts.backend import OPENAI_VOICES, TTSBackend, Voice
from engines.tts.text_split import SentenceSplitter, split_text
from engines.tts.vits import VitsBackend

__all__ = ["AsyncTTS", "AudioChunk", "OPENAI_VOICES", "SentenceSplitter", "SpeechStream", "TTSBackend",
           "TTSEvent", "UnknownVoiceError", "Voice", "VitsBackend", "split_text"]
