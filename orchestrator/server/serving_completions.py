"""Completions on our own engine: a plain prompt (text or token ids), streamed or not."""
from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from fastapi import Request

from engines.llm.outputs import RequestOutput, TokenLogprob
from engines.protocols import LLMProtocol
from orchestrator.server.errors import OpenAIError
from orchestrator.server.generation import check_n, final_output, off_loop_if_large, sampling_params, start, usage
from orchestrator.server.metrics import TokenTimer
from orchestrator.server.protocol import CompletionRequest
from orchestrator.server.sse import DONE, event, guarded
from orchestrator.server.streaming import ClosingStreamingResponse

if TYPE_CHECKING:
    from orchestrator.server.state import LLMState


async def create_completion(state: LLMState, llm: LLMProtocol, body: CompletionRequest, request: Request):
    """The completion, or its SSE stream; refusals are OpenAIErrors before anything streams."""
    check_n(body.n, body.best_of)
    if body.logprobs is not None and body.echo:
        raise OpenAIError(400, "echo with logprobs needs the prompt's logprobs, which this server does not compute; "
                               "send one or the other", "echo")
    prompt = body.prompt
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], str):
        if len(prompt) != 1:
            raise OpenAIError(400, "send one prompt per request", "prompt")
        prompt = prompt[0]
    prompt_ids = await off_loop_if_large(request, llm.tokenizer.encode, prompt, add_special_tokens=False) \
        if isinstance(prompt, str) else prompt
    max_tokens = state.max_tokens(len(prompt_ids), body.max_tokens if body.max_tokens is not None else 16)
    params = sampling_params(body, max_tokens, state.seed, body.logprobs)
    request_id = f"cmpl-{uuid.uuid4().hex}"
    outputs = await start(llm, list(prompt_ids), params, request_id, TokenTimer(request.app.state.metrics))
    echo = prompt if body.echo and isinstance(prompt, str) else ""
    if body.stream:
        return ClosingStreamingResponse(guarded(_stream(state, llm.tokenizer, request_id, outputs, echo, body.include_usage,
                                                 body.logprobs is not None)), media_type="text/event-stream")
    final, text, entries = await final_output(outputs)
    logprobs = _logprobs(llm.tokenizer, entries, 0)[0] if body.logprobs is not None else None
    return {"id": request_id, "object": "text_completion", "created": int(time.time()), "model": state.served_name,
            "choices": [{"index": 0, "text": echo + text, "logprobs": logprobs, "finish_reason": final.finish_reason}],
            "usage": usage(final)}


def _logprobs(tokenizer, entries: list[TokenLogprob], offset: int) -> tuple[dict, int]:
    """The legacy completions shape (tokens, token_logprobs, top_logprobs, text_offset) and the offset after it."""
    decode = tokenizer.decode
    tokens, offsets = [], []
    for entry in entries:
        tokens.append(decode([entry.token_id]))
        offsets.append(offset)
        offset += len(tokens[-1])
    return {"tokens": tokens, "token_logprobs": [e.logprob for e in entries],
            "top_logprobs": [{decode([t]): v for t, v in e.top_logprobs.items()} for e in entries],
            "text_offset": offsets}, offset


async def _stream(state: LLMState, tokenizer, request_id: str, outputs: AsyncIterator[RequestOutput], echo: str,
                  include_usage: bool, with_logprobs: bool) -> AsyncIterator[str]:
    created = int(time.time())

    def chunk(text: str, finish_reason: str | None = None, logprobs: dict | None = None) -> str:
        return event({"id": request_id, "object": "text_completion", "created": created, "model": state.served_name,
                      "choices": [{"index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish_reason}]})

    if echo:
        yield chunk(echo)
    last, offset = None, 0
    async for out in outputs:
        last = out
        if with_logprobs and out.logprobs:
            logprobs, offset = _logprobs(tokenizer, out.logprobs, offset)
            yield chunk(out.delta_text, logprobs=logprobs)
        elif out.delta_text:
            yield chunk(out.delta_text)
    yield chunk("", last.finish_reason)
    if include_usage:
        yield event({"id": request_id, "object": "text_completion", "created": created, "model": state.served_name,
                     "choices": [], "usage": usage(last)})
    yield DONE
