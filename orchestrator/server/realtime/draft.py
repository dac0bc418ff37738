"""Work begun on a pause, before anyone knows it ends the turn: the words so far, and the answer started on them.

If the pause ends the turn, the session takes both: no second transcription, and the answer's first
tokens may already be waiting. If the user goes on, the draft is cancelled: its LLM request is aborted
and its KV blocks come back. Nothing of it reaches the client before the turn has ended.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from engines.asr.outputs import Transcription
from orchestrator.server.realtime.answers import AnswerDelta, Answers, Prompt


class Prefetch:
    """An answer started early; its deltas wait in a queue until a response reads them."""

    def __init__(self, answers: Answers, prompt: Prompt) -> None:
        self.prompt = prompt
        self._queue: asyncio.Queue[AnswerDelta | BaseException | None] = asyncio.Queue()
        self._task = asyncio.create_task(self._pump(answers.answer(prompt)))

    async def _pump(self, stream: AsyncIterator[AnswerDelta]) -> None:
        try:
            async for out in stream:
                self._queue.put_nowait(out)
        except Exception as error:  # the engine's refusal or failure, raised where the response reads it
            self._queue.put_nowait(error)
        finally:
            await stream.aclose()
            self._queue.put_nowait(None)

    async def outputs(self) -> AsyncIterator[AnswerDelta]:
        """The answer's deltas, those that came early first; closing this stops the answer."""
        try:
            while (item := await self._queue.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Stop the answer (cancelling the reader closes its stream: our engine aborts, an upstream is hung up)."""
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


class Draft:
    """One pause's work: its transcription and, when the session may answer, the answer started early."""

    def __init__(self, item_id: str, samples: int) -> None:
        self.item_id, self.samples = item_id, samples
        self.transcription: asyncio.Future[Transcription] = asyncio.get_running_loop().create_future()
        self.prefetch: Prefetch | None = None
        self.task: asyncio.Task | None = None

    def covers(self, item_id: str, audio_samples: int) -> bool:
        """Whether the turn that ended is exactly what this draft heard (the same item, up to the same sample)."""
        return item_id == self.item_id and audio_samples == self.samples

    async def take(self, prompt: Prompt) -> Prefetch | None:
        """The early answer when it was started on exactly this prompt (the taker closes it); else it is aborted."""
        prefetch, self.prefetch = self.prefetch, None
        if prefetch is None or prefetch.prompt == prompt:
            return prefetch
        await prefetch.aclose()
        return None

    async def cancel(self) -> bool:
        """Stop the draft's work; True when it had started an answer (now aborted)."""
        if self.task is not None and self.task is not asyncio.current_task():
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        if not self.transcription.done():
            self.transcription.cancel()
        elif not self.transcription.cancelled():
            self.transcription.exception()  # a failed recognition nobody waited for is not worth a warning
        prefetch, self.prefetch = self.prefetch, None
        if prefetch is not None:
            await prefetch.aclose()
        return prefetch is not None
