"""Request bodies are bounded per route and must keep arriving: 413 past the limit, 408 when a body stalls.

Plain ASGI around the app, so a refused body is never read whole: the route sees its client leave, and
the refusal goes out in the OpenAI shape in place of whatever the route would have answered.
"""
from __future__ import annotations

import asyncio

from orchestrator.server.errors import OpenAIError

MiB = 1 << 20
READ_TIMEOUT_S = 30.0       # between two pieces of one body
DEFAULT_LIMIT = 4 * MiB     # a JSON body: far above any chat OpenAI would take (its context limits come first)
LIMITS = {"/v1/embeddings": 16 * MiB, "/v1/audio/speech": 1 * MiB}
UPLOADS = ("/v1/audio/transcriptions", "/v1/audio/translations", "/openai/v1/audio/transcriptions",
           "/openai/v1/audio/translations")  # multipart: their own 25 MB limit names the file (routers/transcriptions)


class BodyLimits:
    def __init__(self, app, read_timeout_s: float | None = None) -> None:
        self.app, self.read_timeout_s = app, read_timeout_s or READ_TIMEOUT_S

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        path = scope["path"]
        limit = None if path in UPLOADS else LIMITS.get(path, DEFAULT_LIMIT)
        length = dict(scope["headers"]).get(b"content-length")
        if limit is not None and length is not None and length.isdigit() and int(length) > limit:
            return await _refuse(send, _too_large(limit))
        read, refusal = 0, None

        async def bounded() -> dict:
            nonlocal read, refusal
            try:
                message = await asyncio.wait_for(receive(), self.read_timeout_s)
            except TimeoutError:
                refusal = OpenAIError(408, f"the request body stopped arriving for {self.read_timeout_s:g} s; send "
                                           "it whole, without pauses", code="request_timeout")
                return {"type": "http.disconnect"}
            if message["type"] == "http.request":
                read += len(message.get("body", b""))
                if limit is not None and read > limit:
                    refusal = _too_large(limit)
                    return {"type": "http.disconnect"}
            return message

        async def unless_refused(message: dict) -> None:
            if refusal is None:
                await send(message)

        await self.app(scope, bounded, unless_refused)
        if refusal is not None:
            await _refuse(send, refusal)


def _too_large(limit: int) -> OpenAIError:
    return OpenAIError(413, f"the request body is larger than this route's limit of {limit // MiB} MiB; send less "
                            "(fewer or shorter messages or inputs)", code="request_too_large")


async def _refuse(send, error: OpenAIError) -> None:
    import json

    from orchestrator.server.errors import error_body

    body = json.dumps(error_body(error.status, error.message, error.param, error.code)).encode()
    await send({"type": "http.response.start", "status": error.status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
