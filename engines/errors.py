"""The errors every engine kind raises alike, in one registry, so the worker boundary and the server map them once.

An error a client causes is an `EngineInputError` (a ValueError) whose `param` names the request field
at fault; busy and dead are the engine's state, not the request's. Every class here crosses the worker
pipe by name and comes back as itself, with its message and `param`.
"""
from __future__ import annotations


class EngineInputError(ValueError):
    """A request the engine cannot take as sent (HTTP 400); `param` names the field, so the server can point at it."""

    param: str | None = None

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        if param is not None:
            self.param = param


class OptionError(EngineInputError):
    """A transcription option the ASR model cannot honour."""


class UnknownVoiceError(EngineInputError):
    """The request names a voice this TTS model does not have."""

    param = "voice"


class EmbeddingInputError(EngineInputError):
    """An embedding input the model cannot take as sent."""

    param = "input"


class DimensionsError(EmbeddingInputError):
    param = "dimensions"


class EngineBusyError(RuntimeError):
    """Too many requests are already waiting; the client should retry later (HTTP 429)."""


class EngineDeadError(RuntimeError):
    """The engine has stopped or its worker died; no request can be served now (HTTP 503)."""

    code = "engine_unavailable"   # the OpenAI error body's code; an upstream names itself


class EngineFailedError(RuntimeError):
    """The engine failed on this request (a bug or a device fault, HTTP 500); it keeps serving the others."""


# Every error that crosses a worker's pipe as itself; anything else arrives as EngineFailedError with its text.
ERROR_TYPES: dict[str, type[Exception]] = {cls.__name__: cls for cls in (
    EngineInputError, OptionError, UnknownVoiceError, EmbeddingInputError, DimensionsError,
    EngineBusyError, EngineDeadError, EngineFailedError)}


def rebuild_error(type_name: str, message: str, param: str | None) -> Exception:
    """The error a worker raised, as the same class on this side of the pipe."""
    cls = ERROR_TYPES.get(type_name)
    if cls is None:
        return EngineFailedError(message)
    if issubclass(cls, EngineInputError):
        return cls(message, param)
    return cls(message)
