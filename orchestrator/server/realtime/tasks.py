"""The session's task group: work that outlives the event that started it, all of it ended when the session is."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine

from orchestrator.server.realtime.events import ClientError

log = logging.getLogger(__name__)


class SessionTasks:
    """Tasks beside the socket's read loop; a ClientError one raises goes to `report`, anything else to the log."""

    def __init__(self, report: Callable[[ClientError], Awaitable[None]]) -> None:
        self.report = report
        self._tasks: set[asyncio.Task] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine, name: str) -> asyncio.Task:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if task.cancelled() or task.exception() is None:
            return
        error = task.exception()
        if isinstance(error, ClientError):
            self.spawn(self.report(error), "report")
        elif not isinstance(error, ConnectionError):  # the client left: the session is closing anyway
            log.error("realtime task %s failed", task.get_name(), exc_info=error)

    async def close(self) -> None:
        """Cancel every task and wait until each has ended."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
