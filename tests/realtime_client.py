"""A plain `websockets` Realtime client for tests: send events, stream audio at real-time pace, read events.

Every server event it reads is checked against the official `openai` SDK's GA server-event union, so no
test can pass on an event a real client would not parse, and no beta-only event type may appear.
"""
from __future__ import annotations

import asyncio
import base64
import json
import os
import time
import typing

import numpy as np
import websockets
from openai.types.realtime import RealtimeServerEvent
from speech import silence

SERVER_EVENTS = {member.model_fields["type"].annotation.__args__[0]: member
                 for member in typing.get_args(typing.get_args(RealtimeServerEvent)[0])}
BETA_ONLY = {"conversation.item.created", "response.text.delta", "response.text.done", "response.audio.delta",
             "response.audio.done", "response.audio_transcript.delta", "response.audio_transcript.done"}


def check_server_event(event: dict) -> None:
    """The event is a GA server event the SDK parses (our extra `latency` on response.done is allowed)."""
    kind = event.get("type")
    assert kind not in BETA_ONLY and kind in SERVER_EVENTS, f"{kind!r} is not a GA server event type"
    SERVER_EVENTS[kind].model_validate(_ga_rates(event))


def _ga_rates(event: dict) -> dict:
    """GA's audio/pcm is 24 kHz only; 16 kHz pcm is our one documented extension, so it is read as 24 kHz here."""
    session = event.get("session") or event.get("response")
    if not isinstance(session, dict) or not isinstance(session.get("audio"), dict):
        return event
    audio = {side: {**conf, "format": {**conf["format"], "rate": 24000}} if isinstance(conf, dict) and
             isinstance(conf.get("format"), dict) and conf["format"].get("rate") == 16000 else conf
             for side, conf in session["audio"].items()}
    key = "session" if "session" in event else "response"
    return {**event, key: {**session, "audio": audio}}


def shape(value):
    """A value's structure without its data: keys and value types, so two runs compare ignoring ids and timings."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in sorted(value.items())}
    if isinstance(value, list):
        return [shape(item) for item in value[:1]]
    return type(value).__name__


def _record(event: dict) -> None:
    """With ORCH_RECORD_REALTIME=FILE, each event's shape is appended there (one JSON line, with the test's name)."""
    if path := os.environ.get("ORCH_RECORD_REALTIME"):
        test = os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0]
        with open(path, "a") as out:
            out.write(json.dumps({"test": test, "type": event["type"], "shape": shape(event)}) + "\n")


def pcm16_b64(audio: np.ndarray) -> str:
    return base64.b64encode((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()).decode()


def decode_deltas(deltas: list[str]) -> np.ndarray:
    return np.frombuffer(b"".join(base64.b64decode(d) for d in deltas), dtype="<i2")


class Client:
    def __init__(self, ws) -> None:
        self.ws = ws
        self.events: list[dict] = []

    @classmethod
    async def connect(cls, url: str, key: str | None, model: str | None = None, **options) -> Client:
        query = f"?model={model}" if model else ""
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        ws = await websockets.connect(url.replace("http", "ws", 1) + "/v1/realtime" + query,
                                      additional_headers=headers, max_size=None, **options)
        return cls(ws)

    async def send(self, **event) -> None:
        await self.ws.send(json.dumps(event))

    async def recv(self, timeout: float = 60) -> dict:
        """The next event, stamped with when it arrived (`received_at`, perf_counter seconds)."""
        event = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
        check_server_event(event)
        _record(event)
        event["received_at"] = time.perf_counter()
        self.events.append(event)
        return event

    async def until(self, kind: str, timeout: float = 120) -> list[dict]:
        """Events up to and including the first of this type."""
        deadline, got = time.monotonic() + timeout, []
        while True:
            event = await self.recv(max(deadline - time.monotonic(), 0.01))
            got.append(event)
            if event["type"] == kind:
                return got

    async def speak(self, audio: np.ndarray, rate: int, chunk_ms: int = 100) -> None:
        """Send audio in chunks at real-time pace, as a microphone would."""
        step = rate * chunk_ms // 1000
        start = time.monotonic()
        for i, at in enumerate(range(0, len(audio), step)):
            await asyncio.sleep(max(start + i * chunk_ms / 1000 - time.monotonic(), 0))
            await self.send(type="input_audio_buffer.append", audio=pcm16_b64(audio[at:at + step]))

    async def close(self) -> None:
        await self.ws.close()


def types(events: list[dict]) -> list[str]:
    return [e["type"] for e in events]


def spoken_turn(url: str, key: str | None, question: np.ndarray, rate: int = 24000, timeout: float = 240) -> list[dict]:
    """A spoken question (with a little silence before and enough after to end the turn) in a fresh session: its
    events up to the answer's response.done."""
    async def turn() -> list[dict]:
        client = await Client.connect(url, key)
        await client.until("session.created")
        await client.send(type="session.update", session={"max_output_tokens": 40, "temperature": 0})
        await client.speak(np.concatenate([silence(0.3, rate), question, silence(1.0, rate)]), rate)
        events = await client.until("response.done", timeout=timeout)
        await client.close()
        return events

    return asyncio.run(asyncio.wait_for(turn(), timeout + 60))
