"""The server side of a worker: `EngineClient` sends calls down the pipe and routes replies to the awaiting task.

One reader thread per worker takes replies off the pipe and hands each to the event loop of the task
that waits for it. When the worker dies every waiting call ends at once with EngineDeadError (503),
and new calls fail fast until the supervisor attaches a restarted worker.
"""
from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

from engines.errors import EngineBusyError, EngineDeadError
from orchestrator.workers.channel import Channel, decode_error


class EngineClient:
    def __init__(self, name: str, max_pending: int = 256) -> None:
        self.name = name
        self.max_pending = max_pending
        self.channel: Channel | None = None
        self.down_reason = "is starting"
        self._pending: dict[Any, tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = {}
        self._ids = itertools.count()

    def attach(self, channel: Channel, on_lost: Callable[[], None] | None = None) -> None:
        """Serve through this worker's pipe from now on."""
        self.channel = channel
        threading.Thread(target=self._read, args=(channel, on_lost), name=f"{self.name}-replies", daemon=True).start()

    def detach(self, reason: str) -> None:
        """The worker is gone: every waiting call ends with a 503 that says why."""
        self.channel, self.down_reason = None, reason
        for key in list(self._pending):
            self._post(key, ("error", EngineDeadError(f"{self.name} {reason}")))

    def is_alive(self) -> bool:
        return self.channel is not None

    def _read(self, channel: Channel, on_lost: Callable[[], None] | None) -> None:
        while (message := channel.recv()) is not None:
            self._dispatch(message)
        if self.channel is channel:
            self.detach("stopped (its worker process exited)")
            if on_lost is not None:
                on_lost()

    def _dispatch(self, message: tuple) -> None:
        tag, key = message[0], message[1]
        value = decode_error(message[2]) if tag == "error" else (message[2] if len(message) > 2 else None)
        self._post(key, (tag, value))

    def _open(self) -> tuple[int, asyncio.Queue]:
        if self.channel is None:
            raise EngineDeadError(f"{self.name} {self.down_reason}")
        if len(self._pending) >= self.max_pending:
            raise EngineBusyError(f"{self.name} has {len(self._pending)} requests in flight (the limit is "
                                  f"{self.max_pending})")
        key, replies = next(self._ids), asyncio.Queue()
        self._pending[key] = (asyncio.get_running_loop(), replies)
        return key, replies

    def _post(self, key: Any, item: tuple) -> None:
        target = self._pending.get(key)
        if target is not None:
            loop, replies = target
            loop.call_soon_threadsafe(replies.put_nowait, item)

    def _send(self, message: tuple) -> None:
        channel = self.channel
        if channel is None or not channel.send(message):
            raise EngineDeadError(f"{self.name} {self.down_reason}")

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Run a coroutine method in the worker and return its value."""
        key, replies = self._open()
        try:
            self._send(("call", key, method, args, kwargs))
            tag, value = await replies.get()
            if tag == "error":
                raise value
            return value
        finally:
            self._pending.pop(key, None)

    async def open_stream(self, method: str, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        """Start an async-iterable method in the worker; its refusal raises here, its items come from the result."""
        key, replies = self._open()
        try:
            self._send(("call", key, method, args, kwargs))
            tag, value = await replies.get()
        except BaseException:
            self._pending.pop(key, None)
            raise
        if tag != "open":
            self._pending.pop(key, None)
            if tag == "error":
                raise value
            raise RuntimeError(f"{self.name}.{method} did not stream")
        return self._items(key, replies)

    async def _items(self, key: int, replies: asyncio.Queue) -> AsyncIterator[Any]:
        done = False
        try:
            while True:
                tag, value = await replies.get()
                if tag == "item":
                    yield value
                    continue
                done = True
                if tag == "error":
                    raise value
                return
        finally:
            self._pending.pop(key, None)
            if not done and self.channel is not None:
                self.channel.send(("cancel", key))
