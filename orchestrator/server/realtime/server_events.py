"""Every event the server sends on the realtime socket, typed, in one place (GA names and fields).

Items, the session and the response travel as the dicts their owners build (`HistoryItem.as_item`,
`SessionConfig.model_dump`, `Response.resource`); each event's own fields are checked here.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Literal, get_args

from pydantic import BaseModel

from orchestrator.server.realtime.ids import new_id


class ServerEvent(BaseModel):
    type: str

    def wire(self) -> dict[str, Any]:
        """The event as it goes out, stamped with a fresh event_id."""
        return {"event_id": new_id("event"), **self.model_dump()}


class WithSession(ServerEvent):
    session: dict[str, Any]


class SessionCreated(WithSession):
    type: Literal["session.created"] = "session.created"


class SessionUpdated(WithSession):
    type: Literal["session.updated"] = "session.updated"


class ErrorDetail(BaseModel):
    type: str = "invalid_request_error"
    code: str
    message: str
    param: str | None = None
    event_id: str | None = None


class Error(ServerEvent):
    type: Literal["error"] = "error"
    error: ErrorDetail


class BufferCleared(ServerEvent):
    type: Literal["input_audio_buffer.cleared"] = "input_audio_buffer.cleared"


class BufferCommitted(ServerEvent):
    type: Literal["input_audio_buffer.committed"] = "input_audio_buffer.committed"
    previous_item_id: str | None
    item_id: str


class SpeechStarted(ServerEvent):
    type: Literal["input_audio_buffer.speech_started"] = "input_audio_buffer.speech_started"
    audio_start_ms: int
    item_id: str


class SpeechStopped(ServerEvent):
    type: Literal["input_audio_buffer.speech_stopped"] = "input_audio_buffer.speech_stopped"
    audio_end_ms: int
    item_id: str


class ItemPlaced(ServerEvent):
    """An item of the conversation, and the one before it."""
    previous_item_id: str | None
    item: dict[str, Any]


class ItemAdded(ItemPlaced):
    type: Literal["conversation.item.added"] = "conversation.item.added"


class ItemDone(ItemPlaced):
    type: Literal["conversation.item.done"] = "conversation.item.done"


class ItemRetrieved(ServerEvent):
    type: Literal["conversation.item.retrieved"] = "conversation.item.retrieved"
    item: dict[str, Any]


class ItemDeleted(ServerEvent):
    type: Literal["conversation.item.deleted"] = "conversation.item.deleted"
    item_id: str


class ItemTruncated(ServerEvent):
    type: Literal["conversation.item.truncated"] = "conversation.item.truncated"
    item_id: str
    content_index: int
    audio_end_ms: int


class TranscriptionDelta(ServerEvent):
    type: Literal["conversation.item.input_audio_transcription.delta"] = \
        "conversation.item.input_audio_transcription.delta"
    item_id: str
    content_index: int = 0
    delta: str


class TranscriptionCompleted(ServerEvent):
    type: Literal["conversation.item.input_audio_transcription.completed"] = \
        "conversation.item.input_audio_transcription.completed"
    item_id: str
    content_index: int = 0
    transcript: str
    usage: dict[str, Any]


class TranscriptionFailed(ServerEvent):
    type: Literal["conversation.item.input_audio_transcription.failed"] = \
        "conversation.item.input_audio_transcription.failed"
    item_id: str
    content_index: int = 0
    error: dict[str, Any]


class ResponseCreated(ServerEvent):
    type: Literal["response.created"] = "response.created"
    response: dict[str, Any]


class ResponseDone(ServerEvent):
    type: Literal["response.done"] = "response.done"
    response: dict[str, Any]
    latency: dict[str, float]  # ours, beside GA's fields: milliseconds per stage of the turn


class InOutput(ServerEvent):
    """One output item of a response."""
    response_id: str
    output_index: int
    item: dict[str, Any]


class OutputItemAdded(InOutput):
    type: Literal["response.output_item.added"] = "response.output_item.added"


class OutputItemDone(InOutput):
    type: Literal["response.output_item.done"] = "response.output_item.done"


class InContent(ServerEvent):
    """An event about the response message's one content part."""
    response_id: str
    item_id: str
    output_index: int
    content_index: int = 0


class ContentPartAdded(InContent):
    type: Literal["response.content_part.added"] = "response.content_part.added"
    part: dict[str, Any]


class ContentPartDone(InContent):
    type: Literal["response.content_part.done"] = "response.content_part.done"
    part: dict[str, Any]


class TextDelta(InContent):
    type: Literal["response.output_text.delta"] = "response.output_text.delta"
    delta: str


class TextDone(InContent):
    type: Literal["response.output_text.done"] = "response.output_text.done"
    text: str


class AudioTranscriptDelta(InContent):
    type: Literal["response.output_audio_transcript.delta"] = "response.output_audio_transcript.delta"
    delta: str


class AudioTranscriptDone(InContent):
    type: Literal["response.output_audio_transcript.done"] = "response.output_audio_transcript.done"
    transcript: str


class AudioDelta(InContent):
    type: Literal["response.output_audio.delta"] = "response.output_audio.delta"
    delta: str


class AudioDone(InContent):
    type: Literal["response.output_audio.done"] = "response.output_audio.done"


class InCall(ServerEvent):
    """An event about a function call's arguments."""
    response_id: str
    item_id: str
    output_index: int
    call_id: str


class ArgumentsDelta(InCall):
    type: Literal["response.function_call_arguments.delta"] = "response.function_call_arguments.delta"
    delta: str


class ArgumentsDone(InCall):
    type: Literal["response.function_call_arguments.done"] = "response.function_call_arguments.done"
    name: str
    arguments: str


def _leaves(cls: type[ServerEvent]) -> list[type[ServerEvent]]:
    subclasses = cls.__subclasses__()
    return [leaf for sub in subclasses for leaf in _leaves(sub)] if subclasses else [cls]


Send = Callable[[ServerEvent], Awaitable[None]]  # how the session's parts put an event on the socket

# The event types this server sends, read off the classes above (a test checks each against the openai SDK's union).
SERVER_EVENT_TYPES = tuple(get_args(event.model_fields["type"].annotation)[0] for event in _leaves(ServerEvent))
