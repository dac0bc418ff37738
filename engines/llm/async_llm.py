"""The engine for asyncio servers: one thread steps the engine; each request is an async generator.

Requests and aborts reach the loop thread through a queue, so the engine is only touched by that
thread. Closing a request's generator (client gone, barge-in) aborts it; its blocks are free
before the next step runs.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import queue
import threading
from collections.abc import AsyncIterator

from engines.errors import EngineBusyError, EngineDeadError
from engines.llm.config import EngineConfig
from engines.llm.llm_engine import LLMEngine
from engines.llm.outputs import EngineStats, RequestOutput
from engines.llm.sampling_params import SamplingParams
from engines.llm.sequence import Priority

log = logging.getLogger(__name__)
_request_ids = itertools.count()


class AsyncLLM:
    def __init__(self, engine: LLMEngine, max_pending: int = 256) -> None:
        self.engine = engine
        self.max_pending = max_pending
        self.tokenizer = engine.tokenizer
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._streams: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = {}
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="llm-engine", daemon=True)
        self._thread.start()

    @classmethod
    def from_config(cls, config: EngineConfig, max_pending: int = 256) -> AsyncLLM:
        return cls(LLMEngine(config), max_pending)

    async def generate(self, prompt: str | list[int], params: SamplingParams | None = None,
                       request_id: str | None = None, priority: Priority | str = Priority.INTERACTIVE
                       ) -> AsyncIterator[RequestOutput]:
        """Stream a request's outputs step by step; raises ValueError for a request that can never run."""
        if not self.is_alive():
            raise EngineDeadError("the LLM engine loop has stopped")
        if len(self._streams) >= self.max_pending:
            raise EngineBusyError(f"{len(self._streams)} requests are already in flight (the limit is "
                                  f"{self.max_pending})")
        request_id = request_id or f"req-{next(_request_ids)}"
        stream: asyncio.Queue = asyncio.Queue()
        self._streams[request_id] = (asyncio.get_running_loop(), stream)
        self._send(("add", request_id, prompt, params, priority))
        finished = False
        try:
            while True:
                item = await stream.get()
                if isinstance(item, BaseException):
                    raise item
                finished = item.finished
                yield item
                if finished:
                    return
        finally:
            self._streams.pop(request_id, None)
            if not finished:
                self._send(("abort", request_id))

    @property
    def stats(self) -> EngineStats:
        return self.engine.stats()

    def is_alive(self) -> bool:
        return self._thread.is_alive() and not self._stopping

    def abort(self, request_id: str) -> None:
        self._send(("abort", request_id))

    def shutdown(self) -> None:
        """Stop the loop; every request still streaming ends with EngineDeadError instead of waiting forever."""
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout=10)
        for request_id in list(self._streams):
            self._deliver(request_id, EngineDeadError("the LLM engine was shut down"))

    def _send(self, command: tuple) -> None:
        self._inbox.put(command)
        self._wake.set()

    def _deliver(self, request_id: str, item: RequestOutput | BaseException) -> None:
        target = self._streams.get(request_id)
        if target is not None:
            loop, stream = target
            loop.call_soon_threadsafe(stream.put_nowait, item)

    def _drain_inbox(self) -> None:
        while True:
            try:
                command = self._inbox.get_nowait()
            except queue.Empty:
                return
            if command[0] == "add":
                _, request_id, prompt, params, priority = command
                try:
                    self.engine.add_request(request_id, prompt, params, priority)
                except Exception as error:  # a bad request is that request's error, never the loop's end
                    self._deliver(request_id, error if isinstance(error, ValueError)
                                  else ValueError(f"the request could not be added: {error}"))
            else:
                self.engine.abort_request(command[1])

    def _loop(self) -> None:
        while not self._stopping:
            self._drain_inbox()
            if not self.engine.has_unfinished_requests():
                self._wake.wait(timeout=1.0)
                self._wake.clear()
                continue
            try:
                outputs = self.engine.step()
            except Exception as error:  # a bug in a step must not strand every waiting client
                log.exception("engine step failed; aborting the requests in flight")
                for request_id in list(self.engine.requests):
                    self.engine.abort_request(request_id)
                    self._deliver(request_id, RuntimeError(f"the LLM engine failed on this request: {error}"))
                continue
            for out in outputs:
                self._deliver(out.request_id, out)
