"""Chat Completions on our own engine, streamed (SSE) and not: the chat template, tools and parsers applied here."""
from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from fastapi import Request

from engines.llm.outputs import RequestOutput
from engines.errors import EngineInputError
from engines.protocols import LLMProtocol
from orchestrator.server.chat_output import ChatOutput
from orchestrator.server.chat_template import render_chat
from orchestrator.server.errors import OpenAIError
from orchestrator.server.generation import check_n, final_output, off_loop_if_large, sampling_params, start, usage
from orchestrator.server.metrics import TokenTimer
from orchestrator.server.protocol import ChatCompletionRequest
from orchestrator.server.sse import DONE, event, guarded
from orchestrator.server.tool_choice import tool_constraint
from orchestrator.server.streaming import ClosingStreamingResponse

if TYPE_CHECKING:
    from orchestrator.server.state import LLMState


async def create_chat_completion(state: LLMState, llm: LLMProtocol, body: ChatCompletionRequest, request: Request):
    """The completion, or its SSE stream; refusals are OpenAIErrors before anything streams."""
    check_n(body.n, body.best_of)
    tools_on = bool(body.tools) and body.tool_choice != "none"
    prompt_ids = await off_loop_if_large(request, _prompt_ids, llm.tokenizer, state, body, tools_on)
    names = frozenset(t.function.name for t in body.tools or ()) if tools_on else frozenset()
    output = ChatOutput(tools_on, state.reasoning_parser is not None, names)
    max_tokens = state.max_tokens(len(prompt_ids), body.max_completion_tokens or body.max_tokens)
    top = body.top_logprobs or 0
    params = sampling_params(body, max_tokens, state.seed, top if body.logprobs else None)
    try:
        params.structured_outputs = tool_constraint(llm.tokenizer, body.tool_dicts(), body.tool_choice,
                                                    body.parallel_tool_calls, params.structured_outputs)
    except EngineInputError as error:
        raise OpenAIError(400, str(error), error.param) from None
    request_id = f"chatcmpl-{uuid.uuid4().hex}"
    outputs = await start(llm, prompt_ids, params, request_id, TokenTimer(request.app.state.metrics))
    if body.stream:
        return ClosingStreamingResponse(guarded(_stream(state, llm.tokenizer, body, request_id, outputs, output,
                                                         body.include_usage)),
                                        media_type="text/event-stream")
    final, text, logprobs = await final_output(outputs)
    message = output.message(text)
    return {"id": request_id, "object": "chat.completion", "created": int(time.time()), "model": state.served_name,
            "choices": [{"index": 0, "message": message,
                         "logprobs": _logprobs(llm.tokenizer, logprobs) if body.logprobs else None,
                         "finish_reason": _finish_reason(final, output)}],
            "usage": usage(final)}


def _prompt_ids(tokenizer, state: LLMState, body: ChatCompletionRequest, tools_on: bool) -> list[int]:
    """Render the chat template and tokenize: milliseconds to seconds of CPU for long chats, so run in a thread."""
    return tokenizer.encode(render_chat(tokenizer, body, state.chat_template_kwargs, tools_on), add_special_tokens=False)


def _finish_reason(final: RequestOutput, output: ChatOutput) -> str | None:
    return "tool_calls" if output.called and final.finish_reason == "stop" else final.finish_reason


def _logprobs(tokenizer, entries) -> dict:
    def item(token_id: int, logprob: float) -> dict:
        text = tokenizer.decode([token_id])
        return {"token": text, "logprob": logprob, "bytes": list(text.encode())}

    return {"content": [{**item(e.token_id, e.logprob),
                         "top_logprobs": [item(t, v) for t, v in e.top_logprobs.items()]} for e in entries]}


async def _stream(state: LLMState, tokenizer, body: ChatCompletionRequest, request_id: str,
                  outputs: AsyncIterator[RequestOutput], output: ChatOutput, include_usage: bool) -> AsyncIterator[str]:
    created = int(time.time())

    def chunk(delta: dict, finish_reason: str | None = None, logprobs: dict | None = None) -> str:
        return event({"id": request_id, "object": "chat.completion.chunk", "created": created,
                      "model": state.served_name,
                      "choices": [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}]})

    yield chunk({"role": "assistant", "content": ""})
    last = None
    async for out in outputs:
        last = out
        logprobs = _logprobs(tokenizer, out.logprobs) if body.logprobs else None
        delta = output.update(out.delta_text, out.finished)
        if delta or logprobs:
            yield chunk(delta, logprobs=logprobs)
    yield chunk({}, _finish_reason(last, output))
    if include_usage:
        yield event({"id": request_id, "object": "chat.completion.chunk", "created": created,
                     "model": state.served_name, "choices": [], "usage": usage(last)})
    yield DONE
