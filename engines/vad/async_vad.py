"""The VAD for asyncio servers: one thread scores every stream's audio, batching streams that wait together."""
from __future__ import annotations

import itertools
from collections import deque

import numpy as np

from engines.errors import EngineInputError
from engines.front import EngineFront, Job
from engines.vad.silero import SileroVAD
from engines.vad.stream import VADEvent, VADStream, as_samples

_stream_ids = itertools.count()


class AsyncVAD(EngineFront):
    """Streams are named by id so the same methods can be served over IPC; jobs of one stream run in order."""

    runs_abandoned = True   # a stream's state must see all of its audio, even audio whose caller stopped waiting

    def __init__(self, vad: SileroVAD, max_pending: int = 1024) -> None:
        self.vad = vad
        self._streams: dict[str, VADStream] = {}
        super().__init__("the VAD engine", max_pending, "vad-engine")

    async def open_stream(self, threshold: float | None = None, min_silence_ms: int = 300,
                          speech_pad_ms: int = 30, min_speech_ms: int = 100) -> str:
        """A new stream's id; ValueError names a bad setting."""
        self.check_alive()
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

    async def _submit(self, stream_id: str, samples: np.ndarray | None) -> list[VADEvent]:
        """Queue audio (None: a flush) for a stream."""
        self.check_alive()
        stream = self._streams.get(stream_id)
        if stream is None:
            raise EngineInputError(f"no open VAD stream {stream_id!r}; open one with open_stream()", "stream_id")
        return await self._call((stream, samples))

    def _next_work(self, waiting: deque[Job]) -> list[Job]:
        """The first waiting job of each stream, scored as one batch; a stream's later jobs wait a round."""
        round_, later, seen = [], deque(), set()
        for job in waiting:
            stream = job.payload[0]
            (later if id(stream) in seen else round_).append(job)
            seen.add(id(stream))
        waiting.clear()
        waiting.extend(later)
        return round_

    def _run(self, work: list[Job]) -> None:
        taken = [stream.take(samples) for stream, samples in (job.payload for job in work)]
        probs = self.vad.score([job.payload[0].state for job in work], [windows for _, windows in taken])
        for job, (first, _), p in zip(work, taken, probs):
            stream, samples = job.payload
            self._settle(job, stream.settle(p, first, ending=samples is None))
