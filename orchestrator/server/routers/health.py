"""GET /health/engines (each engine's state and memory, planned beside actual; behind the key, since it shows PIDs)
and /metrics for Prometheus (open, as vLLM's is)."""
from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from orchestrator.server.auth import require_api_key

router = APIRouter()


@router.get("/health/engines", dependencies=[Depends(require_api_key)])
async def engines(request: Request) -> dict:
    return {"engines": [asdict(s) for s in request.app.state.metrics.status()]}


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
