"""POST /v1/completions: a plain prompt (text or token ids), streamed or not, by the LLM's serving interface."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from orchestrator.server.auth import require_api_key
from orchestrator.server.protocol import CompletionRequest
from orchestrator.server.state import llm_state

router = APIRouter(dependencies=[Depends(require_api_key)])


@router.post("/v1/completions")
async def completions(body: CompletionRequest, request: Request):
    state = llm_state(request)
    state.check_model(body.model)
    return await state.serving.completions(state, body, request)
