"""The realtime voice API: OpenAI Realtime events over one WebSocket, VAD → ASR → LLM → TTS per session."""
