"""Where a voice answer comes from: our LLM (prompt through its chat template, text parsed here) or an upstream
OpenAI server (the messages passed on, its chat deltas read back). The realtime session sees one shape either way.
"""
from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from typing import TYPE_CHECKING

from engines.errors import EngineDeadError
from engines.llm.requests import Priority
from engines.llm.sampling_params import SamplingParams
from engines.protocols import LLMProtocol
from orchestrator.server.chat_output import ChatOutput
from orchestrator.server.realtime.events import usage_dict
from orchestrator.server.realtime.prompt import render_prompt
from orchestrator.server.tool_choice import tool_constraint
from orchestrator.workers.upstream import Upstream

if TYPE_CHECKING:
    from orchestrator.server.state import LLMState


@dataclass(slots=True)
class ToolMode:
    """What a response may call: the tools as chat templates take them, their names, and how a call is chosen."""
    tools: list[dict]
    names: frozenset[str]
    choice: str | dict = "auto"    # tool_choice as Chat Completions writes it


@dataclass(slots=True, frozen=True)
class Prompt:
    """One answer's request, comparable: an answer begun early is used only for exactly this prompt."""
    key: Any                       # our LLM: (token ids, sampling); an upstream: the request body as JSON text
    max_tokens: int | None
    tools: ToolMode | None = field(default=None, compare=False)


@dataclass(slots=True)
class AnswerDelta:
    content: str = ""
    tool_calls: list[dict] = field(default_factory=list)  # Chat Completions `delta.tool_calls` items
    usage: dict | None = None       # the realtime usage object, as far as it is known
    finish_reason: str | None = None


class Answers(Protocol):
    async def prompt(self, instructions: str | None, messages: list[dict], tools: ToolMode | None,
                     temperature: float, max_tokens: int | None) -> Prompt: ...

    def answer(self, prompt: Prompt) -> AsyncIterator[AnswerDelta]:
        """The answer as it streams; closing it stops the generation (our engine aborts, the upstream is hung up)."""


class LocalAnswers:
    """Our engine: the conversation through the model's chat template, the output read by our parsers."""

    def __init__(self, state: LLMState, llm: LLMProtocol) -> None:
        self.state, self.llm = state, llm

    async def prompt(self, instructions, messages, tools, temperature, max_tokens) -> Prompt:
        tokenizer = self.llm.tokenizer
        ids, room = await render_prompt(self.state, tokenizer, instructions, messages, tools.tools if tools else None)
        params = SamplingParams(temperature=temperature, max_tokens=room if max_tokens is None else
                                min(max_tokens, room), seed=self.state.seed, structured_outputs=tool_constraint(
                                    tokenizer, tools.tools, tools.choice, True) if tools else None)
        return Prompt((tuple(ids), params), params.max_tokens, tools)

    async def answer(self, prompt: Prompt) -> AsyncIterator[AnswerDelta]:
        ids, params = prompt.key
        tools = prompt.tools
        output = ChatOutput(tools is not None, self.state.reasoning_parser is not None,
                            tools.names if tools else frozenset())
        stream = self.llm.generate(list(ids), params, priority=Priority.INTERACTIVE)
        try:
            async for out in stream:
                delta = output.update(out.delta_text, out.finished)
                yield AnswerDelta(delta.get("content", ""), delta.get("tool_calls", []),
                                  usage_dict(out.num_prompt_tokens, out.num_cached_tokens, out.num_output_tokens),
                                  out.finish_reason)
        finally:
            await stream.aclose()


class UpstreamAnswers:
    """An OpenAI server: the messages go as they are, and its stream's deltas come back."""

    def __init__(self, state: LLMState, upstream: Upstream) -> None:
        self.state, self.upstream = state, upstream

    async def prompt(self, instructions, messages, tools, temperature, max_tokens) -> Prompt:
        system = [{"role": "system", "content": instructions}] if instructions else []
        body: dict[str, Any] = {"messages": system + messages, "temperature": temperature, "stream": True,
                                "stream_options": {"include_usage": True}}
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        if self.state.seed is not None:
            body["seed"] = self.state.seed
        if tools is not None:
            body |= {"tools": tools.tools, "tool_choice": tools.choice}
        return Prompt(json.dumps(body, sort_keys=True), max_tokens, tools)

    async def answer(self, prompt: Prompt) -> AsyncIterator[AnswerDelta]:
        response = await self.upstream.open("chat/completions", json.loads(prompt.key))  # EngineDeadError if down
        try:
            if response.status_code != 200:
                detail = (await response.aread()).decode(errors="replace")[:300]
                raise EngineDeadError(f"the upstream refused the voice turn ({response.status_code}): {detail}")
            async for line in response.aiter_lines():
                if not line.startswith("data:") or line == "data: [DONE]":
                    continue
                yield _delta(json.loads(line[5:]))
        finally:
            await response.aclose()


def _delta(chunk: dict) -> AnswerDelta:
    """One Chat Completions stream chunk as an answer delta."""
    out = AnswerDelta()
    if (usage := chunk.get("usage")) is not None:
        cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
        out.usage = usage_dict(usage.get("prompt_tokens", 0), cached, usage.get("completion_tokens", 0))
    for choice in chunk.get("choices") or []:
        delta = choice.get("delta") or {}
        out.content += delta.get("content") or ""
        out.tool_calls += delta.get("tool_calls") or []
        out.finish_reason = choice.get("finish_reason") or out.finish_reason
    return out
