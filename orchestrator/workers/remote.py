"""Server-side stand-ins for companion workers: the same async methods their fronts have, over the pipe."""
from __future__ import annotations

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


REMOTE_CLASSES: dict[str, type[EngineClient]] = {"embedding": RemoteEmbedder, "asr": RemoteASR}
