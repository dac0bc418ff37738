"""Request bodies are bounded per route and must keep arriving: 413 past the limit, 408 when a body stalls.

Plain ASGI around the app, so a refused body is never held whole: the route sees its client leave, and the
refusal goes out in the OpenAI shape in place of whatever the route would have answered. Before a 413 the
rest of the body is read and dropped (up to DRAIN_LIMIT), as nginx's lingering close does: a client that
writes its whole body before reading (httpx, the openai SDK) then reads the 413 instead of a reset.
The read timeout covers the body only: once it has arrived, waiting on `receive` (a streamed answer
listening for the client to leave) is not a stalled body.
"""
from __future__ import annotations

import asyncio
import json

from orchestrator.kinds import KINDS
from orchestrator.server.errors import OpenAIError, error_body

MiB = 1 << 20
READ_TIMEOUT_S = 30.0       # between two pieces of one body
DEFAULT_LIMIT = 4 * MiB     # a JSON body: far above any chat OpenAI would take (its context limits come first)
LIMITS = {route: kind.body_limit for kind in KINDS.values() if kind.body_limit for route in kind.routes}
DRAIN_LIMIT = 64 * MiB      # a refused body is read and dropped up to this, then the connection is closed
UPLOADS = tuple(route for kind in KINDS.values() if kind.uploads for route in kind.routes)  # their own limit


class BodyLimits:
    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        await _BoundedRequest(scope, receive, send).run(self.app)


class _BoundedRequest:
    """One request's body, counted as it arrives; the refusal (if any) is sent once the app has let go."""

    def __init__(self, scope, receive, send) -> None:
        path = scope["path"]
        self.scope, self._receive, self._send = scope, receive, send
        self.limit = None if path in UPLOADS else LIMITS.get(path, DEFAULT_LIMIT)
        self.timeout_s = READ_TIMEOUT_S
        self.read, self.body_done, self.started = 0, False, False
        self.refusal: OpenAIError | None = None

    async def run(self, app) -> None:
        length = dict(self.scope["headers"]).get(b"content-length")
        if self.limit is not None and length is not None and length.isdigit() and int(length) > self.limit:
            self.refusal = _too_large(self.limit)
        else:
            await app(self.scope, self.receive, self.send)
        if self.refusal is None or self.started:
            return
        if self.refusal.status == 413:
            await self._drain()
        await _refuse(self._send, self.refusal)

    async def receive(self) -> dict:
        if self.refusal is not None:
            return {"type": "http.disconnect"}
        if self.body_done:
            return await self._receive()
        try:
            message = await asyncio.wait_for(self._receive(), self.timeout_s)
        except TimeoutError:
            self.refusal = OpenAIError(408, f"the request body stopped arriving for {self.timeout_s:g} s; send it "
                                            "whole, without pauses", code="request_timeout")
            return {"type": "http.disconnect"}
        if message["type"] == "http.request":
            self.read += len(message.get("body", b""))
            self.body_done = not message.get("more_body", False)
            if self.limit is not None and self.read > self.limit:
                self.refusal = _too_large(self.limit)
                return {"type": "http.disconnect"}
        return message

    async def send(self, message: dict) -> None:
        if self.refusal is None:
            self.started = True
            await self._send(message)

    async def _drain(self) -> None:
        """Read and drop what is left of a refused body, so the client reaches the point where it reads the 413."""
        while not self.body_done and self.read <= DRAIN_LIMIT:
            try:
                message = await asyncio.wait_for(self._receive(), self.timeout_s)
            except TimeoutError:
                return
            if message["type"] != "http.request":
                return
            self.read += len(message.get("body", b""))
            self.body_done = not message.get("more_body", False)


def _too_large(limit: int) -> OpenAIError:
    return OpenAIError(413, f"the request body is larger than this route's limit of {limit // MiB} MiB; send less "
                            "(fewer or shorter messages or inputs)", code="request_too_large")


async def _refuse(send, error: OpenAIError) -> None:
    body = json.dumps(error_body(error.status, error.message, error.param, error.code)).encode()
    await send({"type": "http.response.start", "status": error.status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
