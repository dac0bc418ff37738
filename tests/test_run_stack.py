"""`orchestrator run configs/demo-tiny.yaml` as a user starts it: every endpoint (realtime too), health, metrics, faults."""
from __future__ import annotations

import asyncio
import io
import os
import re
import signal
import subprocess
import sys
import time
import wave
from pathlib import Path

import httpx2 as httpx
import numpy as np
import openai
import pytest
import yaml
from realtime_client import Client, types
from speech import silence, speak

from orchestrator.net import ProcessExited, free_port, wait_healthy
from tests.conftest import ROOT

KEY = "demo-key"


def start(stack: Path, models: Path, port: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "ORCH_DEMO_MODELS": str(models), "COLUMNS": "120"}
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "run", str(stack), "--port", str(port),
                                 "--api-key", KEY], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout: float = 240) -> None:
    try:
        wait_healthy(url + "/health", proc, timeout, poll_s=0.5)
    except (ProcessExited, TimeoutError) as why:
        proc.kill()
        pytest.fail(f"the stack was not ready ({why}):\n{log.read_text()[-3000:]}")


def worker_pids(log: Path) -> set[int]:
    return {int(p) for p in re.findall(r"worker process (\d+) started", log.read_text())}


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"  # a zombie waits only for its reaper


def engines(url: str) -> dict[str, dict]:
    return {e["name"]: e for e in httpx.get(url + "/health/engines", headers={"Authorization": f"Bearer {KEY}"}
                                            ).json()["engines"]}


def speak_wav() -> bytes:
    pcm = (speak("Hello from the demo stack.") * 32767).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000), w.writeframes(pcm.tobytes())
    return buffer.getvalue()


async def realtime_turn(url: str) -> None:
    """One spoken turn over /v1/realtime, then a session left in the middle of its answer."""
    client = await Client.connect(url, KEY)
    await client.until("session.created")
    await client.send(type="session.update", session={"max_output_tokens": 16})
    await client.speak(np.concatenate([silence(0.3, 24000), speak("Hello there.", 24000), silence(1.0, 24000)]),
                       24000)
    events = await client.until("response.done")
    assert types(events).index("conversation.item.input_audio_transcription.completed") < \
        types(events).index("response.output_audio.delta")
    await client.send(type="response.create")
    await client.until("response.output_audio.delta")
    await client.close()
    for _ in range(100):
        if 'kv_blocks{state="used"} 0.0' in httpx.get(url + "/metrics").text:
            return
        await asyncio.sleep(0.1)


def test_demo_stack_serves_every_endpoint_survives_a_dead_worker_and_exits_clean(demo_models, tmp_path):
    port, log = free_port(), tmp_path / "run.log"
    url = f"http://127.0.0.1:{port}"
    proc = start(ROOT / "configs/demo-tiny.yaml", demo_models, port, log)
    try:
        wait_ready(url, proc, log)
        client = openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0)
        stream = client.chat.completions.create(model="qwen3-demo", messages=[{"role": "user", "content": "hi"}],
                                                max_tokens=8, stream=True)
        assert [c.choices[0].finish_reason for c in stream if c.choices][-1] == "length"
        assert len(client.embeddings.create(model="minilm", input="a cat").data[0].embedding) == 384
        text = client.audio.transcriptions.create(model="whisper-demo", file=("hi.wav", speak_wav()),
                                                  response_format="text")
        assert isinstance(text, str)
        with client.audio.speech.with_streaming_response.create(model="voice-demo", voice="alloy",
                                                               input="Hello there.", response_format="wav") as r:
            assert r.read()[:4] == b"RIFF"
        table = engines(url)
        assert {e["state"] for e in table.values()} == {"ready"} and len(table) == 5
        assert all(e["planned_bytes"] > 0 for e in table.values())
        assert all(e["actual_bytes"] > 0 for e in table.values() if e["kind"] != "vad")
        metrics = httpx.get(url + "/metrics").text
        for name in table:
            assert f'orchestrator_engine_planned_bytes{{kind="{table[name]["kind"]}",model="{name}"}}' in metrics
        assert 'orchestrator_llm_kv_blocks{state="free"}' in metrics
        asyncio.run(asyncio.wait_for(realtime_turn(url), 120))  # VAD here, ASR, LLM and TTS in their workers
        metrics = httpx.get(url + "/metrics").text
        assert "orchestrator_realtime_sessions 0.0" in metrics and 'kv_blocks{state="used"} 0.0' in metrics
        assert {e["restarts"] for e in engines(url).values()} == {0}

        tts_pid = table["voice-demo"]["pid"]
        with client.audio.speech.with_streaming_response.create(
                model="voice-demo", voice="alloy", response_format="pcm",
                input=" ".join(["This sentence keeps the voice busy for a while."] * 30)) as r:
            chunks = r.iter_bytes()
            next(chunks)
            os.kill(tts_pid, signal.SIGKILL)
            with pytest.raises(httpx.TransportError):  # the stream ends early, it does not hang
                for _ in chunks:
                    pass
        for _ in range(100):
            if engines(url)["voice-demo"]["state"] == "restarting":
                break
            time.sleep(0.05)
        assert engines(url)["voice-demo"]["state"] == "restarting"
        with pytest.raises(openai.InternalServerError) as down:
            client.audio.speech.create(model="voice-demo", voice="alloy", input="Hi.", response_format="wav")
        assert down.value.status_code == 503 and down.value.response.headers["Retry-After"]
        assert client.embeddings.create(model="minilm", input="still here").data  # the others keep serving
        assert client.chat.completions.create(model="qwen3-demo", messages=[{"role": "user", "content": "hi"}],
                                              max_tokens=2).choices
        for _ in range(240):
            if engines(url)["voice-demo"]["state"] == "ready":
                break
            time.sleep(0.5)
        assert engines(url)["voice-demo"]["restarts"] == 1
        assert client.audio.speech.create(model="voice-demo", voice="alloy", input="Back.", response_format="wav"
                                          ).content[:4] == b"RIFF"
        pids = worker_pids(log)
        assert len(pids) == 5  # four workers, and the TTS worker's successor
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    assert code == 0, log.read_text()[-3000:]
    assert all(gone(pid) for pid in pids)


def demo_stack_with(tmp_path: Path, change) -> Path:
    stack = yaml.safe_load((ROOT / "configs/demo-tiny.yaml").read_text())
    change(stack)
    path = tmp_path / "stack.yaml"
    path.write_text(yaml.safe_dump(stack))
    return path


def run_until_exit(stack: Path, models: Path, tmp_path: Path) -> tuple[int, str, set[int]]:
    log = tmp_path / "run.log"
    proc = start(stack, models, free_port(), log)
    code = proc.wait(timeout=240)
    return code, log.read_text(), worker_pids(log)


def test_a_model_that_fails_to_load_is_named_and_nothing_is_left(demo_models, tmp_path):
    broken = tmp_path / "whisper-without-tokenizer"
    broken.mkdir()
    for f in (demo_models / "whisper").iterdir():
        if f.name != "tokenizer.json":
            (broken / f.name).symlink_to(f)
    stack = demo_stack_with(tmp_path, lambda s: s["models"][1].update(path=str(broken)))
    code, out, pids = run_until_exit(stack, demo_models, tmp_path)
    assert code == 1 and "whisper-demo" in out and "tokenizer.json" in out and "Traceback" not in out
    assert pids and all(gone(pid) for pid in pids)


def test_a_model_over_its_share_stops_the_start(demo_models, tmp_path):
    def tight(stack: dict) -> None:
        stack["gpu"]["tolerance"] = 0.0
        # The LLM's share is above the plan's estimate (768 MiB) but below what its worker really holds on CPU
        # (~900 MiB, transformers loaded); the others get room to spare, so only the LLM can be over.
        stack["models"][0]["memory"] = "800MiB"
        stack["models"][1]["memory"] = "512MiB"

    code, out, pids = run_until_exit(demo_stack_with(tmp_path, tight), demo_models, tmp_path)
    assert code == 1 and "'qwen3-demo' holds" in out and "more than its share of 800.00 MiB" in out
    assert all(gone(pid) for pid in pids)


def ready_stack(models: Path, tmp_path: Path) -> tuple[subprocess.Popen, Path, str]:
    """The demo stack in its own process group (as a terminal runs it), ready, with one answer served."""
    port, log = free_port(), tmp_path / "run.log"
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "ORCH_DEMO_MODELS": str(models), "COLUMNS": "120"}
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "run", str(ROOT / "configs/demo-tiny.yaml"),
                                 "--port", str(port), "--api-key", KEY], cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    wait_ready(url, proc, log)
    client = openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0)
    assert client.chat.completions.create(model="qwen3-demo", messages=[{"role": "user", "content": "hi"}],
                                          max_tokens=2).choices
    return proc, log, url


STOPS = {
    "ctrl-c": lambda pid: os.killpg(pid, signal.SIGINT),          # a terminal's Ctrl-C reaches the whole group
    "sigterm": lambda pid: os.kill(pid, signal.SIGTERM),          # `kill`, systemd's default
    "group-sigterm": lambda pid: os.killpg(pid, signal.SIGTERM),  # `timeout`, supervisord's killasgroup, containers
}


@pytest.mark.parametrize("how", STOPS)
def test_every_stop_signal_stops_every_worker_by_itself_with_nothing_but_shutdown_lines(demo_models, tmp_path, how):
    proc, log, _ = ready_stack(demo_models, tmp_path)
    pids = worker_pids(log)
    before = len(log.read_text())
    STOPS[how](proc.pid)
    assert proc.wait(timeout=30) == 0
    after = log.read_text()[before:]
    lines = [line for line in after.splitlines() if line.strip()]
    # uvicorn's four shutdown lines and ours; no worker needed terminating, no semaphore leaked, no traceback
    assert all(("Shutting down" in line or "shutdown" in line or "Finished server process" in line
                or "stopping the workers" in line) for line in lines), after
    assert len(pids) == 4 and all(gone(pid) for pid in pids)


def test_a_supervisor_killed_with_sigkill_leaves_no_worker_behind(demo_models, tmp_path):
    proc, log, _ = ready_stack(demo_models, tmp_path)
    pids = worker_pids(log)
    assert len(pids) == 4 and not any(gone(pid) for pid in pids)
    proc.kill()
    proc.wait(timeout=10)
    for _ in range(100):  # each worker's watchdog sees its parent gone within half a second
        if all(gone(pid) for pid in pids):
            break
        time.sleep(0.05)
    assert all(gone(pid) for pid in pids), [pid for pid in pids if not gone(pid)]
