"""Structured outputs and constrained tool calls on the real GGUF models (SmolLM2, Qwen2.5-Coder-0.5B), through the
openai SDK: JSON Schemas of many shapes always validate, calls always parse, and the mask never leaks between rows."""
from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated

import httpx2 as httpx
import jsonschema
import openai
import pytest
from live_server import live_server
from pydantic import BaseModel, Field
from realtime_client import Client

from engines.llm import AsyncLLM, EngineConfig, LLMEngine, SamplingParams
from engines.llm.sampling_params import StructuredOutputsParams
from tests.conftest import DEMO_GGUFS

KEY = "so-key"
POINT = {"type": "object", "properties": {"x": {"type": "integer", "minimum": -9, "maximum": 9},
                                          "y": {"type": "integer", "minimum": -9, "maximum": 9}},
         "required": ["x", "y"], "additionalProperties": False}
SCHEMAS = {  # name: (what to ask for, the schema)
    "nested": ("a person with a name and an age", {"type": "object", "properties": {"person": {
        "type": "object", "properties": {"name": {"type": "string", "maxLength": 30},
                                         "age": {"type": "integer", "minimum": 0, "maximum": 120}},
        "required": ["name", "age"], "additionalProperties": False}}, "required": ["person"],
        "additionalProperties": False}),
    "min_items": ("three to five colours", {"type": "object", "properties": {"colours": {
        "type": "array", "items": {"type": "string", "maxLength": 15}, "minItems": 3, "maxItems": 5}},
        "required": ["colours"], "additionalProperties": False}),
    "enum": ("your mood", {"type": "object", "properties": {"mood": {"enum": ["happy", "sad", "angry"]}},
                           "required": ["mood"], "additionalProperties": False}),
    "bounded_numbers": ("a temperature and a count", {"type": "object", "properties": {
        "temperature": {"type": "number", "minimum": -50, "maximum": 60},
        "count": {"type": "integer", "minimum": 1, "maximum": 10}}, "required": ["temperature", "count"],
        "additionalProperties": False}),
    "optional": ("a book title", {"type": "object", "properties": {
        "title": {"type": "string", "maxLength": 40}, "subtitle": {"type": "string", "maxLength": 40}},
        "required": ["title"], "additionalProperties": False}),
    "any_of": ("a value, a number or a word", {"type": "object", "properties": {"value": {
        "anyOf": [{"type": "integer", "minimum": 0, "maximum": 999}, {"type": "string", "maxLength": 20}]}},
        "required": ["value"], "additionalProperties": False}),
    "objects_in_array": ("a short to-do list", {"type": "object", "properties": {"items": {
        "type": "array", "minItems": 1, "maxItems": 3, "items": {
            "type": "object", "properties": {"id": {"type": "integer", "minimum": 1, "maximum": 99},
                                             "done": {"type": "boolean"}},
            "required": ["id", "done"], "additionalProperties": False}}}, "required": ["items"],
        "additionalProperties": False}),
    "pattern": ("today's date", {"type": "object", "properties": {"date": {
        "type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"}}, "required": ["date"],
        "additionalProperties": False}),
    "top_level_array": ("two to four small numbers", {"type": "array", "minItems": 2, "maxItems": 4,
                                                      "items": {"type": "integer", "minimum": 0, "maximum": 100}}),
    "refs_and_const": ("a line from one point to another", {"$defs": {"point": POINT}, "type": "object",
                                                           "properties": {"kind": {"const": "line"},
                                                                          "start": {"$ref": "#/$defs/point"},
                                                                          "end": {"$ref": "#/$defs/point"}},
                                                           "required": ["kind", "start", "end"],
                                                           "additionalProperties": False}),
}
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "the weather in a city", "parameters": {
    "type": "object", "properties": {"city": {"type": "string", "maxLength": 40}, "unit": {"enum": ["c", "f"]}},
    "required": ["city", "unit"], "additionalProperties": False}}}


@pytest.fixture(scope="module")
def served(packed_ggufs):
    """Both GGUF models, each as stored (packed) behind its own server; the engines too, for direct checks."""
    from orchestrator.server.app import build_app
    from orchestrator.server.realtime.voice import VoiceEngines
    from orchestrator.server.state import LLMState

    engines, urls, stack = {}, {}, []
    try:
        for name, engine in packed_ggufs.items():
            llm = AsyncLLM(engine)
            engines[name] = llm
            state = LLMState(llm, name, 4096)
            server = live_server(build_app(state, KEY, voice=VoiceEngines(state)))
            urls[name] = server.__enter__()
            stack.append(server)
        yield engines, urls
    finally:
        for server in stack:
            server.__exit__(None, None, None)
        for llm in engines.values():
            llm.shutdown()


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0, timeout=300)


def ask(url: str, name: str, what: str, schema: dict, stream: bool, temperature: float) -> tuple[str, str]:
    """(the answer's text, its finish_reason) for a JSON Schema request."""
    fmt = {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": True}}
    messages = [{"role": "user", "content": f"Give {what} as JSON."}]
    kwargs = dict(model=name, messages=messages, response_format=fmt, temperature=temperature, seed=11,
                  max_tokens=200)
    if not stream:
        choice = client(url).chat.completions.create(**kwargs).choices[0]
        return choice.message.content, choice.finish_reason
    chunks = [c for c in client(url).chat.completions.create(**kwargs, stream=True) if c.choices]
    return "".join(c.choices[0].delta.content or "" for c in chunks), chunks[-1].choices[0].finish_reason


@pytest.mark.parametrize("name", DEMO_GGUFS)
def test_every_schema_is_answered_with_json_that_validates(served, name):
    """Ten schema shapes, streamed and not, greedy and at temperature 1 with a seed, all at once: each answer
    validates (jsonschema) and ends with finish_reason stop."""
    url = served[1][name]
    combos = [(stream, temperature) for stream in (False, True) for temperature in (0.0, 1.0)]
    jobs = [(key, what, schema, stream, temperature) for key, (what, schema) in SCHEMAS.items()
            for stream, temperature in combos]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda job: ask(url, name, job[1], job[2], job[3], job[4]), jobs))
    for (key, _, schema, stream, temperature), (text, finish) in zip(jobs, answers):
        where = f"{name} {key} stream={stream} T={temperature}: {text!r}"
        assert finish == "stop", where
        jsonschema.validate(json.loads(text), schema)


def test_a_schema_the_free_model_breaks_is_kept_when_constrained(served):
    """SmolLM2, asked plainly for JSON, writes prose and a fenced sketch that is not the schema; held to the schema
    by response_format (here through the SDK's parse, a pydantic model), it answers with the object itself."""
    url = served[1]["smollm2"]
    what, schema = SCHEMAS["min_items"]
    messages = [{"role": "user", "content": f"Give {what} as JSON."}]
    free = client(url).chat.completions.create(model="smollm2", messages=messages, temperature=0, max_tokens=120)
    with pytest.raises((ValueError, jsonschema.ValidationError)):
        jsonschema.validate(json.loads(free.choices[0].message.content), schema)

    class Colours(BaseModel):
        colours: list[Annotated[str, Field(max_length=15)]] = Field(min_length=3, max_length=5)

    parsed = client(url).chat.completions.parse(model="smollm2", messages=messages, temperature=0, max_tokens=120,
                                                response_format=Colours)
    assert parsed.choices[0].message.parsed is not None and parsed.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(parsed.choices[0].message.content), Colours.model_json_schema())


def test_a_cut_answer_says_length_and_is_not_json(served):
    url = served[1]["smollm2"]
    reply = client(url).chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "A person as JSON."}], max_tokens=4, temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "p", "schema": SCHEMAS["nested"][1]}})
    assert reply.choices[0].finish_reason == "length"
    with pytest.raises(ValueError):
        json.loads(reply.choices[0].message.content)


@pytest.mark.parametrize("stream", [False, True])
def test_smollm2_makes_a_valid_required_call(served, stream):
    """SmolLM2's chat template knows no tools (they go into a system message) and it never writes a call by itself;
    with tool_choice "required" each call names the tool and its arguments validate (parallel_tool_calls false:
    exactly one)."""
    url = served[1]["smollm2"]
    kwargs = dict(model="smollm2", messages=[{"role": "user", "content": "What is the weather in Paris?"}],
                  tools=[WEATHER], tool_choice="required", temperature=0, max_tokens=120,
                  parallel_tool_calls=not stream)
    if stream:
        chunks = [c for c in client(url).chat.completions.create(**kwargs, stream=True) if c.choices]
        calls: dict[int, list] = {}
        for delta in (t for c in chunks for t in c.choices[0].delta.tool_calls or ()):
            entry = calls.setdefault(delta.index, [None, ""])
            entry[0] = delta.function.name or entry[0]
            entry[1] += delta.function.arguments or ""
        found, finish = list(calls.values()), chunks[-1].choices[0].finish_reason
        assert len(found) == 1
    else:
        choice = client(url).chat.completions.create(**kwargs).choices[0]
        found = [[call.function.name, call.function.arguments] for call in choice.message.tool_calls]
        finish = choice.finish_reason
    assert finish == "tool_calls" and found
    for name, arguments in found:
        assert name == "get_weather"
        jsonschema.validate(json.loads(arguments), WEATHER["function"]["parameters"])


def test_qwen_with_tools_on_auto_still_answers_a_plain_question_in_text(served):
    url = served[1]["qwen2.5-coder-0.5b"]
    reply = client(url).chat.completions.create(
        model="qwen2.5-coder-0.5b", tools=[WEATHER], temperature=0, max_tokens=20,
        messages=[{"role": "user", "content": "What is the capital of France? Answer in one word."}])
    message = reply.choices[0].message
    assert "paris" in message.content.lower() and not message.tool_calls and reply.choices[0].finish_reason == "stop"


def test_a_realtime_session_on_smollm2_calls_a_tool_with_valid_arguments(served):
    """openai-agents style: the tools come in session.update (accepted whatever the model), tool_choice required;
    the arguments streamed in function_call_arguments.delta parse and validate."""
    url = served[1]["smollm2"]
    tool = {"type": "function", "name": "get_weather", "description": "the weather in a city",
            "parameters": WEATHER["function"]["parameters"]}

    async def main() -> list[dict]:
        session = await Client.connect(url, KEY, "smollm2")
        await session.until("session.created")
        await session.send(type="session.update", session={"output_modalities": ["text"], "tools": [tool],
                                                           "tool_choice": "required", "temperature": 0.6})
        updated = await session.until("session.updated")
        await session.send(type="conversation.item.create", item={
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": "Weather in Oslo?"}]})
        await session.send(type="response.create")
        events = updated + await session.until("response.done")
        await session.close()
        return events

    events = asyncio.run(asyncio.wait_for(main(), 240))
    assert "error" not in [e["type"] for e in events]
    finished = [e for e in events if e["type"] == "response.function_call_arguments.done"]
    assert finished
    for done in finished:  # each call: its streamed pieces are its arguments, and they validate
        deltas = "".join(e["delta"] for e in events
                         if e["type"] == "response.function_call_arguments.delta" and e["item_id"] == done["item_id"])
        assert done["name"] == "get_weather" and deltas == done["arguments"]
        jsonschema.validate(json.loads(done["arguments"]), tool["parameters"])


def test_the_mask_never_leaks_into_free_rows(served):
    """One constrained request and four free ones in one batch (greedy): the free ones' tokens are exactly those
    they get beside a fifth free request in the same batch shape, so nothing of the mask reaches their rows."""
    engine = served[0]["smollm2"].engine
    prompts = ["The sea is", "Once upon a time", "My favourite food is", "In the morning I", "Colours as JSON:"]
    free = SamplingParams(temperature=0, max_tokens=24)
    constrained = SamplingParams(temperature=0, max_tokens=24, structured_outputs=StructuredOutputsParams(
        json=json.dumps(SCHEMAS["min_items"][1])))
    # The served engine's loop owns it: run the check on a fresh engine over the same weights.
    local = LLMEngine(engine.config)
    unconstrained = local.generate(prompts, [free] * 5)
    together = local.generate(prompts, [free] * 4 + [constrained])
    assert [out.token_ids for out in together[:4]] == [out.token_ids for out in unconstrained[:4]]
    assert together[4].token_ids != unconstrained[4].token_ids
    assert together[4].text.startswith('{"colours": [')


BAD_SCHEMAS = [
    ({"type": "objekt"}, "not a valid JSON Schema"),
    ({"type": "object", "properties": {"a": {"$ref": "#/$defs/nowhere"}}}, "does not exist"),
    ({"enum": [f"value-{i:06d}-{'x' * 80}" for i in range(25_000)]}, "characters; at most"),  # about 2 MB
]


def test_bad_schemas_are_400s_naming_the_param_while_a_stream_runs_on(served):
    url = served[1]["smollm2"]

    def long_stream() -> str:
        chunks = client(url).chat.completions.create(model="smollm2", stream=True, temperature=0, max_tokens=60,
                                                     messages=[{"role": "user", "content": "Tell me a story."}])
        return [c.choices[0].finish_reason for c in chunks if c.choices][-1]

    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(long_stream)
        for schema, words in BAD_SCHEMAS:
            with pytest.raises(openai.BadRequestError) as refused:
                client(url).chat.completions.create(
                    model="smollm2", messages=[{"role": "user", "content": "hi"}], max_tokens=8,
                    response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}})
            error = refused.value.body
            assert error["param"] == "response_format.json_schema.schema" and words in error["message"], error
        assert running.result(timeout=300) == "length"


def test_a_grammar_past_its_compile_time_is_refused_and_others_run(real_models):
    """A schema of 3,000 patterned properties takes about 0.7 s to compile here; an engine that allows 50 ms
    refuses it (400 naming the param) and serves a plain request beside it."""
    from orchestrator.server.app import build_app
    from orchestrator.server.state import LLMState

    heavy = {"type": "object", "properties": {f"p{i}": {"type": "string", "pattern": f"^[a-z]{{{i % 50 + 1},60}}$"}
                                              for i in range(3000)}}
    llm = AsyncLLM(LLMEngine(EngineConfig(str(real_models / "smollm2" / DEMO_GGUFS["smollm2"]), num_kv_blocks=64,
                                          max_model_len=1024, grammar_compile_timeout_s=0.05)))
    try:
        with live_server(build_app(LLMState(llm, "smollm2", 1024), KEY)) as url:
            with pytest.raises(openai.BadRequestError, match="did not compile within 0.05 s") as refused:
                client(url).chat.completions.create(
                    model="smollm2", messages=[{"role": "user", "content": "hi"}], max_tokens=8,
                    extra_body={"structured_outputs": {"json": heavy}})
            assert refused.value.body["param"] == "structured_outputs"
            fine = client(url).chat.completions.create(model="smollm2", max_tokens=4,
                                                       messages=[{"role": "user", "content": "hi"}])
            assert fine.choices[0].finish_reason == "length"
            metrics = httpx.get(url + "/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
            assert "orchestrator_llm_grammar_compile_seconds_count" in metrics
    finally:
        llm.shutdown()
