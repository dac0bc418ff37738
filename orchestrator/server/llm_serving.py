"""One serving interface for the LLM, wherever it runs: our engine (in this process or a worker) or an upstream
OpenAI server. The routes, the realtime voice and health call it and never ask which it is; vLLM's OpenAIServing*
classes over its engine client are the model. `serving_for` is the one place that tells the two apart.
"""
from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Protocol

import httpx
from fastapi import Request
from fastapi.responses import JSONResponse, Response

from engines.errors import EngineInputError
from engines.protocols import LLMProtocol
from orchestrator.server.errors import OpenAIError
from orchestrator.server.protocol import ChatCompletionRequest, CompletionRequest
from orchestrator.server.realtime.answers import Answers, LocalAnswers, UpstreamAnswers
from orchestrator.server.serving_chat import create_chat_completion
from orchestrator.server.serving_completions import create_completion
from orchestrator.server.streaming import ClosingStreamingResponse, StreamAborted
from orchestrator.workers.upstream import Upstream

if TYPE_CHECKING:
    from orchestrator.server.state import LLMState

log = logging.getLogger(__name__)


class LLMServing(Protocol):
    owner: str                    # /v1/models' owned_by

    def is_alive(self) -> bool: ...

    def stats(self) -> Any:
        """The engine's load for /metrics (None when the engine is not ours)."""

    async def health(self) -> dict:
        """What /health/engines adds to the supervisor's view of the LLM (an upstream is probed now)."""

    async def chat(self, state: LLMState, body: ChatCompletionRequest, request: Request) -> Any: ...

    async def completions(self, state: LLMState, body: CompletionRequest, request: Request) -> Any: ...

    def answers(self, state: LLMState) -> Answers:
        """Where the realtime voice's answers come from."""


class LocalServing:
    """Our engine: chat templates, tools and parsers applied here, tokens streamed from the engine."""

    owner = "voice-orchestrator"

    def __init__(self, llm: LLMProtocol) -> None:
        self.llm = llm

    def is_alive(self) -> bool:
        return self.llm.is_alive()

    def stats(self) -> Any:
        return self.llm.stats

    async def health(self) -> dict:
        return {}

    async def chat(self, state: LLMState, body: ChatCompletionRequest, request: Request) -> Any:
        ignored = _ignored_fields(body)
        return _naming_ignored(await create_chat_completion(state, self.llm, body, request), ignored)

    async def completions(self, state: LLMState, body: CompletionRequest, request: Request) -> Any:
        ignored = _ignored_fields(body)
        return _naming_ignored(await create_completion(state, self.llm, body, request), ignored)

    def answers(self, state: LLMState) -> Answers:
        return LocalAnswers(state, self.llm)


class UpstreamServing:
    """An upstream server: the validated request passed on, its answer (SSE or JSON, or its 4xx) relayed as is."""

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self.owner = upstream.base_url

    def is_alive(self) -> bool:
        return self.upstream.is_alive()

    def stats(self) -> Any:
        return None

    async def health(self) -> dict:
        probed = await self.upstream.probe()
        return {"state": probed.state, "upstream": self.upstream.base_url, "last_error": probed.last_error,
                "latency_ms": probed.latency_ms}

    async def chat(self, state: LLMState, body: ChatCompletionRequest, request: Request) -> Response:
        return await _proxy(request, self.upstream, "chat/completions")

    async def completions(self, state: LLMState, body: CompletionRequest, request: Request) -> Response:
        return await _proxy(request, self.upstream, "completions")

    def answers(self, state: LLMState) -> Answers:
        return UpstreamAnswers(state, self.upstream)


_logged_ignored: set[str] = set()


def _ignored_fields(body: ChatCompletionRequest | CompletionRequest) -> list[str]:
    """Unknown fields our engine would not honour: 400 for one that would change the answer, else each is logged
    once and named back (vLLM logs and ignores; OpenAI refuses: a client sees which happened)."""
    try:
        ignored = body.unknown_fields()
    except EngineInputError as error:
        raise OpenAIError(400, str(error), error.param, "unsupported_parameter") from None
    for name in set(ignored) - _logged_ignored:
        _logged_ignored.add(name)
        log.warning("ignoring the request field %r (not an OpenAI or vLLM field this server reads); it is named "
                    "in the x-ignored-fields header of each answer", name)
    return ignored


def _naming_ignored(answer: Any, ignored: list[str]) -> Any:
    """The answer, with the x-ignored-fields header when the request had fields that were not read."""
    if not ignored:
        return answer
    response = answer if isinstance(answer, Response) else JSONResponse(answer)
    response.headers["x-ignored-fields"] = ", ".join(ignored)
    return response


def serving_for(llm: LLMProtocol | Upstream) -> LLMServing:
    """The serving interface over where the LLM runs."""
    return UpstreamServing(llm) if isinstance(llm, Upstream) else LocalServing(llm)


async def _proxy(request: Request, upstream: Upstream, path: str) -> Response:
    """Pass a validated OpenAI request on; the answer (SSE or JSON, success or the upstream's 4xx) comes back as is."""
    body = json.loads(await request.body())
    response = await upstream.open(path, body)
    media = response.headers.get("content-type", "application/json")
    if body.get("stream") and response.status_code == 200:
        return ClosingStreamingResponse(_relay(response), media_type=media)
    try:
        content = await response.aread()
    finally:
        await response.aclose()
    return Response(content, status_code=response.status_code, media_type=media)


async def _relay(response: httpx.Response) -> AsyncIterator[bytes]:
    """The upstream's bytes as they arrive; closing this closes the upstream request."""
    try:
        async for chunk in response.aiter_raw():
            yield chunk
    except httpx.TransportError as exc:  # the upstream died mid-stream: the client must see a broken stream
        raise StreamAborted(f"the upstream stream broke: {exc}") from None
    finally:
        await response.aclose()
