"""The embedder for asyncio servers: one thread owns the engine and merges waiting requests into shared batches.

Requests wait in a queue; the thread takes as many as fill one batch (batch_size inputs), tokenises each,
runs the padded forward passes once for all of them and cuts each request's rows out (to its own
`dimensions`) afterwards. Too many waiting requests is a busy error, a stopped thread a dead one.
"""
from __future__ import annotations

import asyncio
import logging
import queue
import threading
from dataclasses import dataclass

from engines.embedding.embedder import EmbeddingResult, SentenceEmbedder
from engines.errors import EngineBusyError, EngineDeadError, EngineFailedError

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Job:
    inputs: list[str] | list[list[int]]
    dimensions: int | None
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    settled: bool = False


class AsyncEmbedder:
    def __init__(self, engine: SentenceEmbedder, max_pending: int = 64) -> None:
        if engine.model is None:
            raise ValueError(f"embedding model {engine.name!r} is not loaded; call load() before serving it")
        if max_pending < 1:
            raise ValueError(f"max_pending must be at least 1, got {max_pending}")
        self.engine, self.max_pending = engine, max_pending
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._pending = 0           # queued plus running; the bound the busy error enforces
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name=f"embedding-{engine.name}", daemon=True)
        self._thread.start()

    @classmethod
    def from_spec(cls, spec, device: str | None = None, max_pending: int = 64) -> AsyncEmbedder:
        """Load, warm up and serve a stack file's embedding entry."""
        engine = SentenceEmbedder.from_spec(spec, device)
        engine.load()
        engine.warmup()
        return cls(engine, max_pending)

    async def embed(self, inputs: list[str] | list[list[int]], dimensions: int | None = None) -> EmbeddingResult:
        """Vectors for texts or token arrays; ValueError for a request the model cannot take as sent."""
        self.engine.check_dimensions(dimensions)
        loop = asyncio.get_running_loop()
        job = _Job(list(inputs), dimensions, loop, loop.create_future())
        with self._lock:
            if not self.is_alive():
                raise EngineDeadError(f"the embedding engine {self.engine.name!r} has stopped")
            if self._pending >= self.max_pending:
                raise EngineBusyError(f"{self._pending} embedding requests are already waiting (the limit is "
                                        f"{self.max_pending})")
            self._pending += 1
            self._jobs.put(job)
        return await job.future

    def is_alive(self) -> bool:
        return self._thread.is_alive() and not self._stopping

    @property
    def pending(self) -> int:
        return self._pending

    def shutdown(self) -> None:
        """Stop taking requests, finish the batch in hand, fail the ones still waiting; the engine stays loaded."""
        with self._lock:
            self._stopping = True
            self._jobs.put(None)
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                break
            try:
                self._run(batch)
            except Exception as error:  # a bug in one batch must not strand its clients or stop the thread
                log.exception("embedding batch failed")
                for job in batch:
                    self._settle(job, EngineFailedError(f"the embedding engine failed on this request: {error}"))
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return
            if job is not None:
                self._settle(job, EngineDeadError(f"the embedding engine {self.engine.name!r} has stopped"))

    def _next_batch(self) -> list[_Job] | None:
        """Block for one request, then take those already waiting while the batch has room; None to stop."""
        first = self._jobs.get()
        if first is None:
            return None
        batch, rows = [first], len(first.inputs)
        while rows < self.engine.batch_size:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is None:
                self._jobs.put(None)  # stop after this batch
                break
            batch.append(job)
            rows += len(job.inputs)
        return batch

    def _run(self, batch: list[_Job]) -> None:
        ready: list[tuple[_Job, list[list[int]]]] = []
        for job in batch:
            if job.future.cancelled():
                self._settle(job, None)
                continue
            try:
                ready.append((job, self.engine.tokenize(job.inputs)))
            except ValueError as error:
                self._settle(job, error)
        if not ready:
            return
        vectors = self.engine.encode_ids([row for _, rows in ready for row in rows])
        start = 0
        for job, rows in ready:
            part = vectors[start:start + len(rows)]
            start += len(rows)
            self._settle(job, EmbeddingResult(self.engine.finish(part, job.dimensions), sum(map(len, rows))))

    def _settle(self, job: _Job, outcome: EmbeddingResult | BaseException | None) -> None:
        """Hand a job its result or error on its own event loop, and free its place in the queue; once only."""
        if job.settled:
            return
        job.settled = True
        with self._lock:
            self._pending -= 1
        if outcome is None:
            return
        try:
            job.loop.call_soon_threadsafe(_resolve, job.future, outcome)
        except RuntimeError:  # the client's event loop is closed; nobody is waiting
            pass


def _resolve(future: asyncio.Future, outcome: EmbeddingResult | BaseException) -> None:
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
