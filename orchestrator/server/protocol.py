"""What crosses the wire for the LLM routes: OpenAI request bodies, validated, and their sampling params."""
from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, model_validator
from pydantic_core import PydanticCustomError

from engines.errors import EngineInputError
from engines.llm.sampling_params import (MAX_LOGPROBS, MAX_SEED, MAX_STOP, MIN_SEED, SamplingParams,
                                         StructuredOutputsParams)


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


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    name: str = Field("response", max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = None
    schema_: dict[str, Any] | bool | None = Field(None, alias="schema")
    strict: StrictBool | None = None   # honoured either way: the schema is enforced whole, never best effort


class ResponseFormat(BaseModel):
    """OpenAI's response_format: text, any JSON object, or JSON matching a schema."""
    model_config = ConfigDict(extra="forbid")
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_with_its_type(self) -> ResponseFormat:
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise PydanticCustomError("json_schema", "json_schema is given with type 'json_schema', and only then")
        return self


class StructuredOutputs(BaseModel):
    """vLLM's structured_outputs: exactly one of a JSON Schema, any JSON object, a regex, a choice, a grammar."""
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    json_: dict[str, Any] | Text | None = Field(None, alias="json")
    json_object: StrictBool | None = None
    regex: Text | None = None
    choice: list[Text] | None = None
    grammar: Text | None = None


# Fields that would change what the client gets back if honoured; this server cannot, so they are refused by name.
REFUSED_FIELDS = {
    "audio": "audio output is not produced by this route; use /v1/audio/speech or the realtime API",
    "prediction": "predicted outputs are not supported; leave out prediction",
    "web_search_options": "this server cannot search the web; leave out web_search_options",
    "functions": "the legacy functions field is not supported; send them as tools",
    "function_call": "the legacy function_call field is not supported; send tool_choice",
    "guided_json": "send response_format or structured_outputs instead of the removed guided_* fields",
    "guided_regex": "send structured_outputs.regex instead of guided_regex",
    "guided_choice": "send structured_outputs.choice instead of guided_choice",
    "guided_grammar": "send structured_outputs.grammar instead of guided_grammar",
}


class SamplingFields(BaseModel):
    """Fields shared by chat and text completions (OpenAI's plus vLLM's extras). Unknown fields are kept, so the
    server can refuse those that would change the answer (REFUSED_FIELDS) and name the rest as ignored."""
    model_config = ConfigDict(extra="allow")
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
    response_format: ResponseFormat | None = None
    structured_outputs: StructuredOutputs | None = None
    modalities: list[Literal["text", "audio"]] | None = None

    def unknown_fields(self) -> list[str]:
        """Fields this server does not read: 400 for one that would change the answer, else their names."""
        extra = sorted(self.model_extra or {})
        for name in extra:
            if name in REFUSED_FIELDS:
                raise EngineInputError(f"{name}: {REFUSED_FIELDS[name]}", name)
        if self.modalities and "audio" in self.modalities:
            raise EngineInputError("modalities: this route answers in text only; ask for ['text'], or use the "
                                   "realtime API for spoken answers", "modalities")
        return extra

    def structured(self) -> StructuredOutputsParams | None:
        """What the output must match (response_format or structured_outputs), as the engine takes it."""
        if self.response_format is not None and self.structured_outputs is not None:
            raise EngineInputError("send response_format or structured_outputs, not both", "structured_outputs")
        if (so := self.structured_outputs) is not None:
            json_schema = so.json_ if so.json_ is None or isinstance(so.json_, str) else json.dumps(so.json_)
            return StructuredOutputsParams(json=json_schema, json_object=bool(so.json_object), regex=so.regex,
                                           choice=tuple(so.choice) if so.choice is not None else None,
                                           grammar=so.grammar, param="structured_outputs")
        fmt = self.response_format
        if fmt is None or fmt.type == "text":
            return None
        if fmt.type == "json_object" or fmt.json_schema.schema_ is None:
            return StructuredOutputsParams(json_object=True, param="response_format")
        return StructuredOutputsParams(json=json.dumps(fmt.json_schema.schema_),
                                       param="response_format.json_schema.schema")

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
            logit_bias=self.token_bias(), structured_outputs=self.structured())

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
    parallel_tool_calls: StrictBool = True
    chat_template_kwargs: dict[str, Any] | None = None

    def tool_dicts(self) -> list[dict[str, Any]] | None:
        """The tools as the chat template takes them (JSON, as sent)."""
        return [t.model_dump(exclude_none=True) for t in self.tools] if self.tools else None


class CompletionRequest(SamplingFields):
    prompt: Text | list[int] | list[Text] = Field(min_length=1)
    logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)
    echo: StrictBool = False
