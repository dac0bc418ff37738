"""What the engine reports for a request after a step."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class TokenLogprob:
    token_id: int
    logprob: float
    top_logprobs: dict[int, float]


@dataclass(slots=True)
class RequestOutput:
    request_id: str
    delta_text: str                     # new text since the last output of this request
    delta_token_ids: list[int]
    text: str                           # all text so far (stop string removed, hold-back included)
    token_ids: list[int]                # all output token ids so far
    num_prompt_tokens: int
    num_cached_tokens: int = 0          # prompt tokens served from the prefix cache
    finished: bool = False
    finish_reason: str | None = None    # "stop", "length" or "abort"
    stop_reason: str | int | None = None  # the stop string or stop token id that ended it
    logprobs: list[TokenLogprob] = field(default_factory=list)  # for delta_token_ids, when asked


@dataclass(slots=True, frozen=True)
class EngineStats:
    """The engine's load after a step, for /metrics: KV blocks by state and sequences by queue."""

    blocks_used: int
    blocks_free: int
    blocks_cached: int        # free but still holding a prefix that can be reused
    running: int
    waiting: int
    preemptions: int          # since start
