"""The engine for asyncio servers in the same process: the shared step loop on a thread, a generator per request.

Closing a request's generator (client gone, barge-in) aborts it; its blocks are free before the next
step runs. The LLM worker runs the same `EngineLoop`, so both paths behave alike.
"""
from __future__ import annotations

import itertools
import threading
from collections.abc import AsyncIterator
from contextlib import aclosing

from engines.errors import EngineDeadError
from engines.llm.config import EngineConfig
from engines.llm.engine_loop import EngineLoop
from engines.llm.llm_engine import LLMEngine
from engines.llm.outputs import EngineStats, RequestOutput
from engines.llm.requests import AbortRequest, AddRequest
from engines.llm.sampling_params import SamplingParams
from engines.llm.requests import Priority
from engines.request_streams import RequestStreams

_request_ids = itertools.count()


class AsyncLLM:
    def __init__(self, engine: LLMEngine, max_pending: int = 256) -> None:
        self.engine = engine
        self.tokenizer = engine.tokenizer
        self._streams = RequestStreams("the LLM engine", max_pending)
        self._stats = engine.stats()
        self._loop = EngineLoop(engine, self._emit, self._streams.post)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop.run, name="llm-engine", daemon=True)
        self._thread.start()

    @classmethod
    def from_config(cls, config: EngineConfig, max_pending: int = 256) -> AsyncLLM:
        return cls(LLMEngine(config), max_pending)

    async def generate(self, prompt: str | list[int], params: SamplingParams | None = None,
                       request_id: str | None = None, priority: Priority | str = Priority.INTERACTIVE
                       ) -> AsyncIterator[RequestOutput]:
        """Stream a request's outputs step by step; raises EngineInputError for a request that can never run."""
        if not self.is_alive():
            raise EngineDeadError("the LLM engine loop has stopped")
        request_id = request_id or f"req-{next(_request_ids)}"
        replies = self._streams.open(request_id)
        self._loop.submit(AddRequest(request_id, prompt, params, priority))
        async with aclosing(self._streams.follow(request_id, replies, lambda out: out.finished,
                                                 lambda: self.abort(request_id))) as outputs:
            async for out in outputs:
                yield out

    @property
    def stats(self) -> EngineStats:
        """The engine's load after its latest step."""
        return self._stats

    def is_alive(self) -> bool:
        return self._thread.is_alive() and not self._stopping.is_set()

    def abort(self, request_id: str) -> None:
        self._loop.submit(AbortRequest(request_id))

    def shutdown(self) -> None:
        """Stop the loop; every request still streaming ends with EngineDeadError instead of waiting forever."""
        self._stopping.set()
        self._loop.stop()
        self._thread.join(timeout=30)
        self._streams.fail_all(EngineDeadError("the LLM engine was shut down"))

    def _emit(self, outputs: list[RequestOutput], stats: EngineStats) -> None:
        self._stats = stats
        for out in outputs:
            self._streams.post(out.request_id, out)
