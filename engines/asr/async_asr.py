"""The ASR engine for asyncio servers: one worker thread runs what is waiting as one batch, finals first.

Whatever is queued when the engine comes free runs together (up to `max_batch` windows): final
transcriptions (a turn's end, an HTTP request) before any realtime draft, so a pause's guess never holds
back someone's answer. On a GPU a batch's rows run side by side, nearly free, so drafts ride along with finals.
On a CPU a batch costs about the sum of its rows and hands every result back at the end: finals (whose callers
wait for the whole answer) batch only with finals, and drafts run one at a time, so no final waits behind more
than one draft. A draft whose caller has stopped waiting (the user went on speaking) is dropped before it runs.
Short greedy transcriptions share one batch through CTranslate2; the rest (long audio, sampling, timestamps) run
one at a time. Past `max_pending` a request is refused at once (EngineBusyError).
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import replace

import numpy as np

from engines.asr.batch import batchable
from engines.asr.outputs import TranscribeOptions, Transcription
from engines.asr.whisper import WhisperASR, checked_audio
from engines.front import EngineFront, Job


class AsyncASR(EngineFront):
    def __init__(self, engine: WhisperASR, max_pending: int = 64) -> None:
        self.engine = engine
        self.max_batch = max(1, engine.batch_size)
        self.rows_in_parallel = engine.device.startswith("cuda")
        super().__init__(f"the speech-to-text engine {engine.name!r}", max_pending, f"asr-{engine.name}")

    async def transcribe(self, audio: np.ndarray, options: TranscribeOptions | None = None) -> Transcription:
        """Queue one transcription and await it; OptionError at once for options the model cannot honour."""
        self.check_alive()
        options = self.engine.check(options or TranscribeOptions())
        return await self._call((checked_audio(audio), options, time.monotonic()))

    def _next_work(self, waiting: deque[Job]) -> list[Job]:
        """Finals before drafts, in arrival order within each, up to max_batch; long or sampled ones run alone."""
        ordered = sorted(waiting, key=lambda job: job.payload[1].draft)
        first = ordered[0]
        if not batchable(first.payload[0], first.payload[1]):
            waiting.remove(first)
            return [first]
        draft = first.payload[1].draft
        work = [job for job in ordered if not job.abandoned and batchable(job.payload[0], job.payload[1])
                and (self.rows_in_parallel or job.payload[1].draft == draft)]
        size = 1 if draft and not self.rows_in_parallel else self.max_batch
        work = work[:size] or [first]
        for job in work:
            waiting.remove(job)
        return work

    def _run(self, work: list[Job]) -> None:
        started = time.monotonic()
        if len(work) == 1 or not batchable(work[0].payload[0], work[0].payload[1]):
            for job in work:
                audio, options, queued = job.payload
                try:
                    result = self.engine.transcribe(audio, options)
                except ValueError as error:  # the audio cannot be transcribed as sent: the client's error
                    self._settle(job, error)
                else:
                    self._settle(job, replace(result, queue_seconds=started - queued))
            return
        results = self.engine.transcribe_batch([(job.payload[0], job.payload[1]) for job in work])
        for job, result in zip(work, results):
            self._settle(job, replace(result, batch_size=len(work), queue_seconds=started - job.payload[2]))
