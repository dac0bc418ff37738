"""Every error leaves in the OpenAI shape {"error": {"message", "type", "param", "code"}}, never FastAPI's own."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from engines.errors import EngineBusyError, EngineDeadError, EngineFailedError, EngineInputError

log = logging.getLogger(__name__)

TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
         429: "rate_limit_error", 503: "service_unavailable"}


class OpenAIError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.headers = status, message, param, code, headers


def engine_error(error: EngineInputError | EngineBusyError | EngineDeadError | EngineFailedError) -> OpenAIError:
    """The one mapping of an engine's error (raised here or in a worker, the same type either way) to HTTP."""
    if isinstance(error, EngineInputError):
        return OpenAIError(400, str(error), error.param)
    if isinstance(error, EngineBusyError):
        return OpenAIError(429, f"the server is busy: {error}; retry shortly", code="too_many_requests",
                           headers={"Retry-After": "1"})
    if isinstance(error, EngineDeadError):
        return OpenAIError(503, f"{error}; retry shortly", code=error.code, headers={"Retry-After": "5"})
    return OpenAIError(500, str(error), code="engine_error")


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": TYPES.get(status, "server_error" if status >= 500
                                                             else "invalid_request_error"),
                      "param": param, "code": code}}


@dataclass(slots=True, frozen=True)
class Problem:
    """The one problem in a request that an error names: what is wrong, the dotted param, pydantic's location."""
    message: str
    param: str | None
    loc: tuple


def validation_problem(errors: list[dict], root: str = "", skip: int = 0, tags: tuple[str, ...] = ()) -> Problem:
    """The most specific problem pydantic found (the deepest location), in words, its param dotted as OpenAI writes
    it: the HTTP routes and the realtime socket both say it this way. `tags` are discriminator values in locations."""
    if any(e["type"] == "json_invalid" for e in errors):
        return Problem("the request body is not valid JSON; send a JSON object", None, ())
    best = max(errors, key=lambda e: len(e["loc"]))
    parts = [str(place) for place in best["loc"][skip:] if not _union_member(str(place), tags)]
    param = ".".join([root, *parts]).strip(".") or None
    kind, message = best["type"], best["msg"].removeprefix("Value error, ")
    if kind == "extra_forbidden":
        message = f"unknown parameter '{param}'; this server does not support it"
    elif kind == "missing":
        message = f"missing required parameter '{param}'"
    elif param:
        message = f"invalid value for '{param}': {message} (got {json.dumps(best.get('input'), default=str)[:80]})"
    return Problem(message, param, tuple(best["loc"]))


def _union_member(place: str, tags: tuple[str, ...]) -> bool:
    """Whether a pydantic location names which member of a union failed (a tag, a type, a model), not a field."""
    return (place[:1].isupper() or "[" in place or place.startswith(("function-", "constrained-", "tagged-union"))
            or place in ("body", "str", "int", "float", "bool", "dict", "list", "none", *tags))


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(OpenAIError)
    async def openai_error(_: Request, exc: OpenAIError) -> JSONResponse:
        return JSONResponse(error_body(exc.status, exc.message, exc.param, exc.code), exc.status, headers=exc.headers)

    async def engine(request: Request, exc: Exception) -> JSONResponse:
        return await openai_error(request, engine_error(exc))

    for cls in (EngineInputError, EngineBusyError, EngineDeadError, EngineFailedError):
        app.add_exception_handler(cls, engine)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problem = validation_problem(list(exc.errors()))
        return JSONResponse(error_body(400, problem.message, problem.param), 400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(error_body(exc.status_code, str(exc.detail)), exc.status_code)

    @app.exception_handler(Exception)
    async def crash(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return JSONResponse(error_body(500, f"internal error: {type(exc).__name__}"), 500)
