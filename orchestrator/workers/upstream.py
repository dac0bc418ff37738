"""The client of an OpenAI-compatible server we do not run (a lab's vLLM, an Ollama, or one we launched).

It opens requests with the upstream's key and model name, and probes the server's health. An upstream
that cannot be reached, or answers 5xx, is a 503 with Retry-After for our client, never a hang:
connecting has a deadline and so does the first byte. The server serves it through
`orchestrator/server/llm_serving.py`, beside our own engine.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from enum import StrEnum

import httpx

from engines.errors import EngineDeadError

log = logging.getLogger(__name__)
CONNECT_S, FIRST_BYTE_S = 5.0, 120.0  # a long prompt may take a while to prefill; tokens then flow without limit
PROBE_EVERY_S = 5.0


class UpstreamUnavailableError(EngineDeadError):
    """The upstream cannot be reached or answered 5xx: a 503 with Retry-After, as a dead engine is."""

    code = "upstream_unavailable"


class UpstreamState(StrEnum):
    UNKNOWN = "unknown"        # not probed yet
    READY = "ready"
    UNREACHABLE = "unreachable"
    FAILING = "failing"        # it answers, with errors


@dataclass(slots=True)
class UpstreamHealth:
    state: UpstreamState = UpstreamState.UNKNOWN
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
        return self.health.state != UpstreamState.UNREACHABLE

    def shutdown(self) -> None:
        """Nothing to stop here: the connections close with the process (or when the server stops)."""

    async def probe(self) -> UpstreamHealth:
        """GET /models: whether the server answers and how fast; at most every PROBE_EVERY_S."""
        if time.monotonic() - self.health.checked_at < PROBE_EVERY_S:
            return self.health
        start = time.perf_counter()
        try:
            reply = await self.client.get(f"{self.base_url}/models", timeout=CONNECT_S)
            state = UpstreamState.READY if reply.status_code == 200 else UpstreamState.FAILING
            error = "" if state == UpstreamState.READY else f"GET /models answered {reply.status_code}"
        except httpx.TransportError as exc:
            state, error = UpstreamState.UNREACHABLE, f"{type(exc).__name__}: {exc}"
        self.health = UpstreamHealth(state, error, round((time.perf_counter() - start) * 1000, 1), time.monotonic())
        return self.health

    async def open(self, path: str, body: dict) -> httpx.Response:
        """POST the body (with the upstream's model name) and return the response with its body unread."""
        request = self.client.build_request("POST", f"{self.base_url}/{path}", json={**body, "model": self.model})
        try:
            response = await self.client.send(request, stream=True)
        except httpx.TransportError as exc:
            self._failed(f"{type(exc).__name__}: {exc}", UpstreamState.UNREACHABLE)
            raise self._unavailable(f"cannot reach it ({type(exc).__name__})") from None
        if response.status_code >= 500:
            detail = (await response.aread()).decode(errors="replace")[:300]
            await response.aclose()
            self._failed(f"POST /{path} answered {response.status_code}: {detail}", UpstreamState.FAILING)
            raise self._unavailable(f"it answered {response.status_code}")
        return response

    def _failed(self, error: str, state: UpstreamState) -> None:
        log.warning("upstream %s (%s): %s", self.name, self.base_url, error)
        self.health = UpstreamHealth(state, error, None, time.monotonic())

    def _unavailable(self, why: str) -> UpstreamUnavailableError:
        return UpstreamUnavailableError(f"the model {self.name!r} is served by {self.base_url}, and {why}")
