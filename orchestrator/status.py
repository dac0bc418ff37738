"""What the supervisor reports of each engine, for /health, /health/engines and /metrics."""
from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class EngineState(StrEnum):
    LOADING = "loading"
    READY = "ready"
    RESTARTING = "restarting"
    FAILED = "failed"


@dataclass(slots=True)
class EngineStatus:
    name: str
    kind: str
    state: EngineState
    planned_bytes: int
    actual_bytes: int | None   # measured after warm-up (None: in the server process, or nothing could see it)
    restarts: int = 0
    pid: int | None = None
    detail: str = ""
    actual_source: str = ""    # engines.base.MemorySource: NVML per PID, the card's used delta, torch's, RSS, unknown
