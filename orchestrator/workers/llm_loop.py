"""The LLM worker's loop: requests in, and after every engine step one message with every sequence's news.

Each step's message carries, per request, only what is new (token ids, text, and logprobs when
asked), plus the engine's stats; the server side rebuilds the running text, so nothing grows with
the length of the answer.
"""
from __future__ import annotations

import logging
import queue
import threading

from engines.llm.llm_engine import LLMEngine
from engines.llm.outputs import RequestOutput
from orchestrator.workers.channel import Channel, encode_error

log = logging.getLogger(__name__)


def delta(out: RequestOutput) -> tuple:
    return (out.request_id, out.delta_token_ids, out.delta_text, out.finished, out.finish_reason, out.stop_reason,
            out.logprobs, out.num_prompt_tokens, out.num_cached_tokens)


def serve_llm(engine: LLMEngine, channel: Channel) -> None:
    """Step while there is work; block on the pipe while there is none."""
    inbox: queue.SimpleQueue = queue.SimpleQueue()
    wake = threading.Event()

    def read() -> None:
        while (message := channel.recv()) is not None:
            inbox.put(message)
            wake.set()
        inbox.put(("stop",))
        wake.set()

    threading.Thread(target=read, name="llm-inbox", daemon=True).start()
    while True:
        while True:
            try:
                message = inbox.get_nowait()
            except queue.Empty:
                break
            if message[0] == "stop":
                return
            if message[0] == "add":
                _, request_id, prompt, params, priority = message
                try:
                    engine.add_request(request_id, prompt, params, priority)
                except Exception as error:  # that request's error, never the loop's end
                    channel.send(("error", request_id, encode_error(error if isinstance(error, ValueError) else
                                                                    ValueError(f"could not add the request: {error}"))))
            elif message[0] == "abort":
                engine.abort_request(message[1])
        if not engine.has_unfinished_requests():
            channel.send(("stats", engine.stats()))
            wake.wait()
            wake.clear()
            continue
        try:
            outputs = engine.step()
        except Exception as error:  # a failed step ends the requests in it, not the worker
            log.exception("engine step failed; aborting the requests in flight")
            for request_id in list(engine.requests):
                engine.abort_request(request_id)
                channel.send(("error", request_id, encode_error(RuntimeError(f"the LLM engine failed: {error}"))))
            continue
        channel.send(("step", [delta(out) for out in outputs], engine.stats()))
