"""Health, all in one place: GET /health (open, 200 or 503 naming what is down), /health/engines (each engine's
state and memory, planned beside actual; behind the key, since it shows PIDs), /health/plan (the plan the
playground draws), and /metrics for Prometheus (open, as vLLM's is)."""
from __future__ import annotations

import asyncio
from dataclasses import asdict

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from budget.picture import PARTS, segments
from budget.report import to_json
from orchestrator.server.auth import require_api_key
from orchestrator.server.errors import OpenAIError
from orchestrator.status import EngineState

router = APIRouter()


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


@router.get("/health/plan", dependencies=[Depends(require_api_key)])
async def plan(request: Request) -> dict:
    """The plan in `orchestrator plan --json`'s shape, with the segments and part styles of `plan --png`'s bar."""
    card = getattr(request.app.state, "plan", None)
    if card is None:
        raise OpenAIError(404, "this server was started without a plan (not by `orchestrator run`); the engines' "
                               "shares are in /health/engines", code="not_found")
    return {"plan": to_json(card),
            "bar": [{"model": model, "part": part, "gib": gib} for model, part, gib in segments(card)],
            "parts": [{"part": part, "alpha": alpha, "hatch": hatch} for part, alpha, hatch in PARTS]}


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
