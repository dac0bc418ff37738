"""The VAD for asyncio servers: one thread scores every stream's audio, batching streams that wait together."""
from __future__ import annotations

import asyncio
import itertools
import logging
import queue
import threading
from dataclasses import dataclass

import numpy as np

from engines.errors import EngineBusyError, EngineDeadError, EngineInputError
from engines.vad.silero import SileroVAD
from engines.vad.stream import VADEvent, VADStream, as_samples

log = logging.getLogger(__name__)
_stream_ids = itertools.count()


@dataclass(slots=True)
class _Job:
    stream: VADStream
    samples: np.ndarray | None  # None: flush
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future


class AsyncVAD:
    """Streams are named by id so the same methods can later be served over IPC; jobs of one stream run in order."""

    def __init__(self, vad: SileroVAD, max_pending: int = 1024) -> None:
        self.vad = vad
        self.max_pending = max_pending
        self._streams: dict[str, VADStream] = {}
        self._inbox: queue.Queue[_Job | None] = queue.Queue(maxsize=max_pending)
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="vad-engine", daemon=True)
        self._thread.start()

    async def open_stream(self, threshold: float | None = None, min_silence_ms: int = 300,
                          speech_pad_ms: int = 30, min_speech_ms: int = 100) -> str:
        """A new stream's id; ValueError names a bad setting."""
        self._check_alive()
        stream_id = f"vad-{next(_stream_ids)}"
        self._streams[stream_id] = self.vad.stream(threshold, min_silence_ms, speech_pad_ms, min_speech_ms)
        return stream_id

    async def feed(self, stream_id: str, pcm: np.ndarray) -> list[VADEvent]:
        """Add 16 kHz mono audio (float32 or int16) to a stream; the events it completes."""
        return await self._submit(stream_id, as_samples(pcm))

    async def flush(self, stream_id: str) -> list[VADEvent]:
        """End a stream's audio: close an open segment and start its net afresh."""
        return await self._submit(stream_id, None)

    async def close_stream(self, stream_id: str) -> None:
        self._streams.pop(stream_id, None)

    def is_alive(self) -> bool:
        return self._thread.is_alive() and not self._stopping

    def shutdown(self) -> None:
        """Stop the thread after the batch in hand; waiting callers get EngineDeadError."""
        self._stopping = True
        try:
            self._inbox.put_nowait(None)
        except queue.Full:
            pass
        self._thread.join(timeout=10)
        self._fail_waiting()

    async def _submit(self, stream_id: str, samples: np.ndarray | None) -> list[VADEvent]:
        self._check_alive()
        stream = self._streams.get(stream_id)
        if stream is None:
            raise EngineInputError(f"no open VAD stream {stream_id!r}; open one with open_stream()", "stream_id")
        loop = asyncio.get_running_loop()
        job = _Job(stream, samples, loop, loop.create_future())
        try:
            self._inbox.put_nowait(job)
        except queue.Full:
            raise EngineBusyError(f"{self.max_pending} VAD jobs are already waiting; retry shortly") from None
        return await job.future

    def _check_alive(self) -> None:
        if not self.is_alive():
            raise EngineDeadError("the VAD engine thread has stopped")

    def _loop(self) -> None:
        while not self._stopping:
            jobs = [self._inbox.get()]
            while True:
                try:
                    jobs.append(self._inbox.get_nowait())
                except queue.Empty:
                    break
            jobs = [job for job in jobs if job is not None]
            while jobs and not self._stopping:
                jobs = self._run_round(jobs)
            for job in jobs:
                _deliver(job, EngineDeadError("the VAD engine was shut down"))
        self._fail_waiting()

    def _run_round(self, jobs: list[_Job]) -> list[_Job]:
        """Score the first waiting job of each stream in one batch; the rest wait for the next round."""
        round_, later, seen = [], [], set()
        for job in jobs:
            (later if id(job.stream) in seen else round_).append(job)
            seen.add(id(job.stream))
        try:
            taken = [job.stream.take(job.samples) for job in round_]
            probs = self.vad.score([job.stream.state for job in round_], [windows for _, windows in taken])
            results: list[list[VADEvent] | BaseException] = [
                job.stream.settle(p, first, ending=job.samples is None)
                for job, (first, _), p in zip(round_, taken, probs)]
        except Exception as exc:  # an engine fault fails this round's callers; the thread keeps serving
            log.exception("VAD batch of %d streams failed", len(round_))
            results = [exc] * len(round_)
        for job, result in zip(round_, results):
            _deliver(job, result)
        return later

    def _fail_waiting(self) -> None:
        while True:
            try:
                job = self._inbox.get_nowait()
            except queue.Empty:
                return
            if job is not None:
                _deliver(job, EngineDeadError("the VAD engine was shut down"))


def _deliver(job: _Job, result: list[VADEvent] | BaseException) -> None:
    """Hand a result to the caller's event loop; a loop already closed has no one waiting."""
    try:
        job.loop.call_soon_threadsafe(_resolve, job.future, result)
    except RuntimeError:
        pass


def _resolve(future: asyncio.Future, result: list[VADEvent] | BaseException) -> None:
    if future.done():
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)
