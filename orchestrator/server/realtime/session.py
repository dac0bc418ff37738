"""One realtime session: its settings, the conversation, turns from the microphone, and one response at a time.

Turns run as tasks beside the socket's read loop, so audio keeps flowing in (and can barge in) while
a turn is transcribed and answered. Every task a session starts is in `tasks`; close() ends them all.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import numpy as np
from pydantic import ValidationError

from engines.asr.outputs import TranscribeOptions, Transcription
from engines.errors import EngineBusyError, EngineDeadError
from engines.llm.parsers.hermes import forcing_prefix
from orchestrator.server.metrics import Metrics
from orchestrator.server.realtime import protocol as p
from orchestrator.server.realtime.answers import Prompt, ToolMode
from orchestrator.server.realtime.audio import ENGINE_RATE
from orchestrator.server.realtime.conversation import CALL, CALL_OUTPUT, HistoryItem, chat_messages, item_dict
from orchestrator.server.realtime.draft import Draft, Prefetch
from orchestrator.server.realtime.end_of_turn import utterance_complete
from orchestrator.server.realtime.events import ClientError, error_event, new_id, validation_message
from orchestrator.server.realtime.microphone import Microphone
from orchestrator.server.realtime.response import Response, SpokenOutput, TurnClock
from orchestrator.server.realtime.voice import VoiceEngines

log = logging.getLogger(__name__)


# Each client event's handler, by the event's class: the dispatch table, built once.
HANDLERS: dict[type, str] = {
    p.SessionUpdate: "_update", p.AudioAppend: "_append", p.AudioCommit: "_commit_buffer", p.AudioClear: "_clear",
    p.ItemCreate: "_create_item", p.ResponseCreate: "_create_response", p.ResponseCancel: "_cancel_response",
    p.ItemTruncate: "_truncate_item", p.ItemRetrieve: "_retrieve_item", p.ItemDelete: "_delete_item"}

class RealtimeSession:
    def __init__(self, engines: VoiceEngines, send: Callable[[dict], Awaitable[None]], metrics: Metrics,
                 model: str | None) -> None:
        self.engines, self.send, self.metrics = engines, send, metrics
        self.conversation_id = new_id("conv")
        audio_in = engines.vad is not None and engines.asr is not None
        input_audio = p.AudioInput(turn_detection=p.TurnDetection() if audio_in else None)
        self.config = p.SessionConfig(id=new_id("sess"), model=model or engines.llm.served_name,
                                      output_modalities=["audio"] if engines.tts is not None else ["text"],
                                      audio=p.SessionAudio(input=input_audio))
        self.history: list[HistoryItem] = []
        self.mic = Microphone(engines.vad, engines.limits.max_buffered_audio_s, send, self._barge_in, self._commit,
                              self._paused, self._resumed)
        self.response: Response | None = None
        self.draft: Draft | None = None  # the work begun on the current pause
        self.tasks: set[asyncio.Task] = set()

    async def start(self) -> None:
        if self.engines.tts is not None:
            self.config.audio.output.voice = await self._default_voice()
        await self.mic.configure(self.config.audio.input.format.rate, self.config.audio.input.turn_detection)
        await self.send({"type": "session.created", "session": self.config.model_dump()})

    async def close(self) -> None:
        """End every task (an open response or draft is aborted, freeing its KV blocks) and the VAD stream."""
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self._drop_draft()
        await self.mic.close()

    async def handle(self, event) -> None:
        """Apply one client event; ClientError goes back to the client as an `error` event."""
        handler = getattr(self, HANDLERS[type(event)])
        try:
            await handler(event)
        except ClientError as error:
            error.event_id = error.event_id or event.event_id
            raise

    # -- session.update

    async def _update(self, event: p.SessionUpdate) -> None:
        """Apply what can be applied; each setting that cannot is named in its own `error`, after session.updated."""
        update, refused = dict(event.session), []
        update.pop("tracing", None)  # accepted, not done: session.updated shows tracing null
        if self.engines.model_matches(update.get("model")):
            update["model"] = self.config.model  # the vendor's name for the model this session already has
        while True:
            try:
                config = p.SessionConfig.model_validate(_merge(self.config.model_dump(), update))
                break
            except ValidationError as error:
                message, param = validation_message(error, "session")
                path = error.errors()[0]["loc"]
                if not _drop(update, path):  # the fault is not in what was sent: refuse the whole update
                    raise ClientError(message, "invalid_value", param) from None
                refused.append(ClientError(f"{message}; the rest of the update was applied", "invalid_value", param,
                                           event.event_id))
        self._check(config)
        if config.audio.output.voice is not None and config.audio.output.voice != self.config.audio.output.voice:
            names = [v.name for v in await self.engines.tts.voices()]
            if config.audio.output.voice not in names:
                refused.append(ClientError(f"voice {config.audio.output.voice!r} does not exist for this server's "
                                           f"TTS model; choose one of: {', '.join(names)}; the rest of the update was "
                                           "applied", "invalid_value", "session.audio.output.voice", event.event_id))
                config.audio.output.voice = self.config.audio.output.voice
        while problem := self._tool_problem(config.tools, config.tool_choice, "session"):
            refused.append(ClientError(f"{problem.message}; the rest of the update was applied", "invalid_value",
                                       problem.param, event.event_id))
            if problem.param.endswith(".tools"):
                config.tools = self.config.tools  # the old ones passed this check (or there were none)
            else:
                config.tool_choice = "auto"
        self.config = config
        await self.mic.configure(config.audio.input.format.rate, config.audio.input.turn_detection)
        await self.send({"type": "session.updated", "session": self.config.model_dump()})
        for error in refused:
            await self.send(error_event(error))

    def _check(self, config: p.SessionConfig) -> None:
        if config.model != self.config.model:
            raise ClientError("the session's model cannot change; open a new session with ?model=...",
                              "invalid_value", "session.model")
        if config.id != self.config.id:
            raise ClientError("the session id is set by the server", "invalid_value", "session.id")
        if "audio" in config.output_modalities and self.engines.tts is None:
            raise ClientError("this server's stack has no text-to-speech model, so output_modalities can only be "
                              "['text']", "invalid_value", "session.output_modalities")
        if config.audio.input.turn_detection is not None and (self.engines.vad is None or self.engines.asr is None):
            raise ClientError("this server's stack has no VAD and speech-to-text model for server_vad; set "
                              "turn_detection to null and send text items", "invalid_value",
                              "session.audio.input.turn_detection")

    def _tool_problem(self, tools: list[p.FunctionTool], choice: p.ToolChoice, where: str) -> ClientError | None:
        """What stops these tools from reaching the model: no tool parser in the stack, a choice naming no tool."""
        if tools and not self.engines.llm.tool_call_parser:
            return ClientError(f"model {self.engines.llm.served_name!r} cannot call tools: the stack sets no "
                               "tool_call_parser for it (set tool_call_parser: hermes)", "invalid_value",
                               f"{where}.tools")
        names = [t.name for t in tools]
        if isinstance(choice, p.ToolChoiceFunction) and choice.name not in names:
            return ClientError(f"tool_choice names {choice.name!r}, which is not among the tools "
                               f"({', '.join(names) or 'none'})", "invalid_value", f"{where}.tool_choice")
        if choice == "required" and not tools:
            return ClientError("tool_choice 'required' needs at least one tool", "invalid_value",
                               f"{where}.tool_choice")
        return None

    async def _default_voice(self) -> str:
        names = [v.name for v in await self.engines.tts.voices()]
        return "alloy" if "alloy" in names else names[0]

    # -- input audio

    async def _append(self, event: p.AudioAppend) -> None:
        if self.engines.asr is None:
            raise ClientError("this server's stack has no speech-to-text model; send text with "
                              "conversation.item.create", "invalid_value", "audio")
        await self.mic.append(event.audio)

    async def _commit_buffer(self, event: p.AudioCommit) -> None:
        await self.mic.commit()

    async def _clear(self, event: p.AudioClear) -> None:
        await self.mic.clear()
        await self.send({"type": "input_audio_buffer.cleared"})

    async def _barge_in(self) -> None:
        if self.response is not None:
            await self.response.cancel("turn_detected")

    async def _paused(self, audio: np.ndarray, item_id: str) -> None:
        """A pause that may end the turn: transcribe what was said and, when the session may answer, start it."""
        await self._drop_draft()
        self.draft = draft = Draft(item_id, len(audio))
        draft.task = self._spawn(self._prepare(draft, audio), f"draft-{item_id}")

    async def _prepare(self, draft: Draft, audio: np.ndarray) -> None:
        try:
            result = await self._recognise(audio)
        except (EngineBusyError, EngineDeadError, ValueError) as error:
            draft.transcription.set_exception(error)
            return
        draft.transcription.set_result(result)
        text = result.text.strip()
        detection = self.config.audio.input.turn_detection
        if text and detection is not None and detection.create_response and self.response is None:
            turn = HistoryItem(draft.item_id, "user", text, "input_audio")
            try:
                prompt = await self._prompt(p.ResponseOptions(), [*self.history, turn])
            except ClientError:  # the turn's own response will say what is wrong, if the turn ends here
                prompt = None
            if prompt is not None:
                draft.prefetch = Prefetch(self.engines.answers, prompt)
        if detection is not None and detection.judges_words:
            await self.mic.decide(draft.item_id, detection.wait_ms(utterance_complete(text)))

    async def _resumed(self, item_id: str) -> None:
        """The user went on after a pause: what was begun on it is thrown away."""
        if self.draft is not None and self.draft.item_id == item_id:
            await self._drop_draft()

    async def _drop_draft(self) -> None:
        draft, self.draft = self.draft, None
        if draft is not None:
            started = await draft.cancel()
            log.debug("draft of %s at %d samples dropped (answer started: %s)", draft.item_id, draft.samples, started)
            if started:
                self.metrics.voice_preemptive.labels("cancelled").inc()

    async def _commit(self, audio: np.ndarray, item_id: str, clock: TurnClock, respond: bool) -> None:
        draft = self.draft if self.draft is not None and self.draft.covers(item_id, len(audio)) else None
        log.debug("turn %s ended at %d samples; its pause's draft %s", item_id, len(audio),
                  "is used" if draft else "does not cover it")
        if draft is None:
            await self._drop_draft()
        self.draft = None
        previous = self.history[-1].id if self.history else None
        entry = HistoryItem(item_id, "user", None, "input_audio")
        self.history.append(entry)
        await self.send({"type": "input_audio_buffer.committed", "previous_item_id": previous, "item_id": item_id})
        await self.send({"type": "conversation.item.added", "previous_item_id": previous,
                         "item": item_dict(item_id, "user", {"type": "input_audio", "transcript": None},
                                           "in_progress")})
        self._spawn(self._transcribe(entry, audio, clock, respond, draft), f"asr-{item_id}")

    async def _recognise(self, audio: np.ndarray) -> Transcription:
        settings = self.config.audio.input.transcription
        # One decoding pass at temperature 0: Whisper's fallback ladder can decode up to six times, which a
        # voice turn cannot wait for (on the random demo Whisper it made ASR 13x slower).
        options = TranscribeOptions(language=settings.language if settings else None,
                                    prompt=settings.prompt if settings else None, temperature=0.0)
        return await self.engines.asr.transcribe(audio, options)

    async def _transcribe(self, entry: HistoryItem, audio: np.ndarray, clock: TurnClock, respond: bool,
                          draft: Draft | None) -> None:
        """The turn's words (already heard by the pause's draft, or recognised now), then its answer."""
        try:
            try:
                result = await (asyncio.shield(draft.transcription) if draft else self._recognise(audio))
            except (EngineBusyError, EngineDeadError, ValueError) as error:
                entry.text = ""
                await self.send({"type": "conversation.item.input_audio_transcription.failed", "item_id": entry.id,
                                 "content_index": 0, "error": {"type": "server_error", "code": "transcription_failed",
                                                               "message": str(error)}})
                await self._item_done(entry)
                return
            entry.text = result.text.strip()
            clock.transcribed = time.perf_counter()
            for segment in result.segments:  # one delta per Whisper segment, as OpenAI's whisper-1 sends them
                if segment.text.strip():
                    await self.send({"type": "conversation.item.input_audio_transcription.delta", "item_id": entry.id,
                                     "content_index": 0, "delta": segment.text})
            await self.send({"type": "conversation.item.input_audio_transcription.completed", "item_id": entry.id,
                             "content_index": 0, "transcript": entry.text,
                             "usage": {"type": "duration", "seconds": round(len(audio) / ENGINE_RATE, 3)}})
            await self._item_done(entry)
            if respond and self.mic.speech is None:  # the user spoke again meanwhile: answer when that turn ends
                if self.response is not None:
                    await asyncio.gather(self.response.task, return_exceptions=True)
                await self._start_response(p.ResponseOptions(), clock, draft)
        finally:
            if draft is not None and await draft.cancel():  # an early answer nobody took
                self.metrics.voice_preemptive.labels("stale").inc()

    # -- conversation and responses

    async def _create_item(self, event: p.ItemCreate) -> None:
        item = event.item
        item_id = item.id or new_id("item")
        if any(h.id == item_id for h in self.history):
            raise ClientError(f"an item with id {item_id!r} is already in the conversation", "invalid_value",
                              "item.id")
        if isinstance(item, p.FunctionCallItem):
            entry = HistoryItem(item_id, "assistant", item.arguments, type=CALL, call_id=item.call_id or new_id("call"),
                                name=item.name)
        elif isinstance(item, p.FunctionCallOutputItem):
            if not any(h.type == CALL and h.call_id == item.call_id for h in self.history):
                raise ClientError(f"no function call with call_id {item.call_id!r} is in the conversation; send the "
                                  "call_id of a function_call item", "invalid_value", "item.call_id")
            entry = HistoryItem(item_id, "tool", item.output, type=CALL_OUTPUT, call_id=item.call_id)
        else:
            allowed = {"user": ("input_text",), "system": ("input_text",),
                       "assistant": ("output_text", "text", "output_audio")}[item.role]
            for i, part in enumerate(item.content):
                if part.type not in allowed:
                    raise ClientError(f"a {item.role} message cannot hold parts of type {part.type}; use "
                                      f"{' or '.join(allowed)}", "invalid_value", f"item.content.{i}.type")
            entry = HistoryItem(item_id, item.role, item.text(),
                                allowed[0] if item.role != "assistant" else "output_text")
        at = self._position(event.previous_item_id)
        self.history.insert(at, entry)
        previous = self.history[at - 1].id if at else None
        await self.send({"type": "conversation.item.added", "previous_item_id": previous, "item": entry.as_item()})
        await self._item_done(entry)

    async def _item_done(self, entry: HistoryItem) -> None:
        at = next((i for i, h in enumerate(self.history) if h is entry), None)
        previous = self.history[at - 1].id if at else None
        await self.send({"type": "conversation.item.done", "previous_item_id": previous, "item": entry.as_item()})

    def _item(self, item_id: str, param: str = "item_id") -> HistoryItem:
        for entry in self.history:
            if entry.id == item_id:
                return entry
        raise ClientError(f"item {item_id!r} is not in the conversation", "item_not_found", param)

    async def _retrieve_item(self, event: p.ItemRetrieve) -> None:
        await self.send({"type": "conversation.item.retrieved", "item": self._item(event.item_id).as_item()})

    async def _delete_item(self, event: p.ItemDelete) -> None:
        self.history.remove(self._item(event.item_id))
        await self.send({"type": "conversation.item.deleted", "item_id": event.item_id})

    async def _truncate_item(self, event: p.ItemTruncate) -> None:
        """Cut an answer's transcript at what the client really played: the pieces whose audio ends by then, and
        the share of the piece playing at that moment (by words); the next turn sees only that."""
        if self.response is not None and self.response.item_id == event.item_id:
            await self.response.cancel("client_cancelled")  # the answer still playing: it ends where it is cut
        entry = self._item(event.item_id)
        if entry.role != "assistant" or entry.pieces is None:
            kind = f"{entry.role} {entry.part}" if entry.type == "message" else entry.type
            raise ClientError(f"item {event.item_id!r} is a {kind} item; only an assistant's audio message can be "
                              "truncated", "invalid_value", "item_id")
        if event.content_index != 0:
            raise ClientError("the item has one content part; content_index must be 0", "invalid_value",
                              "content_index")
        total = entry.pieces[-1][1] if entry.pieces else 0.0
        if event.audio_end_ms > total + 1:
            raise ClientError(f"audio_end_ms {event.audio_end_ms} is past the end of the item's audio ({total:.0f} ms)",
                              "invalid_value", "audio_end_ms")
        kept, start = [], 0.0
        for text, end in entry.pieces:
            if end <= event.audio_end_ms:
                kept.append(text)
            elif event.audio_end_ms > start:
                words = text.split()
                kept.append(" ".join(words[:int(len(words) * (event.audio_end_ms - start) / (end - start))]))
                break
            start = end
        entry.text = " ".join(k for k in kept if k)
        entry.pieces = [(t, e) for t, e in entry.pieces if e <= event.audio_end_ms]
        await self.send({"type": "conversation.item.truncated", "item_id": event.item_id, "content_index": 0,
                         "audio_end_ms": event.audio_end_ms})

    def _position(self, previous_item_id: str | None) -> int:
        if previous_item_id is None:
            return len(self.history)
        if previous_item_id == "root":
            return 0
        for i, h in enumerate(self.history):
            if h.id == previous_item_id:
                return i + 1
        raise ClientError(f"previous_item_id {previous_item_id!r} is not in the conversation", "invalid_value",
                          "previous_item_id")

    async def _create_response(self, event: p.ResponseCreate) -> None:
        if self.response is not None:
            raise ClientError("the conversation already has an active response; cancel it (response.cancel) or "
                              "wait for response.done", "conversation_already_has_active_response")
        await self._start_response(event.response, TurnClock())

    async def _cancel_response(self, event: p.ResponseCancel) -> None:
        response = self.response
        if response is None or (event.response_id and event.response_id != response.id):
            message = "there is no response in progress to cancel" if response is None else \
                f"response {event.response_id!r} is not the one in progress"
            raise ClientError(message, "response_cancel_not_active")
        await response.cancel("client_cancelled")

    async def _prompt(self, options: p.ResponseOptions, history: list[HistoryItem]) -> Prompt:
        """The response's request: the conversation, instructions, tools and sampling, as the LLM takes them."""
        config = self.config
        history = history if options.conversation == "auto" else []
        asked = options.max_output_tokens or config.max_output_tokens
        instructions = options.instructions or config.instructions or self.engines.system_prompt
        return await self.engines.answers.prompt(instructions, chat_messages(history), self._tool_mode(options),
                                                 config.temperature, None if asked == "inf" else asked)

    async def _start_response(self, options: p.ResponseOptions, clock: TurnClock, draft: Draft | None = None) -> None:
        config = self.config
        modalities = options.output_modalities or config.output_modalities
        if "audio" in modalities and self.engines.tts is None:
            raise ClientError("this server's stack has no text-to-speech model; ask for output_modalities ['text']",
                              "invalid_value", "response.output_modalities")
        prompt = await self._prompt(options, self.history)
        out = config.audio.output
        voice = SpokenOutput(self.engines.tts, out.voice, out.speed, out.format.rate) if "audio" in modalities else None
        if self.response is not None:  # another turn started one while this prompt was rendered
            raise ClientError("the conversation already has an active response",
                              "conversation_already_has_active_response")
        prefetch = await draft.take(prompt) if draft is not None else None
        if prefetch is not None:
            self.metrics.voice_preemptive.labels("used").inc()
        clock.response_start = time.perf_counter()
        response = Response(self.send, self.engines.answers, prompt, voice, clock, self.conversation_id,
                            options.metadata, prefetch)
        response.previous_item_id = self.history[-1].id if self.history and options.conversation == "auto" else None
        if options.conversation == "auto":
            response.before_done = self._remember
        self.response = response
        response.task = self._spawn(response.run(), response.id)
        response.task.add_done_callback(lambda _: self._response_done(response))

    def _tool_mode(self, options: p.ResponseOptions) -> ToolMode | None:
        """The response's tools (its own, or the session's) and choice, or None when no call may be made."""
        tools = self.config.tools if options.tools is None else options.tools
        choice = options.tool_choice or self.config.tool_choice
        if problem := self._tool_problem(tools, choice, "response"):
            raise problem
        if not tools or choice == "none":
            return None
        named = choice.name if isinstance(choice, p.ToolChoiceFunction) else None
        forced = forcing_prefix(named) if named or choice == "required" else ""
        wire = {"type": "function", "function": {"name": named}} if named else choice
        return ToolMode([t.chat_tool() for t in tools], frozenset(t.name for t in tools), forced, wire)

    def _remember(self, response: Response) -> None:
        """The assistant's message (as far as the user got it: cut short on barge-in) and calls join the history."""
        self.history.extend(response.items())

    def _response_done(self, response: Response) -> None:
        if self.response is response:
            self.response = None
        self.metrics.observe_voice_turn(response.clock.breakdown(), response.status)

    def _spawn(self, coro, name: str) -> asyncio.Task:
        task = asyncio.create_task(coro, name=name)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            error = task.exception()
            if isinstance(error, ClientError):
                self._spawn(self._report(error), "report")
            elif not isinstance(error, ConnectionError):  # the client left: the session is closing anyway
                log.error("realtime task %s failed", task.get_name(), exc_info=error)

    async def _report(self, error: ClientError) -> None:
        await self.send(error_event(error))


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


def _merge(base: dict, update: dict) -> dict:
    """session.update's partial settings over the current ones, object by object; an object of another `type`
    (semantic_vad for server_vad) replaces the old one whole."""
    out = dict(base)
    for key, value in update.items():
        old = base.get(key)
        same_kind = isinstance(old, dict) and isinstance(value, dict) and value.get("type", old.get("type")) == old.get(
            "type")
        out[key] = _merge(old, value) if same_kind else value
    return out
