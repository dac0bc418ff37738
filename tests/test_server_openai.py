"""The real server (uvicorn on a loopback port) over a tiny random model, driven by the official openai SDK."""
from __future__ import annotations

import asyncio
import json
import re
import time

import httpx2 as httpx  # the HTTP client the openai SDK itself is built on
import openai
import pytest
from live_server import live_server
from scripted import scripted as scripted_sampler

from engines.llm import AsyncLLM, EngineConfig
from orchestrator.server.app import build_app
from orchestrator.server.state import LLMState

KEY = "genshin"
MODEL = "tiny-qwen3"


@pytest.fixture(scope="module")
def server(tiny_models):
    llm = AsyncLLM.from_config(EngineConfig(str(tiny_models["qwen3"]), dtype="float32", num_kv_blocks=1024,
                                            max_model_len=2048, max_num_seqs=64))
    state = LLMState(llm, MODEL, 2048, seed=0)
    with live_server(build_app(state, KEY)) as url:
        yield url, llm, state
    llm.shutdown()


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server[0] + "/v1", api_key=KEY, max_retries=0)


def wait_for_free_blocks(llm: AsyncLLM) -> int:
    for _ in range(200):
        if not llm.engine.has_unfinished_requests():
            break
        time.sleep(0.01)
    return llm.engine.block_manager.num_used


USER = [{"role": "user", "content": "Hello there"}]


def test_chat_not_streamed(client):
    reply = client.chat.completions.create(model=MODEL, messages=USER, max_tokens=6, temperature=0)
    choice = reply.choices[0]
    assert choice.finish_reason == "length" and choice.message.role == "assistant"
    assert reply.usage.completion_tokens == 6 and reply.usage.total_tokens == reply.usage.prompt_tokens + 6


def test_chat_streamed_equals_not_streamed(client):
    whole = client.chat.completions.create(model=MODEL, messages=USER, max_tokens=10, temperature=0)
    stream = client.chat.completions.create(model=MODEL, messages=USER, max_tokens=10, temperature=0, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 10


def test_open_llm_vtuber_shaped_request(client):
    """List-of-parts user turn, a system message mid-conversation, tools [] and null, always streamed."""
    messages = [{"role": "system", "content": "You are a VTuber."},
                {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello!"},
                {"role": "system", "content": "The user interrupted you."},
                {"role": "user", "content": [{"type": "text", "text": "what was that?"}]}]
    for tools in ([], None):
        extra = {"tools": tools} if tools is not None else {"extra_body": {"tools": None}}
        chunks = list(client.chat.completions.create(model=MODEL, messages=messages, temperature=1.0, stream=True,
                                                     max_tokens=8, **extra))
        assert chunks[-1].choices[0].finish_reason == "length"


TOOL = {"type": "function", "function": {"name": "get_time", "description": "the time in a zone",
                                         "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}}}}
TOOL_REPLY = 'Let me check.<tool_call>\n{"name": "get_time", "arguments": {"tz": "Europe/Paris"}}\n</tool_call>'


@pytest.fixture
def scripted(server):
    """Set `.script` to the token ids every request will produce: real token boundaries through the real stack."""
    with scripted_sampler(server[1]) as sampler:
        yield sampler


def test_streamed_tool_call_deltas_reassemble(client, server, scripted):
    """Through the engine a call is written in the tokens its grammar allows (text it forces, such as the keys, in
    the tokenizer's own pieces); splits down to single characters are the parser's own test (test_parsers)."""
    tok = server[1].tokenizer
    scripted.script = tok.encode(TOOL_REPLY, add_special_tokens=False)
    stream = client.chat.completions.create(model=MODEL, messages=USER, tools=[TOOL], stream=True)
    content, calls, finish = "", {}, None
    for chunk in stream:
        delta = chunk.choices[0].delta
        content += delta.content or ""
        for call in delta.tool_calls or []:
            entry = calls.setdefault(call.index, {"id": None, "name": None, "arguments": ""})
            if call.id:
                entry.update(id=call.id, name=call.function.name)
            entry["arguments"] += call.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert content == "Let me check." and finish == "tool_calls"
    assert list(calls) == [0] and calls[0]["name"] == "get_time" and calls[0]["id"]
    assert json.loads(calls[0]["arguments"]) == {"tz": "Europe/Paris"}


def test_tool_call_not_streamed(client, server, scripted):
    scripted.script = server[1].tokenizer.encode(TOOL_REPLY, add_special_tokens=False)
    reply = client.chat.completions.create(model=MODEL, messages=USER, tools=[TOOL])
    message = reply.choices[0].message
    assert reply.choices[0].finish_reason == "tool_calls" and message.content == "Let me check."
    assert message.tool_calls[0].function.name == "get_time"
    assert json.loads(message.tool_calls[0].function.arguments) == {"tz": "Europe/Paris"}


def test_tool_round_trip_history_renders(client, server, scripted):
    """An assistant turn with tool_calls and content null, then the tool's result, as the VTuber client sends."""
    scripted.script = server[1].tokenizer.encode("It is noon.", add_special_tokens=False)
    history = USER + [{"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_time", "arguments": '{"tz": "UTC"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "12:00"}]
    reply = client.chat.completions.create(model=MODEL, messages=history, tools=[TOOL])
    assert reply.choices[0].message.content == "It is noon." and reply.choices[0].finish_reason == "stop"


def test_a_call_once_opened_is_held_to_its_tool(client, server, scripted):
    """The model (scripted) opens a call and then tries to write prose in it: the grammar lets only a valid call
    through, so the reply holds a call whose arguments parse, never a broken one passed off as content."""
    text = "Sure.<tool_call>get the time please</tool_call>"
    scripted.script = server[1].tokenizer.encode(text, add_special_tokens=False)
    for stream in (False, True):
        reply = client.chat.completions.create(model=MODEL, messages=USER, tools=[TOOL], max_tokens=200,
                                               stream=stream, parallel_tool_calls=False)
        if stream:
            chunks = list(reply)
            content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            names = [t.function.name for c in chunks if c.choices for t in c.choices[0].delta.tool_calls or () if t.id]
            arguments = "".join(t.function.arguments or "" for c in chunks if c.choices
                                for t in c.choices[0].delta.tool_calls or ())
        else:
            message = reply.choices[0].message
            content, names = message.content, [t.function.name for t in message.tool_calls or ()]
            arguments = "".join(t.function.arguments for t in message.tool_calls or ())
        assert content == "Sure." and names == ["get_time"], (content, names)
        assert isinstance(json.loads(arguments), dict)


def test_named_tool_choice_forces_the_call(client, server, scripted):
    scripted.script = server[1].tokenizer.encode('<tool_call>\n{"name": "get_time", "arguments": {"tz": "UTC"}}\n'
                                                 '</tool_call>', add_special_tokens=False)
    reply = client.chat.completions.create(model=MODEL, messages=USER, tools=[TOOL],
                                           tool_choice={"type": "function", "function": {"name": "get_time"}})
    call = reply.choices[0].message.tool_calls[0]
    assert call.function.name == "get_time" and json.loads(call.function.arguments) == {"tz": "UTC"}
    with pytest.raises(openai.BadRequestError, match="not among the tools"):
        client.chat.completions.create(model=MODEL, messages=USER, tools=[TOOL],
                                       tool_choice={"type": "function", "function": {"name": "nope"}})


def test_tool_choice_none_leaves_text_alone(client, server, scripted):
    scripted.script = server[1].tokenizer.encode(TOOL_REPLY, add_special_tokens=False)
    reply = client.chat.completions.create(model=MODEL, messages=USER, tools=[TOOL], tool_choice="none")
    assert reply.choices[0].message.content == TOOL_REPLY and not reply.choices[0].message.tool_calls


def test_reasoning_parser_moves_think_text(client, server, scripted):
    state = server[2]
    scripted.script = server[1].tokenizer.encode("<think>\nhmm</think>\n\nHello", add_special_tokens=False)
    state.reasoning_parser = "qwen3"
    try:
        reply = client.chat.completions.create(model=MODEL, messages=USER)
        chunks = list(client.chat.completions.create(model=MODEL, messages=USER, stream=True))
    finally:
        state.reasoning_parser = None
    message = reply.choices[0].message
    assert message.content == "Hello" and message.model_extra["reasoning_content"] == "\nhmm"
    streamed = [c.choices[0].delta for c in chunks if c.choices]
    assert "".join(d.content or "" for d in streamed) == "Hello"
    assert "".join((d.model_extra or {}).get("reasoning_content") or "" for d in streamed) == "\nhmm"


def test_seed_reproduces(client):
    ask = lambda: client.chat.completions.create(model=MODEL, messages=USER, max_tokens=12, temperature=1.0,  # noqa
                                                 seed=7).choices[0].message.content
    assert ask() == ask()


def test_logprobs(client):
    reply = client.chat.completions.create(model=MODEL, messages=USER, max_tokens=3, temperature=0, logprobs=True,
                                           top_logprobs=2)
    content = reply.choices[0].logprobs.content
    assert len(content) == 3 and all(len(c.top_logprobs) == 2 and c.logprob <= 0 for c in content)


def test_completions_logprobs(client):
    plain = client.completions.create(model=MODEL, prompt="The quick brown", max_tokens=4, temperature=0, logprobs=3)
    logprobs = plain.choices[0].logprobs
    assert len(logprobs.tokens) == len(logprobs.token_logprobs) == len(logprobs.text_offset) == 4
    for chosen, top in zip(logprobs.token_logprobs, logprobs.top_logprobs):
        assert len(top) == 3 and chosen <= 0 and chosen == pytest.approx(max(top.values()))  # greedy takes the top
    assert logprobs.text_offset == sorted(logprobs.text_offset) and logprobs.text_offset[0] == 0
    streamed = list(client.completions.create(model=MODEL, prompt="The quick brown", max_tokens=4, temperature=0,
                                              logprobs=3, stream=True))
    pieces = [c.choices[0].logprobs for c in streamed if c.choices[0].logprobs]
    assert [lp for p in pieces for lp in p.token_logprobs] == pytest.approx(logprobs.token_logprobs)
    assert [o for p in pieces for o in p.text_offset] == logprobs.text_offset


def test_completions(client):
    plain = client.completions.create(model=MODEL, prompt="The quick brown", max_tokens=5, temperature=0)
    streamed = list(client.completions.create(model=MODEL, prompt="The quick brown", max_tokens=5, temperature=0,
                                              stream=True))
    assert "".join(c.choices[0].text for c in streamed) == plain.choices[0].text
    assert plain.usage.completion_tokens == 5
    by_ids = client.completions.create(model=MODEL, prompt=[5, 6, 7], max_tokens=2)
    assert by_ids.usage.prompt_tokens == 3


def test_models_and_health(client, server):
    assert [m.id for m in client.models.list().data] == [MODEL]
    assert httpx.get(server[0] + "/health").json() == {"status": "ok"}
    assert "version" in httpx.get(server[0] + "/version").json()


@pytest.mark.parametrize("method, path", [("GET", "/v1/models"), ("POST", "/v1/chat/completions"),
                                          ("POST", "/v1/completions")])
@pytest.mark.parametrize("header, status", [(None, 401), ("Bearer wrong", 401), ("Basic genshin", 401),
                                            (f"Bearer {KEY}", None)])
def test_auth_on_every_v1_route(server, method, path, header, status):
    body = {"model": MODEL, "messages": USER, "prompt": "hi", "max_tokens": 1}
    headers = {"Authorization": header} if header else {}
    response = httpx.request(method, server[0] + path, json=body if method == "POST" else None, headers=headers)
    if status:
        assert response.status_code == status and response.json()["error"]["code"] == "invalid_api_key"
    else:
        assert response.status_code == 200


def test_client_disconnect_aborts_and_frees_blocks(server):
    base, llm, _ = server
    assert wait_for_free_blocks(llm) == 0
    body = {"model": MODEL, "messages": USER, "max_tokens": 400, "stream": True, "ignore_eos": True}
    with httpx.stream("POST", base + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}) as r:
        lines = r.iter_lines()
        for _ in range(3):
            next(lines)
        assert llm.engine.block_manager.num_used > 0
    assert wait_for_free_blocks(llm) == 0


def test_64_concurrent_streams_complete(server):
    base, llm, _ = server

    async def one(client: openai.AsyncOpenAI, i: int) -> tuple[str, str]:
        stream = await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": f"n{i}"}],
                                                      max_tokens=8 + i % 5, temperature=0.8, stream=True)
        text, finish = "", None
        async for chunk in stream:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
        return text, finish

    async def main():
        async with openai.AsyncOpenAI(base_url=base + "/v1", api_key=KEY, max_retries=0) as client:
            return await asyncio.gather(*(one(client, i) for i in range(64)))

    results = asyncio.run(main())
    assert len(results) == 64 and all(finish == "length" for _, finish in results)
    assert wait_for_free_blocks(llm) == 0


LONG = "word " * 2500
BAD = [  # (body or raw text, expected status, substring of the message)
    ("{not json", 400, "not valid JSON"), ("", 400, ""), ("[]", 400, ""), ("null", 400, ""), ("42", 400, ""),
    ({}, 400, "model"), ({"model": MODEL}, 400, "messages"), ({"model": MODEL, "messages": []}, 400, "messages"),
    ({"model": MODEL, "messages": "hi"}, 400, "messages"), ({"model": MODEL, "messages": [{}]}, 400, "role"),
    ({"model": MODEL, "messages": [{"role": "wizard", "content": "x"}]}, 400, "role"),
    ({"model": MODEL, "messages": [{"role": "user", "content": 5}]}, 400, "content"),
    ({"model": MODEL, "messages": [{"role": "user", "content": [{"type": "video"}]}]}, 400, "type"),
    ({"model": MODEL, "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
     400, "text-only"),
    ({"model": "gpt-4", "messages": USER}, 404, "does not exist"),
    ({"model": 5, "messages": USER}, 400, "model"),
    ({"model": MODEL, "messages": USER, "temperature": -1}, 400, "temperature"),
    ({"model": MODEL, "messages": USER, "temperature": 3}, 400, "temperature"),
    ({"model": MODEL, "messages": USER, "temperature": "hot"}, 400, "temperature"),
    ({"model": MODEL, "messages": USER, "top_p": 0}, 400, "top_p"),
    ({"model": MODEL, "messages": USER, "top_p": 1.5}, 400, "top_p"),
    ({"model": MODEL, "messages": USER, "top_k": -5}, 400, "top_k"),
    ({"model": MODEL, "messages": USER, "min_p": 2}, 400, "min_p"),
    ({"model": MODEL, "messages": USER, "max_tokens": 0}, 400, "max_tokens"),
    ({"model": MODEL, "messages": USER, "max_tokens": -3}, 400, "max_tokens"),
    ({"model": MODEL, "messages": USER, "max_tokens": 10**6}, 400, "maximum context length"),
    ({"model": MODEL, "messages": USER, "max_completion_tokens": "many"}, 400, "max_completion_tokens"),
    ({"model": MODEL, "messages": [{"role": "user", "content": LONG}]}, 400, "maximum context length"),
    ({"model": MODEL, "messages": USER, "n": 2}, 400, "n=2"),
    ({"model": MODEL, "messages": USER, "n": 0}, 400, "n"),
    ({"model": MODEL, "messages": USER, "stop": 5}, 400, "stop"),
    ({"model": MODEL, "messages": USER, "stop": [""]}, 400, "stop"),
    ({"model": MODEL, "messages": USER, "seed": "abc"}, 400, "seed"),
    ({"model": MODEL, "messages": USER, "presence_penalty": 5}, 400, "presence_penalty"),
    ({"model": MODEL, "messages": USER, "frequency_penalty": -9}, 400, "frequency_penalty"),
    ({"model": MODEL, "messages": USER, "repetition_penalty": 0}, 400, "repetition_penalty"),
    ({"model": MODEL, "messages": USER, "top_logprobs": 50, "logprobs": True}, 400, "top_logprobs"),
    ({"model": MODEL, "messages": USER, "stream": "yes please"}, 400, "stream"),
    ({"model": MODEL, "messages": USER, "stream_options": 3}, 400, "stream_options"),
    ({"model": MODEL, "messages": USER, "tools": "all"}, 400, "tools"),
    ({"model": MODEL, "messages": USER, "chat_template_kwargs": []}, 400, "chat_template_kwargs"),
    ({"model": MODEL, "prompt": ""}, 400, "prompt", "/v1/completions"),
    ({"model": MODEL}, 400, "prompt", "/v1/completions"),
    ({"model": MODEL, "prompt": ["a", "b"]}, 400, "one prompt", "/v1/completions"),
    ({"model": MODEL, "prompt": [10**7]}, 400, "token ids", "/v1/completions"),
    ({"model": MODEL, "prompt": "hi", "logprobs": 3, "echo": True}, 400, "echo", "/v1/completions"),
    ({"model": MODEL, "prompt": "hi", "logprobs": 21}, 400, "logprobs", "/v1/completions"),
    ({"model": MODEL, "prompt": LONG}, 400, "maximum context length", "/v1/completions"),
    ({"model": MODEL, "messages": USER, "modalities": ["text", "audio"]}, 400, "modalities"),
    ({"model": MODEL, "messages": USER, "audio": {"voice": "alloy", "format": "wav"}}, 400, "audio"),
    ({"model": MODEL, "messages": USER, "prediction": {"type": "content", "content": "x"}}, 400, "prediction"),
    ({"model": MODEL, "messages": USER, "web_search_options": {}}, 400, "web_search_options"),
    ({"model": MODEL, "messages": USER, "response_format": {"type": "xml"}}, 400, "response_format"),
    ({"model": MODEL, "messages": USER, "response_format": {"type": "json_schema"}}, 400, "json_schema"),
    ({"model": MODEL, "messages": USER, "response_format": {"type": "json_object"},
      "structured_outputs": {"regex": "a+"}}, 400, "not both"),
    ({"model": MODEL, "prompt": "hi", "structured_outputs": {}}, 400, "exactly one of", "/v1/completions"),
    ({"model": MODEL, "prompt": "hi", "structured_outputs": {"regex": "a+", "choice": ["a"]}}, 400, "exactly one of",
     "/v1/completions"),
    ({"model": MODEL, "prompt": "hi", "structured_outputs": {"regex": "(unclosed"}}, 400, "structured_outputs",
     "/v1/completions"),
    ({"model": MODEL, "prompt": "hi", "structured_outputs": {"grammar": "start: ("}}, 400, "structured_outputs",
     "/v1/completions"),
    ({"model": MODEL, "prompt": "hi", "structured_outputs": {"choice": []}}, 400, "choice", "/v1/completions"),
    ({"model": MODEL, "prompt": "hi", "structured_outputs": {"json": {"type": 5}}}, 400, "JSON Schema",
     "/v1/completions"),
    ({"model": MODEL, "prompt": "hi", "structured_outputs": {"xml": "<a/>"}}, 400, "xml", "/v1/completions"),
]


@pytest.mark.parametrize("case", BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_malformed_requests_get_openai_shaped_4xx(server, case):
    body, status, needle = case[:3]
    path = case[3] if len(case) > 3 else "/v1/chat/completions"
    content = body if isinstance(body, str) else json.dumps(body)
    response = httpx.post(server[0] + path, content=content, headers={"Authorization": f"Bearer {KEY}",
                                                                      "Content-Type": "application/json"})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and needle in error["message"]
    assert httpx.get(server[0] + "/health").status_code == 200


def test_unknown_fields_are_named_back_and_the_answer_is_unchanged(server):
    """vLLM ignores unknown fields and OpenAI refuses them: here they are accepted and named in x-ignored-fields."""
    body = {"model": MODEL, "messages": USER, "max_tokens": 4, "temperature": 0}
    plain = httpx.post(server[0] + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"})
    odd = httpx.post(server[0] + "/v1/chat/completions", json={**body, "frobnicate": 1, "store": True},
                     headers={"Authorization": f"Bearer {KEY}"})
    assert odd.status_code == 200 and odd.headers["x-ignored-fields"] == "frobnicate, store"
    assert "x-ignored-fields" not in plain.headers
    assert odd.json()["choices"][0]["message"] == plain.json()["choices"][0]["message"]
    streamed = httpx.post(server[0] + "/v1/completions", json={"model": MODEL, "prompt": "hi", "max_tokens": 2,
                                                              "stream": True, "frobnicate": 1},
                          headers={"Authorization": f"Bearer {KEY}"})
    assert streamed.status_code == 200 and streamed.headers["x-ignored-fields"] == "frobnicate"


def test_completions_hold_to_vllms_structured_outputs(client):
    """The tiny random model writes whatever the grammar allows: a regex, a choice, a grammar and a JSON Schema."""
    def text(so: dict, stream: bool = False) -> tuple[str, str]:
        reply = client.completions.create(model=MODEL, prompt="Answer:", max_tokens=40, temperature=1.0, seed=5,
                                          extra_body={"structured_outputs": so}, stream=stream)
        if stream:
            chunks = [c for c in reply if c.choices]
            return "".join(c.choices[0].text for c in chunks), chunks[-1].choices[0].finish_reason
        return reply.choices[0].text, reply.choices[0].finish_reason

    code, finish = text({"regex": "[0-9]{3}-[a-z]{2}"})
    assert re.fullmatch("[0-9]{3}-[a-z]{2}", code) and finish == "stop"
    picked, finish = text({"choice": ["yes", "no", "maybe"]}, stream=True)
    assert picked in ("yes", "no", "maybe") and finish == "stop"
    said, _ = text({"grammar": 'start: "I say " ("hi" | "bye") "."'})
    assert said in ("I say hi.", "I say bye.")
    schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 1, "maximum": 9}},
              "required": ["n"], "additionalProperties": False}
    numbered, finish = text({"json": schema})
    assert 1 <= json.loads(numbered)["n"] <= 9 and finish == "stop"
    objected, finish = text({"json_object": True})  # any object: it may run past 40 tokens (then it is cut)
    assert objected.startswith("{") and (finish == "length" or isinstance(json.loads(objected), dict))


def test_queue_full_is_429_and_engine_down_is_503(tiny_models):
    llm = AsyncLLM.from_config(EngineConfig(str(tiny_models["qwen3"]), dtype="float32", num_kv_blocks=64,
                                            max_model_len=512), max_pending=2)
    with live_server(build_app(LLMState(llm, MODEL, 512), KEY)) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0)
        held = [client.chat.completions.create(model=MODEL, messages=USER, max_tokens=400, stream=True,
                                               extra_body={"ignore_eos": True}) for _ in range(2)]
        for stream in held:
            next(iter(stream))
        with pytest.raises(openai.RateLimitError) as busy:
            client.chat.completions.create(model=MODEL, messages=USER, max_tokens=2)
        assert busy.value.response.headers["Retry-After"] and "busy" in busy.value.message
        for stream in held:
            stream.close()
        assert wait_for_free_blocks(llm) == 0
        assert client.chat.completions.create(model=MODEL, messages=USER, max_tokens=2).choices[0].finish_reason
        cut = iter(client.chat.completions.create(model=MODEL, messages=USER, max_tokens=400, stream=True,
                                                  extra_body={"ignore_eos": True}))
        next(cut)
        llm.shutdown()
        with pytest.raises(openai.APIError, match="ended early"):  # an error event ends the stream, no hang
            for _ in cut:
                pass
        health = httpx.get(url + "/health")
        assert health.status_code == 503 and health.headers["Retry-After"]
        with pytest.raises(openai.InternalServerError) as down:
            client.chat.completions.create(model=MODEL, messages=USER, max_tokens=2)
        assert down.value.status_code == 503 and down.value.response.headers["Retry-After"]
        assert down.value.body["type"] == "service_unavailable"


def test_metrics_count_requests_tokens_and_kv_blocks(server, client):
    client.chat.completions.create(model=MODEL, messages=USER, max_tokens=5, temperature=0)
    text = httpx.get(server[0] + "/metrics").text
    values = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line and not line.startswith("#")}
    assert values['orchestrator_requests_total{kind="llm",route="/v1/chat/completions",status="200"}'] >= 1
    assert values["orchestrator_llm_time_to_first_token_seconds_count"] >= 1
    assert values["orchestrator_llm_inter_token_seconds_count"] >= 4
    assert values["orchestrator_llm_generation_tokens_total"] >= 5
    blocks = sum(values[f'orchestrator_llm_kv_blocks{{state="{s}"}}'] for s in ("used", "free", "cached"))
    assert blocks == server[1].engine.block_manager.num_blocks
    assert 0 <= values["orchestrator_llm_prefix_cache_hit_ratio"] <= 1
