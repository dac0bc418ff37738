"""The ASR engine for asyncio servers: one worker thread runs transcriptions one at a time.

A transcription holds the model for its whole length, so requests wait their turn rather than run on top of
each other; the event loop only ever awaits a future. Past `max_pending` a request is refused at once
(EngineBusyError: 429).
"""
from __future__ import annotations

import numpy as np

from engines.asr.outputs import TranscribeOptions, Transcription
from engines.asr.whisper import WhisperASR
from engines.front import EngineFront, Job


class AsyncASR(EngineFront):
    def __init__(self, engine: WhisperASR, max_pending: int = 64) -> None:
        self.engine = engine
        super().__init__(f"the speech-to-text engine {engine.name!r}", max_pending, f"asr-{engine.name}")

    async def transcribe(self, audio: np.ndarray, options: TranscribeOptions | None = None) -> Transcription:
        """Queue one transcription and await it; OptionError at once for options the model cannot honour."""
        self.check_alive()
        options = self.engine.check(options or TranscribeOptions())
        return await self._call((audio, options))

    def _run(self, work: list[Job]) -> None:
        for job in work:
            audio, options = job.payload
            try:
                result = self.engine.transcribe(audio, options)
            except ValueError as error:  # the audio cannot be transcribed as sent: the client's error
                self._settle(job, error)
            else:
                self._settle(job, result)
