"""POST /v1/chat/completions, streamed (SSE) and not, by the LLM's serving interface."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from orchestrator.server.auth import require_api_key
from orchestrator.server.protocol import ChatCompletionRequest
from orchestrator.server.state import llm_state

router = APIRouter(dependencies=[Depends(require_api_key)])


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request):
    state = llm_state(request)
    state.check_model(body.model)
    return await state.serving.chat(state, body, request)
