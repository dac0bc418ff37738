"""GET / and /playground: a browser page to talk to the stack and see its card, served from the server's own files
(no CDN, no build step), and GET /health/plan, the plan the page draws the card's bar from."""
from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse

from budget.picture import PARTS, segments
from budget.report import to_json
from orchestrator.server.auth import require_api_key
from orchestrator.server.errors import OpenAIError

router = APIRouter()
STATIC = Path(__file__).resolve().parents[1] / "static"
MEDIA_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
               ".css": "text/css; charset=utf-8"}
ASSETS = {p.name: p for p in STATIC.iterdir() if p.suffix in MEDIA_TYPES}  # a fixed set: no path reaches outside
NO_CACHE = {"Cache-Control": "no-cache"}  # the page always matches the server it came from


@router.get("/", include_in_schema=False)
@router.get("/playground", include_in_schema=False)
async def page() -> FileResponse:
    """The page itself is open: it asks for the key when the server wants one."""
    return FileResponse(ASSETS["playground.html"], media_type=MEDIA_TYPES[".html"], headers=NO_CACHE)


@router.get("/playground/{name}", include_in_schema=False)
async def asset(name: str) -> FileResponse:
    path = ASSETS.get(name)
    if path is None:
        raise OpenAIError(404, f"the playground has no file {name!r}", code="not_found")
    return FileResponse(path, media_type=MEDIA_TYPES[path.suffix], headers=NO_CACHE)


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
