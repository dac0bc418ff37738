"""The TTS engine for asyncio servers: one worker thread speaks pieces, round-robin across requests.

A request's text is split into pieces up front; the worker takes one piece from each request in turn,
so a long text never holds back a short one, and each piece's audio goes to its request the moment it
exists. Closing a request's stream drops its queued pieces. The event log (`events()`) records what was
queued, synthesised and dropped with one sequence number, so tests can prove order without clocks.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from engines.errors import EngineBusyError, EngineDeadError, EngineFailedError, EngineInputError
from engines.tts.backend import TTSBackend, Voice, check_speed
from engines.tts.text_split import split_text

log = logging.getLogger(__name__)
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
class _Request:
    id: str
    pieces: deque[tuple[int, str]]
    voice: str | None
    speed: float
    loop: asyncio.AbstractEventLoop
    out: asyncio.Queue


class SpeechStream:
    """One request's audio, piece by piece in order; aclose() (or leaving it) drops what is still queued."""

    def __init__(self, tts: AsyncTTS, request: _Request, num_pieces: int) -> None:
        self._tts, self._request = tts, request
        self.request_id, self.num_pieces = request.id, num_pieces
        self._next = 0

    def __aiter__(self) -> SpeechStream:
        return self

    async def __anext__(self) -> AudioChunk:
        if self._next >= self.num_pieces:
            raise StopAsyncIteration
        item = await self._request.out.get()
        if isinstance(item, BaseException):
            self._next = self.num_pieces
            self._tts._close(self.request_id)
            raise item
        self._next += 1
        if self._next == self.num_pieces:
            self._tts._close(self.request_id)
        return item

    async def aclose(self) -> None:
        self._next = self.num_pieces
        self._tts._close(self.request_id)

    def __del__(self) -> None:
        if self._next < self.num_pieces:  # a stream nobody finished or closed still gives its slot back
            self._tts._close(self.request_id)


class AsyncTTS:
    def __init__(self, backend: TTSBackend, max_pending: int = 64, max_events: int = 10_000) -> None:
        self.backend = backend
        self.max_pending = max_pending
        self._events: deque[TTSEvent] = deque(maxlen=max_events)
        self.before_piece: Callable[[], None] | None = None  # runs on the worker before each piece; tests hold it here
        self._seq = itertools.count()
        self._cond = threading.Condition(threading.RLock())
        self._requests: OrderedDict[str, _Request] = OrderedDict()
        self._turn: deque[str] = deque()  # requests with pieces left, in round-robin order
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="tts-engine", daemon=True)
        self._thread.start()

    @property
    def sample_rate(self) -> int:
        return self.backend.sample_rate

    async def voices(self) -> list[Voice]:
        return self.backend.listed_voices()

    def events(self) -> list[TTSEvent]:
        """The latest events, oldest first."""
        with self._cond:
            return list(self._events)

    def num_open(self) -> int:
        """Requests holding a slot: pieces queued, or audio not yet read."""
        with self._cond:
            return len(self._requests)

    async def stream(self, text: str, voice: str | None = None, speed: float = 1.0) -> SpeechStream:
        """Queue a text; bad input (ValueError), no room (EngineBusyError) or no worker raise here, not mid-stream."""
        self._check_room()
        check_speed(speed)
        voice = self.backend.voice(voice).name
        pieces = await asyncio.to_thread(self._speakable_pieces, text)
        request = _Request(f"tts-{next(_request_ids)}", deque(enumerate(pieces)), voice, speed,
                           asyncio.get_running_loop(), asyncio.Queue())
        with self._cond:
            self._check_room()
            self._requests[request.id] = request
            self._turn.append(request.id)
            for index, _ in request.pieces:
                self._record("queued", request.id, index)
            self._cond.notify()
        return SpeechStream(self, request, len(pieces))

    def is_alive(self) -> bool:
        return self._thread.is_alive() and not self._stopping

    def shutdown(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout=10)

    def _check_room(self) -> None:
        if not self.is_alive():
            raise EngineDeadError("the TTS worker has stopped")
        if len(self._requests) >= self.max_pending:
            raise EngineBusyError(f"{len(self._requests)} speech requests are already open (the limit is "
                               f"{self.max_pending})")

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

    def _close(self, request_id: str) -> None:
        """Give the request's slot back and drop its queued pieces; safe to call twice."""
        with self._cond:
            request = self._requests.pop(request_id, None)
            if request is None:
                return
            for index, _ in request.pieces:
                self._record("dropped", request_id, index)
            request.pieces.clear()

    def _next_piece(self) -> tuple[_Request, int, str] | None:
        """The next request in turn gives one piece, and goes to the back of the line if it has more."""
        while self._turn:
            request = self._requests.get(self._turn.popleft())
            if request is None or not request.pieces:
                continue
            index, text = request.pieces.popleft()
            if request.pieces:
                self._turn.append(request.id)
            return request, index, text
        return None

    def _deliver(self, request: _Request, item: AudioChunk | BaseException) -> None:
        try:
            request.loop.call_soon_threadsafe(request.out.put_nowait, item)
        except RuntimeError:  # the request's event loop is gone; nobody is listening
            self._close(request.id)

    def _loop(self) -> None:
        try:
            while self._serve_one():
                pass
        except Exception:  # a bug here must not leave clients waiting forever
            log.exception("the TTS worker failed")
        finally:
            self._stopping = True
            with self._cond:
                requests = list(self._requests.values())
            for request in requests:
                self._deliver(request, EngineDeadError("the TTS worker stopped before this request finished"))

    def _serve_one(self) -> bool:
        """Synthesise one piece; False once shutting down."""
        with self._cond:
            while not self._stopping and not self._turn:
                self._cond.wait()
            if self._stopping:
                return False
        if self.before_piece is not None:
            self.before_piece()
        with self._cond:
            job = self._next_piece()
        if job is None:
            return True
        request, index, text = job
        try:
            pcm = self.backend.synthesize(text, request.voice, request.speed)
        except Exception as error:  # one bad piece ends its request, not the worker
            log.exception("TTS failed on piece %d of %s", index, request.id)
            with self._cond:
                self._record("failed", request.id, index)
                for rest, _ in request.pieces:
                    self._record("dropped", request.id, rest)
                request.pieces.clear()
            self._deliver(request, EngineFailedError(f"speech synthesis failed: {error}"))
            return True
        with self._cond:
            self._record("synthesised", request.id, index)
        self._deliver(request, AudioChunk(pcm, self.backend.sample_rate, index, text))
        return True
