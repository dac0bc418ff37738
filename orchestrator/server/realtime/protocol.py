"""What crosses the realtime socket from the client: the session's settings and the client events (GA names).

A faithful subset of OpenAI's Realtime API: unknown fields are refused by name rather than ignored,
so a client never believes a setting took effect when it did not.
"""
from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, get_args

from jsonschema import SchemaError
from jsonschema.validators import validator_for
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator
from pydantic_core import PydanticCustomError


class Wire(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AudioFormat(Wire):
    type: Literal["audio/pcm"] = "audio/pcm"   # PCM16 little-endian mono
    rate: Literal[16000, 24000] = 24000        # OpenAI speaks 24 kHz; 16 kHz saves a resample for 16 kHz clients


class TurnDetection(Wire):
    type: Literal["server_vad"] = "server_vad"
    threshold: float = Field(0.5, gt=0, lt=1)
    prefix_padding_ms: int = Field(300, ge=0, le=5000)
    silence_duration_ms: int = Field(500, ge=0, le=10_000)
    create_response: bool = True
    interrupt_response: bool = True
    idle_timeout_ms: None = None

    judges_words: ClassVar[bool] = False

    def wait_ms(self, complete: bool | None) -> int:
        """The silence after the last voiced sample that ends the turn; server_vad does not read the words."""
        return self.silence_duration_ms


# semantic_vad's eagerness as the silence that ends a turn: (the words so far are complete, they are not or are not
# judged yet). The second is OpenAI's documented longest wait: 8 s, 4 s and 2 s for low, medium, high (auto: medium).
EAGERNESS_WAIT_MS = {"high": (160, 2000), "medium": (250, 4000), "auto": (250, 4000), "low": (600, 8000)}


class SemanticVad(Wire):
    """End the turn as soon as the words make a complete utterance (read from the pause's transcript)."""
    type: Literal["semantic_vad"]
    eagerness: Literal["low", "medium", "high", "auto"] = "auto"
    create_response: bool = True
    interrupt_response: bool = True

    threshold: ClassVar[float] = 0.5
    prefix_padding_ms: ClassVar[int] = 300
    judges_words: ClassVar[bool] = True

    def wait_ms(self, complete: bool | None) -> int:
        done, going_on = EAGERNESS_WAIT_MS[self.eagerness]
        return done if complete else going_on


class InputTranscription(Wire):
    model: str | None = None
    language: str | None = None
    prompt: str | None = None


class AudioInput(Wire):
    format: AudioFormat = Field(default_factory=AudioFormat)
    transcription: InputTranscription | None = None
    turn_detection: Annotated[TurnDetection | SemanticVad, Field(discriminator="type")] | None = Field(
        default_factory=TurnDetection)
    noise_reduction: None = None


class AudioOutput(Wire):
    format: AudioFormat = Field(default_factory=AudioFormat)
    voice: str | None = None
    speed: float = Field(1.0, ge=0.25, le=1.5)


class SessionAudio(Wire):
    input: AudioInput = Field(default_factory=AudioInput)
    output: AudioOutput = Field(default_factory=AudioOutput)


class FunctionTool(Wire):
    """A function the model may call: the chat template shows it to the model, the tool parser reads its calls."""
    type: Literal["function"] = "function"
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})

    @model_validator(mode="before")
    @classmethod
    def _function_tools_only(cls, value: Any) -> Any:
        if isinstance(value, dict) and value.get("type") == "mcp":
            raise PydanticCustomError("mcp_unsupported", "MCP tools are not supported here; declare the functions "
                                                         "as function tools and make the MCP calls in your client")
        return value

    @field_validator("parameters")
    @classmethod
    def _json_schema(cls, schema: dict[str, Any]) -> dict[str, Any]:
        try:
            validator_for(schema).check_schema(schema)
        except SchemaError as error:
            raise PydanticCustomError("invalid_schema", "not a valid JSON Schema: {reason}",
                                      {"reason": error.message}) from None
        if schema.get("type", "object") != "object":
            raise PydanticCustomError("invalid_schema", "a function's parameters must be a JSON Schema of type "
                                                        "object")
        return schema

    def chat_tool(self) -> dict[str, Any]:
        """The tool as chat templates take it (the Chat Completions shape)."""
        function = {"name": self.name, "parameters": self.parameters}
        return {"type": "function", "function": function | ({"description": self.description}
                                                            if self.description else {})}


class ToolChoiceFunction(Wire):
    type: Literal["function"]
    name: str


ToolChoice = Literal["auto", "none", "required"] | ToolChoiceFunction
Modalities = Annotated[list[Literal["text", "audio"]], Field(min_length=1, max_length=2)]
MaxTokens = Annotated[int, Field(ge=1, le=4096)] | Literal["inf"]


class SessionConfig(Wire):
    """The session as OpenAI's `session` object; session.update merges a partial one into it."""
    type: Literal["realtime"] = "realtime"
    object: Literal["realtime.session"] = "realtime.session"
    id: str = ""
    model: str = ""
    instructions: str | None = None   # None: the stack's voice.system_prompt
    output_modalities: Modalities = Field(default_factory=lambda: ["audio"])
    audio: SessionAudio = Field(default_factory=SessionAudio)
    max_output_tokens: MaxTokens = "inf"
    temperature: float = Field(0.8, ge=0, le=2)
    tools: Annotated[list[FunctionTool], Field(max_length=128)] = Field(default_factory=list)
    tool_choice: ToolChoice = "auto"
    tracing: None = None  # sessions are not traced: a client's "auto" is taken and shown as null


class ContentPart(Wire):
    type: Literal["input_text", "output_text", "text", "input_audio", "output_audio"]
    text: str | None = None
    transcript: str | None = None
    audio: None = None


class MessageItem(Wire):
    id: str | None = Field(None, max_length=64)
    type: Literal["message"] = "message"
    object: Literal["realtime.item"] | None = None
    status: Literal["completed", "incomplete", "in_progress"] | None = None
    role: Literal["user", "assistant", "system"]
    content: list[ContentPart] = Field(min_length=1)

    def text(self) -> str:
        return "".join(part.text or part.transcript or "" for part in self.content)


class FunctionCallItem(Wire):
    """A call the model made (a client may add one to the conversation too)."""
    id: str | None = Field(None, max_length=64)
    type: Literal["function_call"]
    object: Literal["realtime.item"] | None = None
    status: Literal["completed", "incomplete", "in_progress"] | None = None
    call_id: str | None = Field(None, max_length=64)
    name: str
    arguments: str


class FunctionCallOutputItem(Wire):
    """What the client's function returned, for the call with this call_id."""
    id: str | None = Field(None, max_length=64)
    type: Literal["function_call_output"]
    object: Literal["realtime.item"] | None = None
    status: Literal["completed", "incomplete", "in_progress"] | None = None
    call_id: str
    output: str


ITEM_TYPES = ("message", "function_call", "function_call_output")
Item = Annotated[Annotated[MessageItem, Tag("message")] | Annotated[FunctionCallItem, Tag("function_call")]
                 | Annotated[FunctionCallOutputItem, Tag("function_call_output")],
                 Discriminator(lambda item: item.get("type", "message") if isinstance(item, dict) else item.type)]


class ResponseOptions(Wire):
    """response.create's per-response overrides."""
    instructions: str | None = None
    output_modalities: Modalities | None = None
    max_output_tokens: MaxTokens | None = None
    conversation: Literal["auto", "none"] = "auto"
    metadata: dict[str, str] | None = None
    tools: Annotated[list[FunctionTool], Field(max_length=128)] | None = None
    tool_choice: ToolChoice | None = None


class ClientEvent(Wire):
    event_id: str | None = Field(None, max_length=128)


class SessionUpdate(ClientEvent):
    type: Literal["session.update"]
    session: dict


class AudioAppend(ClientEvent):
    type: Literal["input_audio_buffer.append"]
    audio: str


class AudioCommit(ClientEvent):
    type: Literal["input_audio_buffer.commit"]


class AudioClear(ClientEvent):
    type: Literal["input_audio_buffer.clear"]


class ItemCreate(ClientEvent):
    type: Literal["conversation.item.create"]
    previous_item_id: str | None = None
    item: Item


class ResponseCreate(ClientEvent):
    type: Literal["response.create"]
    response: ResponseOptions = Field(default_factory=ResponseOptions)


class ResponseCancel(ClientEvent):
    type: Literal["response.cancel"]
    response_id: str | None = None


class ItemTruncate(ClientEvent):
    type: Literal["conversation.item.truncate"]
    item_id: str
    content_index: int = Field(0, ge=0)
    audio_end_ms: int = Field(ge=0)


class ItemRetrieve(ClientEvent):
    type: Literal["conversation.item.retrieve"]
    item_id: str


class ItemDelete(ClientEvent):
    type: Literal["conversation.item.delete"]
    item_id: str


AnyClientEvent = Annotated[SessionUpdate | AudioAppend | AudioCommit | AudioClear | ItemCreate | ResponseCreate
                           | ResponseCancel | ItemTruncate | ItemRetrieve | ItemDelete, Field(discriminator="type")]
# The client event types this server handles, read off the union (each event's `type` literal), in its order.
EVENT_TYPES = tuple(get_args(event.model_fields["type"].annotation)[0]
                    for event in get_args(get_args(AnyClientEvent)[0]))
