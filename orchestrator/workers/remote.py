"""Server-side stand-ins for companion workers: the same async methods their fronts have, over the pipe."""
from __future__ import annotations

import uuid
from typing import Any

from orchestrator.workers.client import EngineClient


class RemoteEmbedder(EngineClient):
    def __init__(self, name: str, info: dict) -> None:
        super().__init__(name)

    async def embed(self, inputs: list[str] | list[list[int]], dimensions: int | None = None) -> Any:
        return await self.call("embed", inputs, dimensions)


class RemoteASR(EngineClient):
    def __init__(self, name: str, info: dict) -> None:
        super().__init__(name)

    async def transcribe(self, audio, options=None) -> Any:
        return await self.call("transcribe", audio, options)


class RemoteStream:
    """A worker's stream seen from the server: iterate it; aclose() drops what the worker still had queued."""

    def __init__(self, items, request_id: str) -> None:
        self._items, self.request_id = items, request_id

    def __aiter__(self) -> RemoteStream:
        return self

    async def __anext__(self) -> Any:
        return await anext(self._items)

    async def aclose(self) -> None:
        await self._items.aclose()


class RemoteTTS(EngineClient):
    def __init__(self, name: str, info: dict) -> None:
        super().__init__(name)
        self.sample_rate: int = info["sample_rate"]
        self._voices = info["voices"]

    async def voices(self) -> list:
        return self._voices

    async def stream(self, text: str, voice: str | None = None, speed: float = 1.0) -> RemoteStream:
        return RemoteStream(await self.open_stream("stream", text, voice, speed), f"{self.name}-{uuid.uuid4().hex}")


REMOTE_CLASSES: dict[str, type[EngineClient]] = {"embedding": RemoteEmbedder, "asr": RemoteASR, "tts": RemoteTTS}
