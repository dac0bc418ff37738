"""`AsyncLLM`'s interface over an LLM worker: generate() streams RequestOutputs rebuilt from each step's news."""
from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

from engines.errors import EngineDeadError
from engines.llm.outputs import EngineStats, RequestOutput
from engines.llm.sampling_params import SamplingParams
from engines.llm.sequence import Priority
from orchestrator.workers.channel import decode_error
from orchestrator.workers.client import EngineClient


class LLMClient(EngineClient):
    def __init__(self, name: str, tokenizer, max_pending: int = 256) -> None:
        super().__init__(name, max_pending)
        self.tokenizer = tokenizer            # the server renders chat templates and counts tokens itself
        self.stats: EngineStats | None = None

    def _dispatch(self, message: tuple) -> None:
        if message[0] == "step":
            for news in message[1]:
                self._post(news[0], ("news", news))
            self.stats = message[2]
        elif message[0] == "stats":
            self.stats = message[1]
        else:
            self._post(message[1], ("error", decode_error(message[2])))

    async def generate(self, prompt: str | list[int], params: SamplingParams | None = None,
                       request_id: str | None = None, priority: Priority | str = Priority.INTERACTIVE
                       ) -> AsyncIterator[RequestOutput]:
        """Stream one request's outputs; closing the generator aborts it in the worker."""
        request_id = request_id or f"req-{uuid.uuid4().hex}"
        if self.channel is None:
            raise EngineDeadError(f"{self.name} {self.down_reason}")
        key, replies = self._open_as(request_id)
        finished = False
        token_ids: list[int] = []
        text: list[str] = []
        try:
            self._send(("add", request_id, prompt, params, priority))
            while True:
                tag, news = await replies.get()
                if tag == "error":
                    raise news
                rid, delta_ids, delta_text, finished, reason, stop_reason, logprobs, n_prompt, n_cached = news
                token_ids.extend(delta_ids)
                text.append(delta_text)
                yield RequestOutput(rid, delta_text, delta_ids, "".join(text), list(token_ids), n_prompt, n_cached,
                                    finished, reason, stop_reason, logprobs)
                if finished:
                    return
        finally:
            self._pending.pop(key, None)
            if not finished and self.channel is not None:
                self.channel.send(("abort", request_id))

    def _open_as(self, request_id: str) -> tuple[str, asyncio.Queue]:
        key, replies = self._open()
        self._pending[request_id] = self._pending.pop(key)
        return request_id, replies

    def abort(self, request_id: str) -> None:
        if self.channel is not None:
            self.channel.send(("abort", request_id))

    def shutdown(self) -> None:
        """The supervisor owns the worker; the server only lets go of it."""
        self.detach("was shut down")
