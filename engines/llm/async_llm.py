"""The engine for asyncio servers in the same process: the shared step loop on a thread, a generator per request.

Closing a request's generator (client gone, barge-in) aborts it; its blocks are free before the next
step runs. The LLM worker runs the same `EngineLoop`, so both paths behave alike.
"""
from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import AsyncIterator

from engines.errors import EngineBusyError, EngineDeadError
from engines.llm.config import EngineConfig
from engines.llm.engine_loop import EngineLoop
from engines.llm.llm_engine import LLMEngine
from engines.llm.outputs import EngineStats, RequestOutput
from engines.llm.requests import AbortRequest, AddRequest
from engines.llm.sampling_params import SamplingParams
from engines.llm.sequence import Priority

_request_ids = itertools.count()


class AsyncLLM:
    def __init__(self, engine: LLMEngine, max_pending: int = 256) -> None:
        self.engine = engine
        self.max_pending = max_pending
        self.tokenizer = engine.tokenizer
        self._streams: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = {}
        self._stats = engine.stats()
        self._loop = EngineLoop(engine, self._emit, self._deliver)
        self._stopping = False
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
        if len(self._streams) >= self.max_pending:
            raise EngineBusyError(f"{len(self._streams)} requests are already in flight (the limit is "
                                  f"{self.max_pending})")
        request_id = request_id or f"req-{next(_request_ids)}"
        stream: asyncio.Queue = asyncio.Queue()
        self._streams[request_id] = (asyncio.get_running_loop(), stream)
        self._loop.submit(AddRequest(request_id, prompt, params, priority))
        finished = False
        try:
            while True:
                item = await stream.get()
                if isinstance(item, BaseException):
                    finished = True
                    raise item
                finished = item.finished
                yield item
                if finished:
                    return
        finally:
            self._streams.pop(request_id, None)
            if not finished:
                self._loop.submit(AbortRequest(request_id))

    @property
    def stats(self) -> EngineStats:
        """The engine's load after its latest step."""
        return self._stats

    def is_alive(self) -> bool:
        return self._thread.is_alive() and not self._stopping

    def abort(self, request_id: str) -> None:
        self._loop.submit(AbortRequest(request_id))

    def shutdown(self) -> None:
        """Stop the loop; every request still streaming ends with EngineDeadError instead of waiting forever."""
        self._stopping = True
        self._loop.stop()
        self._thread.join(timeout=10)
        for request_id in list(self._streams):
            self._deliver(request_id, EngineDeadError("the LLM engine was shut down"))

    def _emit(self, outputs: list[RequestOutput], stats: EngineStats) -> None:
        self._stats = stats
        for out in outputs:
            self._deliver(out.request_id, out)

    def _deliver(self, request_id: str, item: RequestOutput | BaseException) -> None:
        target = self._streams.get(request_id)
        if target is not None:
            loop, stream = target
            loop.call_soon_threadsafe(stream.put_nowait, item)
