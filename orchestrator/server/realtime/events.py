"""Client events parsed into clear errors, and a client's mistake as the `error` event it gets back."""
from __future__ import annotations

import json

from pydantic import TypeAdapter, ValidationError

from orchestrator.server.errors import validation_problem
from orchestrator.server.realtime.protocol import EVENT_TYPES, ITEM_TYPES, AnyClientEvent
from orchestrator.server.realtime.server_events import Error, ErrorDetail

_CLIENT_EVENT = TypeAdapter(AnyClientEvent)


class ClientError(Exception):
    """A client mistake, sent back as an `error` event; the session stays open."""

    def __init__(self, message: str, code: str = "invalid_request_error", param: str | None = None,
                 event_id: str | None = None) -> None:
        super().__init__(message)
        self.message, self.code, self.param, self.event_id = message, code, param, event_id


def error_event(error: ClientError) -> Error:
    return Error(error=ErrorDetail(code=error.code, message=error.message, param=error.param,
                                   event_id=error.event_id))


MAX_BRACKETS = 4096  # objects and arrays in one event; a real one has a few dozen (audio travels as base64 text)


def parse_client_event(text: str):
    """A client event from one text frame; ClientError names what is wrong with it."""
    if text.count("{") + text.count("[") > MAX_BRACKETS:
        raise ClientError(f"the event nests or lists more than {MAX_BRACKETS} objects and arrays; send a flat event "
                          "as the API documents it", "invalid_event")
    try:
        raw = json.loads(text)
    except RecursionError:
        raise ClientError("the event is nested too deeply to read; send a flat event as the API documents it",
                          "invalid_event") from None
    except ValueError as error:
        raise ClientError(f"the event is not valid JSON ({error}); send one JSON object per text frame",
                          "invalid_json") from None
    if not isinstance(raw, dict):
        raise ClientError("the event must be a JSON object with a `type`", "invalid_event")
    event_id = raw.get("event_id") if isinstance(raw.get("event_id"), str) else None
    kind = raw.get("type")
    if kind not in EVENT_TYPES:
        raise ClientError(f"unknown event type {kind!r}; this server handles: {', '.join(EVENT_TYPES)}",
                          "invalid_event_type" if kind is not None else "missing_event_type", "type", event_id)
    try:
        return _CLIENT_EVENT.validate_python(raw)
    except ValidationError as error:
        problem = validation_problem(error.errors(include_url=False), skip=1, tags=ITEM_TYPES)  # skip: the type
        raise ClientError(problem.message, "invalid_value", problem.param, event_id) from None


def usage_dict(prompt_tokens: int, cached_tokens: int, output_tokens: int) -> dict:
    return {"total_tokens": prompt_tokens + output_tokens, "input_tokens": prompt_tokens,
            "output_tokens": output_tokens,
            "input_token_details": {"text_tokens": prompt_tokens, "audio_tokens": 0, "cached_tokens": cached_tokens},
            "output_token_details": {"text_tokens": output_tokens, "audio_tokens": 0}}
