"""One protocol per engine kind: what the server, the realtime voice and the supervisor may call.

Both sides of the worker seam implement them: the in-process fronts (`AsyncLLM`, `AsyncASR`, `AsyncTTS`,
`AsyncEmbedder`, `AsyncVAD`) and the clients that reach a worker over its pipe. Runtime-checkable, so a
test can hold every implementation to its protocol.
"""
from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # the planner imports nothing heavy; these are for readers and type checkers
    import numpy as np

    from engines.asr.outputs import TranscribeOptions, Transcription
    from engines.embedding.embedder import EmbeddingResult
    from engines.llm.outputs import EngineStats, RequestOutput
    from engines.llm.sampling_params import SamplingParams
    from engines.tts.async_tts import AudioChunk
    from engines.tts.backend import Voice
    from engines.vad.detector import VADEvent


@runtime_checkable
class FrontProtocol(Protocol):
    """What every front and every worker client answers, whatever its kind (EngineFront is the in-process base)."""

    def is_alive(self) -> bool:
        """False once the engine (or its worker) is gone; calls then raise EngineDeadError."""

    def shutdown(self) -> None:
        """Let go: an in-process front stops its thread; a worker's client detaches (the supervisor owns it)."""


@runtime_checkable
class LLMProtocol(FrontProtocol, Protocol):
    tokenizer: Any  # the server renders chat templates and counts tokens itself

    @property
    def stats(self) -> EngineStats: ...

    def generate(self, prompt: str | list[int], params: SamplingParams | None = None, request_id: str | None = None,
                 priority: Any = ...) -> AsyncIterator[RequestOutput]:
        """An async generator of one request's step outputs (deltas); closing it aborts the request."""

    def abort(self, request_id: str) -> None: ...


@runtime_checkable
class ASRProtocol(FrontProtocol, Protocol):
    async def transcribe(self, audio: np.ndarray, options: TranscribeOptions | None = None) -> Transcription: ...


@runtime_checkable
class SpeechStreamProtocol(Protocol):
    request_id: str

    def __aiter__(self) -> AsyncIterator[AudioChunk]: ...

    async def aclose(self) -> None:
        """Drop what is still queued for this request."""


@runtime_checkable
class TTSProtocol(FrontProtocol, Protocol):
    sample_rate: int

    async def voices(self) -> list[Voice]: ...

    async def stream(self, text: str, voice: str | None = None, speed: float = 1.0) -> SpeechStreamProtocol:
        """Queue the text; refusals raise here, audio comes piece by piece from the stream."""


@runtime_checkable
class EmbeddingProtocol(FrontProtocol, Protocol):
    async def embed(self, inputs: list[str] | list[list[int]], dimensions: int | None = None) -> EmbeddingResult: ...


@runtime_checkable
class VADProtocol(FrontProtocol, Protocol):
    async def open_stream(self, threshold: float | None = None, min_silence_ms: int = 300, speech_pad_ms: int = 30,
                          min_speech_ms: int = 100) -> str: ...

    async def feed(self, stream_id: str, pcm: np.ndarray) -> list[VADEvent]: ...

    async def flush(self, stream_id: str) -> list[VADEvent]: ...

    async def close_stream(self, stream_id: str) -> None: ...
