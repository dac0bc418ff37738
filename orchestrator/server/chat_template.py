"""Messages to a prompt through the model's own chat template (transformers), tools and switches passed in."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the tokenizer comes with the LLM; the server itself does not import transformers
    from transformers import PreTrainedTokenizerBase

from orchestrator.server.errors import OpenAIError
from orchestrator.server.protocol import ChatCompletionRequest
from orchestrator.server.tool_choice import place_tools


def _flatten(index: int, content) -> str | None:
    """OpenAI content parts to the text a text-only model reads; anything else is refused."""
    if content is None or isinstance(content, str):
        return content
    texts = []
    for part in content:
        if part.type != "text":
            raise OpenAIError(400, f"messages[{index}] has a {part.type} part, but this model is text-only; "
                                   f"send text parts only", f"messages.{index}.content")
        texts.append(part.text or "")
    return "".join(texts)


def render_chat(tokenizer: PreTrainedTokenizerBase, body: ChatCompletionRequest, defaults: dict[str, Any],
                with_tools: bool) -> str:
    messages = []
    for i, message in enumerate(body.messages):
        entry = message.model_dump(exclude_none=True)
        entry["content"] = _flatten(i, message.content)
        messages.append(entry)
    if tokenizer.chat_template is None:
        raise OpenAIError(400, "this model has no chat template; use /v1/completions with a plain prompt")
    kwargs = {**defaults, **(body.chat_template_kwargs or {})}
    messages, tools = place_tools(tokenizer, messages, body.tool_dicts() if with_tools else None)
    try:
        return tokenizer.apply_chat_template(messages, tools=tools, add_generation_prompt=True, tokenize=False,
                                             **kwargs)
    except Exception as error:  # a template raises on shapes it does not accept (jinja's raise_exception)
        raise OpenAIError(400, f"the model's chat template rejected these messages: {error}", "messages") from None
