"""WS /v1/realtime on the demo stack (in the server process): spoken turns, barge-in, text mode, leaks, limits."""
from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import threading
import time

import httpx2 as httpx
import numpy as np
import openai
import pytest
from live_stack import live_stack
from realtime_client import Client, decode_deltas, pcm16_b64, types
from speech import silence, speak

from tests.conftest import CONFIGS

KEY = "rt-key"
MODEL = "qwen3-demo"


@pytest.fixture(scope="module")
def stack(demo_models):
    """configs/demo-tiny.yaml with every engine in this process, so the test can see the LLM's blocks and the TTS."""
    os.environ["ORCH_DEMO_MODELS"] = str(demo_models)
    with live_stack(CONFIGS / "demo-tiny.yaml", KEY) as started:
        yield started


def llm(stack):
    return stack[1].clients[MODEL]


def tts(stack):
    return stack[1].clients["voice-demo"]


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 240))


def utterance(text: str, rate: int) -> np.ndarray:
    """Speech with a little silence before it and enough after it for the VAD to call the end of the turn."""
    return np.concatenate([silence(0.4, rate), speak(text, rate), silence(1.0, rate)])


def reusable_blocks(stack) -> int:
    """Free blocks, counting those the prefix cache keeps (any request can take them)."""
    stats = llm(stack).stats
    return stats.blocks_free + stats.blocks_cached


async def wait_idle(stack, blocks: int, timeout: float = 20) -> None:
    """Until the LLM runs nothing and has its starting reusable blocks, and no TTS request or session is open."""
    app, _, _ = stack
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = llm(stack).stats
        if (stats.running, stats.waiting, stats.blocks_used, reusable_blocks(stack), tts(stack).num_open(),
                open_sessions(app)) == (0, 0, 0, blocks, 0, 0):
            return
        await asyncio.sleep(0.05)
    stats = llm(stack).stats
    pytest.fail(f"not idle: {stats}, tts open {tts(stack).num_open()}, sessions {open_sessions(app)}")


def open_sessions(app) -> int:
    """Realtime sessions open, as /metrics reports them."""
    return int(app.state.metrics.registry.get_sample_value("orchestrator_realtime_sessions"))


def test_a_spoken_turn_through_the_openai_sdk_gets_events_in_order(stack):
    """The openai SDK's own realtime client streams espeak speech at real-time pace and hears an answer."""
    _, _, url = stack
    audio = utterance("Hello there. What is the weather like today?", 24000)

    async def main() -> list:
        client = openai.AsyncOpenAI(base_url=url + "/v1", api_key=KEY)
        events = []
        async with client.realtime.connect(model=MODEL) as conn:
            await conn.session.update(session={"type": "realtime", "max_output_tokens": 24,
                                               "instructions": "Answer briefly."})

            async def microphone() -> None:
                step, start = 2400, time.monotonic()
                for i, at in enumerate(range(0, len(audio), step)):
                    await asyncio.sleep(max(start + i * 0.1 - time.monotonic(), 0))
                    await conn.input_audio_buffer.append(audio=pcm16_b64(audio[at:at + step]))

            mic = asyncio.create_task(microphone())
            async for event in conn:
                events.append(event)
                if event.type == "response.done":
                    break
            await mic
        return events

    events = run(main())
    kinds = [e.type for e in events]
    order = ["session.created", "session.updated", "input_audio_buffer.speech_started",
             "input_audio_buffer.speech_stopped", "input_audio_buffer.committed", "conversation.item.added",
             "conversation.item.input_audio_transcription.completed", "conversation.item.done", "response.created",
             "response.output_audio.delta", "response.output_audio.done", "response.done"]
    positions = [kinds.index(kind) for kind in order]
    assert positions == sorted(positions), kinds
    assert "error" not in kinds
    speech_at = (0.4 * 1000, len(audio) / 24 - 1000)  # where the spoken part is, in ms
    started, stopped = (next(e for e in events if e.type == k) for k in ("input_audio_buffer.speech_started",
                                                                          "input_audio_buffer.speech_stopped"))
    assert speech_at[0] - 200 <= started.audio_start_ms <= speech_at[0] + 300
    assert speech_at[1] - 300 <= stopped.audio_end_ms <= speech_at[1] + 400
    committed = next(e for e in events if e.type == "input_audio_buffer.committed")
    transcribed = next(e for e in events if e.type == "conversation.item.input_audio_transcription.completed")
    assert committed.item_id == started.item_id == transcribed.item_id
    pcm = decode_deltas([e.delta for e in events if e.type == "response.output_audio.delta"])
    assert len(pcm) > 2400 and np.abs(pcm).max() > 0  # 24 kHz PCM16: more than 100 ms of real sound
    done = events[-1]
    assert done.response.status in ("completed", "incomplete")
    assert done.response.usage.output_tokens <= 24
    transcript = done.response.output[0].content[0].transcript
    assert transcript == next(e for e in events if e.type == "response.output_audio_transcript.done").transcript
    latency = done.model_extra["latency"]
    for stage in ("vad_ms", "asr_ms", "llm_first_token_ms", "first_audio_ms", "total_ms"):
        assert latency[stage] >= 0, latency
    assert latency["total_ms"] >= latency["asr_ms"] + latency["llm_first_token_ms"]


def test_speech_during_a_response_cancels_it_and_frees_its_blocks(stack):
    """Barge-in: the answer stops (turn_detected), the KV blocks come back, history keeps what was sent."""
    start_free = reusable_blocks(stack)
    holding, released = threading.Event(), threading.Event()

    def hold() -> None:  # runs on the TTS thread before each piece: once audio is out, the answer stays playing
        if holding.is_set():
            released.wait(30)

    tts(stack).before_piece = hold
    engine = llm(stack).engine
    eos, engine.eos_token_ids = engine.eos_token_ids, set()  # the random model never ends its answer by itself

    async def main() -> tuple[list, list, list, int]:
        client = await Client.connect(stack[2], KEY, MODEL)
        await client.until("session.created")
        fmt = {"type": "audio/pcm", "rate": 16000}
        await client.send(type="session.update", session={"audio": {"input": {"format": fmt},
                                                                     "output": {"format": fmt}}})
        await client.until("session.updated")
        await client.speak(utterance("Tell me a long story about the sea.", 16000), 16000)
        for _ in range(6):  # a random-weight answer may end (EOS) before the user speaks: then again
            first = await client.until("response.output_audio.delta")
            holding.set()
            busy_free = reusable_blocks(stack)
            await client.speak(utterance("Stop, stop please.", 16000), 16000)
            second = await client.until("response.done")
            if second[-1]["response"]["status"] == "cancelled" and busy_free < start_free:
                break
            holding.clear()
            released.set()
            released.clear()
        released.set()
        third = await client.until("response.done")
        await client.send(type="conversation.item.retrieve", item_id=second[-1]["response"]["output"][0]["id"])
        kept_item = await client.recv()  # the cancelled answer as the conversation holds it, or an error if it does not
        while kept_item["type"] not in ("conversation.item.retrieved", "error"):
            kept_item = await client.recv()
        await client.close()
        return first, second + third, kept_item, busy_free

    try:
        first, rest, kept_item, busy_free = run(main())
    finally:
        released.set()
        tts(stack).before_piece = None
        engine.eos_token_ids = eos
    cancelled = next(e for e in rest if e["type"] == "response.done")
    assert cancelled["response"]["status"] == "cancelled"
    assert cancelled["response"]["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
    assert types(rest).index("input_audio_buffer.speech_started") < types(rest).index("response.done")
    assert busy_free < start_free  # the answer held blocks while it played
    kept = cancelled["response"]["output"][0]["content"][0]["transcript"]
    sent = "".join(e["delta"] for e in first + rest if e["type"] == "response.output_audio_transcript.delta"
                   and e["response_id"] == cancelled["response"]["id"])
    assert sent.startswith(kept)
    if kept:
        assert kept_item["item"]["role"] == "assistant" and kept_item["item"]["content"][0]["transcript"] == kept
    else:
        assert kept_item["type"] == "error" and kept_item["error"]["code"] == "item_not_found"
    final = rest[-1]
    assert final["response"]["status"] in ("completed", "incomplete") and final["response"]["id"] != \
        cancelled["response"]["id"]
    assert "conversation.item.input_audio_transcription.completed" in types(rest)
    pcm = decode_deltas([e["delta"] for e in rest if e["type"] == "response.output_audio.delta"
                         and e["response_id"] == final["response"]["id"]])
    assert len(pcm) > 0
    run(wait_idle(stack, start_free))
    metrics = httpx.get(stack[2] + "/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
    assert 'orchestrator_voice_responses_total{status="cancelled"}' in metrics
    assert 'orchestrator_voice_stage_seconds_count{stage="total"}' in metrics
    assert "orchestrator_realtime_sessions 0.0" in metrics


def test_text_mode_answers_without_audio(stack):
    async def main() -> list:
        client = await Client.connect(stack[2], KEY, MODEL)
        await client.until("session.created")
        await client.send(type="session.update", session={"output_modalities": ["text"], "max_output_tokens": 12,
                                                          "audio": {"input": {"turn_detection": None}}})
        updated = (await client.until("session.updated"))[-1]
        assert updated["session"]["audio"]["input"]["turn_detection"] is None
        await client.send(type="conversation.item.create",
                          item={"type": "message", "role": "user", "content": [{"type": "input_text",
                                                                                "text": "Say hi."}]})
        await client.send(type="response.create")
        events = await client.until("response.done")
        await client.close()
        return events

    events = run(main())
    kinds = types(events)
    assert kinds[:2] == ["conversation.item.added", "conversation.item.done"] and "response.created" in kinds
    assert not any("audio" in k for k in kinds)
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert text == next(e for e in events if e["type"] == "response.output_text.done")["text"] != ""
    done = events[-1]["response"]
    assert done["output"][0]["content"][0] == {"type": "output_text", "text": text}
    assert done["usage"]["output_tokens"] <= 12 and done["output_modalities"] == ["text"]


def test_twenty_sessions_opened_and_closed_leave_nothing_behind(stack):
    app = stack[0]
    start_free = reusable_blocks(stack)

    async def one(i: int) -> None:
        client = await Client.connect(stack[2], KEY, MODEL)
        await client.until("session.created")
        if i % 4 == 0:  # mid-answer, spoken
            await client.send(type="conversation.item.create", item={"type": "message", "role": "user",
                                                                    "content": [{"type": "input_text", "text": "Go"}]})
            await client.send(type="response.create")
            await client.until("response.output_audio_transcript.delta")
        elif i % 4 == 1:  # mid-answer, text
            await client.send(type="response.create", response={"output_modalities": ["text"]})
            await client.until("response.output_text.delta")
        elif i % 4 == 2:  # mid-utterance
            await client.speak(speak("Hello, I am still", 24000), 24000, chunk_ms=200)
        await client.close()

    async def main() -> None:
        for batch in range(0, 20, 5):
            await asyncio.gather(*(one(i) for i in range(batch, batch + 5)))
        await wait_idle(stack, start_free)

    run(main())
    assert open_sessions(app) == 0
    assert app.state.metrics.registry.get_sample_value("orchestrator_realtime_tasks") == 0


BAD_EVENTS = [
    ("not json", "invalid_json"), ("[1, 2]", "invalid_event"), ('"text"', "invalid_event"),
    ("{}", "missing_event_type"), ('{"type": "nope"}', "invalid_event_type"),
    ('{"type": 7}', "invalid_event_type"), ('{"type": "input_audio_buffer.append"}', "invalid_value"),
    ('{"type": "input_audio_buffer.append", "audio": "%%%"}', "invalid_audio"),
    ('{"type": "input_audio_buffer.append", "audio": "AAEC"}', "invalid_audio"),  # 3 bytes: half a sample
    ('{"type": "input_audio_buffer.append", "audio": 12}', "invalid_value"),
    ('{"type": "input_audio_buffer.commit"}', "input_audio_buffer_commit_empty"),
    ('{"type": "session.update"}', "invalid_value"),
    ('{"type": "session.update", "session": {"voice_speed": 2}}', "invalid_value"),
    ('{"type": "session.update", "session": {"output_modalities": ["video"]}}', "invalid_value"),
    ('{"type": "session.update", "session": {"output_modalities": []}}', "invalid_value"),
    ('{"type": "session.update", "session": {"audio": {"input": {"format": {"rate": 44100}}}}}', "invalid_value"),
    ('{"type": "session.update", "session": {"audio": {"input": {"format": {"type": "audio/pcmu"}}}}}',
     "invalid_value"),
    ('{"type": "session.update", "session": {"audio": {"input": {"turn_detection": {"threshold": 2}}}}}',
     "invalid_value"),
    ('{"type": "session.update", "session": {"audio": {"output": {"voice": "nobody"}}}}', "invalid_value"),
    ('{"type": "session.update", "session": {"audio": {"output": {"speed": 9}}}}', "invalid_value"),
    ('{"type": "session.update", "session": {"model": "other"}}', "invalid_value"),
    ('{"type": "session.update", "session": {"max_output_tokens": 0}}', "invalid_value"),
    ('{"type": "session.update", "session": {"tools": [{"type": "function", "name": "f", "parameters": '
     '{"type": "object", "properties": {"a": {"type": "strng"}}}}]}}', "invalid_value"),
    ('{"type": "conversation.item.create"}', "invalid_value"),
    ('{"type": "conversation.item.create", "item": {"type": "message", "role": "user", "content": []}}',
     "invalid_value"),
    ('{"type": "conversation.item.create", "item": {"type": "message", "role": "robot", '
     '"content": [{"type": "input_text", "text": "x"}]}}', "invalid_value"),
    ('{"type": "conversation.item.create", "item": {"type": "message", "role": "user", '
     '"content": [{"type": "output_audio", "transcript": "x"}]}}', "invalid_value"),
    ('{"type": "conversation.item.create", "previous_item_id": "missing", "item": {"type": "message", '
     '"role": "user", "content": [{"type": "input_text", "text": "x"}]}}', "invalid_value"),
    ('{"type": "response.cancel"}', "response_cancel_not_active"),
    ('{"type": "response.create", "response": {"output_modalities": ["smell"]}}', "invalid_value"),
    ("[" * 20_000 + "]" * 20_000, "invalid_event"),  # nested past any parser's depth: refused before parsing
    ('{"type": "session.update", "session": ' + "[" * 3000 + "]" * 3000 + "}", "invalid_event"),
]


def test_malformed_events_get_an_error_and_the_session_goes_on(stack):
    assert len(BAD_EVENTS) == 32

    async def main() -> list[dict]:
        client = await Client.connect(stack[2], KEY, MODEL)
        await client.until("session.created")
        errors = []
        for i, (text, _) in enumerate(BAD_EVENTS):
            try:
                event = json.loads(text)
            except (ValueError, RecursionError):
                event = None
            await client.ws.send(json.dumps({**event, "event_id": f"bad-{i}"}) if isinstance(event, dict) and
                                 "type" in event else text)
            errors.append((await client.until("error"))[-1])
        await client.send(type="response.create", response={"output_modalities": ["text"], "max_output_tokens": 4})
        done = (await client.until("response.done"))[-1]
        await client.close()
        return errors, done

    errors, done = run(main())
    for (text, code), event in zip(BAD_EVENTS, errors, strict=True):
        assert event["error"]["code"] == code, (text, event)
        assert event["error"]["type"] == "invalid_request_error" and len(event["error"]["message"]) > 20
    assert errors[6]["error"]["param"] == "audio" and errors[6]["error"]["event_id"] == "bad-6"
    assert "unknown parameter 'session.voice_speed'" in errors[12]["error"]["message"]
    assert errors[16]["error"]["param"].startswith("session.audio.input.format")
    assert "nobody" in errors[18]["error"]["message"]
    assert done["response"]["status"] in ("completed", "incomplete")


def test_binary_and_oversized_frames_close_with_clear_codes(stack):
    import websockets

    app = stack[0]

    async def closed_by(frame, text: bool | None = None) -> tuple[int, str]:
        client = await Client.connect(stack[2], KEY, MODEL)
        await client.until("session.created")
        await client.ws.send(frame, text=text)
        with pytest.raises(websockets.ConnectionClosed) as info:
            await client.recv(10)
        return info.value.rcvd.code, info.value.rcvd.reason

    limit = app.state.voice.limits.max_event_bytes
    app.state.voice.limits.max_event_bytes = 4096
    try:
        assert run(closed_by(b"\x00\xffgarbage"))[0] == 1003
        code, reason = run(closed_by('{"type": "input_audio_buffer.append", "audio": "' + "A" * 8000 + '"}'))
    finally:
        app.state.voice.limits.max_event_bytes = limit
    assert code == 1009 and "limit of 4096" in reason

    class Records(logging.Handler):
        def __init__(self) -> None:
            super().__init__()
            self.records: list[logging.LogRecord] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.records.append(record)

    seen = Records()
    logging.getLogger("uvicorn.error").addHandler(seen)
    try:
        assert run(closed_by(b"\xff\xfe{", text=True))[0] == 1007  # invalid UTF-8 in a text frame
    finally:
        logging.getLogger("uvicorn.error").removeHandler(seen)
    assert seen.records and not any(r.exc_info for r in seen.records)  # a line, no traceback


def test_auth_model_and_session_limits_refuse_the_handshake(stack):
    import websockets

    app, _, url = stack

    async def status_of(key, model=MODEL, **options) -> int:
        with pytest.raises(websockets.InvalidStatus) as info:
            await Client.connect(url, key, model, **options)
        return info.value.response.status_code

    async def main() -> None:
        assert await status_of(None) == 401
        assert await status_of("wrong") == 401
        assert await status_of(KEY, "llama-70b") == 404
        # a browser: the key as a subprotocol; the server answers with "realtime"
        client = await Client.connect(url, None, "gpt-realtime",
                                      subprotocols=["realtime", f"openai-insecure-api-key.{KEY}"])
        assert client.ws.subprotocol == "realtime"
        assert (await client.recv())["type"] == "session.created"
        app.state.voice.limits.max_sessions = 1
        try:
            assert await status_of(KEY) == 429
        finally:
            app.state.voice.limits.max_sessions = 32
        await client.close()

    run(main())


def test_idle_and_expired_sessions_and_a_full_buffer(stack):
    import websockets

    limits = stack[0].state.voice.limits

    async def main() -> None:
        saved = (limits.idle_timeout_s, limits.max_session_s, limits.max_buffered_audio_s)
        try:
            limits.idle_timeout_s, limits.max_buffered_audio_s = 1.5, 1.0  # idle: room for a busy 2-core machine
            client = await Client.connect(stack[2], KEY, MODEL)
            await client.until("session.created")
            await client.send(type="session.update", session={"audio": {"input": {"turn_detection": None}}})
            await client.until("session.updated")
            await client.send(type="input_audio_buffer.append", audio=pcm16_b64(silence(0.9, 24000)))
            await client.send(type="input_audio_buffer.append", audio=pcm16_b64(silence(0.2, 24000)))
            assert (await client.until("error"))[-1]["error"]["code"] == "input_audio_buffer_full"
            assert (await client.until("error"))[-1]["error"]["code"] == "idle_timeout"
            with pytest.raises(websockets.ConnectionClosed) as info:
                await client.recv(5)
            assert info.value.rcvd.code == 1000 and "idle" in info.value.rcvd.reason

            limits.idle_timeout_s, limits.max_session_s = 30, 0.6
            client = await Client.connect(stack[2], KEY, MODEL)
            await client.until("session.created")
            for _ in range(2):  # busy, so never idle
                await client.send(type="input_audio_buffer.clear")
                await asyncio.sleep(0.2)
            assert (await client.until("error"))[-1]["error"]["code"] == "session_expired"
            with pytest.raises(websockets.ConnectionClosed) as info:
                await client.recv(5)
            assert "maximum length" in info.value.rcvd.reason
        finally:
            limits.idle_timeout_s, limits.max_session_s, limits.max_buffered_audio_s = saved

    run(main())


def test_manual_commit_without_server_vad(stack):
    async def main() -> list:
        client = await Client.connect(stack[2], KEY, MODEL)
        await client.until("session.created")
        await client.send(type="session.update", session={"audio": {"input": {"turn_detection": None}},
                                                          "max_output_tokens": 8})
        await client.until("session.updated")
        audio = speak("Good morning.", 24000)
        await client.send(type="input_audio_buffer.append", audio=pcm16_b64(audio))
        await client.send(type="input_audio_buffer.commit")
        events = await client.until("conversation.item.input_audio_transcription.completed")
        await client.send(type="response.create")
        events += await client.until("response.done")
        await client.close()
        return events

    events = run(main())
    assert types(events)[:2] == ["input_audio_buffer.committed", "conversation.item.added"]
    assert "input_audio_buffer.speech_started" not in types(events)
    done = events[-1]["response"]
    assert done["status"] in ("completed", "incomplete") and done["usage"]["input_tokens"] > 0
    assert base64.b64decode(next(e for e in events if e["type"] == "response.output_audio.delta")["delta"])


def spoken_pieces(events: list[dict], rate: int = 24000) -> list[tuple[str, float]]:
    """An answer's spoken pieces as the client heard them: each transcript delta, and where its audio ended (ms)."""
    pieces: list[tuple[str, float]] = []
    samples = 0
    for event in events:
        if event["type"] == "response.output_audio_transcript.delta":
            pieces.append((event["delta"].strip(), samples * 1000 / rate))
        elif event["type"] == "response.output_audio.delta" and pieces:
            samples += len(base64.b64decode(event["delta"])) // 2
            pieces[-1] = (pieces[-1][0], samples * 1000 / rate)
    return pieces


def test_truncate_retrieve_and_delete_items(stack):
    """truncate cuts an answer's text at the audio the client played; retrieve and delete; bad ids are errors."""

    async def main():
        client = await Client.connect(stack[2], KEY, MODEL)
        await client.until("session.created")
        await client.send(type="session.update", session={"max_output_tokens": 64})
        for _ in range(6):  # a random-weight answer may hold nothing the tiny voice can say: then ask again
            await client.send(type="conversation.item.create", item={
                "type": "message", "role": "user", "content": [{"type": "input_text", "text": "Tell me a story."}]})
            user_item = (await client.until("conversation.item.done"))[-1]["item"]["id"]
            await client.send(type="response.create")
            events = await client.until("response.done")
            answer = events[-1]["response"]["output"][0]["id"]
            if pieces := spoken_pieces(events):
                break
        # Just past the end of the first piece's audio (the server counts it before resampling, a few ms apart).
        cut = int(pieces[0][1]) + 20
        await client.send(type="conversation.item.truncate", item_id=answer, content_index=0, audio_end_ms=cut)
        truncated = (await client.until("conversation.item.truncated"))[-1]
        await client.send(type="conversation.item.retrieve", item_id=answer)
        retrieved = (await client.until("conversation.item.retrieved"))[-1]["item"]
        kept = retrieved["content"][0]["transcript"]
        errors = []
        for bad in ({"type": "conversation.item.truncate", "item_id": answer, "audio_end_ms": -5},
                    {"type": "conversation.item.truncate", "item_id": answer, "audio_end_ms": 10**9},
                    {"type": "conversation.item.truncate", "item_id": user_item, "audio_end_ms": 0},
                    {"type": "conversation.item.truncate", "item_id": "item_nope", "audio_end_ms": 0},
                    {"type": "conversation.item.retrieve", "item_id": "item_nope"},
                    {"type": "conversation.item.delete", "item_id": "item_nope"}):
            await client.send(**bad)
            errors.append((await client.until("error"))[-1]["error"])
        await client.send(type="conversation.item.delete", item_id=user_item)
        deleted = (await client.until("conversation.item.deleted"))[-1]
        left = []
        for item_id in (user_item, answer):  # what the conversation still holds
            await client.send(type="conversation.item.retrieve", item_id=item_id)
            reply = await client.recv()
            while reply["type"] not in ("conversation.item.retrieved", "error"):
                reply = await client.recv()
            left += [item_id] if reply["type"] == "conversation.item.retrieved" else []
        await client.close()
        return pieces, cut, truncated, kept, retrieved, errors, deleted, left, answer, user_item

    pieces, cut, truncated, kept, retrieved, errors, deleted, left, answer, user_item = run(main())
    assert truncated["item_id"] == answer and truncated["audio_end_ms"] == cut
    assert kept == pieces[0][0]  # exactly the audio that was played: the first piece
    assert retrieved["id"] == answer and retrieved["content"][0]["transcript"] == kept
    assert [e["param"] for e in errors] == ["audio_end_ms", "audio_end_ms", "item_id", "item_id", "item_id",
                                            "item_id"]
    assert deleted["item_id"] == user_item and user_item not in left and answer in left


def test_an_openai_clients_default_session_update_is_applied(stack):
    """What a client written for OpenAI sends first: its vendor model name, semantic_vad, tools, tracing, a vendor
    transcription model and voice. What we can honour is applied; each thing we cannot is named in an error."""

    async def main():
        client = await Client.connect(stack[2], KEY, MODEL)
        await client.until("session.created")
        await client.send(type="session.update", session={
            "type": "realtime", "model": "gpt-realtime", "instructions": "You are a pirate.", "tracing": "auto",
            "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000},
                                "transcription": {"model": "gpt-4o-transcribe"},
                                "turn_detection": {"type": "semantic_vad", "eagerness": "high"}},
                      "output": {"voice": "marin"}},
            "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}],
            "tool_choice": "auto"})
        updated = (await client.until("session.updated"))[-1]["session"]
        errors = [(await client.until("error"))[-1]["error"]]
        await client.close()
        return updated, errors

    updated, errors = run(main())
    assert updated["instructions"] == "You are a pirate." and updated["model"] == MODEL
    assert updated["audio"]["input"]["turn_detection"] == {"type": "semantic_vad", "eagerness": "high",
                                                           "create_response": True, "interrupt_response": True}
    assert updated["audio"]["input"]["transcription"]["model"] == "gpt-4o-transcribe" and updated["tracing"] is None
    assert [t["name"] for t in updated["tools"]] == ["get_weather"] and updated["tool_choice"] == "auto"
    assert [e["param"] for e in errors] == ["session.audio.output.voice"]
    assert "the rest of the update was applied" in errors[0]["message"]
