"""The conversation to prompt tokens through the model's chat template; when too long, the oldest turns go."""
from __future__ import annotations

import asyncio

from orchestrator.server.realtime.events import ClientError
from orchestrator.server.state import LLMState

MIN_REPLY_TOKENS = 64  # room a voice reply needs at least; older turns are dropped to keep it


async def render_prompt(state: LLMState, instructions: str | None, turns: list[tuple[str, str]]
                        ) -> tuple[list[int], int]:
    """(prompt token ids, tokens left for the reply), rendered off the event loop."""
    return await asyncio.to_thread(_render, state, instructions, turns)


def _render(state: LLMState, instructions: str | None, turns: list[tuple[str, str]]) -> tuple[list[int], int]:
    tokenizer = state.llm.tokenizer
    if tokenizer.chat_template is None:
        raise ClientError("the voice LLM has no chat template, so it cannot hold a conversation; use an instruct "
                          "model", "model_not_supported")
    system = [{"role": "system", "content": instructions}] if instructions else []
    while True:
        messages = system + [{"role": role, "content": text} for role, text in turns]
        try:
            text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False,
                                                 **state.chat_template_kwargs)
        except Exception as error:  # a template raises on shapes it does not accept (jinja's raise_exception)
            raise ClientError(f"the model's chat template rejected this conversation: {error}",
                              "invalid_conversation") from None
        ids = tokenizer.encode(text, add_special_tokens=False)
        room = state.max_model_len - len(ids)
        if room >= MIN_REPLY_TOKENS or len(turns) <= 1:
            break
        turns = turns[1:]  # like OpenAI's truncation "auto": the oldest turn goes
    if room < 1:
        raise ClientError(f"the conversation needs {len(ids)} tokens, more than the model's context of "
                          f"{state.max_model_len}; shorten the instructions or the last message",
                          "context_length_exceeded")
    return ids, room
