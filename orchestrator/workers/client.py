"""The server side of a worker: `EngineClient` sends typed calls down the pipe and routes replies to the awaiting task.

One reader thread per worker takes replies off the pipe and hands each to the event loop of the task
that waits for it. When the worker dies every waiting call ends at once with EngineDeadError (503),
and new calls fail fast until the supervisor attaches a restarted worker.
"""
from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import Any

from engines.errors import EngineDeadError, EngineFailedError
from engines.request_streams import RequestStreams
from orchestrator.workers.channel import Channel
from orchestrator.workers.messages import Call, Cancel, End, Failed, Item, Opened, RequestType, Result


class EngineClient:
    def __init__(self, name: str, max_pending: int = 256) -> None:
        self.name = name
        self.channel: Channel | None = None
        self.down_reason = "is starting"
        self._streams = RequestStreams(name, max_pending)
        self._ids = itertools.count()

    @classmethod
    def for_worker(cls, spec, info: dict) -> EngineClient:
        """The client for a stack entry's worker, from what the worker reported when it was ready."""
        return cls(spec.name)

    def attach(self, channel: Channel, on_lost: Callable[[], None] | None = None) -> None:
        """Serve through this worker's pipe from now on."""
        self.channel = channel
        threading.Thread(target=self._read, args=(channel, on_lost), name=f"{self.name}-replies", daemon=True).start()

    def detach(self, reason: str) -> None:
        """The worker is gone: every waiting call ends with a 503 that says why."""
        self.channel, self.down_reason = None, reason
        self._streams.fail_all(EngineDeadError(f"{self.name} {reason}"))

    def is_alive(self) -> bool:
        return self.channel is not None

    def shutdown(self) -> None:
        """The supervisor owns the worker; the server only lets go of it."""
        self.detach("was shut down")

    def _read(self, channel: Channel, on_lost: Callable[[], None] | None) -> None:
        while (message := channel.recv()) is not None:
            self._dispatch(message)
        if self.channel is channel:
            self.detach("stopped (its worker process exited)")
            if on_lost is not None:
                on_lost()

    def _dispatch(self, message: Any) -> None:
        match message:
            case Failed(id=key, error=error):
                self._streams.post(key, error.rebuild())
            case Result(id=key) | Opened(id=key) | Item(id=key) | End(id=key):
                self._streams.post(key, message)

    def _open(self, key: int | str | None = None) -> tuple[int | str, asyncio.Queue]:
        """A reply queue for a new call: EngineDeadError while no worker is attached, then the busy bound."""
        if self.channel is None:
            raise EngineDeadError(f"{self.name} {self.down_reason}")
        key = next(self._ids) if key is None else key
        return key, self._streams.open(key)

    def _tell(self, message: Any) -> None:
        """Send a notice the worker may miss (a caller left early): nothing if no worker is attached."""
        if self.channel is not None:
            self.channel.send(message)

    def _send(self, message: Any) -> None:
        channel = self.channel
        if channel is None or not channel.send(message):
            raise EngineDeadError(f"{self.name} {self.down_reason}")

    async def call(self, type_: RequestType, *args: Any) -> Any:
        """Run one call in the worker and return its value; its error is raised here as the same type."""
        key, replies = self._open()
        try:
            self._send(Call(key, type_, args))
            reply = await replies.get()
            if isinstance(reply, BaseException):
                raise reply
            return reply.value
        except asyncio.CancelledError:
            self._tell(Cancel(key))  # the caller left: work still queued in the worker is dropped before it runs
            raise
        finally:
            self._streams.close(key)

    async def open_stream(self, type_: RequestType, *args: Any) -> AsyncIterator[Any]:
        """Start a streaming call in the worker; its refusal raises here, its items come from the result."""
        key, replies = self._open()
        try:
            self._send(Call(key, type_, args))
            reply = await replies.get()
        except BaseException:
            self._streams.close(key)
            raise
        if not isinstance(reply, Opened):
            self._streams.close(key)
            if isinstance(reply, BaseException):
                raise reply
            raise EngineFailedError(f"{self.name}: {type_!s} did not stream")
        return self._items(key, replies)

    async def _items(self, key: int, replies: asyncio.Queue) -> AsyncIterator[Any]:
        async with aclosing(self._streams.follow(key, replies, lambda reply: isinstance(reply, End),
                                                 lambda: self._tell(Cancel(key)), yield_last=False)) as items:
            async for item in items:
                yield item.value
