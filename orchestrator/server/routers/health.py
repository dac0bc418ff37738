"""GET /health/engines (each engine's state and memory, planned beside actual; behind the key, since it shows PIDs)
and /metrics for Prometheus (open, as vLLM's is)."""
from __future__ import annotations

import asyncio
from dataclasses import asdict

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from orchestrator.server.auth import require_api_key

router = APIRouter()


@router.get("/health/engines", dependencies=[Depends(require_api_key)])
async def engines(request: Request) -> dict:
    """Every engine; an LLM on an upstream server is probed now (at most every few seconds): state, error, latency."""
    state = request.app.state.llm_state
    upstream = state.upstream if state is not None else None
    probed = await upstream.probe() if upstream is not None else None
    out = []
    for s in request.app.state.metrics.status():
        entry = asdict(s)
        if probed is not None and s.name == upstream.name:
            entry |= {"state": probed.state if s.state == "ready" else s.state, "upstream": upstream.base_url,
                      "last_error": probed.last_error, "latency_ms": probed.latency_ms}
        out.append(entry)
    cluster = getattr(request.app.state, "cluster", None)  # on Ray Serve: every replica's engines, from its reports
    if cluster is None:
        return {"engines": out}
    return {"engines": out, "replica": request.app.state.replica, "replicas": await asyncio.to_thread(cluster)}


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
