"""Everything that crosses a worker's pipe, typed; pickled dataclasses, so one `match` reads each side.

server → worker: `Call` (one of the kind's declared `RequestType`s), `Cancel`, `Stop`, and for the LLM the
engine's own `AddRequest` / `AbortRequest` (engines/llm/requests.py), which cross as they are.
worker → server: `Progress`, then `Ready` or `StartFailed`; afterwards `Result`, `Opened` / `Item` / `End`
for streams, `Failed` for any call's error, and for the LLM one `StepOutputs` per engine step.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from engines.errors import ERROR_TYPES, EngineFailedError, rebuild_error
from engines.llm.outputs import EngineStats, RequestOutput


class RequestType(StrEnum):
    """A call a companion worker can serve; the value is the front's method. Each kind declares its own set."""

    TRANSCRIBE = "transcribe"
    SPEAK = "stream"
    EMBED = "embed"
    VAD_OPEN = "open_stream"
    VAD_FEED = "feed"
    VAD_FLUSH = "flush"
    VAD_CLOSE = "close_stream"


@dataclass(slots=True)
class Call:
    id: int
    type: RequestType
    args: tuple = ()


@dataclass(slots=True)
class Cancel:
    id: int          # a streaming call whose client has gone: drop what is still queued for it


@dataclass(slots=True)
class Stop:
    pass


@dataclass(slots=True)
class WireError:
    """An engine error as it crosses: its registered type, message and the request field at fault."""

    type: str
    message: str
    param: str | None = None

    @classmethod
    def of(cls, error: BaseException) -> WireError:
        name = type(error).__name__
        if name in ERROR_TYPES and isinstance(error, ERROR_TYPES[name]):
            return cls(name, str(error), getattr(error, "param", None))
        if isinstance(error, ValueError):  # a client's mistake the engine did not type: still a 400
            return cls("EngineInputError", str(error), getattr(error, "param", None))
        return cls(EngineFailedError.__name__, f"{name}: {error}")

    def rebuild(self) -> Exception:
        return rebuild_error(self.type, self.message, self.param)


@dataclass(slots=True)
class Progress:
    stage: str


@dataclass(slots=True)
class Ready:
    held_bytes: int | None   # the whole process after warm-up, as the plan's context counts it (None: unseen)
    peak_allocated: int
    info: dict = field(default_factory=dict)   # what the server's client needs (voices, rates, paths, limits)
    held_source: str = ""    # engines.base.MemorySource: which measurement held_bytes is


@dataclass(slots=True)
class StartFailed:
    reason: str


@dataclass(slots=True)
class Result:
    id: int
    value: Any


@dataclass(slots=True)
class Opened:
    id: int          # the streaming call was accepted: its refusals are over, items follow


@dataclass(slots=True)
class Item:
    id: int
    value: Any


@dataclass(slots=True)
class End:
    id: int


@dataclass(slots=True)
class Failed:
    id: int | str    # a call's id, or an LLM request's id
    error: WireError


@dataclass(slots=True)
class StepOutputs:
    outputs: list[RequestOutput]   # deltas only: nothing in a step grows with an answer's length
    stats: EngineStats
