"""Realtime function calling on the demo stack: the model's calls (scripted, as the server tests script hermes) become
function_call items, the client's function_call_output continues the turn, and bad tool input is a GA error."""
from __future__ import annotations

import asyncio
import json
import os

import pytest
from live_stack import live_stack
from realtime_client import Client, types
from scripted import scripted

from tests.conftest import CONFIGS

KEY = "rt-tools"
MODEL = "qwen3-demo"
WEATHER = {"type": "function", "name": "get_weather", "description": "the weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
CALLING = 'Let me check.<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
ANSWER = "It is sunny in Paris today."


@pytest.fixture(scope="module")
def stack(demo_models):
    os.environ["ORCH_DEMO_MODELS"] = str(demo_models)
    with live_stack(CONFIGS / "demo-tiny.yaml", KEY) as started:
        yield started


@pytest.fixture
def llm(stack):
    """The stack's in-process LLM, its prompts recorded (as token ids) and its answers scripted."""
    engine = stack[1].clients[MODEL]
    prompts: list[list[int]] = []
    generate = engine.generate

    def recording(prompt, params=None, **kwargs):
        prompts.append(list(prompt))
        return generate(prompt, params, **kwargs)

    engine.generate = recording
    with scripted(engine) as sampler:
        yield engine, sampler, prompts
    del engine.generate


def encode(engine, text: str) -> list[int]:
    return engine.tokenizer.encode(text, add_special_tokens=False)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 240))


def test_a_spoken_answer_and_a_call_share_a_response_and_the_output_continues_the_turn(stack, llm):
    engine, sampler, prompts = llm
    sampler.scripts = [encode(engine, CALLING), encode(engine, ANSWER)]

    async def main():
        client = await Client.connect(stack[2], KEY, MODEL)
        await client.until("session.created")
        await client.send(type="session.update", session={"type": "realtime", "tools": [WEATHER]})
        await client.until("session.updated")
        await client.send(type="conversation.item.create", item={
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": "Weather in Paris?"}]})
        await client.send(type="response.create")
        first = await client.until("response.done")
        call = next(item for item in first[-1]["response"]["output"] if item["type"] == "function_call")
        await client.send(type="conversation.item.create", item={
            "type": "function_call_output", "call_id": call["call_id"], "output": '{"forecast": "sunny"}'})
        added = await client.until("conversation.item.done")
        await client.send(type="response.create")
        second = await client.until("response.done")
        await client.close()
        return first, added, second

    first, added, second = run(main())
    assert "error" not in types(first + added + second)
    call_events = [e for e in first if e.get("item", {}).get("type") == "function_call"
                   or e["type"].startswith("response.function_call_arguments")]
    kinds = [e["type"] for e in call_events if e["type"] != "conversation.item.added"
             and e["type"] != "conversation.item.done"]
    assert kinds[0] == "response.output_item.added" and kinds[-2:] == ["response.function_call_arguments.done",
                                                                         "response.output_item.done"]
    assert set(kinds[1:-2]) == {"response.function_call_arguments.delta"}, kinds
    deltas = "".join(e["delta"] for e in call_events if e["type"] == "response.function_call_arguments.delta")
    done = next(e for e in call_events if e["type"] == "response.function_call_arguments.done")
    assert json.loads(deltas) == json.loads(done["arguments"]) == {"city": "Paris"} and done["name"] == "get_weather"
    assert types(first).index("response.output_item.done") < types(first).index("response.done")
    output = first[-1]["response"]["output"]
    message = next(item for item in output if item["type"] == "message")
    assert message["content"][0]["transcript"] == "Let me check."  # spoken beside the call
    assert any(e["type"] == "response.output_audio.delta" for e in first)
    assert sorted(item["type"] for item in output) == ["function_call", "message"]
    assert added[-1]["item"]["type"] == "function_call_output" and added[-1]["item"]["call_id"] == done["call_id"]
    # The next prompt holds the call and its output, through the model's chat template with the tool declared.
    tokenizer = engine.tokenizer
    assert "get_weather" in tokenizer.decode(prompts[0]) and "the weather in a city" in tokenizer.decode(prompts[0])
    follow_up = tokenizer.decode(prompts[1])
    assert '{"forecast": "sunny"}' in follow_up and '"Paris"' in follow_up and "Let me check." in follow_up
    answer = second[-1]["response"]["output"][0]
    assert answer["type"] == "message" and answer["content"][0]["transcript"] == ANSWER
    assert any(e["type"] == "response.output_audio.delta" for e in second)


def test_a_required_tool_choice_forces_a_call_in_text_mode(stack, llm):
    """tool_choice "required": the grammar holds the output to a call of a listed tool, arguments and all."""
    engine, sampler, prompts = llm
    sampler.script = encode(engine, '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>')

    async def main():
        client = await Client.connect(stack[2], KEY, MODEL)
        await client.until("session.created")
        await client.send(type="response.create", response={"output_modalities": ["text"], "tools": [WEATHER],
                                                            "tool_choice": "required", "conversation": "none"})
        events = await client.until("response.done")
        await client.close()
        return events

    events = run(main())
    output = events[-1]["response"]["output"]
    assert [item["type"] for item in output] == ["function_call"]
    assert json.loads(output[0]["arguments"]) == {"city": "Oslo"} and output[0]["status"] == "completed"
    assert "conversation.item.added" not in types(events)  # out of band: nothing joins the conversation
    assert '"get_weather"' in engine.tokenizer.decode(prompts[0])  # the model is shown the tool


BROKEN = [
    ({"type": "conversation.item.create", "item": {"type": "function_call_output", "call_id": "call_nobody",
                                                   "output": "42"}}, "item.call_id"),
    ({"type": "response.create", "response": {"tools": [{**WEATHER, "parameters": {"type": "object", "properties": {
        "city": {"type": "strng"}}}}]}}, "response.tools.0.parameters"),
    ({"type": "response.create", "response": {"tools": [{**WEATHER, "parameters": {"type": "array"}}]}},
     "response.tools.0.parameters"),
    ({"type": "response.create", "response": {"tools": [{**WEATHER, "name": "get weather!"}]}},
     "response.tools.0.name"),
    ({"type": "response.create", "response": {"tools": [{"type": "mcp", "server_label": "x"}]}}, "response.tools.0"),
    ({"type": "response.create", "response": {"tools": [WEATHER], "tool_choice": {"type": "function",
                                                                                  "name": "get_time"}}},
     "response.tool_choice"),
]


def test_bad_tool_input_is_a_ga_error_and_the_session_goes_on(stack, llm):
    engine, sampler, _ = llm
    sampler.script = encode(engine, "Fine.")

    async def main():
        client = await Client.connect(stack[2], KEY, MODEL)
        await client.until("session.created")
        errors = []
        for event in BROKEN:
            await client.send(**event[0])
            errors.append((await client.until("error"))[-1]["error"])
        await client.send(type="session.update", session={"tools": [WEATHER], "tool_choice": {
            "type": "function", "name": "get_time"}, "instructions": "Be brief."})
        updated = (await client.until("session.updated"))[-1]["session"]
        errors.append((await client.until("error"))[-1]["error"])
        await client.send(type="response.create", response={"output_modalities": ["text"]})
        done = (await client.until("response.done"))[-1]
        await client.close()
        return errors, updated, done

    errors, updated, done = run(main())
    assert [e["param"] for e in errors] == [param for _, param in BROKEN] + ["session.tool_choice"]
    assert all(e["type"] == "invalid_request_error" and len(e["message"]) > 20 for e in errors)
    assert "strng" in errors[1]["message"] and "MCP" in errors[4]["message"]
    assert updated["instructions"] == "Be brief." and [t["name"] for t in updated["tools"]] == ["get_weather"]
    assert updated["tool_choice"] == "auto"
    assert done["response"]["status"] == "completed" and done["response"]["output"][0]["content"][0]["text"] == "Fine."
