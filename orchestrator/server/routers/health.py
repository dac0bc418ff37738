"""GET /health/engines (each engine's state and memory, planned beside actual) and /metrics for Prometheus."""
from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

router = APIRouter()


@router.get("/health/engines")
async def engines(request: Request) -> dict:
    return {"engines": [asdict(s) for s in request.app.state.metrics.status()]}


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
