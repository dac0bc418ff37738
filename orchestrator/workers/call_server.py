"""The worker side of a companion engine: run each call the server sends on the engine's async front.

Only the calls the engine's kind declares are served. A call's value comes back as one `Result`, or,
when it is an async iterable, as `Opened` (accepted), one `Item` each, and `End`. A `Cancel` closes the
call's iterator, which drops what the engine still had queued for it (a TTS request whose client left).
Every error goes back as a `Failed` with its type, message and param; the worker keeps serving.
"""
from __future__ import annotations

import asyncio
import logging
import threading
from contextlib import aclosing
from typing import Any

from engines.errors import EngineFailedError
from orchestrator.workers.channel import Channel
from orchestrator.workers.messages import Call, Cancel, End, Failed, Item, Opened, RequestType, Result, Stop, WireError

log = logging.getLogger(__name__)


async def serve_calls(front: Any, channel: Channel, kind: str, calls: frozenset[RequestType]) -> None:
    """Serve until the server says stop or its end of the pipe closes."""
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue = asyncio.Queue()

    def read() -> None:
        while (message := channel.recv()) is not None:
            loop.call_soon_threadsafe(inbox.put_nowait, message)
        loop.call_soon_threadsafe(inbox.put_nowait, None)

    threading.Thread(target=read, name="worker-inbox", daemon=True).start()
    tasks: dict[int, asyncio.Task] = {}
    while (message := await inbox.get()) is not None:
        match message:
            case Call(id=call_id):
                if message.type not in calls:
                    error = EngineFailedError(f"a {kind} worker does not serve {message.type!s}; it serves "
                                              f"{', '.join(sorted(calls))}")
                    channel.send(Failed(call_id, WireError.of(error)))
                    continue
                task = asyncio.create_task(_run(front, channel, message))
                tasks[call_id] = task
                task.add_done_callback(lambda _, cid=call_id: tasks.pop(cid, None))
            case Cancel(id=call_id) if (task := tasks.get(call_id)) is not None:
                task.cancel()
            case Cancel():
                pass
            case Stop():
                break
            case _:
                log.warning("a %s worker ignored a %s message it does not take", kind, type(message).__name__)
    for task in list(tasks.values()):
        task.cancel()


async def _run(front: Any, channel: Channel, call: Call) -> None:
    try:
        result = await getattr(front, call.type.value)(*call.args)
        if not hasattr(result, "__aiter__"):
            channel.send(Result(call.id, result))
            return
        channel.send(Opened(call.id))
        async with aclosing(aiter(result)) as items:
            async for item in items:
                channel.send(Item(call.id, item))
        channel.send(End(call.id))
    except asyncio.CancelledError:
        pass
    except Exception as error:  # the caller's error, sent back typed; the worker keeps serving
        log.debug("call %s(%s) failed: %s", call.type, call.id, error)
        channel.send(Failed(call.id, WireError.of(error)))
