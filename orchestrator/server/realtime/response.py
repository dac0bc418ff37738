"""One assistant response: the LLM streams into a sentence splitter, each piece is spoken, audio goes out in order.

The LLM keeps generating while earlier pieces are synthesised and sent. Cancelling the response's task
(barge-in, response.cancel) aborts the LLM request, which frees its KV blocks, and drops queued TTS; the
response still ends with its done events, and its message's `pieces` hold only those whose audio was all sent.
"""
from __future__ import annotations

import asyncio
import logging
import time
from contextlib import aclosing
from dataclasses import dataclass

from engines.errors import EngineBusyError, EngineDeadError
from engines.protocols import TTSProtocol
from engines.tts.text_split import SentenceSplitter
from orchestrator.server.realtime.answers import Answers, Prompt
from orchestrator.server.realtime.audio import OutputAudio
from orchestrator.server.realtime import server_events as e
from orchestrator.server.realtime.conversation import CALL, Conversation, HistoryItem
from orchestrator.server.realtime.draft import Prefetch
from orchestrator.server.realtime.ids import new_id

log = logging.getLogger(__name__)
MAX_PIECE_CHARS = 200


@dataclass(slots=True)
class TurnClock:
    """Wall times (perf_counter) of one turn's stages; a stage that did not happen stays None."""
    speech_end: float | None = None      # the last voiced sample reached the server
    speech_stopped: float | None = None  # the VAD called the end of the turn
    transcribed: float | None = None
    response_start: float | None = None
    first_token: float | None = None
    first_audio: float | None = None

    def breakdown(self) -> dict[str, float]:
        """Milliseconds per stage: VAD, ASR, LLM to its first token, first token to first audio, and in all."""
        start = self.speech_end if self.speech_end is not None else self.response_start
        stages = {"vad": (self.speech_end, self.speech_stopped), "asr": (self.speech_stopped, self.transcribed),
                  "llm_first_token": (self.transcribed or self.response_start, self.first_token),
                  "first_audio": (self.first_token, self.first_audio), "total": (start, self.first_audio)}
        return {f"{name}_ms": round((end - begin) * 1000, 1) for name, (begin, end) in stages.items()
                if begin is not None and end is not None}


@dataclass(slots=True)
class SpokenOutput:
    """How a response speaks: the TTS, its voice and speed, and the rate the client takes."""
    tts: TTSProtocol
    name: str | None
    speed: float
    out_rate: int


@dataclass(slots=True)
class FunctionCall:
    """A function call the model is making: one output item of the response."""
    entry: HistoryItem         # its item: arguments as `text`, in_progress until its arguments are done
    output_index: int
    done: bool = False


class Response:
    def __init__(self, send: e.Send, answers: Answers, prompt: Prompt, voice: SpokenOutput | None, clock: TurnClock,
                 conversation_id: str, conversation: Conversation | None = None, metadata: dict | None = None,
                 prefetch: Prefetch | None = None) -> None:
        self.id, self.item_id = new_id("resp"), new_id("item")  # item_id: the spoken or written message's
        self.conversation = conversation  # None: out of band, nothing joins the conversation
        self.anchor = conversation.last_id if conversation else None  # the item the answer follows
        self.send, self.answers, self.prompt = send, answers, prompt
        self.prefetch = prefetch  # the answer started on the pause that ended the turn, if it was
        self.voice, self.clock, self.conversation_id, self.metadata = voice, clock, conversation_id, metadata
        self.text = ""                 # the answer as generated (text mode: as sent)
        self.calls: list[FunctionCall] = []
        self.message: HistoryItem | None = None  # the spoken or written message, once it has begun
        self.message_index: int | None = None
        self._audio_ms = 0.0
        self.cancel_reason: str | None = None
        self.status, self.details = "in_progress", None
        self.usage: dict | None = None
        self._finish_reason: str | None = None
        self._started = False
        self.task: asyncio.Task | None = None

    @property
    def audio(self) -> bool:
        return self.voice is not None

    @property
    def transcript(self) -> str:
        """What the user was given: the spoken pieces (audio) or the text sent."""
        if not self.audio:
            return self.text
        return " ".join(text for text, _ in self.message.pieces) if self.message is not None else ""

    async def cancel(self, reason: str) -> None:
        """Stop the response, and wait until its done events are sent."""
        if self.task is None or self.task.done():
            return
        self.cancel_reason = reason
        if self._started:  # a task cancelled before its first step would never send its done events
            self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)

    async def run(self) -> None:
        """Stream the response and end it with response.done; run as the task that cancel() stops."""
        self._started = True
        try:
            await self.send(e.ResponseCreated(response=self.resource()))
            if self.cancel_reason is not None:  # cancelled before it began
                raise asyncio.CancelledError
            await (self._speak() if self.audio else self._write())
            self.status = "incomplete" if self._finish_reason == "length" else "completed"
            if self.status == "incomplete":
                self.details = {"type": "incomplete", "reason": "max_output_tokens"}
        except asyncio.CancelledError:
            if self.cancel_reason is None:  # the session is closing: nobody to tell
                raise
            self.status, self.details = "cancelled", {"type": "cancelled", "reason": self.cancel_reason}
        except (EngineBusyError, EngineDeadError, ValueError) as error:
            log.warning("response %s failed: %s", self.id, error)
            code = "engine_busy" if isinstance(error, EngineBusyError) else "server_error"
            self.status, self.details = "failed", {"type": "failed", "error": {"type": "server_error", "code": code,
                                                                                 "message": str(error)}}
        finally:
            if self.prefetch is not None:  # aborted if it was never read to its end
                await self.prefetch.aclose()
        await self._finish()

    async def _added(self, output_index: int, entry: HistoryItem) -> None:
        """A new output item: to the response, and (in the conversation) after the response's item before it."""
        await self.send(e.OutputItemAdded(response_id=self.id, output_index=output_index, item=entry.as_item()))
        if self.conversation is not None:
            await self.conversation.add_after(entry, self.anchor)
            self.anchor = entry.id

    async def _done(self, output_index: int, entry: HistoryItem) -> None:
        await self.send(e.OutputItemDone(response_id=self.id, output_index=output_index, item=entry.as_item()))
        if self.conversation is not None:
            await self.conversation.done(entry)

    async def _open_message(self) -> None:
        """The spoken or written message begins with its first words (a response may be calls alone)."""
        if self.message is not None:
            return
        self.message_index = len(self.calls)
        self.message = HistoryItem(self.item_id, "assistant", "", "output_audio" if self.audio else "output_text",
                                   [] if self.audio else None, status="in_progress")
        await self._added(self.message_index, self.message)
        await self.send(e.ContentPartAdded(**self._where(), part=self._part("", True)))

    async def _write(self) -> None:
        async with aclosing(self._answer()) as answer:
            async for delta in answer:
                await self._open_message()
                self.text += delta
                self.message.text = self.text
                await self.send(e.TextDelta(**self._where(), delta=delta))

    async def _speak(self) -> None:
        pieces: asyncio.Queue[str | None] = asyncio.Queue()
        producer = asyncio.create_task(self._split(pieces))
        audio = OutputAudio(self.voice.tts.sample_rate, self.voice.out_rate)
        try:
            while (piece := await pieces.get()) is not None:
                await self._say(piece, audio)
            await producer  # its error, if it had one
            if self.message is not None:
                await self._send_audio(audio.deltas(None))
        finally:
            producer.cancel()
            await asyncio.gather(producer, return_exceptions=True)

    async def _split(self, pieces: asyncio.Queue) -> None:
        """The answer as speakable pieces: the first clause early, then whole sentences."""
        splitter = SentenceSplitter(MAX_PIECE_CHARS, first_clause_early=True)
        try:
            async with aclosing(self._answer()) as answer:
                async for delta in answer:
                    self.text += delta
                    for piece in splitter.feed(delta):
                        pieces.put_nowait(piece)
            for piece in splitter.flush():
                pieces.put_nowait(piece)
        finally:
            pieces.put_nowait(None)

    async def _answer(self):
        """The answer's text deltas (reasoning left out, calls sent as their own items); closing the stream stops
        the generation (our engine aborts the request, an upstream is hung up)."""
        stream = self.prefetch.outputs() if self.prefetch is not None else self.answers.answer(self.prompt)
        try:
            async for delta in stream:
                if self.clock.first_token is None:
                    self.clock.first_token = time.perf_counter()
                self.usage = delta.usage or self.usage
                self._finish_reason = delta.finish_reason or self._finish_reason
                if delta.tool_calls:
                    await self._calling(delta.tool_calls)
                if delta.content:
                    yield delta.content
        finally:
            await stream.aclose()
        await self._end_calls("incomplete" if self._finish_reason == "length" else "completed")

    async def _calling(self, deltas: list[dict]) -> None:
        """Tool-call deltas from the parser: a new call is a new output item, the rest stream its arguments."""
        for delta in deltas:
            function = delta.get("function") or {}
            if delta.get("id"):
                index = len(self.calls) + (self.message_index is not None)
                call = FunctionCall(HistoryItem(new_id("item"), "assistant", "", type=CALL, call_id=delta["id"],
                                                name=function.get("name") or "", status="in_progress"), index)
                self.calls.append(call)
                await self._added(index, call.entry)
            piece = function.get("arguments") or ""
            if not piece or not self.calls:
                continue
            call = self.calls[min(delta.get("index", 0), len(self.calls) - 1)]
            call.entry.text += piece
            await self.send(e.ArgumentsDelta(response_id=self.id, item_id=call.entry.id, output_index=call.output_index,
                                             call_id=call.entry.call_id, delta=piece))

    async def _end_calls(self, status: str) -> None:
        """Each call's arguments are final: done events now, so the client can run them while the answer plays."""
        for call in self.calls:
            if not call.done:
                call.done, entry = True, call.entry
                entry.status = status
                await self.send(e.ArgumentsDone(response_id=self.id, item_id=entry.id, output_index=call.output_index,
                                                call_id=entry.call_id, name=entry.name, arguments=entry.text))
                await self._done(call.output_index, entry)

    async def _say(self, piece: str, audio: OutputAudio) -> None:
        try:
            stream = await self.voice.tts.stream(piece, self.voice.name, self.voice.speed)
        except ValueError as error:  # nothing speakable in it (only symbols): skip the piece
            log.debug("skipped an unspeakable piece %r: %s", piece, error)
            return
        try:
            await self._open_message()
            delta = piece if not self.message.pieces else " " + piece
            await self.send(e.AudioTranscriptDelta(**self._where(), delta=delta))
            async for chunk in stream:
                if self.clock.first_audio is None:
                    self.clock.first_audio = time.perf_counter()
                await self._send_audio(audio.deltas(chunk.pcm))
                self._audio_ms += 1000 * len(chunk.pcm) / chunk.sample_rate
        finally:
            await stream.aclose()
        self.message.pieces.append((piece, self._audio_ms))
        self.message.text = self.transcript

    async def _send_audio(self, deltas: list[str]) -> None:
        for delta in deltas:
            await self.send(e.AudioDelta(**self._where(), delta=delta))

    async def _finish(self) -> None:
        await self._end_calls("incomplete")  # calls still open were cut off
        if self.message is None and not self.calls:
            await self._open_message()  # an empty answer is still an (empty) message
        output = [call.entry.as_item() for call in self.calls]
        if (message := self.message) is not None:
            where, final = self._where(), self.transcript
            if self.audio:
                await self.send(e.AudioDone(**where))
                await self.send(e.AudioTranscriptDone(**where, transcript=final))
            else:
                await self.send(e.TextDone(**where, text=final))
            await self.send(e.ContentPartDone(**where, part=self._part(final, True)))
            message.text, message.status = final, "completed" if self.status == "completed" else "incomplete"
            await self._done(self.message_index, message)
            output.insert(self.message_index, message.as_item())
            if not final and self.conversation is not None:  # nothing of it was given: the next turn does not see it
                self.conversation.discard(message)
        await self.send(e.ResponseDone(response={**self.resource(), "output": output}, latency=self.clock.breakdown()))

    def resource(self) -> dict:
        voice = self.voice
        return {"id": self.id, "object": "realtime.response", "status": self.status, "status_details": self.details,
                "output": [], "conversation_id": self.conversation_id,
                "output_modalities": ["audio"] if voice else ["text"],
                "max_output_tokens": self.prompt.max_tokens if self.prompt.max_tokens is not None else "inf",
                "audio": {"output": {"format": {"type": "audio/pcm", "rate": voice.out_rate}, "voice": voice.name}}
                if voice else None, "usage": self.usage, "metadata": self.metadata}

    def _where(self) -> dict:
        return {"response_id": self.id, "item_id": self.item_id, "output_index": self.message_index,
                "content_index": 0}

    def _part(self, text: str, event: bool = False) -> dict:
        """The content part: item content says output_audio/output_text, part events say audio/text."""
        if self.audio:
            return {"type": "audio" if event else "output_audio", "transcript": text}
        return {"type": "text" if event else "output_text", "text": text}
