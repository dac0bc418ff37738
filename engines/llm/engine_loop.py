"""The LLM's one step loop, shared by `AsyncLLM` (a thread in the server) and the LLM worker (its main thread).

Requests and aborts arrive as typed commands through a queue, so only the loop's thread touches the
engine. After every step the loop hands that step's outputs (deltas only) and the engine's stats to
`emit`; a request the engine refuses, or a step that fails, reaches `fail` with the request's id.
"""
from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

from engines.errors import EngineFailedError, EngineInputError
from engines.llm.llm_engine import LLMEngine
from engines.llm.outputs import EngineStats, RequestOutput
from engines.llm.requests import AbortRequest, AddRequest

log = logging.getLogger(__name__)


class EngineLoop:
    def __init__(self, engine: LLMEngine, emit: Callable[[list[RequestOutput], EngineStats], None],
                 fail: Callable[[str, Exception], None]) -> None:
        self.engine, self._emit, self._fail = engine, emit, fail
        self._inbox: queue.SimpleQueue[AddRequest | AbortRequest] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._stopping = False

    def submit(self, command: AddRequest | AbortRequest) -> None:
        self._inbox.put(command)
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    def run(self) -> None:
        """Step while there is work, sleep while there is none, until stop()."""
        busy = False
        while not self._stopping:
            self._drain()
            if not self.engine.has_unfinished_requests():
                if busy:  # the last step's stats, so the idle engine's KV figures are current
                    self._emit([], self.engine.stats())
                    busy = False
                self._wake.wait()
                self._wake.clear()
                continue
            busy = True
            try:
                outputs = self.engine.step()
            except Exception as error:  # a failed step ends the requests in it, never the loop
                log.exception("engine step failed; aborting the requests in flight")
                for request_id in list(self.engine.requests):
                    self.engine.abort_request(request_id)
                    self._fail(request_id, EngineFailedError(f"the LLM engine failed on this request: {error}"))
                continue
            self._emit(outputs, self.engine.stats())

    def _drain(self) -> None:
        while True:
            try:
                command = self._inbox.get_nowait()
            except queue.Empty:
                return
            if isinstance(command, AbortRequest):
                self.engine.abort_request(command.request_id)
                continue
            try:
                self.engine.add_request(command.request_id, command.prompt, command.params, command.priority)
            except Exception as error:  # a bad request is that request's error, never the loop's end
                self._fail(command.request_id, error if isinstance(error, EngineInputError)
                           else EngineInputError(f"the request could not be added: {error}"))
