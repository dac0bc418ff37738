"""/openapi.json, /docs and /redoc behind the key (when one is set), with the realtime socket documented too."""
from __future__ import annotations

from fastapi import Depends, FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse

from orchestrator.server.auth import require_api_key

REALTIME = {"get": {
    "summary": "Realtime voice session (WebSocket)",
    "description": "Upgrade to a WebSocket speaking OpenAI's Realtime API (GA event names): microphone audio in "
                   "(input_audio_buffer.append), server VAD, transcription, the LLM's answer as text and audio "
                   "deltas. The key comes as `Authorization: Bearer KEY` or, from a browser, as the subprotocol "
                   "`openai-insecure-api-key.KEY`.",
    "parameters": [{"name": "model", "in": "query", "required": False, "schema": {"type": "string"},
                    "description": "the stack's voice LLM, or an OpenAI realtime model name"}],
    "responses": {"101": {"description": "Switching Protocols: the session's events follow"},
                  "401": {"description": "missing or wrong API key"}, "404": {"description": "unknown model"},
                  "429": {"description": "too many sessions open"}}}}


def install_docs(app: FastAPI) -> None:
    """FastAPI's own doc routes, rebuilt with the key check; the schema names every route."""

    def schema() -> dict:
        if app.openapi_schema is None:
            app.openapi_schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
            app.openapi_schema["paths"]["/v1/realtime"] = REALTIME
        return app.openapi_schema

    app.openapi = schema
    guarded = [Depends(require_api_key)]

    @app.get("/openapi.json", include_in_schema=False, dependencies=guarded)
    async def openapi() -> JSONResponse:
        return JSONResponse(schema())

    @app.get("/docs", include_in_schema=False, dependencies=guarded)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} API")

    @app.get("/redoc", include_in_schema=False, dependencies=guarded)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url="/openapi.json", title=f"{app.title} API")
