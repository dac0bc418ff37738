"""Hermes tool calls, `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`, as Qwen2.5/Qwen3 emit them.

The parser re-reads the whole output each time and sends only what is new, so tags and JSON split
across tokens are handled by construction: text that may still become a tag is held back, the
first delta of a call carries its id and name, later ones carry pieces of its arguments, and
closing braces are held until it is known whether they close the arguments or the call.

Small Qwen2.5 models (the 0.5B coder, as Ollama serves it) often answer with the call's JSON alone, without
the tags, sometimes in a ```json fence. When the tools' names are known, an output that is exactly such
an object naming one of them is read as a call too; while that is still undecided, nothing is sent.
"""
from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field

from engines.llm.parsers import partial_tag
from engines.llm.sampling_params import JSON_STYLE

START, END = "<tool_call>", "</tool_call>"
NAME = re.compile(r'"name"\s*:\s*"((?:[^"\\]|\\.)*)"')
ARGUMENTS = re.compile(r'"arguments"\s*:\s*')
FENCE = re.compile(r"\s*(?:```(?:json)?\s*)?")                        # what may come before a bare call's `{`
BARE_HEAD = re.compile(r'\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"')
BARE_PREFIX = re.compile(r'\{\s*(?:"(?:n(?:a(?:m(?:e(?:"\s*(?::\s*(?:"(?:[^"\\]|\\.)*)?)?)?)?)?)?)?)?')


@dataclass(slots=True)
class _Call:
    id: str = field(default_factory=lambda: f"call_{uuid.uuid4().hex[:24]}")
    name: str | None = None
    arguments_sent: int = 0
    done: bool = False


class HermesParser:
    def __init__(self, tool_names: frozenset[str] = frozenset()) -> None:
        self.content_sent = 0
        self.calls: list[_Call] = []
        self.tool_names = tool_names    # bare JSON calls are read only when they name one of these
        self.bare: bool | None = None if tool_names else False

    def update(self, text: str, finished: bool) -> tuple[str, list[dict]]:
        """New content text and new tool-call deltas (OpenAI `delta.tool_calls` items) for output `text`."""
        if self.bare is not False and START not in text:
            tagged = self._bare(text, finished)
            if tagged is None:  # may still become a bare call: hold everything back
                return "", []
            text = tagged
        start = text.find(START)
        content_end = start if start >= 0 else len(text) - (0 if finished else partial_tag(text, START))
        content = text[self.content_sent:max(self.content_sent, content_end)]
        self.content_sent = max(self.content_sent, content_end)
        deltas: list[dict] = []
        if start < 0:
            return content, deltas
        for index, block in enumerate(text[start + len(START):].split(START)):
            body, closed, _ = block.partition(END)
            if index == len(self.calls):
                self.calls.append(_Call())
            call = self.calls[index]
            if not call.done:
                content += self._advance(index, call, body, bool(closed) or finished, deltas)
        return content, deltas

    def _bare(self, text: str, finished: bool) -> str | None:
        """The output as a tagged call when it is a bare one, as it is when it is not, None while undecided."""
        head = text[FENCE.match(text).end():]
        if (name := BARE_HEAD.match(head)) is not None:
            if json.loads(f'"{name.group(1)}"') in self.tool_names:
                self.bare = True
                if not finished:  # a closing fence may be on its way: hold back backticks at the end
                    return START + head.rstrip().rstrip("`")
                return START + head.rstrip().removesuffix("```").rstrip() + END
        elif not finished:
            stripped = text.strip()
            if not stripped or "```json".startswith(stripped) or (head.startswith("{") and BARE_PREFIX.fullmatch(head)):
                return None
        self.bare = False
        return text

    def _advance(self, index: int, call: _Call, body: str, closed: bool, deltas: list[dict]) -> str:
        if call.name is None and (name := NAME.search(body)):
            call.name = json.loads(f'"{name.group(1)}"')
            deltas.append({"index": index, "id": call.id, "type": "function",
                           "function": {"name": call.name, "arguments": ""}})
        marker = ARGUMENTS.search(body)
        if call.name is None or marker is None:
            if closed:  # never a call: give the text back as content
                call.done = True
                return f"{START}{body}{END}" if call.name is None else ""
            return ""
        raw = body[marker.end():]
        if closed:
            raw = raw.rstrip()
            raw = (raw[:-1] if raw.endswith("}") else raw).rstrip()  # the call object's own closing brace
            call.done = True
        else:  # hold back a partial `</tool_call>` and braces that may close the call itself
            raw = raw[: len(raw) - partial_tag(raw, END)]
            raw = raw[: len(raw.rstrip("} \n\t\r"))]
        if len(raw) > call.arguments_sent:
            deltas.append({"index": index, "function": {"arguments": raw[call.arguments_sent:]}})
            call.arguments_sent = len(raw)
        return ""


def tags_are_tokens(tokenizer) -> bool:
    """Whether the tokenizer writes each tag as one token of its own (Qwen's added tokens): grammars then name the
    token (`<tool_call>`), since a token's text is not matched as text."""
    added = tokenizer.get_added_vocab()
    return START in added and END in added


def call_grammar(tools: list[dict], named: str | None = None, required: bool = False, parallel: bool = True,
                 tag_tokens: bool = False, answer: dict | None = None) -> str:
    """The hermes calls these tools allow, as a grammar (Lark, llguidance's dialect): each call's JSON names one tool
    (`named`: that one) and its arguments match that tool's parameters. Required (or named): the output is calls
    alone. Otherwise the output is free text until the model writes `<tool_call>` (a lazy trigger), and from there
    the call must be whole and valid. `parallel`: more than one call may follow. `answer`: a JSON Schema the
    answer must match when it is not a call (response_format beside tools)."""
    options = [{"type": "object", "properties": {"name": {"const": t["function"]["name"]},
                                                  "arguments": t["function"].get("parameters") or {"type": "object"}},
                "required": ["name", "arguments"], "additionalProperties": False}
               for t in tools if named is None or t["function"]["name"] == named]
    schema = {**(options[0] if len(options) == 1 else {"anyOf": options}), "x-guidance": JSON_STYLE}
    open_tag, close_tag = (START, END) if tag_tokens else (json.dumps(START), json.dumps(END))
    body = f'"\\n" %json {json.dumps(schema)} "\\n" {close_tag}'
    more = ' ("\\n" call)*' if parallel else ""
    if required or named:
        start = f"start: call{more}"
    elif answer is not None:
        start = f"start: %json {json.dumps({**answer, 'x-guidance': JSON_STYLE})} | call{more}"
    elif tag_tokens:  # a token never occurs inside text: the call starts where the token is written
        start = f"start: TEXT | TEXT call{more}"
    else:
        start = f"start: TEXT | opened{more}\nopened: trigger {body}\ntrigger[lazy]: TEXT {open_tag}"
    return f"""%llguidance {{}}
{start}
call: {open_tag} {body}
TEXT: /(.|\\n)*/
"""


def parse_tool_calls(text: str, tool_names: frozenset[str] = frozenset()) -> tuple[str | None, list[dict]]:
    """Whole output to (content, OpenAI `message.tool_calls`); any malformed call makes it all plain content."""
    parser = HermesParser(tool_names)
    content, deltas = parser.update(text, finished=True)
    calls: dict[int, dict] = {}
    for d in deltas:
        call = calls.setdefault(d["index"], {"id": d.get("id"), "type": "function",
                                             "function": {"name": None, "arguments": ""}})
        call["function"]["name"] = d["function"].get("name") or call["function"]["name"]
        call["function"]["arguments"] += d["function"]["arguments"]
    for call in calls.values():
        try:
            json.loads(call["function"]["arguments"] or "{}")
        except ValueError:
            return text, []
    return (content.strip() or None), [calls[i] for i in sorted(calls)]
