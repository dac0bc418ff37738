"""The worker side of a companion engine: run each call the server sends on the engine's async front.

A call names a public method; its value comes back as one "result", or, when it is an async
iterable, as "open" (accepted), one "item" message each, and "end". A "cancel" closes the call's iterator, which drops what the
engine still had queued for it (a TTS request whose client left).
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import threading
from contextlib import aclosing
from typing import Any

from orchestrator.workers.channel import Channel, encode_error

log = logging.getLogger(__name__)


async def serve_calls(front: Any, channel: Channel) -> None:
    """Serve until the server says stop or its end of the pipe closes."""
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue = asyncio.Queue()

    def read() -> None:
        while (message := channel.recv()) is not None:
            loop.call_soon_threadsafe(inbox.put_nowait, message)
        loop.call_soon_threadsafe(inbox.put_nowait, ("stop",))

    threading.Thread(target=read, name="worker-inbox", daemon=True).start()
    tasks: dict[int, asyncio.Task] = {}
    while (message := await inbox.get())[0] != "stop":
        if message[0] == "call":
            _, call_id, method, args, kwargs = message
            task = asyncio.create_task(_run(front, channel, call_id, method, args, kwargs))
            tasks[call_id] = task
            task.add_done_callback(lambda _, cid=call_id: tasks.pop(cid, None))
        elif message[0] == "cancel" and (task := tasks.get(message[1])) is not None:
            task.cancel()
    for task in list(tasks.values()):
        task.cancel()


async def _run(front: Any, channel: Channel, call_id: int, method: str, args: tuple, kwargs: dict) -> None:
    try:
        if method.startswith("_") or not callable(target := getattr(front, method, None)):
            raise ValueError(f"the engine has no method {method!r}")
        result = target(*args, **kwargs)
        if inspect.isawaitable(result):
            result = await result
        if not hasattr(result, "__aiter__"):
            channel.send(("result", call_id, result))
            return
        channel.send(("open", call_id))  # the request was accepted: its refusals are over, items follow
        async with aclosing(aiter(result)) as items:
            async for item in items:
                channel.send(("item", call_id, item))
        channel.send(("end", call_id))
    except asyncio.CancelledError:
        pass
    except Exception as error:  # the caller's error, sent back typed; the worker keeps serving
        log.debug("call %s(%s) failed: %s", method, call_id, error)
        channel.send(("error", call_id, encode_error(error)))
