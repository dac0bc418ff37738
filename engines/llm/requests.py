"""What a client asks of the LLM's step loop; plain records, so they cross a worker's pipe as they are."""
from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from engines.llm.sampling_params import SamplingParams


class Priority(IntEnum):
    """Lower runs first: a voice turn is never queued behind background work."""
    INTERACTIVE = 0
    BATCH = 1


@dataclass(slots=True)
class AddRequest:
    request_id: str
    prompt: str | list[int]
    params: SamplingParams | None
    priority: Priority | str = Priority.INTERACTIVE


@dataclass(slots=True)
class AbortRequest:
    request_id: str
