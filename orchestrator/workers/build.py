"""Load and warm up one engine as its kind says; the same steps in a worker and in the server process."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from engines.base import Engine
from orchestrator.kinds import KINDS


@dataclass(slots=True)
class Built:
    engine: Engine                             # the lifecycle object (load/warmup/memory/close)
    info: dict = field(default_factory=dict)   # what the server needs before the first call (paths, voices, rates)
    front: Any = None                          # the async front, when the engine is served in this process

    def close(self) -> None:
        if self.front is not None:
            self.front.shutdown()
        self.engine.close()


def build(spec, device: str, kv_bytes: int, progress: Callable[[str], None]) -> Built:
    """Load and warm up one engine at its peak shape; errors name the model and the fix."""
    kind = KINDS[spec.kind]
    cls = kind.engine_class(spec)
    engine = cls.from_spec(spec, device, kv_bytes) if kind.kv_pool else cls.from_spec(spec, device)
    progress("loading weights")
    engine.load()
    progress("warming up at the peak shape")
    engine.warmup()
    return Built(engine, kind.info(engine))


def serve_in_process(spec, built: Built) -> Any:
    """An engine loaded in the server process is reached through its async front directly."""
    kind = KINDS[spec.kind]
    built.front = kind.front_class()(built.engine, **kind.front_options(spec))
    return built.front
