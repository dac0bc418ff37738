"""Bearer-key check for every /v1 route, in constant time."""
from __future__ import annotations

import hmac

from fastapi import Request

from orchestrator.server.errors import OpenAIError


def require_api_key(request: Request) -> None:
    key = request.app.state.api_key
    if not key:
        return
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), key.encode()):
        raise OpenAIError(401, "missing or wrong API key: send 'Authorization: Bearer <key>'", code="invalid_api_key")
