"""An LLM on a server we do not run (url:), and one we launch (engine: command): the upstream is a second
`orchestrator run` holding only a tiny random-weight LLM, driven through our server by the openai SDK."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx2 as httpx
import openai
import pytest
from live_stack import live_stack

from orchestrator.net import ProcessExited, free_port, wait_healthy

ROOT = Path(__file__).resolve().parents[1]
KEY, UP_KEY = "front-key", "up-key"
TOOL = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}


def upstream_stack(tmp_path: Path, model: Path) -> Path:
    path = tmp_path / "upstream.yaml"
    path.write_text(json.dumps({
        "gpu": {"device": "cpu", "memory": "4GiB", "reserve": "256MiB", "tolerance": 1.0},
        "models": [{"name": "tiny-up", "kind": "llm", "path": str(model), "dtype": "float32", "memory": "1GiB",
                    "max_model_len": 2048, "tool_call_parser": "hermes", "enable_thinking": False}]}))
    return path


def start_upstream(stack: Path, port: int, log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "run", str(stack), "--port", str(port),
                                 "--api-key", UP_KEY], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        wait_healthy(f"http://127.0.0.1:{port}/health", proc, 180)
    except (ProcessExited, TimeoutError) as why:
        proc.kill()
        pytest.fail(f"the upstream did not start ({why}):\n{log.read_text()[-3000:]}")
    return proc


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


@pytest.fixture(scope="module")
def upstream(tiny_models, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("upstream")
    stack, port = upstream_stack(tmp, tiny_models["qwen3"]), free_port()
    proc = start_upstream(stack, port, tmp / "upstream.log")
    state = {"proc": proc, "port": port, "stack": stack, "log": tmp / "upstream.log"}
    yield state
    stop(state["proc"])


@pytest.fixture(scope="module")
def front(upstream, tmp_path_factory):
    path = tmp_path_factory.mktemp("front") / "front.yaml"
    path.write_text(json.dumps({
        "gpu": {"device": "cpu", "memory": "4GiB", "reserve": "256MiB"},
        "models": [{"name": "qwen", "kind": "llm", "url": f"http://127.0.0.1:{upstream['port']}/v1",
                    "api_key": UP_KEY, "model": "tiny-up", "tool_call_parser": "hermes"}]}))
    with live_stack(path, KEY) as started:
        yield started


def client(url: str, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)


def upstream_sequences(port: int) -> tuple[float, float]:
    """(running, KV blocks used) as the upstream's /metrics says."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    values = {}
    for line in text.splitlines():
        for key in ('orchestrator_llm_sequences{state="running"}', 'orchestrator_llm_kv_blocks{state="used"}'):
            if line.startswith(key):
                values[key] = float(line.split()[-1])
    return values['orchestrator_llm_sequences{state="running"}'], values['orchestrator_llm_kv_blocks{state="used"}']


def generated(port: int) -> float:
    """Tokens the upstream has generated since it started."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return float(next(line.split()[-1] for line in text.splitlines()
                      if line.startswith("orchestrator_llm_generation_tokens_total")))


def test_chat_streams_through_with_usage_and_tool_calls(front):
    url = front[2]
    c = client(url)
    assert [m.id for m in c.models.list().data] == ["qwen"]
    whole = c.chat.completions.create(model="qwen", messages=[{"role": "user", "content": "hi"}], max_tokens=8,
                                      temperature=0)
    assert whole.model == "tiny-up" and whole.usage.completion_tokens == 8
    chunks = list(c.chat.completions.create(model="qwen", messages=[{"role": "user", "content": "hi"}], max_tokens=8,
                                            temperature=0, stream=True, stream_options={"include_usage": True}))
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == whole.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == 8
    # The upstream's hermes parser makes the call (a named tool_choice holds the random model to it): the deltas
    # come through as the upstream sent them.
    calls = [d for ch in c.chat.completions.create(
        model="qwen", messages=[{"role": "user", "content": "time?"}], max_tokens=64, stream=True, tools=[TOOL],
        tool_choice={"type": "function", "function": {"name": "get_time"}}) if ch.choices
        for d in ch.choices[0].delta.tool_calls or []]
    assert calls[0].function.name == "get_time" and calls[0].id.startswith("call_")
    text = c.completions.create(model="qwen", prompt="Once upon a time", max_tokens=5)
    assert text.usage.completion_tokens == 5


def test_response_format_reaches_the_upstream_unchanged(front):
    """The upstream (our own server here) holds its random model to the schema: it got response_format as sent."""
    schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 1, "maximum": 9}},
              "required": ["n"], "additionalProperties": False}
    reply = client(front[2]).chat.completions.create(
        model="qwen", messages=[{"role": "user", "content": "a number"}], max_tokens=60, temperature=1.0, seed=2,
        response_format={"type": "json_schema", "json_schema": {"name": "n", "schema": schema}})
    assert reply.choices[0].finish_reason == "stop" and 1 <= json.loads(reply.choices[0].message.content)["n"] <= 9


def test_our_key_is_checked_and_bad_input_stays_ours(front):
    url = front[2]
    with pytest.raises(openai.AuthenticationError):
        client(url, "wrong").chat.completions.create(model="qwen", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.NotFoundError):
        client(url).chat.completions.create(model="other", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError, match="temperature"):
        client(url).chat.completions.create(model="qwen", messages=[{"role": "user", "content": "hi"}],
                                            temperature=7)


def test_a_client_closing_its_stream_closes_the_upstream_request(front, upstream):
    url = front[2]
    before = generated(upstream["port"])
    stream = client(url).chat.completions.create(model="qwen", messages=[{"role": "user", "content": "go on"}],
                                                 max_tokens=1500, stream=True, extra_body={"ignore_eos": True})
    for got, _ in enumerate(stream):
        if got == 2:
            break
    stream.close()
    for _ in range(100):
        if upstream_sequences(upstream["port"]) == (0, 0):
            break
        time.sleep(0.05)
    assert upstream_sequences(upstream["port"]) == (0, 0)  # nothing runs upstream, no KV block is held...
    assert generated(upstream["port"]) - before < 1500    # ...because the request stopped, not because it ended


def test_an_upstream_that_dies_is_a_503_with_retry_after_and_serving_resumes(front, upstream):
    url = front[2]
    stop(upstream["proc"])
    reply = httpx.post(url + "/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"}, timeout=30,
                       json={"model": "qwen", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})
    assert reply.status_code == 503 and reply.headers["retry-after"] == "5"
    assert reply.json()["error"]["code"] == "upstream_unavailable"
    time.sleep(5.1)  # past the probe interval
    health = httpx.get(url + "/health/engines", headers={"Authorization": f"Bearer {KEY}"}, timeout=30).json()
    entry = health["engines"][0]
    assert entry["state"] == "unreachable" and "Connect" in entry["last_error"]
    assert httpx.get(url + "/health", timeout=30).status_code == 503
    upstream["proc"] = start_upstream(upstream["stack"], upstream["port"], upstream["log"])
    answer = client(url).chat.completions.create(model="qwen", messages=[{"role": "user", "content": "hi"}],
                                                 max_tokens=4)
    assert answer.usage.completion_tokens == 4


def command_stack(tmp_path: Path, upstream_file: Path, command: list[str], timeout: float = 180) -> Path:
    path = tmp_path / "launch.yaml"
    path.write_text(json.dumps({
        "gpu": {"device": "cpu", "memory": "8GiB", "reserve": "256MiB", "tolerance": 1.0},
        "models": [{"name": "launched", "kind": "llm", "engine": "command", "model": "tiny-up", "memory": "3GiB",
                    "path": str(json.loads(upstream_file.read_text())["models"][0]["path"]), "max_model_len": 1024,
                    "command": command, "start_timeout_s": timeout}]}))
    return path


def test_engine_command_launches_our_own_server_as_the_llm(upstream, tmp_path):
    command = [sys.executable, "-m", "orchestrator.cli", "run", str(upstream["stack"]), "--port", "{port}",
               "--api-key", "{api_key}"]
    with live_stack(command_stack(tmp_path, upstream["stack"], command), KEY) as (_, supervisor, url):
        answer = client(url).chat.completions.create(model="launched", messages=[{"role": "user", "content": "hi"}],
                                                     max_tokens=6)
        assert answer.usage.completion_tokens == 6
        entry = httpx.get(url + "/health/engines", headers={"Authorization": f"Bearer {KEY}"}).json()["engines"][0]
        assert entry["state"] == "ready" and entry["pid"] and entry["actual_bytes"] > 100 * 2**20
        server = supervisor._launched["launched"]
    assert server.process.poll() is not None  # stopped with the stack


@pytest.mark.parametrize("command, timeout, says", [
    ([sys.executable, "-c", "import sys; print('no model here'); sys.exit(3)"], 60, "exited with code 3"),
    ([sys.executable, "-c", "import time; time.sleep(600)"], 2, "was not healthy"),
    (["/nonexistent/vllm", "serve"], 60, "could not be started"),
])
def test_a_launch_that_fails_names_the_model_and_leaves_nothing(upstream, tmp_path, run_cli, command, timeout, says):
    stack = command_stack(tmp_path, upstream["stack"], command, timeout)
    result = run_cli("run", str(stack), "--port", str(free_port()))
    assert result.returncode != 0 and "'launched'" in result.stderr and says in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    leftover = subprocess.run(["pgrep", "-f", "time.sleep(600)"], capture_output=True, text=True).stdout.split()
    assert not leftover


@pytest.mark.parametrize("model, says", [
    ({"url": "http://127.0.0.1:1/v1", "path": "/tmp"}, "both url"),
    ({"url": "ftp://example.org/v1"}, "is not http(s)"),
    ({"url": "http://127.0.0.1:1/v1", "engine": "vllm"}, "nothing is launched"),
    ({"path": "/tmp", "engine": "command"}, "no command"),
])
def test_bad_remote_settings_are_clear_errors(tmp_path, run_cli, model, says):
    stack = tmp_path / "bad.yaml"
    stack.write_text(json.dumps({"gpu": {"device": "cpu", "memory": "4GiB"},
                                 "models": [{"name": "q", "kind": "llm", **model}]}))
    result = run_cli("plan", str(stack))
    assert result.returncode == 2 and says in result.stderr and "Traceback" not in result.stderr, result.stderr
    asr = tmp_path / "asr.yaml"
    asr.write_text(json.dumps({"gpu": {"device": "cpu", "memory": "4GiB"},
                               "models": [{"name": "w", "kind": "asr", "path": "/tmp", "engine": "vllm"}]}))
    result = run_cli("plan", str(asr))
    assert result.returncode == 2 and "engine" in result.stderr


@pytest.fixture(scope="module")
def voice_front(upstream, demo_models, tmp_path_factory):
    """configs/demo-tiny.yaml with its LLM replaced by the upstream: VAD, ASR and TTS here, the LLM there."""
    import yaml

    os.environ["ORCH_DEMO_MODELS"] = str(demo_models)
    stack = yaml.safe_load((ROOT / "configs" / "demo-tiny.yaml").read_text())
    stack["models"][0] = {"name": "qwen3-demo", "kind": "llm", "url": f"http://127.0.0.1:{upstream['port']}/v1",
                          "api_key": UP_KEY, "model": "tiny-up", "tool_call_parser": "hermes"}
    path = tmp_path_factory.mktemp("voice") / "voice.yaml"
    path.write_text(yaml.safe_dump(stack))
    with live_stack(path, KEY) as started:
        yield started


def test_a_realtime_turn_is_answered_by_the_upstream(voice_front, upstream):
    """Spoken here, written there. (Hanging up the upstream is the stream close the HTTP test above checks: a
    cancel raced a fast tiny upstream to its last token on a busy machine, so it is not asserted here.)"""
    import asyncio

    from realtime_client import Client, types

    async def main():
        rt = await Client.connect(voice_front[2], KEY, "qwen3-demo")
        await rt.until("session.created")
        await rt.send(type="session.update", session={"max_output_tokens": 12, "temperature": 0})
        await rt.send(type="conversation.item.create", item={"type": "message", "role": "user",
                                                             "content": [{"type": "input_text", "text": "Hello!"}]})
        await rt.send(type="response.create")
        first = await rt.until("response.done")
        await rt.close()
        return first

    first = asyncio.run(asyncio.wait_for(main(), 180))
    done = first[-1]["response"]
    assert done["status"] in ("completed", "incomplete") and 0 < done["usage"]["output_tokens"] <= 12, done
    assert any(e["type"] == "response.output_audio.delta" for e in first)  # spoken here, written there
    assert "error" not in types(first)
