"""The TTS engine for asyncio servers: one worker thread speaks pieces, round-robin across requests.

A request's text is split into pieces up front; the worker takes one piece from each request in turn,
so a long text never holds back a short one, and each piece's audio goes to its request the moment it
exists. Closing a request's stream drops its queued pieces. The event log (`events()`) records what was
queued, synthesised and dropped with one sequence number, so tests can prove order without clocks.
"""
from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from engines.errors import EngineInputError
from engines.front import EngineFront, Job
from engines.tts.backend import TTSBackend, Voice, check_speed
from engines.tts.text_split import split_text

_request_ids = itertools.count()


@dataclass(slots=True)
class AudioChunk:
    pcm: np.ndarray      # float32 mono in [-1, 1]
    sample_rate: int
    index: int           # the piece's place in its request
    text: str            # what the piece says


@dataclass(slots=True, frozen=True)
class TTSEvent:
    seq: int             # one counter for every event, so order across requests is exact
    kind: str            # "queued" | "synthesised" | "dropped" | "failed"
    request: str
    piece: int


@dataclass(slots=True)
class _Speech:
    id: str
    pieces: deque[tuple[int, str]]   # (index, text) still to synthesise
    voice: str
    speed: float


class SpeechStream:
    """One request's audio, piece by piece in order; aclose() drops what is still queued (whoever opens one closes
    it: the speech route, the realtime response and the worker's pipe each do, in a finally)."""

    def __init__(self, tts: AsyncTTS, job: Job, out: asyncio.Queue, num_pieces: int) -> None:
        self._tts, self._job, self._out = tts, job, out
        self.request_id, self.num_pieces = job.payload.id, num_pieces
        self._next = 0

    def __aiter__(self) -> SpeechStream:
        return self

    async def __anext__(self) -> AudioChunk:
        if self._next >= self.num_pieces:
            raise StopAsyncIteration
        item = await self._out.get()
        if isinstance(item, BaseException):
            self._next = self.num_pieces
            self._tts._close(self._job)
            raise item
        self._next += 1
        if self._next == self.num_pieces:
            self._tts._close(self._job)
        return item

    async def aclose(self) -> None:
        self._next = self.num_pieces
        self._tts._close(self._job)


class AsyncTTS(EngineFront):
    def __init__(self, backend: TTSBackend, max_pending: int = 64, max_events: int = 10_000) -> None:
        self.backend = backend
        self._events: deque[TTSEvent] = deque(maxlen=max_events)
        # Runs on the worker before each piece: the one seam where tests hold the worker between pieces, so they prove
        # order (round robin, drops) by events, not by clocks. It stays: no public behaviour shows that boundary.
        self.before_piece: Callable[[], None] | None = None
        self._seq = itertools.count()
        super().__init__("the text-to-speech engine", max_pending, "tts-engine")

    @property
    def sample_rate(self) -> int:
        return self.backend.sample_rate

    async def voices(self) -> list[Voice]:
        return self.backend.listed_voices()

    def events(self) -> list[TTSEvent]:
        """The latest events, oldest first."""
        with self._lock:
            return list(self._events)

    async def stream(self, text: str, voice: str | None = None, speed: float = 1.0) -> SpeechStream:
        """Queue a text; bad input (ValueError), no room (EngineBusyError) or no worker raise here, not mid-stream."""
        self.check_alive()
        check_speed(speed)
        voice = self.backend.voice(voice).name
        pieces = await asyncio.to_thread(self._speakable_pieces, text)
        speech = _Speech(f"tts-{next(_request_ids)}", deque(enumerate(pieces)), voice, speed)
        out: asyncio.Queue = asyncio.Queue()
        with self._lock:
            job = self._admit(Job(speech, asyncio.get_running_loop(), out.put_nowait))
            for index, _ in speech.pieces:
                self._record("queued", speech.id, index)
        return SpeechStream(self, job, out, len(pieces))

    def _speakable_pieces(self, text: str) -> list[str]:
        if not text.strip():
            raise EngineInputError("input is empty; send the text to speak", "input")
        pieces = [p for p in split_text(text, self.backend.max_input_chars) if self.backend.speakable(p)]
        if not pieces:
            raise EngineInputError("input has nothing this voice can speak (only punctuation, or characters outside "
                                   "the model's alphabet); send text in the model's language", "input")
        return pieces

    def _record(self, kind: str, request: str, piece: int) -> None:
        self._events.append(TTSEvent(next(self._seq), kind, request, piece))

    def _close(self, job: Job) -> None:
        """Give the request's slot back and drop its queued pieces; safe to call twice."""
        with self._lock:
            if not self._finish(job):
                return
            for index, _ in job.payload.pieces:
                self._record("dropped", job.payload.id, index)
            job.payload.pieces.clear()

    def _next_work(self, waiting: deque[Job]) -> list[Job]:
        """Round robin: the request in turn gives one piece (and rejoins the back of the line once it is made)."""
        while waiting:
            job = waiting.popleft()
            if not job.finished and job.payload.pieces:
                return [job]
        return []

    def _run(self, work: list[Job]) -> None:
        """Synthesise the request's next piece and hand it over the moment it exists."""
        if self.before_piece is not None:
            self.before_piece()
        [job] = work
        speech = job.payload
        with self._lock:
            if not speech.pieces:   # closed while the hook held the worker
                return
            index, text = speech.pieces.popleft()
        try:
            pcm = self.backend.synthesize(text, speech.voice, speech.speed)
        except Exception:  # one bad piece ends its request, not the worker (the base delivers the error)
            with self._lock:
                self._record("failed", speech.id, index)
                for rest, _ in speech.pieces:
                    self._record("dropped", speech.id, rest)
                speech.pieces.clear()
            raise
        with self._lock:
            self._record("synthesised", speech.id, index)
            if speech.pieces:
                self._requeue(job)
        job.deliver(AudioChunk(pcm, self.backend.sample_rate, index, text))
