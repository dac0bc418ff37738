"""GET /health/engines (each engine's state and memory, planned beside actual; behind the key, since it shows PIDs)
and /metrics for Prometheus (open, as vLLM's is)."""
from __future__ import annotations

import asyncio
from dataclasses import asdict

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from orchestrator.server.auth import require_api_key
from orchestrator.status import EngineState

router = APIRouter()


@router.get("/health/engines", dependencies=[Depends(require_api_key)])
async def engines(request: Request) -> dict:
    """Every engine; an LLM on an upstream server is probed now (at most every few seconds): state, error, latency."""
    state = request.app.state.llm_state
    details = await state.serving.health() if state is not None else {}
    out = []
    for s in request.app.state.metrics.status():
        entry = asdict(s)
        if details and s.name == state.served_name:  # a probe's state counts only while the supervisor says ready
            entry |= {**details, "state": details.get("state", s.state) if s.state == EngineState.READY else s.state}
        out.append(entry)
    cluster = getattr(request.app.state, "cluster", None)  # on Ray Serve: every replica's engines, from its reports
    if cluster is None:
        return {"engines": out}
    return {"engines": out, "replica": request.app.state.replica, "replicas": await asyncio.to_thread(cluster)}


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
