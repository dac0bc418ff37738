"""WS /v1/realtime: OpenAI's Realtime API over the stack's VAD, ASR, LLM and TTS, with auth and limits.

Refusals before the handshake (no voice LLM, bad key, unknown model, too many sessions) are HTTP
errors in the OpenAI shape. After it, a client mistake is an `error` event and the session goes on;
binary frames (1003), an oversized event (1009), idleness and the session's length end it.
"""
from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse

from orchestrator.server.errors import error_body
from orchestrator.server.realtime.events import ClientError, error_event, parse_client_event
from orchestrator.server.realtime.server_events import ServerEvent
from orchestrator.server.realtime.session import RealtimeSession
from orchestrator.server.realtime.voice import VoiceEngines

log = logging.getLogger(__name__)
router = APIRouter()
KEY_PROTOCOL = "openai-insecure-api-key."  # how browsers, which cannot set headers, send the key


@router.websocket("/v1/realtime")
async def realtime(websocket: WebSocket, model: str | None = None) -> None:
    engines: VoiceEngines | None = websocket.app.state.voice
    sessions: set[RealtimeSession] = websocket.app.state.realtime_sessions
    if engines is None:
        return await _deny(websocket, 404, "this server has no LLM for realtime voice; add a `kind: llm` model to "
                                           "the stack", "model_not_found")
    if not _authorised(websocket):
        return await _deny(websocket, 401, "missing or wrong API key: send 'Authorization: Bearer <key>', or the "
                                           f"subprotocol '{KEY_PROTOCOL}<key>' from a browser", "invalid_api_key")
    if not engines.model_matches(model):
        return await _deny(websocket, 404, f"the model {model!r} does not exist; this server's voice model is "
                                           f"{engines.llm.served_name!r}", "model_not_found")
    if len(sessions) >= engines.limits.max_sessions:
        return await _deny(websocket, 429, f"{len(sessions)} realtime sessions are open, the most this server takes; "
                                           "retry when one closes", "too_many_sessions")
    await websocket.accept(subprotocol="realtime" if "realtime" in websocket.scope.get("subprotocols", []) else None)
    lock = asyncio.Lock()

    async def send(event: ServerEvent) -> None:
        async with lock:
            try:
                await websocket.send_text(json.dumps(event.wire()))
            except (WebSocketDisconnect, RuntimeError) as gone:  # one kind of error for "the client has gone"
                raise ConnectionError("the realtime client has gone") from gone

    session = RealtimeSession(engines, send, websocket.app.state.metrics, model)
    sessions.add(session)
    websocket.app.state.metrics.realtime_sessions_opened.inc()
    log.info("realtime session %s opened (%d open)", session.config.id, len(sessions))
    try:
        await session.start()
        await _serve(websocket, session, send, engines)
    except (WebSocketDisconnect, ConnectionError):
        pass
    except Exception:  # a fault ends this session alone, never the server
        log.exception("realtime session %s failed", session.config.id)
        await _close(websocket, 1011, "internal error; see the server log")
    finally:
        sessions.discard(session)
        await session.close()
        log.info("realtime session %s closed", session.config.id)


async def _serve(websocket: WebSocket, session: RealtimeSession, send, engines: VoiceEngines) -> None:
    limits = engines.limits
    ends = time.monotonic() + limits.max_session_s
    while True:
        left = ends - time.monotonic()
        try:
            message = await asyncio.wait_for(websocket.receive(), min(limits.idle_timeout_s, max(left, 0)))
        except TimeoutError:
            if left <= limits.idle_timeout_s:  # the wait that ran out was the session's end (timers may fire early)
                length = _duration(limits.max_session_s)
                await send(error_event(ClientError(f"the session reached its maximum length of {length}; open a new "
                                                   "one", "session_expired")))
                return await _close(websocket, 1000, f"session reached its maximum length ({length})")
            idle = _duration(limits.idle_timeout_s)
            await send(error_event(ClientError(f"no event came for {idle}; the session is closed", "idle_timeout")))
            return await _close(websocket, 1000, f"idle for {idle}")
        if message["type"] == "websocket.disconnect":
            return
        if message.get("bytes") is not None:
            return await _close(websocket, 1003, "binary frames are not supported; send JSON events as text frames")
        text = message.get("text") or ""
        if len(text) > limits.max_event_bytes:
            return await _close(websocket, 1009, f"an event of {len(text)} bytes is over the limit of "
                                                 f"{limits.max_event_bytes}; send audio in smaller appends")
        try:
            await session.handle(parse_client_event(text))
        except ClientError as error:
            await send(error_event(error))


def _duration(seconds: float) -> str:
    return f"{seconds / 60:g} minutes" if seconds >= 60 else f"{seconds:g} s"


def _authorised(websocket: WebSocket) -> bool:
    key = websocket.app.state.api_key
    if not key:
        return True
    scheme, _, given = websocket.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), key.encode()):
        return True
    offered = [s.removeprefix(KEY_PROTOCOL) for s in websocket.scope.get("subprotocols", [])
               if s.startswith(KEY_PROTOCOL)]
    return any(hmac.compare_digest(s.encode(), key.encode()) for s in offered)


async def _deny(websocket: WebSocket, status: int, message: str, code: str) -> None:
    """Refuse the handshake with an HTTP error in the OpenAI shape (or, where the server cannot, close 1008)."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(JSONResponse(error_body(status, message, None, code), status_code=status))
    else:
        await websocket.close(1008, message.encode()[:120].decode(errors="ignore"))


async def _close(websocket: WebSocket, code: int, reason: str) -> None:
    """Close with a reason (at most 123 bytes on the wire); a socket already gone needs nothing."""
    with contextlib.suppress(RuntimeError, ConnectionError):
        await websocket.close(code, reason.encode()[:120].decode(errors="ignore"))
