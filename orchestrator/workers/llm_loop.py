"""The LLM worker's loop: the shared `EngineLoop` on the main thread, fed from the pipe, one message per step."""
from __future__ import annotations

import logging
import threading

from engines.llm.engine_loop import EngineLoop
from engines.llm.llm_engine import LLMEngine
from engines.llm.requests import AbortRequest, AddRequest
from orchestrator.workers.channel import Channel
from orchestrator.workers.messages import Failed, StepOutputs, Stop, WireError

log = logging.getLogger(__name__)


def serve_llm(engine: LLMEngine, channel: Channel) -> None:
    """Step while there is work, sleep while there is none, until the server says stop or its pipe closes."""
    loop = EngineLoop(engine, lambda outputs, stats: channel.send(StepOutputs(outputs, stats)),
                      lambda request_id, error: channel.send(Failed(request_id, WireError.of(error))))

    def read() -> None:
        while (message := channel.recv()) is not None and not isinstance(message, Stop):
            if isinstance(message, (AddRequest, AbortRequest)):
                loop.submit(message)
            else:
                log.warning("the LLM worker ignored a %s message it does not take", type(message).__name__)
        loop.stop()

    threading.Thread(target=read, name="llm-inbox", daemon=True).start()
    loop.run()
