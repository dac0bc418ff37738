"""One thread that owns an engine and serves asyncio callers: the part every kind's front shares.

The base owns the thread, the stop event, liveness, admission (dead first, then busy, in one wording),
delivery of outcomes to each caller's own event loop, a loop that turns any fault into EngineFailedError
for the work in hand, and a shutdown that fails what is still queued with EngineDeadError. A kind keeps
only its batching policy (`_next_work`: which waiting jobs run together) and `_run`. vLLM's AsyncLLM over
its engine core is the model; the LLM's own front (`AsyncLLM`) runs the shared step loop instead.
"""
from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from engines.errors import EngineDeadError, EngineFailedError, EngineInputError
from engines.request_streams import busy_error, call_on

log = logging.getLogger(__name__)
P = TypeVar("P")


@dataclass(slots=True, eq=False)
class Job(Generic[P]):
    """One admitted request: what to do, and where its outcome goes (a sink run on the caller's loop)."""
    payload: P
    loop: asyncio.AbstractEventLoop
    sink: Callable[[Any], None]
    future: asyncio.Future | None = None   # a one-result job's future (None: the job streams into its sink)
    finished: bool = False

    def deliver(self, item: Any) -> None:
        """Run the sink with `item` on the caller's loop; nothing if that loop is closed (nobody waits)."""
        call_on(self.loop, self.sink, item)

    @property
    def abandoned(self) -> bool:
        """The caller stopped waiting (a cancelled one-result job)."""
        return self.future is not None and self.future.done()


def _resolve(future: asyncio.Future, outcome: Any) -> None:
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


class EngineFront:
    """Subclasses name themselves (`label`, used in every message) and give `_next_work` and `_run`."""

    runs_abandoned: bool = False   # whether a job whose caller stopped waiting still runs (a stream's state needs it)

    def __init__(self, label: str, max_pending: int, thread_name: str) -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending must be at least 1, got {max_pending}")
        self.label, self.max_pending = label, max_pending
        self._lock = threading.Condition(threading.RLock())
        self._waiting: deque[Job] = deque()
        self._open = 0                      # admitted and not finished: the bound the busy error enforces
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=thread_name, daemon=True)
        self._thread.start()

    def is_alive(self) -> bool:
        return self._thread.is_alive() and not self._stopping.is_set()

    def num_open(self) -> int:
        """Requests holding a place: queued, running, or (for a stream) not yet read to the end."""
        with self._lock:
            return self._open

    def shutdown(self, timeout: float = 30) -> None:
        """Stop after the work in hand; whatever is still queued fails with EngineDeadError."""
        with self._lock:
            self._stopping.set()
            self._lock.notify_all()
        self._thread.join(timeout)
        self._fail_waiting()

    def check_alive(self) -> None:
        if not self.is_alive():
            raise EngineDeadError(f"{self.label} has stopped")

    async def _call(self, payload: Any) -> Any:
        """Queue one request and await its one outcome."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._admit(Job(payload, loop, lambda outcome: _resolve(future, outcome), future))
        return await future

    def _admit(self, job: Job) -> Job:
        """Queue a job: EngineDeadError if the thread has stopped, EngineBusyError if `max_pending` are open."""
        with self._lock:
            self.check_alive()
            if self._open >= self.max_pending:
                raise busy_error(self.label, self._open, self.max_pending)
            self._open += 1
            self._waiting.append(job)
            self._lock.notify()
        return job

    def _requeue(self, job: Job) -> None:
        """Put a job with more to do at the back of the line (a kind that serves a request in parts)."""
        with self._lock:
            self._waiting.append(job)
            self._lock.notify()

    def _settle(self, job: Job, outcome: Any) -> None:
        """A job's last outcome (a result or an error): delivered once, and its place given back."""
        self._finish(job)
        job.deliver(outcome)

    def _finish(self, job: Job) -> bool:
        """Give the job's place back; False if it had been already."""
        with self._lock:
            if job.finished:
                return False
            job.finished = True
            self._open -= 1
            return True

    def _next_work(self, waiting: deque[Job]) -> list[Job]:
        """Under the lock: take the jobs that run together next (the kind's batching policy). Default: one."""
        return [waiting.popleft()]

    def _run(self, work: list[Job]) -> None:
        """Serve the work (on the front's thread, lock released), settling each job."""
        raise NotImplementedError

    def _serve(self) -> None:
        try:
            while True:
                with self._lock:
                    while not self._stopping.is_set() and not self._waiting:
                        self._lock.wait()
                    if self._stopping.is_set():
                        return
                    work = [job for job in self._next_work(self._waiting) if not self._drop_abandoned(job)]
                if not work:
                    continue
                try:
                    self._run(work)
                except Exception as error:  # a fault fails the work in hand, never the thread
                    log.exception("%s failed on %d request(s)", self.label, len(work))
                    outcome = error if isinstance(error, EngineInputError) else \
                        EngineFailedError(f"{self.label} failed on this request: {error}")
                    for job in work:
                        if not job.finished:
                            self._settle(job, outcome)
        finally:
            self._stopping.set()
            self._fail_waiting()

    def _drop_abandoned(self, job: Job) -> bool:
        if job.abandoned and not self.runs_abandoned:
            self._finish(job)
            return True
        return False

    def _fail_waiting(self) -> None:
        with self._lock:
            jobs, self._waiting = list(self._waiting), deque()
        for job in jobs:
            if not job.finished:
                self._settle(job, EngineDeadError(f"{self.label} was shut down"))
