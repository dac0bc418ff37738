"""What crosses the wire for the LLM routes: OpenAI request bodies, validated, and their sampling params."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, model_validator
from pydantic_core import PydanticCustomError

from engines.errors import EngineInputError
from engines.llm.sampling_params import MAX_LOGPROBS, MAX_SEED, MAX_STOP, MIN_SEED, SamplingParams


def encodable(text: str) -> str:
    """Text must be valid Unicode to reach a tokenizer: a lone UTF-16 surrogate (valid JSON) is refused here."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise PydanticCustomError("text_encoding", f"holds {text[error.start:error.end]!r} at character "
                                                   f"{error.start}, a lone UTF-16 surrogate that is not text; "
                                                   "send valid UTF-8") from None
    return text


Text = Annotated[str, AfterValidator(encodable)]


class StreamOptions(BaseModel):
    include_usage: StrictBool = False


class ChatContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["text", "image_url", "input_audio", "file"]
    text: Text | None = None


class FunctionSpec(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    description: Text | None = None
    parameters: dict[str, Any] | None = None   # a JSON schema object
    strict: StrictBool | None = None


class ToolSpec(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["function"]
    function: FunctionSpec


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Text | list[ChatContentPart] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None

    @model_validator(mode="after")
    def _tool_result_names_its_call(self) -> ChatMessage:
        if self.role == "tool" and not self.tool_call_id:
            raise PydanticCustomError("missing_tool_call_id", "a tool message needs the tool_call_id of the call it "
                                                              "answers")
        return self


class SamplingFields(BaseModel):
    """Fields shared by chat and text completions (OpenAI's plus vLLM's extras)."""
    model_config = ConfigDict(extra="ignore")
    model: str
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=-1)
    min_p: float | None = Field(None, ge=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    stop: Text | Annotated[list[Text], Field(max_length=MAX_STOP)] | None = None
    seed: int | None = Field(None, ge=MIN_SEED, le=MAX_SEED)
    presence_penalty: float = Field(0.0, ge=-2, le=2)
    frequency_penalty: float = Field(0.0, ge=-2, le=2)
    repetition_penalty: float = Field(1.0, gt=0)
    n: int = Field(1, ge=1)
    best_of: int | None = Field(None, ge=1)
    logit_bias: Annotated[dict[str, Annotated[float, Field(ge=-100, le=100)]], Field(max_length=1024)] | None = None
    user: str | None = None
    ignore_eos: StrictBool = False

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def sampling_params(self, max_tokens: int, default_seed: int | None, logprobs: int | None) -> SamplingParams:
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return SamplingParams(
            temperature=1.0 if self.temperature is None else self.temperature, top_p=self.top_p or 1.0,
            top_k=self.top_k or 0, min_p=self.min_p or 0.0,
            seed=self.seed if self.seed is not None else default_seed, max_tokens=max_tokens, stop=stop,
            presence_penalty=self.presence_penalty, frequency_penalty=self.frequency_penalty,
            repetition_penalty=self.repetition_penalty, logprobs=logprobs, ignore_eos=self.ignore_eos,
            logit_bias=self.token_bias())

    def token_bias(self) -> dict[int, float]:
        """logit_bias keys are token ids written as strings (OpenAI's shape); anything else is refused by name."""
        bias = {}
        for key, value in (self.logit_bias or {}).items():
            if not key.strip().isdigit():
                raise EngineInputError(f"logit_bias key {key!r} is not a token id; the keys are token ids as "
                                       "strings, e.g. {\"50256\": -100}", "logit_bias")
            bias[int(key)] = value
        return bias


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: StrictBool = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)
    tools: list[ToolSpec] | None = None
    tool_choice: str | dict[str, Any] | None = None
    chat_template_kwargs: dict[str, Any] | None = None

    def tool_dicts(self) -> list[dict[str, Any]] | None:
        """The tools as the chat template takes them (JSON, as sent)."""
        return [t.model_dump(exclude_none=True) for t in self.tools] if self.tools else None


class CompletionRequest(SamplingFields):
    prompt: Text | list[int] | list[Text] = Field(min_length=1)
    logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)
    echo: StrictBool = False
