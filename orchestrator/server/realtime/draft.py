"""Work begun on a pause, before anyone knows it ends the turn: the words so far, and the answer started on them.

If the pause ends the turn, the session takes both: no second transcription, and the answer's first
tokens may already be waiting. If the user goes on, the draft is cancelled: its LLM request is aborted
and its KV blocks come back. Nothing of it reaches the client before the turn has ended.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from engines.asr.outputs import Transcription
from engines.llm.outputs import RequestOutput
from engines.llm.sampling_params import SamplingParams
from engines.llm.sequence import Priority
from engines.protocols import LLMProtocol


class Prefetch:
    """An LLM request started early; its outputs wait in a queue until a response reads them."""

    def __init__(self, llm: LLMProtocol, prompt_ids: list[int], params: SamplingParams) -> None:
        self.prompt_ids, self.params = prompt_ids, params
        self._queue: asyncio.Queue[RequestOutput | BaseException | None] = asyncio.Queue()
        self._task = asyncio.create_task(self._pump(llm.generate(prompt_ids, params, priority=Priority.INTERACTIVE)))

    async def _pump(self, stream: AsyncIterator[RequestOutput]) -> None:
        try:
            async for out in stream:
                self._queue.put_nowait(out)
        except Exception as error:  # the engine's refusal or failure, raised where the response reads it
            self._queue.put_nowait(error)
        finally:
            self._queue.put_nowait(None)

    async def outputs(self) -> AsyncIterator[RequestOutput]:
        """The request's outputs, those that came early first; closing this aborts the request."""
        try:
            while (item := await self._queue.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Abort the request (cancelling the reader closes the engine's stream, which aborts it)."""
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

    async def take(self, prompt_ids: list[int], params: SamplingParams) -> Prefetch | None:
        """The early answer when it was started on exactly this prompt (the taker closes it); else it is aborted."""
        prefetch, self.prefetch = self.prefetch, None
        if prefetch is None or (prefetch.prompt_ids == prompt_ids and prefetch.params == params):
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
