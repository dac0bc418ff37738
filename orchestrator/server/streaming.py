"""Streamed responses that close their body however they end, and cut the connection when an engine fails mid-way."""
from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from fastapi.responses import StreamingResponse

log = logging.getLogger(__name__)


class StreamAborted(Exception):
    """The body cannot go on (its engine died); the client must see a broken stream, not a short clean one."""


class ClosingStreamingResponse(StreamingResponse):
    """Closes its body at once when the client leaves (its engine work is dropped now, not at garbage collection).

    A body that raises StreamAborted ends the response without its final chunk, so the client's HTTP
    library reports an incomplete read instead of taking a cut-off file for a whole one.
    """

    def __init__(self, content, *, on_close: Callable[[], Awaitable[None]] | None = None, **kwargs) -> None:
        super().__init__(content, **kwargs)
        self.on_close = on_close  # frees what the body holds even when the body never started (the client left first)

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except StreamAborted as error:
            log.warning("stream aborted: %s", error)
        except BaseExceptionGroup as group:
            if group.subgroup(StreamAborted) is None or group.subgroup(lambda e: not isinstance(e, StreamAborted)):
                raise
            log.warning("stream aborted: %s", group.exceptions[0])
        finally:
            await self.body_iterator.aclose()
            if self.on_close is not None:
                await self.on_close()
