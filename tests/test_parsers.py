"""Hermes tool calls and Qwen3 reasoning, streamed in pieces of every size, agree with the whole-text parse."""
from __future__ import annotations

import json
import random

import pytest

from engines.llm.parsers.hermes import HermesParser, parse_tool_calls
from engines.llm.parsers.qwen3_reasoning import Qwen3ReasoningParser

ONE = 'Sure.<tool_call>\n{"name": "get_time", "arguments": {"tz": "UTC", "opts": {"a": [1, 2]}}}\n</tool_call>'
TWO = ('<tool_call>\n{"name": "a", "arguments": {}}\n</tool_call>\n<tool_call>\n{"name": "b", "arguments": '
       '{"x": "}"}}\n</tool_call>')


def pieces(text: str, seed: int) -> list[str]:
    rng, out, i = random.Random(seed), [], 0
    while i < len(text):
        n = rng.choice([1, 1, 2, 3, 7])
        out.append(text[i:i + n])
        i += n
    return out


def stream_tools(text: str, seed: int) -> tuple[str, list[dict]]:
    parser, sofar, content, calls = HermesParser(), "", "", {}
    chunks = pieces(text, seed)
    for i, piece in enumerate(chunks):
        sofar += piece
        new, deltas = parser.update(sofar, finished=i == len(chunks) - 1)
        content += new
        for d in deltas:
            call = calls.setdefault(d["index"], {"name": None, "arguments": "", "id": None})
            if "id" in d:
                assert call["id"] is None and d["function"]["name"]
                call.update(id=d["id"], name=d["function"]["name"])
            call["arguments"] += d["function"]["arguments"]
    return content, [calls[i] for i in sorted(calls)]


@pytest.mark.parametrize("seed", range(6))
def test_streamed_calls_reassemble_to_valid_json(seed):
    content, calls = stream_tools(ONE, seed)
    assert content == "Sure." and [c["name"] for c in calls] == ["get_time"]
    assert json.loads(calls[0]["arguments"]) == {"tz": "UTC", "opts": {"a": [1, 2]}}
    content, calls = stream_tools(TWO, seed)
    assert [c["name"] for c in calls] == ["a", "b"] and json.loads(calls[1]["arguments"]) == {"x": "}"}
    assert len({c["id"] for c in calls}) == 2


def test_whole_text_parse_matches_the_stream():
    content, calls = parse_tool_calls(ONE)
    assert content == "Sure." and calls[0]["function"]["name"] == "get_time"
    assert calls[0]["function"]["arguments"] == stream_tools(ONE, 0)[1][0]["arguments"]
    assert calls[0]["type"] == "function" and calls[0]["id"].startswith("call_")


@pytest.mark.parametrize("text", ["<tool_call>not json</tool_call>", '<tool_call>{"name": "f", "arguments": {oops}'
                                  '</tool_call>', "a < b and <tool is not a tag"])
def test_malformed_calls_are_plain_content(text):
    assert parse_tool_calls(text) == (text, [])
    if "name" not in text:
        assert stream_tools(text, 1) == (text, [])


def test_reasoning_split_streamed_and_whole():
    text = "<think>\nLet me think.</think>\n\nHello there"
    for seed in range(4):
        parser, sofar, thought, answer = Qwen3ReasoningParser(), "", "", ""
        chunks = pieces(text, seed)
        for i, piece in enumerate(chunks):
            sofar += piece
            t, a = parser.update(sofar, finished=i == len(chunks) - 1)
            thought, answer = thought + t, answer + a
        assert (thought, answer) == ("\nLet me think.", "Hello there")
    assert Qwen3ReasoningParser().update("Just an answer", finished=True) == ("", "Just an answer")
    assert Qwen3ReasoningParser().update("<think>cut off", finished=True) == ("cut off", "")
