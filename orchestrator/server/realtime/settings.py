"""session.update as pure functions: the partial settings merged over the session's, checked against what the
stack can do; the result is the new config and the settings refused (each one its own `error`)."""
from __future__ import annotations

import copy
from dataclasses import dataclass

from pydantic import ValidationError

from engines.errors import UnknownVoiceError
from engines.tts.voice_blend import parse_blend
from orchestrator.server.errors import validation_problem
from orchestrator.server.realtime import protocol as p
from orchestrator.server.realtime.events import ClientError


def known(voice: str, voices: list[str]) -> bool:
    """Whether `voice` is a listed voice, or a blend (Kokoro-FastAPI's a+b, a(2)+b(1)) whose every part is one."""
    if voice in voices:
        return True
    try:
        return all(part in voices for part, _ in parse_blend(voice))
    except UnknownVoiceError:
        return False


@dataclass(slots=True, frozen=True)
class Abilities:
    """What the stack lets a session do."""
    speaks: bool               # a TTS model is in the stack
    listens: bool              # a VAD and a speech-to-text model are


def apply_update(config: p.SessionConfig, update: dict, can: Abilities, voices: list[str] | None,
                 event_id: str | None = None) -> tuple[p.SessionConfig, list[ClientError]]:
    """The session after this update, and the settings refused (the rest applies); ClientError refuses it all."""
    update, refused = copy.deepcopy(update), []
    update.pop("tracing", None)  # accepted, not done: session.updated shows tracing null
    while True:
        try:
            new = p.SessionConfig.model_validate(merge(config.model_dump(), update))
            break
        except ValidationError as error:
            problem = validation_problem(error.errors(include_url=False), "session", tags=p.ITEM_TYPES)
            if not _drop(update, problem.loc):  # the fault is not in what was sent: refuse it all
                raise ClientError(problem.message, "invalid_value", problem.param) from None
            refused.append(ClientError(f"{problem.message}; the rest of the update was applied", "invalid_value",
                                       problem.param, event_id))
    _check(config, new, can)
    voice = new.audio.output.voice
    if voice is not None and voice != config.audio.output.voice and voices is not None and not known(voice, voices):
        refused.append(ClientError(f"voice {voice!r} does not exist for this server's TTS model; choose one of: "
                                   f"{', '.join(voices)} (or a blend of them, a+b or a(2)+b(1)); the rest of the "
                                   "update was applied", "invalid_value",
                                   "session.audio.output.voice", event_id))
        new.audio.output.voice = config.audio.output.voice
    if problem := tool_problem(new.tools, new.tool_choice, "session"):
        refused.append(ClientError(f"{problem.message}; the rest of the update was applied", "invalid_value",
                                   problem.param, event_id))
        new.tool_choice = "auto"
    return new, refused


def _check(old: p.SessionConfig, new: p.SessionConfig, can: Abilities) -> None:
    """Settings that refuse the whole update: what the session cannot change, what the stack cannot do."""
    if new.model != old.model:
        raise ClientError("the session's model cannot change; open a new session with ?model=...",
                          "invalid_value", "session.model")
    if new.id != old.id:
        raise ClientError("the session id is set by the server", "invalid_value", "session.id")
    if "audio" in new.output_modalities and not can.speaks:
        raise ClientError("this server's stack has no text-to-speech model, so output_modalities can only be "
                          "['text']", "invalid_value", "session.output_modalities")
    if new.audio.input.turn_detection is not None and not can.listens:
        raise ClientError("this server's stack has no VAD and speech-to-text model for server_vad; set "
                          "turn_detection to null and send text items", "invalid_value",
                          "session.audio.input.turn_detection")


def tool_problem(tools: list[p.FunctionTool], choice: p.ToolChoice, where: str) -> ClientError | None:
    """What stops this choice of tools: a function that is not among them, or required with none."""
    names = [t.name for t in tools]
    if isinstance(choice, p.ToolChoiceFunction) and choice.name not in names:
        return ClientError(f"tool_choice names {choice.name!r}, which is not among the tools "
                           f"({', '.join(names) or 'none'})", "invalid_value", f"{where}.tool_choice")
    if choice == "required" and not tools:
        return ClientError("tool_choice 'required' needs at least one tool", "invalid_value", f"{where}.tool_choice")
    return None


def _drop(update: dict, path: tuple) -> bool:
    """Remove the setting a validation error points at from the client's update; False if it is not there."""
    keys = [k for k in path if isinstance(k, str) and not k.startswith(("function-", "literal[", "tagged-union"))
            and not k[:1].isupper()]
    node = update
    for depth, key in enumerate(keys):
        if isinstance(node, dict) and key not in node and node.get("type") == key:
            continue  # a union member's tag (turn_detection's "server_vad"), not a key the client sent
        if not isinstance(node, dict) or key not in node:
            return False
        if depth == len(keys) - 1 or not isinstance(node[key], dict):
            del node[key]
            return True
        node = node[key]
    return False


def merge(base: dict, update: dict) -> dict:
    """session.update's partial settings over the current ones, object by object; an object of another `type`
    (semantic_vad for server_vad) replaces the old one whole."""
    out = dict(base)
    for key, value in update.items():
        old = base.get(key)
        same_kind = isinstance(old, dict) and isinstance(value, dict) and value.get("type", old.get("type")) == old.get(
            "type")
        out[key] = merge(old, value) if same_kind else value
    return out
