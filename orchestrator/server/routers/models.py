"""GET /v1/models and /version."""
from __future__ import annotations

import time

from fastapi import APIRouter, Depends, Request

from orchestrator import __version__
from orchestrator.server.auth import require_api_key

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


@router.get("/version")
async def version() -> dict:
    return {"version": __version__}
