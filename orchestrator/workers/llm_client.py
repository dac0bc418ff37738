"""The LLM protocol over an LLM worker: generate() streams each step's deltas as the worker sent them."""
from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from engines.llm.outputs import EngineStats, RequestOutput
from engines.llm.requests import AbortRequest, AddRequest
from engines.llm.sampling_params import SamplingParams
from engines.llm.requests import Priority
from orchestrator.workers.client import EngineClient
from orchestrator.workers.messages import Failed, StepOutputs


class LLMClient(EngineClient):
    def __init__(self, name: str, tokenizer, stats: EngineStats, max_pending: int = 256) -> None:
        super().__init__(name, max_pending)
        self.tokenizer = tokenizer            # the server renders chat templates and counts tokens itself
        self._stats = stats

    @classmethod
    def for_worker(cls, spec, info: dict) -> LLMClient:
        from engines.llm.tokenizer import load_tokenizer

        return cls(spec.name, load_tokenizer(info["model_dir"]), info["stats"],
                   spec.max_pending_requests)

    @property
    def stats(self) -> EngineStats:
        """The engine's load after the worker's latest step."""
        return self._stats

    def _dispatch(self, message: Any) -> None:
        match message:
            case StepOutputs(outputs=outputs, stats=stats):
                for out in outputs:
                    self._streams.post(out.request_id, out)
                self._stats = stats
            case Failed(id=request_id, error=error):
                self._streams.post(request_id, error.rebuild())

    async def generate(self, prompt: str | list[int], params: SamplingParams | None = None,
                       request_id: str | None = None, priority: Priority | str = Priority.INTERACTIVE
                       ) -> AsyncIterator[RequestOutput]:
        """Stream one request's outputs; closing the generator aborts it in the worker."""
        request_id = request_id or f"req-{uuid.uuid4().hex}"
        key, replies = self._open(request_id)
        try:
            self._send(AddRequest(request_id, prompt, params, priority))
        except BaseException:
            self._streams.close(key)
            raise
        async with aclosing(self._streams.follow(key, replies, lambda out: out.finished,
                                                 lambda: self._tell(AbortRequest(request_id)))) as outputs:
            async for out in outputs:
                yield out

    def abort(self, request_id: str) -> None:
        self._tell(AbortRequest(request_id))
