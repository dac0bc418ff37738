"""Shared by the chat and text routes: start a request on the engine, wait for its end, count usage."""
from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from engines.llm.outputs import RequestOutput, TokenLogprob
from engines.llm.sampling_params import SamplingParams
from engines.protocols import LLMProtocol
from orchestrator.server.errors import OpenAIError
from orchestrator.server.metrics import TokenTimer
from orchestrator.server.protocol import SamplingFields

T = TypeVar("T")


def sampling_params(body: SamplingFields, max_tokens: int, seed: int | None, logprobs: int | None) -> SamplingParams:
    """The request's sampling params; a value the engine refuses becomes a 400 that names it."""
    try:
        return body.sampling_params(max_tokens, seed, logprobs)
    except ValueError as error:
        raise OpenAIError(400, str(error), getattr(error, "param", None)) from None


INLINE_BODY_BYTES = 16 * 1024  # below this, rendering and tokenizing take ~0.05 ms: less than a thread hop (~1.7 ms)


async def off_loop_if_large(request: Request, work: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a request's CPU work (chat template, tokenizer) in the thread pool when its body is large, so a long chat
    never holds the event loop; small ones run inline, where the hop would cost more than the work."""
    if int(request.headers.get("content-length") or INLINE_BODY_BYTES + 1) <= INLINE_BODY_BYTES:
        return work(*args, **kwargs)
    return await run_in_threadpool(work, *args, **kwargs)


def check_n(n: int, best_of: int | None = None) -> None:
    if n != 1:
        raise OpenAIError(400, f"n={n} is not supported; send n=1 and repeat the request for more choices", "n")
    if best_of not in (None, 1):
        raise OpenAIError(400, f"best_of={best_of} is not supported; send best_of=1 (or leave it out)", "best_of")


async def start(llm: LLMProtocol, prompt_ids: list[int], params: SamplingParams, request_id: str,
                timer: TokenTimer) -> AsyncIterator[RequestOutput]:
    """Queue the request and wait for its first output, so refusals become HTTP errors before any streaming.

    The engine's errors (400 with their param, 429, 503) go to the app's handlers.
    """
    stream = llm.generate(prompt_ids, params, request_id=request_id)
    first = await anext(stream)
    timer.step(len(first.delta_token_ids), first.num_prompt_tokens, first.num_cached_tokens)

    async def replay() -> AsyncIterator[RequestOutput]:
        try:
            yield first
            async for out in stream:
                timer.step(len(out.delta_token_ids), out.num_prompt_tokens, out.num_cached_tokens)
                yield out
        finally:
            await stream.aclose()  # the client went away: abort, free the blocks

    return replay()


async def final_output(outputs: AsyncIterator[RequestOutput]) -> tuple[RequestOutput, str, list[TokenLogprob]]:
    text, logprobs, last = [], [], None
    async for out in outputs:
        text.append(out.delta_text)
        logprobs.extend(out.logprobs)
        last = out
    return last, "".join(text), logprobs


def usage(out: RequestOutput) -> dict:
    completion = out.num_output_tokens
    return {"prompt_tokens": out.num_prompt_tokens, "completion_tokens": completion,
            "total_tokens": out.num_prompt_tokens + completion,
            "prompt_tokens_details": {"cached_tokens": out.num_cached_tokens}}
