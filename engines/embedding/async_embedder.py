"""The embedder for asyncio servers: one thread owns the engine and merges waiting requests into shared batches.

Requests wait in a queue; the thread takes as many as fill one batch (batch_size inputs), tokenises each,
runs the padded forward passes once for all of them and cuts each request's rows out (to its own
`dimensions`) afterwards. Too many waiting requests is a busy error, a stopped thread a dead one.
"""
from __future__ import annotations

from collections import deque

from engines.embedding.embedder import EmbeddingResult, SentenceEmbedder
from engines.front import EngineFront, Job


class AsyncEmbedder(EngineFront):
    def __init__(self, engine: SentenceEmbedder, max_pending: int = 64) -> None:
        if engine.model is None:
            raise ValueError(f"embedding model {engine.name!r} is not loaded; call load() before serving it")
        self.engine = engine
        super().__init__(f"the embedding engine {engine.name!r}", max_pending, f"embedding-{engine.name}")

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
        self.check_alive()
        return await self._call((list(inputs), dimensions))

    def _next_work(self, waiting: deque[Job]) -> list[Job]:
        """The first waiting request, then those behind it while the batch has room."""
        batch = [waiting.popleft()]
        rows = len(batch[0].payload[0])
        while waiting and rows < self.engine.batch_size:
            batch.append(waiting.popleft())
            rows += len(batch[-1].payload[0])
        return batch

    def _run(self, work: list[Job]) -> None:
        ready: list[tuple[Job, list[list[int]]]] = []
        for job in work:
            try:
                ready.append((job, self.engine.tokenize(job.payload[0])))
            except ValueError as error:
                self._settle(job, error)
        if not ready:
            return
        vectors = self.engine.encode_ids([row for _, rows in ready for row in rows])
        start = 0
        for job, rows in ready:
            part = vectors[start:start + len(rows)]
            start += len(rows)
            self._settle(job, EmbeddingResult(self.engine.finish(part, job.payload[1]), sum(map(len, rows))))
