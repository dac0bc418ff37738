"""Model text to OpenAI chat deltas: reasoning split off (when asked), tool calls parsed (when tools are on)."""
from __future__ import annotations

from engines.llm.parsers.hermes import HermesParser, parse_tool_calls
from engines.llm.parsers.qwen3_reasoning import Qwen3ReasoningParser


class ChatOutput:
    """Feed it the output text as it grows; it returns the delta to send."""

    def __init__(self, tools: bool, reasoning: bool, tool_names: frozenset[str] = frozenset()) -> None:
        self.reasoning = Qwen3ReasoningParser() if reasoning else None
        self.tools = HermesParser(tool_names) if tools else None
        self.tool_names = tool_names
        self.content = ""
        self.text = ""
        self.called = False

    def update(self, delta_text: str, finished: bool) -> dict:
        self.text += delta_text
        delta: dict = {}
        if self.reasoning:
            thought, answer = self.reasoning.update(self.text, finished)
            if thought:
                delta["reasoning_content"] = thought
        else:
            answer = delta_text
        self.content += answer
        if self.tools:
            answer, calls = self.tools.update(self.content, finished)
            if calls:
                delta["tool_calls"] = calls
                self.called = True
        if answer:
            delta["content"] = answer
        return delta

    def message(self, text: str) -> dict:
        """The whole reply as an OpenAI `message`."""
        message: dict = {"role": "assistant"}
        content = text
        if self.reasoning:
            thought, content = Qwen3ReasoningParser().update(text, finished=True)
            message["reasoning_content"] = thought or None
        if self.tools:
            content, calls = parse_tool_calls(content, self.tool_names)
            if calls:
                message["tool_calls"] = calls
                self.called = True
        message["content"] = content
        return message
