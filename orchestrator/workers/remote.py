"""Server-side clients for companion workers: each implements its kind's protocol over the pipe."""
from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

from orchestrator.workers.client import EngineClient
from orchestrator.workers.messages import RequestType


class RemoteEmbedder(EngineClient):
    async def embed(self, inputs: list[str] | list[list[int]], dimensions: int | None = None) -> Any:
        return await self.call(RequestType.EMBED, inputs, dimensions)


class RemoteASR(EngineClient):
    async def transcribe(self, audio, options=None) -> Any:
        return await self.call(RequestType.TRANSCRIBE, audio, options)


class RemoteStream:
    """A worker's speech stream seen from the server: iterate it; aclose() drops what the worker still had queued."""

    def __init__(self, items: AsyncIterator[Any], request_id: str) -> None:
        self._items, self.request_id = items, request_id

    def __aiter__(self) -> RemoteStream:
        return self

    async def __anext__(self) -> Any:
        return await anext(self._items)

    async def aclose(self) -> None:
        await self._items.aclose()


class RemoteTTS(EngineClient):
    def __init__(self, name: str, sample_rate: int, voices: list) -> None:
        super().__init__(name)
        self.sample_rate, self._voices = sample_rate, voices

    @classmethod
    def for_worker(cls, spec, info: dict) -> RemoteTTS:
        return cls(spec.name, info["sample_rate"], info["voices"])

    async def voices(self) -> list:
        return self._voices

    async def stream(self, text: str, voice: str | None = None, speed: float = 1.0) -> RemoteStream:
        items = await self.open_stream(RequestType.SPEAK, text, voice, speed)
        return RemoteStream(items, f"{self.name}-{uuid.uuid4().hex}")


class RemoteVAD(EngineClient):
    """A VAD in its own worker (`isolation: process`); by default the VAD lives in the server process."""

    async def open_stream(self, threshold: float | None = None, min_silence_ms: int = 300, speech_pad_ms: int = 30,
                          min_speech_ms: int = 100) -> str:
        return await self.call(RequestType.VAD_OPEN, threshold, min_silence_ms, speech_pad_ms, min_speech_ms)

    async def feed(self, stream_id: str, pcm) -> list:
        return await self.call(RequestType.VAD_FEED, stream_id, pcm)

    async def flush(self, stream_id: str) -> list:
        return await self.call(RequestType.VAD_FLUSH, stream_id)

    async def close_stream(self, stream_id: str) -> None:
        await self.call(RequestType.VAD_CLOSE, stream_id)
