"""GET / and /playground: a browser page to talk to the stack and see its card, served from the server's own files
(no CDN, no build step); the plan it draws the card's bar from is /health/plan (routers/health.py)."""
from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

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
