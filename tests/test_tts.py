"""TTS: the splitter, the VITS backend, AsyncTTS's fair queue, the encoders, and /v1/audio/speech via the SDK."""
from __future__ import annotations

import asyncio
import io
import itertools
import threading
import time
import wave
from concurrent.futures import ThreadPoolExecutor

import av
import httpx2 as httpx
import numpy as np
import openai
import pytest
from live_server import live_server

from engines.errors import EngineBusyError, EngineDeadError
from engines.tts import AsyncTTS, SentenceSplitter, UnknownVoiceError, VitsBackend, split_text
from orchestrator.demo.tiny_vits import make_vits
from orchestrator.server.app import build_app
from orchestrator.server.audio_encode import make_encoder
from orchestrator.server.companions import Companions
from orchestrator.stack import TTSSpec

KEY = "genshin"
THREE = "The first sentence is here. The second one follows it! Is this the third?"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("vits")
    return {"one": make_vits(root / "one"), "four": make_vits(root / "four", num_speakers=4)}


def backend(path, **kwargs) -> VitsBackend:
    engine = VitsBackend(path, device="cpu", max_input_chars=kwargs.pop("max_input_chars", 60), **kwargs)
    engine.load()
    return engine


def hold_after(tts: AsyncTTS, passes: int) -> threading.Event:
    """Let the worker make `passes` pieces, then hold it before each next one until the returned gate is set."""
    gate, calls = threading.Event(), itertools.count()
    tts.before_piece = lambda: next(calls) >= passes and gate.wait(30)
    return gate


def wait_until(condition) -> None:
    """Poll until the server side has caught up; fail rather than hang if it never does."""
    for _ in range(3000):
        if condition():
            return
        time.sleep(0.01)
    raise AssertionError("the server never reached the expected state")


def synthesised(tts: AsyncTTS, request: str | None = None) -> list[tuple[str, int]]:
    return [(e.request, e.piece) for e in tts.events() if e.kind == "synthesised" and request in (None, e.request)]


def test_split_sentences_clauses_words():
    text = 'Hello there. Dr. Smith paid $3.50 for it! Really?! "Yes." J. R. Tolkien wrote it, e.g. this one.'
    assert split_text(text, 400) == ["Hello there.", "Dr. Smith paid $3.50 for it!", "Really?!", '"Yes."',
                                     "J. R. Tolkien wrote it, e.g. this one."]
    assert split_text("你好。今天很好！是吗？好", 400) == ["你好。", "今天很好！", "是吗？", "好"]
    pieces = split_text("one, two, three, four; five six seven eight nine ten eleven twelve", 20)
    assert pieces[:2] == ["one, two, three,", "four; five six seven"] and all(len(p) <= 20 for p in pieces)
    assert split_text("a" * 45, 20) == ["a" * 20, "a" * 20, "a" * 5]


def test_incremental_splitter_matches_whole_and_cuts_first_clause_early():
    text = "Well, I think that is right, you know. Version 3.5 is out. The end"
    splitter, pieces = SentenceSplitter(100), []
    for ch in text:  # an LLM streaming one character at a time
        pieces += splitter.feed(ch)
    assert pieces == ["Well, I think that is right, you know.", "Version 3.5 is out."]  # "3." waited for "5"
    assert pieces + splitter.flush() == split_text(text, 100)
    early = SentenceSplitter(100, first_clause_early=True)
    assert early.feed("Well, I think that is right, you") == ["Well, I think that is right,"]


def test_vits_backend_voices_determinism_and_errors(models):
    one, four = backend(models["one"]), backend(models["four"])
    assert one.sample_rate == 16_000 and one.default_voice == "default"
    assert {v.name for v in one.voices()} >= {"default", "alloy", "shimmer"}
    a = one.synthesize("hello there", "alloy", 1.0)
    assert a.dtype == np.float32 and a.ndim == 1 and len(a) > 0 and np.isfinite(a).all()
    assert np.array_equal(a, one.synthesize("hello there", None, 1.0))  # seeded: same text, same audio
    assert len(one.synthesize("hello there", None, 0.5)) > len(a)  # slower speech is longer
    speakers = {v.name: v.speaker_id for v in four.voices()}
    assert [speakers[f"speaker-{i}"] for i in range(4)] == [0, 1, 2, 3] and speakers["alloy"] == 0
    assert np.array_equal(four.synthesize("hello", "alloy", 1.0), four.synthesize("hello", "speaker-0", 1.0))
    assert not np.array_equal(four.synthesize("hello", "speaker-0", 1.0), four.synthesize("hello", "speaker-1", 1.0))
    with pytest.raises(UnknownVoiceError, match="speaker-3"):
        four.synthesize("hello", "nobody", 1.0)
    with pytest.raises(ValueError, match="speakable"):
        one.synthesize("*** ???", None, 1.0)
    one.warmup()


def test_from_spec_resolves_folder_and_refuses_a_card(models):
    spec = TTSSpec(name="voice", kind="tts", path=str(models["four"]), max_input_chars=80, speaker="speaker-2",
                   device="cpu")
    engine = VitsBackend.from_spec(spec)
    assert (engine.device, engine.max_input_chars, engine.voice(None).speaker_id) == ("cpu", 80, 2)
    with pytest.raises(ValueError, match="only its shipped config"):
        VitsBackend.from_spec(TTSSpec(name="voice", kind="tts", path="/models/mms-tts-eng"))
    with pytest.raises(ValueError, match="not a VITS"):
        VitsBackend(models["four"].parent)


async def collect(stream) -> list:
    return [chunk async for chunk in stream]


def test_async_tts_round_robin_drop_busy_dead(models):
    tts = AsyncTTS(backend(models["one"]), max_pending=2)
    gate = hold_after(tts, 0)

    async def scenario():
        a = await tts.stream(THREE)
        b = await tts.stream("One more time. And again. Last one.")
        with pytest.raises(EngineBusyError):
            await tts.stream("no room")
        gate.set()
        got_a, got_b = await asyncio.gather(collect(a), collect(b))
        assert [c.index for c in got_a] == [0, 1, 2] and got_a[2].text == "Is this the third?"
        order = [r for r, _ in synthesised(tts)]
        assert order == [a.request_id, b.request_id] * 3  # one piece each in turn, not request after request
        second_gate = hold_after(tts, 1)
        c = await tts.stream(THREE)
        first = await anext(c)
        await c.aclose()  # the client left after the first piece
        second_gate.set()
        kinds = [(e.kind, e.piece) for e in tts.events() if e.request == c.request_id and e.kind != "queued"]
        assert first.index == 0 and kinds == [("synthesised", 0), ("dropped", 1), ("dropped", 2)]
        with pytest.raises(ValueError, match="empty"):
            await tts.stream("   ")
        with pytest.raises(UnknownVoiceError):
            await tts.stream("hello", "nobody")
        third_gate = hold_after(tts, 0)
        broken = await tts.stream(THREE)
        tts.backend.close()  # a piece that fails ends its request with the error; the worker goes on
        third_gate.set()
        with pytest.raises(RuntimeError, match="text-to-speech engine failed on this request"):
            await collect(broken)
        kinds = [e.kind for e in tts.events()][-3:]
        assert kinds == ["failed", "dropped", "dropped"] and tts.is_alive() and tts.num_open() == 0
        tts.backend.load()
        assert len(await collect(await tts.stream("hello"))) == 1

    asyncio.run(scenario())
    tts.shutdown()
    with pytest.raises(EngineDeadError):
        asyncio.run(tts.stream("hello"))


def decode(data: bytes) -> tuple[int, int, int]:
    """(sample rate, channels, samples) of an encoded stream, read back with PyAV."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        return stream.rate, stream.codec_context.channels, samples


@pytest.mark.parametrize("fmt", ["wav", "flac", "mp3", "opus", "aac"])
def test_encoders_stream_pieces_that_decode(fmt):
    encoder = make_encoder(fmt, 16_000)
    pieces = [(0.3 * np.sin(np.arange(n) / 9)).astype(np.float32) for n in (4000, 5123, 3000)]
    data = b"".join([encoder.encode(p) for p in pieces] + [encoder.finish()])
    rate, channels, samples = decode(data)
    expected = 48_000 if fmt == "opus" else 16_000  # Opus always decodes at 48 kHz
    assert (rate, channels) == (expected, 1) and samples >= 12_123 * expected // 16_000


def test_pcm_is_24khz_s16le():
    encoder = make_encoder("pcm", 16_000)
    data = b"".join([encoder.encode(np.zeros(1600, np.float32)), encoder.encode(np.zeros(1600, np.float32)),
                     encoder.finish()])
    assert len(data) == 2 * 4800 and encoder.sample_rate == 24_000


@pytest.fixture(scope="module")
def server(models):
    engines = {"tiny-tts": AsyncTTS(backend(models["one"])), "tiny-tts-4": AsyncTTS(backend(models["four"]))}
    with live_server(build_app(None, KEY, Companions(tts=engines))) as url:
        yield url, engines
    for tts in engines.values():
        tts.shutdown()


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server[0] + "/v1", api_key=KEY, max_retries=0, timeout=60)


def speak(client, fmt: str = "wav", text: str = THREE, model: str = "tiny-tts", voice: str = "alloy") -> bytes:
    with client.audio.speech.with_streaming_response.create(model=model, voice=voice, input=text,
                                                            response_format=fmt) as response:
        return response.read()


@pytest.mark.parametrize("fmt,media", [("wav", "audio/wav"), ("flac", "audio/flac"), ("mp3", "audio/mpeg"),
                                       ("opus", "audio/ogg"), ("aac", "audio/aac"), ("pcm", "audio/pcm")])
def test_every_response_format_through_the_sdk(client, fmt, media):
    with client.audio.speech.with_streaming_response.create(
            model="tts-1", voice="nova", input=THREE, response_format=fmt, instructions="Be cheerful.") as response:
        assert response.headers["content-type"] == media and "content-length" not in response.headers
        data = response.read()
    if fmt == "pcm":
        assert len(data) > 0 and len(data) % 2 == 0
        return
    rate, channels, samples = decode(data)
    assert rate == (48_000 if fmt == "opus" else 16_000) and channels == 1 and samples > 0
    if fmt == "wav":
        with wave.open(io.BytesIO(data)) as w:
            assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16_000, 1, 2)
            assert len(w.readframes(w.getnframes())) == 2 * samples
        assert data == speak(client, "wav", voice="nova")  # seeded: the same request gives the same bytes


def test_first_audio_arrives_before_the_last_sentence_is_made(client, server):
    tts = server[1]["tiny-tts"]
    gate = hold_after(tts, 1)
    try:
        with client.audio.speech.with_streaming_response.create(model="tiny-tts", voice="alloy", input=THREE,
                                                                response_format="pcm") as response:
            request = response.headers["x-request-id"]
            chunks = response.iter_bytes()
            assert len(next(chunks)) > 0
            assert synthesised(tts, request) == [(request, 0)]  # sentence 3 not made yet, audio already here
            gate.set()
            rest = b"".join(chunks)
        assert len(rest) > 0 and [p for _, p in synthesised(tts, request)] == [0, 1, 2]
    finally:
        tts.before_piece = None
        gate.set()


def test_client_leaving_drops_its_queued_pieces(client, server):
    tts = server[1]["tiny-tts"]
    gate = hold_after(tts, 1)
    try:
        with client.audio.speech.with_streaming_response.create(model="tiny-tts", voice="alloy", input=THREE,
                                                                response_format="mp3") as response:
            request = response.headers["x-request-id"]
            next(response.iter_bytes())
        wait_until(lambda: tts.num_open() == 0)  # the server sees the disconnect and closes the stream
        gate.set()
    finally:
        tts.before_piece = None
        gate.set()
    kinds = [(e.kind, e.piece) for e in tts.events() if e.request == request and e.kind != "queued"]
    assert kinds == [("synthesised", 0), ("dropped", 1), ("dropped", 2)]


def test_two_requests_interleave(server):
    url, engines = server
    tts = engines["tiny-tts"]
    gate = hold_after(tts, 0)
    client = openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0, timeout=60)
    since = max((e.seq for e in tts.events()), default=-1)
    try:
        with ThreadPoolExecutor(2) as pool:
            futures = [pool.submit(speak, client, "wav", THREE) for _ in range(2)]
            wait_until(lambda: tts.num_open() == 2)
            gate.set()
            assert all(len(f.result()) > 44 for f in futures)
    finally:
        tts.before_piece = None
        gate.set()
    order = [e.request for e in tts.events() if e.kind == "synthesised" and e.seq > since]
    assert len(order) == 6 and all(order[i] != order[i + 1] for i in range(5))


BAD = [({"input": ""}, 400, "input"), ({"input": "x" * 4097}, 400, "input"), ({"voice": "nobody"}, 400, "voice"),
       ({"response_format": "ogg"}, 400, "response_format"), ({"speed": 10}, 400, "speed"),
       ({"model": "nope"}, 404, "model"), ({"input": "*** ???"}, 400, "input"), ({"stream_format": "sse"}, 400,
                                                                                 "stream_format")]


def test_bad_inputs_are_openai_shaped_4xx(server, client):
    url = server[0] + "/v1/audio/speech"
    headers = {"Authorization": f"Bearer {KEY}"}
    for change, status, param in BAD:
        body = {"model": "tiny-tts", "input": "hello", "voice": "alloy", **change}
        reply = httpx.post(url, json=body, headers=headers)
        error = reply.json()["error"]
        assert reply.status_code == status and error["param"] == param and error["message"], (change, reply.text)
    reply = httpx.post(url, content=b"{not json", headers={**headers, "content-type": "application/json"})
    assert reply.status_code == 400 and "JSON" in reply.json()["error"]["message"]
    with pytest.raises(openai.NotFoundError):
        speak(client, model="nope")
    with pytest.raises(openai.BadRequestError, match="speaker-3"):
        speak(client, model="tiny-tts-4", voice="nobody")
    assert decode(speak(client))[2] > 0  # still serving


def test_voices_endpoint(server):
    reply = httpx.get(server[0] + "/v1/audio/voices", params={"model": "tiny-tts-4"},
                      headers={"Authorization": f"Bearer {KEY}"}).json()
    voices = {v["id"]: v["speaker_id"] for v in reply["data"]}
    assert voices["speaker-3"] == 3 and voices["alloy"] == 0 and {v["model"] for v in reply["data"]} == {"tiny-tts-4"}


def test_sixteen_parallel_requests(client):
    texts = [f"Request number {i}. It has two sentences." for i in range(16)]
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda t: speak(client, "wav", t, voice="echo"), texts))
    for text, data in zip(texts, results):
        with wave.open(io.BytesIO(data)) as w:
            assert w.getframerate() == 16_000 and len(w.readframes(w.getnframes())) > 0
        assert data == speak(client, "wav", text, voice="echo")  # each got its own audio, whole


def test_busy_is_429_and_dead_is_503(models):
    tts = AsyncTTS(backend(models["one"]), max_pending=1)
    gate = hold_after(tts, 0)
    with live_server(build_app(None, KEY, Companions(tts={"t": tts}))) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0, timeout=60)
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(speak, client, "wav", "hello", "t")
            wait_until(lambda: tts.num_open() == 1)
            with pytest.raises(openai.RateLimitError) as busy:
                speak(client, model="t")
            assert busy.value.response.headers["retry-after"]
            gate.set()
            assert len(first.result()) > 44
        tts.shutdown()
        with pytest.raises(openai.InternalServerError) as dead:
            speak(client, model="t")
        assert dead.value.status_code == 503 and dead.value.response.headers["retry-after"]
