"""What the LLM routes need from the server: the engine, its served name and the stack's defaults."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from engines.protocols import LLMProtocol
from orchestrator.server.errors import OpenAIError
from orchestrator.server.llm_serving import LLMServing, serving_for
from orchestrator.workers.upstream import Upstream


@dataclass(slots=True)
class LLMState:
    llm: LLMProtocol | Upstream           # AsyncLLM in this process, an LLM worker's client, or an upstream server
    served_name: str
    max_model_len: int
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    reasoning_parser: str | None = None   # "qwen3": <think> text goes to reasoning_content
    aliases: tuple[str, ...] = ()         # more names clients may ask for
    serving: LLMServing = field(init=False)  # what the routes call, whichever `llm` is

    def __post_init__(self) -> None:
        self.serving = serving_for(self.llm)

    def check_model(self, name: str) -> None:
        if name != self.served_name and name not in self.aliases:
            raise OpenAIError(404, f"the model {name!r} does not exist; this server has {self.served_name!r}",
                              "model", "model_not_found")

    def max_tokens(self, prompt_tokens: int, asked: int | None) -> int:
        """What the request may generate: as asked, or the rest of the context; 400 with the counts if over."""
        room = self.max_model_len - prompt_tokens
        if room < 1 or (asked is not None and asked > room):
            wanted = f" + {asked} max_tokens" if asked is not None else ""
            raise OpenAIError(400, f"this model's maximum context length is {self.max_model_len} tokens; the request "
                                   f"has {prompt_tokens} prompt tokens{wanted}. Shorten the messages or lower "
                                   f"max_tokens", "max_tokens" if asked else "messages", "context_length_exceeded")
        return asked if asked is not None else room


def llm_state(request: Request) -> LLMState:
    """The LLM routes' state; a stack without an LLM answers them with 404."""
    state = request.app.state.llm_state
    if state is None:
        raise OpenAIError(404, "this server has no LLM; add a `kind: llm` model to the stack", "model",
                          "model_not_found")
    return state
