"""Every kind's front behaves alike: a fault fails the request in hand with EngineFailedError and the front serves
on; shutdown lets the running request finish and fails the queued ones with EngineDeadError; a stopped front
refuses with EngineDeadError. The engines here are stand-ins (the VAD is the real Silero net) held at a gate, so
the order of events is set by the test, not by timing."""
from __future__ import annotations

import asyncio
import threading
from collections import deque
from types import SimpleNamespace

import numpy as np
import pytest

from engines.asr import AsyncASR
from engines.asr.outputs import TranscribeOptions, Transcription
from engines.embedding import AsyncEmbedder
from engines.errors import EngineDeadError, EngineFailedError
from engines.front import Job
from engines.tts import AsyncTTS
from engines.vad import AsyncVAD
from engines.vad.silero import SileroVAD


class Gate:
    """Holds the engine's thread inside its work until opened; `fail` makes that work raise."""

    def __init__(self) -> None:
        self.entered, self.open, self.fail = threading.Event(), threading.Event(), False

    def pass_through(self) -> None:
        self.entered.set()
        assert self.open.wait(30), "the test never opened the gate"
        if self.fail:
            raise RuntimeError("device fault")


def asr_front(gate: Gate) -> tuple[AsyncASR, callable]:
    def transcribe(audio, options):
        gate.pass_through()
        return Transcription("words", "en", 1.0, 0.1, [])

    engine = SimpleNamespace(name="fake-asr", device="cpu", batch_size=4, check=lambda options: options,
                             transcribe=transcribe,
                             transcribe_batch=lambda items: [transcribe(*item) for item in items])
    front = AsyncASR(engine)
    return front, lambda: front.transcribe(np.zeros(1600, dtype=np.float32))


def embedding_front(gate: Gate) -> tuple[AsyncEmbedder, callable]:
    def encode_ids(rows):
        gate.pass_through()
        return np.ones((len(rows), 4), dtype=np.float32)

    engine = SimpleNamespace(name="fake-embedder", model=object(), batch_size=8, check_dimensions=lambda d: None,
                             tokenize=lambda inputs: [[1, 2]] * len(inputs), encode_ids=encode_ids,
                             finish=lambda part, dims: part)
    front = AsyncEmbedder(engine)
    return front, lambda: front.embed(["hello"])


def tts_front(gate: Gate) -> tuple[AsyncTTS, callable]:
    def synthesize(text, voice, speed):
        gate.pass_through()
        return np.zeros(160, dtype=np.float32)

    backend = SimpleNamespace(sample_rate=16000, max_input_chars=200, speakable=lambda text: True,
                              voice=lambda name: SimpleNamespace(name="one"), synthesize=synthesize)
    front = AsyncTTS(backend)

    async def speak():
        return [chunk async for chunk in await front.stream("Hello there.")]
    return front, speak


@pytest.fixture(scope="module")
def silero() -> SileroVAD:
    vad = SileroVAD()
    vad.load()
    yield vad
    vad.close()


def vad_front(gate: Gate, silero: SileroVAD) -> tuple[AsyncVAD, callable]:
    class HeldVAD:
        """The real net, scored only once the gate lets it."""

        def stream(self, *args):
            return silero.stream(*args)

        def score(self, states, windows):
            gate.pass_through()
            return silero.score(states, windows)

    front = AsyncVAD(HeldVAD())

    async def feed():
        return await front.feed(await front.open_stream(), np.zeros(1024, dtype=np.float32))
    return front, feed


KINDS = {"asr": asr_front, "embedding": embedding_front, "tts": tts_front, "vad": vad_front}


def make(kind: str, gate: Gate, silero: SileroVAD):
    return vad_front(gate, silero) if kind == "vad" else KINDS[kind](gate)


@pytest.mark.parametrize("kind", KINDS)
def test_a_fault_is_engine_failed_and_the_front_serves_on(kind, silero):
    gate = Gate()
    gate.open.set()
    front, request = make(kind, gate, silero)
    gate.fail = True
    with pytest.raises(EngineFailedError, match="device fault"):
        asyncio.run(request())
    gate.fail = False
    assert asyncio.run(request()) is not None and front.is_alive() and front.num_open() == 0
    front.shutdown()


@pytest.mark.parametrize("kind", KINDS)
def test_shutdown_finishes_the_running_request_and_fails_the_queued(kind, silero):
    gate = Gate()
    front, request = make(kind, gate, silero)

    async def scenario():
        running = asyncio.ensure_future(request())
        await asyncio.to_thread(gate.entered.wait, 30)          # the first request is inside the engine
        queued = asyncio.ensure_future(request())
        while front.num_open() < 2:                               # the second is admitted behind it
            await asyncio.sleep(0.01)
        stopping = asyncio.ensure_future(asyncio.to_thread(front.shutdown))
        while front.is_alive():                                   # stop is set before the gate opens
            await asyncio.sleep(0.01)
        gate.open.set()
        await stopping
        return await asyncio.gather(running, queued, return_exceptions=True)

    first, second = asyncio.run(scenario())
    assert not isinstance(first, BaseException), first
    assert isinstance(second, EngineDeadError) and "shut down" in str(second)
    with pytest.raises(EngineDeadError, match="has stopped"):
        asyncio.run(request())


@pytest.mark.parametrize("device, batches", [
    ("cpu", [["final", "final"], ["draft"], ["draft"]]),     # a batch costs the sum of its rows: drafts go alone
    ("cuda", [["final", "final", "draft"], ["draft"]])])     # rows run side by side: drafts ride along, up to 3
def test_the_asr_batches_what_waits_by_how_its_device_runs_rows(device, batches):
    engine = SimpleNamespace(name="fake-asr", device=device, batch_size=3)
    front = AsyncASR(engine)
    loop = asyncio.new_event_loop()
    waiting = deque(Job((np.zeros(1600, dtype=np.float32), TranscribeOptions(temperature=0.0, draft=draft), 0.0),
                        loop, lambda outcome: None) for draft in (True, False, True, False))
    taken = []
    while waiting:
        taken.append(["draft" if job.payload[1].draft else "final" for job in front._next_work(waiting)])
    front.shutdown()
    loop.close()
    assert taken == batches
