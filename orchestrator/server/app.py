"""Build the FastAPI app: the LLM and companion engines on OpenAI routes, auth, and errors in the OpenAI shape."""
from __future__ import annotations

from fastapi import FastAPI

from orchestrator import __version__
from orchestrator.server.errors import install_error_handlers
from orchestrator.server.routers import chat, completions, models
from orchestrator.server.companions import Companions
from orchestrator.server.state import LLMState


def build_app(llm_state: LLMState | None, api_key: str | None = None,
              companions: Companions | None = None) -> FastAPI:
    app = FastAPI(title="voice-orchestrator", version=__version__)
    app.state.llm_state = llm_state
    app.state.companions = companions or Companions()
    app.state.api_key = api_key or None
    install_error_handlers(app)
    for router in (models.router, chat.router, completions.router):
        app.include_router(router)
    return app
