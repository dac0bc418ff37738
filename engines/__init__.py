"""Engines, one sub-package per model kind (llm, asr, tts, embedding, vad), each behind the same lifecycle."""
