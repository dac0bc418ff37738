"""The errors every engine kind raises alike, so the server and the worker boundary map them in one place."""
from __future__ import annotations


class EngineBusyError(RuntimeError):
    """Too many requests are already waiting; the client should retry later (HTTP 429)."""


class EngineDeadError(RuntimeError):
    """The engine has stopped or its worker died; no request can be served now (HTTP 503)."""
