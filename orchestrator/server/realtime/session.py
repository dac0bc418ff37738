"""One realtime session: a dispatcher from client events to the conversation, the microphone and the responses.

Turns run as tasks beside the socket's read loop (in `tasks`, ended together on close), so audio keeps
flowing in (and can barge in) while a turn is transcribed and answered. The turn's phase lives in `turn`,
the items in `conversation`, the settings' rules in `settings`; this file wires them to the events.
"""
from __future__ import annotations

import asyncio
import logging
import time

import numpy as np

from engines.asr.batch import fitted_window
from engines.asr.outputs import TranscribeOptions, Transcription
from engines.errors import EngineBusyError, EngineDeadError
from orchestrator.server.metrics import Metrics
from orchestrator.server.realtime import protocol as p
from orchestrator.server.realtime import server_events as e
from orchestrator.server.realtime.answers import Prompt, ToolMode
from orchestrator.server.realtime.audio import ENGINE_RATE
from orchestrator.server.realtime.conversation import CALL, CALL_OUTPUT, Conversation, HistoryItem
from orchestrator.server.realtime.draft import Draft, Prefetch
from orchestrator.server.realtime.end_of_turn import utterance_complete
from orchestrator.server.realtime.events import ClientError, error_event
from orchestrator.server.realtime.ids import new_id
from orchestrator.server.realtime.live_transcript import PARTIAL_EVERY_S, STREAMING_MODELS, LiveTranscript
from orchestrator.server.realtime.microphone import Microphone
from orchestrator.server.realtime.response import Response, SpokenOutput, TurnClock
from orchestrator.server.realtime.settings import Abilities, apply_update, tool_problem
from orchestrator.server.realtime.tasks import SessionTasks
from orchestrator.server.realtime.turn import Turn, TurnPhase
from orchestrator.server.realtime.voice import VoiceEngines

log = logging.getLogger(__name__)


# Each client event's handler, by the event's class: the dispatch table, built once.
HANDLERS: dict[type, str] = {
    p.SessionUpdate: "_update", p.AudioAppend: "_append", p.AudioCommit: "_commit_buffer", p.AudioClear: "_clear",
    p.ItemCreate: "_create_item", p.ResponseCreate: "_create_response", p.ResponseCancel: "_cancel_response",
    p.ItemTruncate: "_truncate_item", p.ItemRetrieve: "_retrieve_item", p.ItemDelete: "_delete_item"}


class RealtimeSession:
    def __init__(self, engines: VoiceEngines, send: e.Send, metrics: Metrics, model: str | None) -> None:
        self.engines, self.send, self.metrics = engines, send, metrics
        self.conversation_id = new_id("conv")
        self.can = Abilities(engines.tts is not None, engines.vad is not None and engines.asr is not None)
        input_audio = p.AudioInput(turn_detection=p.TurnDetection() if self.can.listens else None)
        self.config = p.SessionConfig(id=new_id("sess"), model=model or engines.llm.served_name,
                                      output_modalities=["audio"] if self.can.speaks else ["text"],
                                      audio=p.SessionAudio(input=input_audio))
        self.turn = Turn(self.config.id)
        self.conversation = Conversation(send)
        self.mic = Microphone(engines.vad, engines.limits.max_buffered_audio_s, send, self)
        self.response: Response | None = None
        self.draft: Draft | None = None  # the work begun on the current pause
        self.live: LiveTranscript | None = None  # the words of the turn being spoken, as they come
        self.tasks = SessionTasks(self._report)

    async def start(self) -> None:
        if self.engines.tts is not None:
            self.config.audio.output.voice = await self._default_voice()
        await self.mic.configure(self.config.audio.input.format.rate, self.config.audio.input.turn_detection)
        await self.send(e.SessionCreated(session=self.config.model_dump()))

    async def close(self) -> None:
        """End every task (an open response or draft is aborted, freeing its KV blocks) and the VAD stream."""
        await self.tasks.close()
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
        update = dict(event.session)
        if self.engines.model_matches(update.get("model")):
            update["model"] = self.config.model  # the vendor's name for the model this session already has
        voices = [v.name for v in await self.engines.tts.voices()] if self.can.speaks and "audio" in update else None
        self.config, refused = apply_update(self.config, update, self.can, voices, event.event_id)
        if await self.mic.configure(self.config.audio.input.format.rate, self.config.audio.input.turn_detection):
            self.turn.cleared()
        await self.send(e.SessionUpdated(session=self.config.model_dump()))
        for error in refused:
            await self.send(error_event(error))

    async def _default_voice(self) -> str:
        names = [v.name for v in await self.engines.tts.voices()]
        return "alloy" if "alloy" in names else names[0]

    # -- input audio: the client's events, then what the microphone hears (this session is its TurnListener)

    async def _append(self, event: p.AudioAppend) -> None:
        if self.engines.asr is None:
            raise ClientError("this server's stack has no speech-to-text model; send text with "
                              "conversation.item.create", "invalid_value", "audio")
        await self.mic.append(event.audio)
        if self.turn.phase is TurnPhase.SPEAKING and self._live_words():
            self._listen_on()

    async def _commit_buffer(self, event: p.AudioCommit) -> None:
        await self.mic.commit()

    async def _clear(self, event: p.AudioClear) -> None:
        await self.mic.clear()
        self.turn.cleared()
        await self.send(e.BufferCleared())

    async def speech_started(self) -> None:
        self.turn.speech_started()
        detection = self.config.audio.input.turn_detection
        if self.response is not None and detection is not None and detection.interrupt_response:
            await self.response.cancel("turn_detected")

    async def paused(self, audio: np.ndarray, item_id: str) -> None:
        """A pause that may end the turn: transcribe what was said and, when the session may answer, start it."""
        self.turn.paused()
        await self._drop_draft()
        self.draft = draft = Draft(item_id, len(audio))
        draft.task = self.tasks.spawn(self._prepare(draft, audio), f"draft-{item_id}")

    async def resumed(self, item_id: str) -> None:
        """The user went on after a pause: what was begun on it is thrown away."""
        self.turn.resumed()
        if self.draft is not None and self.draft.item_id == item_id:
            await self._drop_draft()

    async def turn_ended(self, audio: np.ndarray, item_id: str, clock: TurnClock, respond: bool) -> None:
        self.turn.ended()
        draft = self.draft if self.draft is not None and self.draft.covers(item_id, len(audio)) else None
        log.debug("turn %s ended at %d samples; its pause's draft %s", item_id, len(audio),
                  "is used" if draft else "does not cover it")
        if draft is None:
            await self._drop_draft()
        self.draft = None
        live = self.live if self.live is not None and self.live.item_id == item_id else None
        self.live = None
        if live is not None:  # the words said so far stay sent; the final pass says the rest
            await live.stop()
        entry = HistoryItem(item_id, "user", None, "input_audio", status="in_progress")
        await self.send(e.BufferCommitted(previous_item_id=self.conversation.last_id, item_id=item_id))
        await self.conversation.add(entry)
        self.tasks.spawn(self._transcribe(entry, audio, clock, respond, draft, live), f"asr-{item_id}")

    def _live_words(self) -> bool:
        """Whether the session's transcription model streams its words (OpenAI's gpt-4o-transcribe family, or the
        stack's own ASR by name); whisper-1's clients expect the transcript after the pass, as OpenAI sends it."""
        settings = self.config.audio.input.transcription
        model = settings.model if settings else None
        return model is not None and (model.startswith(STREAMING_MODELS) or model in self.engines.asr_names)

    def _listen_on(self) -> None:
        """Start a pass over the turn so far when enough new speech came since the last one and the ASR is idle: a
        live pass is a courtesy that must never delay a turn's final transcript (this session's or another's)."""
        current = self.mic.speech_so_far()
        if current is None or self.engines.asr_in_flight:
            return
        item_id, audio = current
        if self.live is None or self.live.item_id != item_id:
            self.live = LiveTranscript(item_id)
        live = self.live
        if (live.task is not None and not live.task.done()) or len(audio) - live.samples < PARTIAL_EVERY_S * ENGINE_RATE:
            return
        live.samples = len(audio)
        live.task = self.tasks.spawn(self._partial(live, audio), f"partial-{item_id}")

    async def _partial(self, live: LiveTranscript, audio: np.ndarray) -> None:
        try:  # an encoder window fitted to the audio so far: a pass costs a fraction of the whole 30 s window's
            result = await self._recognise(audio, draft=True, fitted=True)
        except (EngineBusyError, EngineDeadError, ValueError):
            return  # a partial is a courtesy: the final transcript still comes
        await self._agree(live, result.text, len(audio))
        live.task = None
        if self.turn.phase is TurnPhase.SPEAKING:  # the speech that came while this pass ran is heard now, not
            self._listen_on()                       # when the next chunk comes (a client may hold its microphone)

    async def _agree(self, live: LiveTranscript, text: str, samples: int) -> None:
        """One more pass over the turn so far (a live pass, or a pause's draft): send the words now agreed on."""
        delta = live.agree(text.split())
        log.debug("pass over %.1f s of %s: %r, sends %r", samples / ENGINE_RATE, live.item_id, text, delta)
        if delta and self.live is live:
            await self.send(e.TranscriptionDelta(item_id=live.item_id, delta=delta))

    async def _prepare(self, draft: Draft, audio: np.ndarray) -> None:
        try:
            result = await self._recognise(audio, draft=True)
        except (EngineBusyError, EngineDeadError, ValueError) as error:
            draft.transcription.set_exception(error)
            return
        draft.transcription.set_result(result)
        if self.live is not None and self.live.item_id == draft.item_id:
            self.live.samples = max(self.live.samples, len(audio))
            await self._agree(self.live, result.text, len(audio))
        text = result.text.strip()
        detection = self.config.audio.input.turn_detection
        if text and detection is not None and detection.create_response and self.response is None:
            turn = HistoryItem(draft.item_id, "user", text, "input_audio")
            try:
                prompt = await self._prompt(p.ResponseOptions(), [*self.conversation.items, turn])
            except ClientError:  # the turn's own response will say what is wrong, if the turn ends here
                prompt = None
            if prompt is not None:
                draft.prefetch = Prefetch(self.engines.answers, prompt)
        if detection is not None and detection.judges_words:
            await self.mic.decide(draft.item_id, detection.wait_ms(utterance_complete(text)))
        self.metrics.voice_pauses_judged.inc()

    async def _drop_draft(self) -> None:
        draft, self.draft = self.draft, None
        if draft is not None:
            started = await draft.cancel()
            log.debug("draft of %s at %d samples dropped (answer started: %s)", draft.item_id, draft.samples, started)
            if started:
                self.metrics.voice_preemptive.labels("cancelled").inc()

    async def _recognise(self, audio: np.ndarray, draft: bool = False, fitted: bool = False) -> Transcription:
        settings = self.config.audio.input.transcription
        # One decoding pass at temperature 0: Whisper's fallback ladder can decode up to six times, which a voice
        # turn cannot wait for, and such a pass joins the other sessions' in one batch. A draft (a pause's guess)
        # waits behind every final transcription. A live pass, or any pass under voice.turn_window: fitted, encodes
        # a window fitted to the audio instead of Whisper's whole 30 s.
        window_s = fitted_window(len(audio)) if fitted or self.engines.fitted_turns else None
        options = TranscribeOptions(language=settings.language if settings else None,
                                    prompt=settings.prompt if settings else None, temperature=0.0, draft=draft,
                                    window_s=window_s)
        self.engines.asr_in_flight += 1
        try:
            result = await self.engines.asr.transcribe(audio, options)
        finally:
            self.engines.asr_in_flight -= 1
        self.metrics.observe_asr(result, "draft" if draft else "final")
        return result

    async def _transcribe(self, entry: HistoryItem, audio: np.ndarray, clock: TurnClock, respond: bool,
                          draft: Draft | None, live: LiveTranscript | None) -> None:
        """The turn's words (already heard by the pause's draft, or recognised now), then its answer."""
        try:
            try:
                result = await (asyncio.shield(draft.transcription) if draft else self._recognise(audio))
            except (EngineBusyError, EngineDeadError, ValueError) as error:
                entry.text, entry.status = "", "completed"
                await self.send(e.TranscriptionFailed(item_id=entry.id, error={
                    "type": "server_error", "code": "transcription_failed", "message": str(error)}))
                await self.conversation.done(entry)
                self.turn.heard()
                return
            entry.text, entry.status = result.text.strip(), "completed"
            clock.transcribed = time.perf_counter()
            if live is not None:  # words went out while the user spoke: only what the final text adds
                if rest := live.rest(entry.text):
                    await self.send(e.TranscriptionDelta(item_id=entry.id, delta=rest))
            else:
                for segment in result.segments:  # one delta per Whisper segment, as OpenAI's whisper-1 sends them
                    if segment.text.strip():
                        await self.send(e.TranscriptionDelta(item_id=entry.id, delta=segment.text))
            await self.send(e.TranscriptionCompleted(item_id=entry.id, transcript=entry.text, usage={
                "type": "duration", "seconds": round(len(audio) / ENGINE_RATE, 3)}))
            await self.conversation.done(entry)
            if not respond or self.turn.user_talking:  # the user spoke again meanwhile: answer when that turn ends
                self.turn.heard()
                return
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
        if self.conversation.has(item_id):
            raise ClientError(f"an item with id {item_id!r} is already in the conversation", "invalid_value",
                              "item.id")
        if isinstance(item, p.FunctionCallItem):
            entry = HistoryItem(item_id, "assistant", item.arguments, type=CALL, call_id=item.call_id or new_id("call"),
                                name=item.name)
        elif isinstance(item, p.FunctionCallOutputItem):
            if not any(h.type == CALL and h.call_id == item.call_id for h in self.conversation.items):
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
        await self.conversation.add(entry, event.previous_item_id)
        await self.conversation.done(entry)

    async def _retrieve_item(self, event: p.ItemRetrieve) -> None:
        await self.conversation.retrieve(event.item_id)

    async def _delete_item(self, event: p.ItemDelete) -> None:
        await self.conversation.delete(event.item_id)

    async def _truncate_item(self, event: p.ItemTruncate) -> None:
        if self.response is not None and self.response.item_id == event.item_id:
            await self.response.cancel("client_cancelled")  # the answer still playing: it ends where it is cut
        await self.conversation.truncate(event.item_id, event.content_index, event.audio_end_ms)

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

    async def _prompt(self, options: p.ResponseOptions, items: list[HistoryItem]) -> Prompt:
        """The response's request: the conversation, instructions, tools and sampling, as the LLM takes them."""
        config = self.config
        items = items if options.conversation == "auto" else []
        asked = options.max_output_tokens or config.max_output_tokens
        instructions = options.instructions or config.instructions or self.engines.system_prompt
        return await self.engines.answers.prompt(instructions, self.conversation.messages(items),
                                                 self._tool_mode(options), config.temperature,
                                                 None if asked == "inf" else asked)

    async def _start_response(self, options: p.ResponseOptions, clock: TurnClock, draft: Draft | None = None) -> None:
        config = self.config
        modalities = options.output_modalities or config.output_modalities
        if "audio" in modalities and not self.can.speaks:
            raise ClientError("this server's stack has no text-to-speech model; ask for output_modalities ['text']",
                              "invalid_value", "response.output_modalities")
        prompt = await self._prompt(options, self.conversation.items)
        out = config.audio.output
        voice = SpokenOutput(self.engines.tts, out.voice, out.speed, out.format.rate) if "audio" in modalities else None
        if self.response is not None:  # another turn started one while this prompt was rendered
            raise ClientError("the conversation already has an active response",
                              "conversation_already_has_active_response")
        prefetch = await draft.take(prompt) if draft is not None else None
        if prefetch is not None:
            self.metrics.voice_preemptive.labels("used").inc()
        clock.response_start = time.perf_counter()
        in_conversation = self.conversation if options.conversation == "auto" else None
        self.response = response = Response(self.send, self.engines.answers, prompt, voice, clock,
                                            self.conversation_id, in_conversation, options.metadata, prefetch)
        self.turn.answering()
        response.task = self.tasks.spawn(self._respond(response), response.id)

    async def _respond(self, response: Response) -> None:
        try:
            await response.run()
        finally:
            if self.response is response:
                self.response = None
                self.turn.answered()
            self.metrics.observe_voice_turn(response.clock.breakdown(), response.status)

    def _tool_mode(self, options: p.ResponseOptions) -> ToolMode | None:
        """The response's tools (its own, or the session's) and choice, or None when no call may be made."""
        tools = self.config.tools if options.tools is None else options.tools
        choice = options.tool_choice or self.config.tool_choice
        if problem := tool_problem(tools, choice, "response"):
            raise problem
        if not tools or choice == "none":
            return None
        named = choice.name if isinstance(choice, p.ToolChoiceFunction) else None
        wire = {"type": "function", "function": {"name": named}} if named else choice
        return ToolMode([t.chat_tool() for t in tools], frozenset(t.name for t in tools), wire)

    async def _report(self, error: ClientError) -> None:
        await self.send(error_event(error))
