"""The conversation to prompt tokens through the model's chat template; when too long, the oldest turns go."""
from __future__ import annotations

import asyncio

from typing import TYPE_CHECKING

from orchestrator.server.realtime.events import ClientError
from orchestrator.server.tool_choice import place_tools

if TYPE_CHECKING:
    from orchestrator.server.state import LLMState

MIN_REPLY_TOKENS = 64  # room a voice reply needs at least; older turns are dropped to keep it


async def render_prompt(state: LLMState, tokenizer, instructions: str | None, turns: list[dict],
                        tools: list[dict] | None = None) -> tuple[list[int], int]:
    """(prompt token ids, tokens left for the reply), rendered off the event loop."""
    return await asyncio.to_thread(_render, state, tokenizer, instructions, turns, tools)


def _render(state: LLMState, tokenizer, instructions: str | None, turns: list[dict], tools: list[dict] | None
            ) -> tuple[list[int], int]:
    if tokenizer.chat_template is None:
        raise ClientError("the voice LLM has no chat template, so it cannot hold a conversation; use an instruct "
                          "model", "model_not_supported")
    system = [{"role": "system", "content": instructions}] if instructions else []
    while True:
        try:
            messages, shown = place_tools(tokenizer, system + turns, tools)
            text = tokenizer.apply_chat_template(messages, tools=shown, add_generation_prompt=True, tokenize=False,
                                                 **state.chat_template_kwargs)
        except Exception as error:  # a template raises on shapes it does not accept (jinja's raise_exception)
            raise ClientError(f"the model's chat template rejected this conversation: {error}",
                              "invalid_conversation") from None
        ids = tokenizer.encode(text, add_special_tokens=False)
        room = state.max_model_len - len(ids)
        if room >= MIN_REPLY_TOKENS or len(turns) <= 1:
            break
        turns = _drop_oldest(turns)  # like OpenAI's truncation "auto": the oldest turn goes
    if room < 1:
        raise ClientError(f"the conversation needs {len(ids)} tokens, more than the model's context of "
                          f"{state.max_model_len}; shorten the instructions or the last message",
                          "context_length_exceeded")
    return ids, room


def _drop_oldest(turns: list[dict]) -> list[dict]:
    """The turns without the oldest, and without tool results whose call went with it."""
    rest = turns[1:]
    while len(rest) > 1 and rest[0]["role"] == "tool":
        rest = rest[1:]
    return rest
