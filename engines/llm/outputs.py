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
    """One step's news for one request: only what is new, so streaming never grows with the answer's length."""

    request_id: str
    delta_text: str                     # new text since the last output of this request
    delta_token_ids: list[int]
    num_output_tokens: int              # output tokens so far, these included
    num_prompt_tokens: int
    num_cached_tokens: int = 0          # prompt tokens served from the prefix cache
    finished: bool = False
    finish_reason: str | None = None    # "stop", "length" or "abort"
    stop_reason: str | int | None = None  # the stop string or stop token id that ended it
    logprobs: list[TokenLogprob] = field(default_factory=list)  # for delta_token_ids, when asked


@dataclass(slots=True)
class CompletionOutput:
    """A whole finished request, as `LLMEngine.generate` returns it (offline use, tests, benchmarks)."""

    request_id: str
    text: str                           # stop string removed unless asked to keep it
    token_ids: list[int]
    num_prompt_tokens: int
    num_cached_tokens: int
    finish_reason: str | None
    stop_reason: str | int | None
    logprobs: list[TokenLogprob]

    @classmethod
    def join(cls, outputs: list[RequestOutput]) -> CompletionOutput:
        last = outputs[-1]
        return cls(last.request_id, "".join(o.delta_text for o in outputs),
                   [t for o in outputs for t in o.delta_token_ids], last.num_prompt_tokens, last.num_cached_tokens,
                   last.finish_reason, last.stop_reason, [lp for o in outputs for lp in o.logprobs])


GRAMMAR_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 2.5, 10.0)


@dataclass(slots=True, frozen=True)
class TimeHistogram:
    """Seconds observed since start, as Prometheus histograms count them (cumulative per upper bound)."""
    bounds: tuple[float, ...] = GRAMMAR_BUCKETS
    counts: tuple[int, ...] = (0,) * len(GRAMMAR_BUCKETS)
    total: float = 0.0
    count: int = 0

    def plus(self, seconds: list[float]) -> TimeHistogram:
        if not seconds:
            return self
        counts = tuple(c + sum(s <= bound for s in seconds) for c, bound in zip(self.counts, self.bounds))
        return TimeHistogram(self.bounds, counts, self.total + sum(seconds), self.count + len(seconds))


@dataclass(slots=True, frozen=True)
class EngineStats:
    """The engine's load after a step, for /metrics: KV blocks by state and sequences by queue."""

    blocks_used: int
    blocks_free: int
    blocks_cached: int        # free but still holding a prefix that can be reused
    running: int
    waiting: int
    preemptions: int          # since start
    grammar_compile: TimeHistogram = TimeHistogram()  # structured outputs: compiling each grammar
    grammar_mask: TimeHistogram = TimeHistogram()     # filling a step's token masks (beside the forward pass)
