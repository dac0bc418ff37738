"""How a request's tools and tool_choice become what the model sees and the grammar its calls are held to.

Our engine writes calls in the hermes format (`<tool_call>{"name", "arguments"}</tool_call>`) whatever the
model: a chat template without tools gets them described in a system message, and a call's JSON is held
to its tool's parameters by the grammar, so a call that is made always parses and validates.
"""
from __future__ import annotations

import json
from typing import Any

from engines.errors import EngineInputError
from engines.llm.parsers.hermes import END, START, call_grammar, tags_are_tokens
from engines.llm.sampling_params import StructuredOutputsParams


def check_tool_choice(tools: list[dict] | None, choice: Any, param: str = "tool_choice") -> str | None:
    """The named function's name (None for auto, none, required); EngineInputError names what is wrong."""
    names = [t["function"]["name"] for t in tools or ()]
    if choice in (None, "auto", "none"):
        return None
    if not names:
        raise EngineInputError(f"{param} {json.dumps(choice)} needs a non-empty tools list", param)
    if choice == "required":
        return None
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = (choice.get("function") or {}).get("name") or choice.get("name")
        if name not in names:
            raise EngineInputError(f"{param} names {name!r}, which is not among the tools ({', '.join(names)})", param)
        return name
    raise EngineInputError(f"{param} must be 'auto', 'none', 'required' or {{\"type\": \"function\", \"function\": "
                           "{\"name\": ...}}", param)


def tool_constraint(tokenizer, tools: list[dict], choice: Any, parallel: bool,
                    answer: StructuredOutputsParams | None = None) -> StructuredOutputsParams | None:
    """The grammar of a request with tools (calls held to their parameters; `answer`: what a non-call answer must
    match), or `answer` alone when no call may be made."""
    named = check_tool_choice(tools, choice)
    if not tools or choice == "none":
        return answer
    schema = None
    if answer is not None:
        if answer.json is None and not answer.json_object:
            raise EngineInputError("beside tools, the answer can be held to a JSON Schema or any JSON object only; "
                                   f"leave out {answer.param}'s regex, choice or grammar", answer.param)
        schema = json.loads(answer.json) if answer.json is not None else {"type": "object"}
        schema = schema if isinstance(schema, dict) else {}
    grammar = call_grammar(tools, named, choice == "required", parallel, tags_are_tokens(tokenizer), schema)
    return StructuredOutputsParams(grammar=grammar, param="tools")


def tools_in_template(tokenizer) -> bool:
    """Whether the model's chat template shows the tools to the model itself."""
    return "tools" in (tokenizer.chat_template or "")


def tools_system_message(tools: list[dict]) -> dict:
    """The tools and the call format, for a model whose chat template does not show them (Qwen's own wording)."""
    listed = "\n".join(json.dumps(t, ensure_ascii=False) for t in tools)
    return {"role": "system", "content": (
        "You may call one or more functions to assist with the user query.\n\nYou are provided with function "
        f"signatures within <tools></tools> XML tags:\n<tools>\n{listed}\n</tools>\n\nFor each function call, "
        f"return a json object with function name and arguments within {START}{END} XML tags:\n{START}\n"
        f'{{"name": <function-name>, "arguments": <args-json-object>}}\n{END}')}


def place_tools(tokenizer, messages: list[dict], tools: list[dict] | None) -> tuple[list[dict], list[dict] | None]:
    """Messages and the template's tools argument: the tools go to the template when it shows them, else into a
    system message of their own, after the first system message if there is one."""
    if not tools or tools_in_template(tokenizer):
        return messages, tools
    note = tools_system_message(tools)
    if messages and messages[0].get("role") == "system":
        first = dict(messages[0])
        first["content"] = f"{first.get('content') or ''}\n\n{note['content']}"
        return [first, *messages[1:]], None
    return [note, *messages], None
