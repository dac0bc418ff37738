"""Each in-flight request's replies: posted from any thread, read as one async stream on the caller's event loop.

The LLM front, the worker pipe's client and the LLM client hand replies across threads this one way, as
vLLM's AsyncLLM keeps one output queue per request.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Hashable
from typing import Any

from engines.errors import EngineBusyError


class RequestStreams:
    def __init__(self, owner: str, max_pending: int) -> None:
        self.owner, self.max_pending = owner, max_pending
        self._queues: dict[Hashable, tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = {}

    def __len__(self) -> int:
        return len(self._queues)

    def open(self, key: Hashable) -> asyncio.Queue:
        """A new request's reply queue on the running loop; EngineBusyError once `max_pending` are in flight."""
        if len(self._queues) >= self.max_pending:
            raise busy_error(self.owner, len(self._queues), self.max_pending)
        replies: asyncio.Queue = asyncio.Queue()
        self._queues[key] = (asyncio.get_running_loop(), replies)
        return replies

    def post(self, key: Hashable, item: Any) -> None:
        """Hand an item (or an exception to raise) to the request's loop; dropped once the request has gone."""
        target = self._queues.get(key)
        if target is None:
            return
        loop, replies = target
        call_on(loop, replies.put_nowait, item)

    def close(self, key: Hashable) -> None:
        self._queues.pop(key, None)

    def fail_all(self, error: BaseException) -> None:
        """End every request in flight with `error` (the engine is gone)."""
        for key in list(self._queues):
            self.post(key, error)

    async def follow(self, key: Hashable, replies: asyncio.Queue, is_last: Callable[[Any], bool],
                     abandon: Callable[[], None], yield_last: bool = True) -> AsyncIterator[Any]:
        """Yield a request's replies until one `is_last`; an exception is raised; leaving early calls `abandon`."""
        done = False
        try:
            while True:
                item = await replies.get()
                if isinstance(item, BaseException):
                    done = True
                    raise item
                done = is_last(item)
                if done and not yield_last:
                    return
                yield item
                if done:
                    return
        finally:
            self.close(key)
            if not done:
                abandon()


def call_on(loop: asyncio.AbstractEventLoop, fn: Callable[[Any], None], item: Any) -> None:
    """Run `fn(item)` on `loop` from any thread; nothing if that loop is closed (nobody is waiting)."""
    try:
        loop.call_soon_threadsafe(fn, item)
    except RuntimeError:
        pass


def busy_error(owner: str, in_flight: int, limit: int) -> EngineBusyError:
    """The one wording of "too many requests" every front and client uses."""
    return EngineBusyError(f"{owner} has {in_flight} requests in flight (the limit is {limit}); retry shortly")
