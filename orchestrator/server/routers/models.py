"""GET /v1/models, /health and /version."""
from __future__ import annotations

import time

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from orchestrator import __version__
from orchestrator.server.auth import require_api_key
from orchestrator.status import EngineState

router = APIRouter()
STARTED = int(time.time())


@router.get("/v1/models", dependencies=[Depends(require_api_key)])
async def list_models(request: Request) -> dict:
    state = request.app.state.llm_state
    data = [{"id": name, "object": "model", "created": STARTED, "owned_by": "voice-orchestrator", "kind": kind}
            for name, kind in request.app.state.companions.names()]
    if state is not None:
        data[:0] = [{"id": name, "object": "model", "created": STARTED, "owned_by": state.serving.owner, "kind": "llm",
                     "max_model_len": state.max_model_len or None} for name in (state.served_name, *state.aliases)]
    return {"object": "list", "data": data}


@router.get("/health")
async def health(request: Request) -> JSONResponse:
    """200 when every engine serves; 503 naming the ones that do not (the others keep serving meanwhile)."""
    state = request.app.state.llm_state
    down = [f"{s.name} is {s.state}" for s in request.app.state.metrics.status() if s.state != EngineState.READY]
    if state is not None and not state.serving.is_alive() and not down:
        down.append(f"{state.served_name} is down")
    if not down:
        return JSONResponse({"status": "ok"})
    return JSONResponse({"status": "degraded", "engines": down}, 503, headers={"Retry-After": "5"})


@router.get("/version")
async def version() -> dict:
    return {"version": __version__}
