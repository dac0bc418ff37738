"""An OpenAI-compatible server we do not run (a lab's vLLM, an Ollama, or one we launched): proxied, and probed.

Our routes check our key and the body, then pass the request on with the upstream's key and model name;
SSE bytes go back as they arrive, and a client that leaves closes the upstream stream at once (which is
how vLLM and our own server learn to abort). An upstream that cannot be reached, or answers 5xx, is a 503
with Retry-After for our client, never a hang: connecting has a deadline and so does the first byte.
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
from fastapi import Request
from fastapi.responses import Response

from orchestrator.server.errors import OpenAIError
from orchestrator.server.streaming import ClosingStreamingResponse, StreamAborted

log = logging.getLogger(__name__)
CONNECT_S, FIRST_BYTE_S = 5.0, 120.0  # a long prompt may take a while to prefill; tokens then flow without limit
PROBE_EVERY_S = 5.0
RETRY_AFTER_S = "5"


@dataclass(slots=True)
class UpstreamHealth:
    state: str = "unknown"      # ready, unreachable, failing
    last_error: str = ""
    latency_ms: float | None = None
    checked_at: float = 0.0     # monotonic seconds; 0: never


class Upstream:
    """One upstream server: where it is, how to reach it, and how it answered last."""

    def __init__(self, name: str, base_url: str, api_key: str | None, model: str) -> None:
        self.name, self.base_url, self.model = name, base_url.rstrip("/"), model
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(FIRST_BYTE_S, connect=CONNECT_S))
        self.health = UpstreamHealth()

    def is_alive(self) -> bool:
        return self.health.state != "unreachable"

    def shutdown(self) -> None:
        """Nothing to stop here: the connections close with the process (or when the server stops)."""

    async def probe(self) -> UpstreamHealth:
        """GET /models: whether the server answers and how fast; at most every PROBE_EVERY_S."""
        if time.monotonic() - self.health.checked_at < PROBE_EVERY_S:
            return self.health
        start = time.perf_counter()
        try:
            reply = await self.client.get(f"{self.base_url}/models", timeout=CONNECT_S)
            state = "ready" if reply.status_code == 200 else "failing"
            error = "" if state == "ready" else f"GET /models answered {reply.status_code}"
        except httpx.TransportError as exc:
            state, error = "unreachable", f"{type(exc).__name__}: {exc}"
        self.health = UpstreamHealth(state, error, round((time.perf_counter() - start) * 1000, 1), time.monotonic())
        return self.health

    async def open(self, path: str, body: dict) -> httpx.Response:
        """POST the body (with the upstream's model name) and return the response with its body unread."""
        request = self.client.build_request("POST", f"{self.base_url}/{path}", json={**body, "model": self.model})
        try:
            response = await self.client.send(request, stream=True)
        except httpx.TransportError as exc:
            self._failed(f"{type(exc).__name__}: {exc}", "unreachable")
            raise self._unavailable(f"cannot reach it ({type(exc).__name__})") from None
        if response.status_code >= 500:
            detail = (await response.aread()).decode(errors="replace")[:300]
            await response.aclose()
            self._failed(f"POST /{path} answered {response.status_code}: {detail}", "failing")
            raise self._unavailable(f"it answered {response.status_code}")
        return response

    def _failed(self, error: str, state: str) -> None:
        log.warning("upstream %s (%s): %s", self.name, self.base_url, error)
        self.health = UpstreamHealth(state, error, None, time.monotonic())

    def _unavailable(self, why: str) -> OpenAIError:
        return OpenAIError(503, f"the model {self.name!r} is served by {self.base_url}, and {why}; retry shortly",
                           code="upstream_unavailable", headers={"Retry-After": RETRY_AFTER_S})


async def proxy(request: Request, upstream: Upstream, path: str) -> Response:
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
