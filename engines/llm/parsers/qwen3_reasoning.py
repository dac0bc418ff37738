"""Qwen3's `<think>…</think>`: moved to `reasoning_content` when the stack asks (reasoning_parser: qwen3)."""
from __future__ import annotations

from engines.llm.parsers import partial_tag

THINK, END_THINK = "<think>", "</think>"


class Qwen3ReasoningParser:
    """Splits output into reasoning and content; text with no `</think>` yet counts as reasoning only after `<think>`."""

    def __init__(self) -> None:
        self.reasoning_sent = 0
        self.content_sent = 0
        self.content_lead: int | None = None  # newlines between `</think>` and the answer, not sent

    def update(self, text: str, finished: bool) -> tuple[str, str]:
        """New (reasoning, content) text for the output so far."""
        stripped = text.lstrip()
        offset = len(text) - len(stripped)
        if not stripped.startswith(THINK) and not (THINK.startswith(stripped) and not finished):
            return "", self._content(text, 0)
        begin = offset + len(THINK) if stripped.startswith(THINK) else len(text)
        end = text.find(END_THINK, begin)
        if end < 0:
            upto = len(text) - (0 if finished else partial_tag(text, END_THINK))
            reasoning = text[begin + self.reasoning_sent:max(begin + self.reasoning_sent, upto)]
            self.reasoning_sent += len(reasoning)
            return reasoning, ""
        reasoning = text[begin + self.reasoning_sent:end]
        self.reasoning_sent += len(reasoning)
        return reasoning, self._content(text, end + len(END_THINK))

    def _content(self, text: str, start: int) -> str:
        body = text[start:]
        if self.content_lead is None:
            if not body.strip("\n"):
                return ""
            self.content_lead = len(body) - len(body.lstrip("\n"))
        piece = body[self.content_lead + self.content_sent:]
        self.content_sent += len(piece)
        return piece
