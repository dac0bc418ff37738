"""Server-sent events as OpenAI streams them: `data: {json}` lines, ending in `data: [DONE]`."""
from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from engines.errors import EngineDeadError
from orchestrator.server.errors import error_body

log = logging.getLogger(__name__)
DONE = "data: [DONE]\n\n"


def event(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


async def guarded(events: AsyncIterator[str]) -> AsyncIterator[str]:
    """A failure mid-stream (its engine died) ends the stream with an error event, which the openai SDK raises."""
    try:
        async for item in events:
            yield item
    except Exception as error:  # the status line is long gone: the error travels in the stream, as vLLM sends it
        status = 503 if isinstance(error, EngineDeadError) else 500
        log.warning("stream ended by an engine error: %s", error)
        yield event(error_body(status, f"the stream ended early: {error}", code="stream_interrupted"))
        yield DONE
