"""The ASR engine for asyncio servers: one worker thread runs transcriptions one at a time from a bounded queue.

A transcription holds the model for its whole length, so requests wait their turn rather than run on top of
each other; the event loop only ever awaits a future. A full queue is refused at once (EngineBusyError: 429).
"""
from __future__ import annotations

import asyncio
import logging
import queue
import threading
from dataclasses import dataclass

import numpy as np

from engines.asr.outputs import TranscribeOptions, Transcription
from engines.asr.whisper import WhisperASR
from engines.errors import EngineBusyError, EngineDeadError, EngineFailedError

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Job:
    audio: np.ndarray
    options: TranscribeOptions
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future


class AsyncASR:
    def __init__(self, engine: WhisperASR, max_pending: int = 64) -> None:
        self.engine = engine
        self.max_pending = max_pending
        self._jobs: queue.Queue[_Job | None] = queue.Queue(maxsize=max_pending)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"asr-{engine.name}", daemon=True)
        self._thread.start()

    async def transcribe(self, audio: np.ndarray, options: TranscribeOptions | None = None) -> Transcription:
        """Queue one transcription and await it; OptionError at once for options the model cannot honour."""
        if not self.is_alive():
            raise EngineDeadError(f"the speech-to-text engine {self.engine.name!r} has stopped")
        options = self.engine.check(options or TranscribeOptions())
        loop = asyncio.get_running_loop()
        job = _Job(audio, options, loop, loop.create_future())
        try:
            self._jobs.put_nowait(job)
        except queue.Full:
            raise EngineBusyError(f"{self.max_pending} transcriptions are already waiting for "
                                  f"{self.engine.name!r}") from None
        return await job.future

    def is_alive(self) -> bool:
        return self._thread.is_alive() and not self._stopping.is_set()

    def shutdown(self) -> None:
        """Stop the worker after the transcription it is running; those still queued fail with EngineDeadError."""
        self._stopping.set()
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                _settle(job, error=EngineDeadError(f"the speech-to-text engine {self.engine.name!r} was shut down"))
        try:
            self._jobs.put_nowait(None)  # wakes the worker if it is waiting for a job
        except queue.Full:
            pass
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stopping.is_set():
            job = self._jobs.get()
            if job is None or job.future.done():  # a wake-up, or a client that went away while it waited
                continue
            if self._stopping.is_set():
                _settle(job, error=EngineDeadError(f"the speech-to-text engine {self.engine.name!r} was shut down"))
                continue
            try:
                result = self.engine.transcribe(job.audio, job.options)
            except ValueError as error:
                _settle(job, error=error)
            except Exception as error:  # a failure on one request must not stop the worker for the rest
                log.exception("transcription failed")
                _settle(job, error=EngineFailedError(f"the speech-to-text engine failed on this request: {error}"))
            else:
                _settle(job, result=result)


def _settle(job: _Job, result: Transcription | None = None, error: BaseException | None = None) -> None:
    """Hand the outcome to the request's own event loop, unless the request was cancelled meanwhile."""

    def deliver() -> None:
        if job.future.done():
            return
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(result)

    try:
        job.loop.call_soon_threadsafe(deliver)
    except RuntimeError:  # the loop is closed: nobody is waiting any more
        pass
