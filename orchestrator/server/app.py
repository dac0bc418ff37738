"""Build the FastAPI app: the LLM and companion engines on OpenAI routes, auth, and errors in the OpenAI shape."""
from __future__ import annotations

import logging

from fastapi import FastAPI

from orchestrator import __version__
from orchestrator.kinds import KINDS, load
from orchestrator.server.body_limits import BodyLimits
from orchestrator.server.companions import Companions
from orchestrator.server.docs import install_docs
from orchestrator.server.errors import install_error_handlers
from orchestrator.server.metrics import Metrics, RequestMetricsMiddleware
from orchestrator.server.realtime.voice import VoiceEngines
from orchestrator.server.routers import health, models, playground, realtime
from orchestrator.server.state import LLMState


class _ClientFaultsWithoutTraceback(logging.Filter):
    """uvicorn logs a client's invalid UTF-8 WebSocket frame with a traceback, after closing it with 1007 as it
    should: a client's mistake, so keep the line and drop the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and "Invalid UTF-8" in record.getMessage():
            record.exc_info, record.exc_text = None, None
        return True


_UVICORN_FILTER = _ClientFaultsWithoutTraceback()


def build_app(llm_state: LLMState | None, api_key: str | None = None,
              companions: Companions | None = None, metrics: Metrics | None = None,
              voice: VoiceEngines | None = None) -> FastAPI:
    logging.getLogger("uvicorn.error").addFilter(_UVICORN_FILTER)  # the same object: added once however many apps
    app = FastAPI(title="voice-orchestrator", version=__version__, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.llm_state = llm_state
    app.state.companions = companions or Companions()
    app.state.api_key = api_key or None
    app.state.metrics = metrics or Metrics()
    if llm_state is not None:
        app.state.metrics.llm_stats = llm_state.serving.stats
    app.state.voice = voice
    sessions = app.state.realtime_sessions = set()
    app.state.metrics.realtime_live = lambda: (len(sessions), sum(len(s.tasks) for s in sessions))
    app.add_middleware(RequestMetricsMiddleware, metrics=app.state.metrics)
    app.add_middleware(BodyLimits)
    install_error_handlers(app)
    install_docs(app)
    kind_routers = [load(path) for kind in KINDS.values() for path in kind.routers]  # each kind's API area
    for router in (models.router, health.router, *kind_routers, realtime.router, playground.router):
        app.include_router(router)
    return app
