"""The LLM's one step loop, shared by `AsyncLLM` (a thread in the server) and the LLM worker (its main thread).

Requests and aborts arrive as typed commands through a queue, so only the loop's thread touches the
engine. After every step the loop hands that step's outputs (deltas only) and the engine's stats to
`emit`; a request the engine refuses, or a step that fails, reaches `fail` with the request's id.

A step that raises fails only its culprits when it can: the requests admitted since the last good step
are failed and the step is tried again without them; only if it still fails are the rest ended too.
A failed step changes nothing the next one depends on (tokens are appended only after a step returns).

A request with structured outputs waits in `compiling` while its grammar compiles on the grammar threads;
the others keep stepping meanwhile. A grammar that fails, or takes past the engine's grammar_compile_timeout_s,
fails its request.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

from engines.errors import EngineFailedError, EngineInputError
from engines.llm.llm_engine import LLMEngine
from engines.llm.outputs import EngineStats, RequestOutput
from engines.llm.requests import AbortRequest, AddRequest

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Compiling:
    """A request waiting for its grammar."""
    command: AddRequest
    grammar: Future
    since: float


class EngineLoop:
    def __init__(self, engine: LLMEngine, emit: Callable[[list[RequestOutput], EngineStats], None],
                 fail: Callable[[str, Exception], None]) -> None:
        self.engine, self._emit, self._fail = engine, emit, fail
        self._inbox: queue.SimpleQueue[AddRequest | AbortRequest] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._stopping = False
        self._new: list[str] = []   # requests admitted since the last good step: the suspects if one fails
        self.compiling: dict[str, Compiling] = {}

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
            self._admit_compiled()
            if not self.engine.has_unfinished_requests():
                if busy:  # the last step's stats, so the idle engine's KV figures are current
                    self._emit([], self.engine.stats())
                    busy = False
                self._wake.wait(timeout=0.5 if self.compiling else None)  # a compile's time limit is checked
                self._wake.clear()
                continue
            busy = True
            outputs = self._step()
            if outputs is not None:
                self._emit(outputs, self.engine.stats())

    def _step(self) -> list[RequestOutput] | None:
        """One engine step; when it raises, the newest requests are failed and it is tried once more without them."""
        for suspects in ([self._new] if self._new else []) + [None]:
            try:
                outputs = self.engine.step()
            except Exception as error:  # a failed step ends its culprits, never the loop
                blamed = [r for r in (suspects or self.engine.requests) if r in self.engine.requests]
                log.exception("engine step failed; ending %s", "the requests in flight" if suspects is None else
                              f"the {len(blamed)} request(s) admitted since the last good step and trying again")
                for request_id in list(blamed):
                    self.engine.abort_request(request_id)
                    self._fail(request_id, EngineFailedError(f"the LLM engine failed on this request: {error}"))
                self._new = []
                if not self.engine.has_unfinished_requests():
                    return None
                continue
            self._new = []
            return outputs
        return None

    def _drain(self) -> None:
        while True:
            try:
                command = self._inbox.get_nowait()
            except queue.Empty:
                return
            if isinstance(command, AbortRequest):
                if self.compiling.pop(command.request_id, None) is None:
                    self.engine.abort_request(command.request_id)
                continue
            if command.params is not None and command.params.structured_outputs is not None:
                try:
                    grammar = self.engine.compile_grammar(command.params)
                except Exception as error:
                    self._refuse(command.request_id, error)
                    continue
                self.compiling[command.request_id] = Compiling(command, grammar, time.monotonic())
                grammar.add_done_callback(lambda _: self._wake.set())
                continue
            self._add(command)

    def _admit_compiled(self) -> None:
        """Requests whose grammar is ready join the engine; a failed or overdue compile fails its request."""
        now, limit = time.monotonic(), self.engine.config.grammar_compile_timeout_s
        for request_id, waiting in list(self.compiling.items()):
            if waiting.grammar.done():
                del self.compiling[request_id]
                error = waiting.grammar.exception()
                if error is not None:
                    self._refuse(request_id, error)
                else:
                    self._add(waiting.command, waiting.grammar.result())
            elif now - waiting.since > limit:
                del self.compiling[request_id]
                spec = waiting.command.params.structured_outputs
                self.engine.grammars.forget(spec)
                self._fail(request_id, EngineInputError(
                    f"{spec.param} did not compile within {limit:g} s; send a simpler schema or grammar",
                    spec.param))

    def _add(self, command: AddRequest, grammar=None) -> None:
        try:
            self.engine.add_request(command.request_id, command.prompt, command.params, command.priority, grammar)
        except Exception as error:  # a bad request is that request's error, never the loop's end
            self._refuse(command.request_id, error)
            return
        self._new.append(command.request_id)

    def _refuse(self, request_id: str, error: BaseException) -> None:
        self._fail(request_id, error if isinstance(error, EngineInputError)
                   else EngineInputError(f"the request could not be added: {error}"))
