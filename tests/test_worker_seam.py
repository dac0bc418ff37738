"""The seam between the server and its workers: errors keep type, message and param; protocols; declared calls; deltas.

Two copies of configs/demo-tiny.yaml run side by side: every engine in this process, and every engine (the
VAD too) in its own worker process, as `orchestrator run` starts them. The same bad requests must get
the same answers from both.
"""
from __future__ import annotations

import asyncio
import io
import os
import wave

import httpx2 as httpx
import numpy as np
import pytest
from live_stack import live_stack
from speech import silence, speak

from engines.errors import ERROR_TYPES, EngineFailedError, EngineInputError, rebuild_error
from engines.llm.sampling_params import SamplingParams
from orchestrator.workers.client import EngineClient
from orchestrator.kinds import KINDS
from orchestrator.workers.messages import RequestType, StepOutputs, WireError
from tests.conftest import CONFIGS

KEY = "seam-key"


@pytest.fixture(scope="module")
def stacks(demo_models):
    """{"none": (supervisor, url), "process": (supervisor, url)}: the demo stack in this process and in workers."""
    os.environ["ORCH_DEMO_MODELS"] = str(demo_models)
    with live_stack(CONFIGS / "demo-tiny.yaml", KEY, "none") as local, \
            live_stack(CONFIGS / "demo-tiny.yaml", KEY, "process") as remote:
        yield {"none": local[1:], "process": remote[1:]}


def wav_bytes(samples: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
        w.writeframes((samples * 32767).astype("<i2").tobytes())
    return buffer.getvalue()


SPEECH = {"model": "voice-demo", "input": "Hello there.", "voice": "alloy", "response_format": "wav"}
EMBED = {"model": "minilm", "input": "a cat"}
CHAT = {"model": "qwen3-demo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
# (route, json body or multipart form, the param the engine itself must name, or "" for checks made in the server)
CASES = [
    ("/v1/audio/speech", {**SPEECH, "voice": "nobody"}, "voice"),
    ("/v1/audio/speech", {**SPEECH, "input": "*** ???"}, "input"),
    ("/v1/audio/speech", {**SPEECH, "input": ""}, ""),
    ("/v1/audio/speech", {**SPEECH, "speed": 10}, ""),
    ("/v1/audio/speech", {**SPEECH, "model": "nope"}, ""),
    ("/v1/audio/transcriptions", {"model": "whisper-demo", "language": "xx", "temperature": "0"}, "language"),
    ("/v1/audio/transcriptions", {"model": "whisper-demo", "temperature": "3"}, ""),
    ("/v1/audio/transcriptions", {"model": "whisper-demo", "response_format": "docx"}, ""),
    ("/v1/embeddings", {**EMBED, "input": ["fine", "hello " * 400]}, "input"),
    ("/v1/embeddings", {**EMBED, "input": [[1037, 99999]]}, "input"),
    ("/v1/embeddings", {**EMBED, "dimensions": 1024}, "dimensions"),
    ("/v1/embeddings", {**EMBED, "dimensions": 0}, ""),
    ("/v1/embeddings", {**EMBED, "input": ""}, ""),
    ("/v1/chat/completions", {**CHAT, "max_tokens": 10**6}, ""),
    ("/v1/chat/completions", {**CHAT, "temperature": -1}, ""),
    ("/v1/chat/completions", {**CHAT, "model": "nope"}, ""),
    ("/v1/completions", {"model": "qwen3-demo", "prompt": [10**7], "max_tokens": 2}, ""),
    ("/v1/completions", {"model": "qwen3-demo", "prompt": "hi " * 3000}, ""),
]


def post(url: str, route: str, body: dict) -> httpx.Response:
    headers = {"Authorization": f"Bearer {KEY}"}
    if route.startswith("/v1/audio/transcriptions"):
        files = {"file": ("speech.wav", wav_bytes(speak("Hello there.")))}
        return httpx.post(url + route, data=body, files=files, headers=headers, timeout=120)
    return httpx.post(url + route, json=body, headers=headers, timeout=120)


def test_every_error_case_gets_the_same_answer_through_a_worker_as_in_process(stacks):
    for route, body, engine_param in CASES:
        local, remote = (post(stacks[isolation][1], route, body) for isolation in ("none", "process"))
        assert 400 <= local.status_code < 500, (route, body, local.text)
        assert (remote.status_code, remote.json()) == (local.status_code, local.json()), (route, body)
        if engine_param:  # raised by the engine itself, in the worker: its type and param crossed the pipe
            assert remote.json()["error"]["param"] == engine_param, (route, body, remote.text)
    for isolation in ("none", "process"):  # and both still serve
        url = stacks[isolation][1]
        assert post(url, "/v1/audio/speech", SPEECH).content[:4] == b"RIFF"
        assert post(url, "/v1/embeddings", EMBED).json()["data"][0]["embedding"]
        assert post(url, "/v1/chat/completions", CHAT).json()["choices"]


def test_every_registered_error_crosses_as_itself():
    for name, cls in ERROR_TYPES.items():
        error = cls("what went wrong", "voice") if issubclass(cls, EngineInputError) else cls("what went wrong")
        back = WireError.of(error).rebuild()
        assert type(back) is cls and str(back) == "what went wrong"
        assert getattr(back, "param", None) == getattr(error, "param", None), name
    assert type(WireError.of(ValueError("plain")).rebuild()) is EngineInputError  # a client's mistake stays a 400
    crashed = WireError.of(ZeroDivisionError("boom")).rebuild()
    assert type(crashed) is EngineFailedError and "ZeroDivisionError: boom" in str(crashed)
    assert type(rebuild_error("SomethingNew", "x", None)) is EngineFailedError


def test_a_worker_refuses_a_call_its_kind_does_not_declare(stacks):
    supervisor = stacks["process"][0]
    asr = supervisor.clients["whisper-demo"]
    with pytest.raises(EngineFailedError, match="asr worker does not serve stream"):
        asyncio.run(asr.call(RequestType.SPEAK, "hello", None, 1.0))
    with pytest.raises(EngineFailedError, match="embedding worker does not serve transcribe"):
        asyncio.run(supervisor.clients["minilm"].call(RequestType.TRANSCRIBE, np.zeros(16000, np.float32), None))
    assert post(stacks["process"][1], "/v1/embeddings", EMBED).status_code == 200  # the worker is still serving


def test_both_sides_of_the_seam_implement_their_kinds_protocol(stacks):
    for isolation, (supervisor, _) in stacks.items():
        for spec in supervisor.stack.models:
            client = supervisor.clients[spec.name]
            assert isinstance(client, KINDS[spec.kind].protocol), (isolation, spec.name, type(client))
            assert isinstance(client, EngineClient) == (isolation == "process")
            others = [k.protocol for k in KINDS.values() if k.name != spec.kind]
            assert not any(isinstance(client, p) for p in others), (spec.name, type(client))  # the check can fail


def test_the_vad_in_its_own_worker_finds_the_same_speech(stacks):
    audio = np.concatenate([silence(0.5), speak("Hello there, how are you?"), silence(1.0)])

    async def events(vad) -> list:
        stream = await vad.open_stream()
        found = []
        for start in range(0, len(audio), 1600):
            found += await vad.feed(stream, audio[start:start + 1600])
        found += await vad.flush(stream)
        await vad.close_stream(stream)
        return [(e.kind, e.sample) for e in found]

    local, remote = (asyncio.run(events(stacks[i][0].clients["vad"])) for i in ("none", "process"))
    assert isinstance(stacks["process"][0].clients["vad"], EngineClient)
    assert remote == local and [kind for kind, _ in local] == ["speech_start", "speech_stop"]


def test_a_long_answer_sends_the_same_few_bytes_every_step(stacks):
    llm = stacks["process"][0].clients["qwen3-demo"]
    sizes: list[int] = []
    dispatch = llm._dispatch

    def recording(message) -> None:
        if isinstance(message, StepOutputs) and message.outputs:
            sizes.append(llm.channel.last_recv_bytes)
        dispatch(message)

    async def answer() -> int:
        ids = llm.tokenizer.encode("Tell me a long story.", add_special_tokens=False)
        params = SamplingParams(temperature=0, max_tokens=2000, ignore_eos=True)
        return sum([len(out.delta_token_ids) async for out in llm.generate(ids, params)])

    llm._dispatch = recording
    try:
        assert asyncio.run(asyncio.wait_for(answer(), 300)) == 2000
    finally:
        del llm._dispatch
    assert len(sizes) >= 1999
    early, late = sizes[10:500], sizes[-490:]
    assert max(late) <= max(early) + 16, (max(early), max(late))  # the 2000th step is as small as the 10th
    assert sum(late) / len(late) <= sum(early) / len(early) + 4
