"""What a request asks of the sampler and of the stop checks; validated where it is made."""
from __future__ import annotations

from dataclasses import dataclass, field

from engines.errors import EngineInputError

MAX_LOGPROBS = 20
MIN_SEED, MAX_SEED = -(2**63), 2**64 - 1   # what torch.Generator.manual_seed takes
MAX_STOP = 16                             # stop strings a request may give (OpenAI allows 4, vLLM any)
MAX_GRAMMAR_CHARS = 256 * 1024            # a schema, regex or grammar; OpenAI's own strict-schema limits are smaller
# JSON as json.dumps writes it: one space after ':' and ','. No free whitespace: a small model cannot then loop
# on newlines forever, and the output is the JSON the model saw most in training (llguidance's JSON options).
JSON_STYLE = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


@dataclass(slots=True, frozen=True)
class StructuredOutputsParams:
    """What the output must match, as vLLM names it: one of a JSON Schema, any JSON object, a regex, a choice of
    strings, or a grammar (Lark in llguidance's dialect, or GBNF). `param` names where the client gave it."""
    json: str | None = None            # a JSON Schema, as JSON text
    json_object: bool = False
    regex: str | None = None
    choice: tuple[str, ...] | None = None
    grammar: str | None = None
    param: str = "structured_outputs"

    def __post_init__(self) -> None:
        given = [name for name in ("json", "regex", "choice", "grammar") if getattr(self, name) is not None]
        given += ["json_object"] if self.json_object else []
        if len(given) != 1:
            raise EngineInputError(f"{self.param} takes exactly one of json, json_object, regex, choice or grammar"
                             f"{'; got ' + ', '.join(given) if given else ''}", self.param)
        if self.choice is not None and (not self.choice or not all(isinstance(c, str) and c for c in self.choice)):
            raise EngineInputError(f"{self.param}.choice must be a list of non-empty strings", self.param)
        size = len(self.json or self.regex or self.grammar or "") + sum(map(len, self.choice or ()))
        if size > MAX_GRAMMAR_CHARS:
            raise EngineInputError(f"{self.param} is {size:,} characters; at most {MAX_GRAMMAR_CHARS:,} are taken "
                                   "(send a smaller schema)", self.param)


@dataclass(slots=True)
class SamplingParams:
    """Per-request sampling and stopping, named as in vLLM and the OpenAI API."""
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    seed: int | None = None
    max_tokens: int | None = None
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    include_stop_str_in_output: bool = False
    ignore_eos: bool = False
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    logprobs: int | None = None
    skip_special_tokens: bool = True
    logit_bias: dict[int, float] = field(default_factory=dict)  # token id -> added to its logit, -100 to 100
    structured_outputs: StructuredOutputsParams | None = None  # the output is held to this (a grammar's mask)

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        checks = [
            (self.temperature >= 0, f"temperature must be 0 or more (0 is greedy), got {self.temperature}"),
            (0 < self.top_p <= 1, f"top_p must be in (0, 1], got {self.top_p}"),
            (self.top_k >= -1, f"top_k must be -1 or 0 (off) or a positive count, got {self.top_k}"),
            (0 <= self.min_p <= 1, f"min_p must be in [0, 1], got {self.min_p}"),
            (self.max_tokens is None or self.max_tokens >= 1, f"max_tokens must be 1 or more, got {self.max_tokens}"),
            (-2 <= self.presence_penalty <= 2, f"presence_penalty must be in [-2, 2], got {self.presence_penalty}"),
            (-2 <= self.frequency_penalty <= 2, f"frequency_penalty must be in [-2, 2], got {self.frequency_penalty}"),
            (self.repetition_penalty > 0, f"repetition_penalty must be above 0, got {self.repetition_penalty}"),
            (self.logprobs is None or 0 <= self.logprobs <= MAX_LOGPROBS,
             f"logprobs must be between 0 and {MAX_LOGPROBS}, got {self.logprobs}"),
            (all(self.stop), "stop strings must not be empty"),
            (len(self.stop) <= MAX_STOP, f"at most {MAX_STOP} stop strings, got {len(self.stop)}"),
            (all(-100 <= v <= 100 for v in self.logit_bias.values()),
             "logit_bias values must be between -100 (ban the token) and 100 (force it)"),
            (self.seed is None or MIN_SEED <= self.seed <= MAX_SEED,
             f"seed must be a 64-bit integer ({MIN_SEED} to {MAX_SEED}), got {self.seed}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0 or self.top_k == 1

    @property
    def penalized(self) -> bool:
        return bool(self.presence_penalty or self.frequency_penalty or self.repetition_penalty != 1.0)

    @property
    def filtered(self) -> bool:
        return self.top_k > 1 or self.top_p < 1 or self.min_p > 0
