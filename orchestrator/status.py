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
    actual_bytes: int | None   # measured after warm-up: NVML per PID on a GPU, the resident set on CPU
    restarts: int = 0
    pid: int | None = None
    detail: str = ""
