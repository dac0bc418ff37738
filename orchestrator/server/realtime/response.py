"""One assistant response: the LLM streams into a sentence splitter, each piece is spoken, audio goes out in order.

The LLM keeps generating while earlier pieces are synthesised and sent. Cancelling the response's task
(barge-in, response.cancel) aborts the LLM request, which frees its KV blocks, and drops queued TTS; the
response still ends with its done events, and `spoken` holds only the pieces whose audio was all sent.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass

from engines.errors import EngineBusyError, EngineDeadError
from engines.llm.sampling_params import SamplingParams
from engines.llm.sequence import Priority
from engines.protocols import LLMProtocol, TTSProtocol
from engines.tts.text_split import SentenceSplitter
from orchestrator.server.chat_output import ChatOutput
from orchestrator.server.realtime.audio import OutputAudio
from orchestrator.server.realtime.events import item_dict, new_id, usage_dict

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
class Voice:
    tts: TTSProtocol
    name: str | None
    speed: float
    out_rate: int


class Response:
    def __init__(self, send: Callable[[dict], Awaitable[None]], llm: LLMProtocol, prompt_ids: list[int],
                 params: SamplingParams, reasoning: bool, voice: Voice | None, clock: TurnClock, conversation_id: str,
                 metadata: dict | None = None) -> None:
        self.id, self.item_id = new_id("resp"), new_id("item")
        self.previous_item_id: str | None = None  # where the answer joins the conversation
        self.before_done: Callable[[Response], None] | None = None  # the session records the answer here
        self.send, self.llm, self.prompt_ids, self.params = send, llm, prompt_ids, params
        self.voice, self.clock, self.conversation_id, self.metadata = voice, clock, conversation_id, metadata
        self.output = ChatOutput(tools=False, reasoning=reasoning)
        self.text = ""                 # the answer as generated (text mode: as sent)
        self.spoken: list[str] = []    # audio mode: pieces whose audio was all sent
        self.spoken_end_ms: list[float] = []  # where each spoken piece's audio ends, from the answer's start
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
        return " ".join(self.spoken) if self.audio else self.text

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
            await self.send({"type": "response.created", "response": self.resource()})
            added = item_dict(self.item_id, "assistant", self._part(""), "in_progress")
            await self.send({"type": "response.output_item.added", "response_id": self.id, "output_index": 0,
                             "item": added})
            await self.send({"type": "conversation.item.added", "previous_item_id": self.previous_item_id,
                             "item": added})
            await self.send({"type": "response.content_part.added", **self._where(), "part": self._part("", True)})
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
        await self._finish()

    async def _write(self) -> None:
        async with aclosing(self._answer()) as answer:
            async for delta in answer:
                self.text += delta
                await self.send({"type": "response.output_text.delta", **self._where(), "delta": delta})

    async def _speak(self) -> None:
        pieces: asyncio.Queue[str | None] = asyncio.Queue()
        producer = asyncio.create_task(self._split(pieces))
        audio = OutputAudio(self.voice.tts.sample_rate, self.voice.out_rate)
        try:
            while (piece := await pieces.get()) is not None:
                await self._say(piece, audio)
            await producer  # its error, if it had one
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
        """The answer's text deltas (reasoning left out); closing the stream aborts the request in the engine."""
        stream = self.llm.generate(self.prompt_ids, self.params, priority=Priority.INTERACTIVE)
        try:
            async for out in stream:
                if self.clock.first_token is None:
                    self.clock.first_token = time.perf_counter()
                self.usage = usage_dict(out.num_prompt_tokens, out.num_cached_tokens, out.num_output_tokens)
                self._finish_reason = out.finish_reason
                delta = self.output.update(out.delta_text, out.finished).get("content", "")
                if delta:
                    yield delta
        finally:
            await stream.aclose()

    async def _say(self, piece: str, audio: OutputAudio) -> None:
        try:
            stream = await self.voice.tts.stream(piece, self.voice.name, self.voice.speed)
        except ValueError as error:  # nothing speakable in it (only symbols): skip the piece
            log.debug("skipped an unspeakable piece %r: %s", piece, error)
            return
        try:
            delta = piece if not self.spoken else " " + piece
            await self.send({"type": "response.output_audio_transcript.delta", **self._where(), "delta": delta})
            async for chunk in stream:
                if self.clock.first_audio is None:
                    self.clock.first_audio = time.perf_counter()
                await self._send_audio(audio.deltas(chunk.pcm))
                self._audio_ms += 1000 * len(chunk.pcm) / chunk.sample_rate
        finally:
            await stream.aclose()
        self.spoken.append(piece)
        self.spoken_end_ms.append(self._audio_ms)

    async def _send_audio(self, deltas: list[str]) -> None:
        for delta in deltas:
            await self.send({"type": "response.output_audio.delta", **self._where(), "delta": delta})

    async def _finish(self) -> None:
        where, final = self._where(), self.transcript
        if self.audio:
            await self.send({"type": "response.output_audio.done", **where})
            await self.send({"type": "response.output_audio_transcript.done", **where, "transcript": final})
        else:
            await self.send({"type": "response.output_text.done", **where, "text": final})
        await self.send({"type": "response.content_part.done", **where, "part": self._part(final, True)})
        item = item_dict(self.item_id, "assistant", self._part(final),
                         "completed" if self.status == "completed" else "incomplete")
        await self.send({"type": "response.output_item.done", "response_id": self.id, "output_index": 0,
                         "item": item})
        await self.send({"type": "conversation.item.done", "previous_item_id": self.previous_item_id, "item": item})
        if self.before_done is not None:  # in the history before the client hears of the end, so it can act on it
            self.before_done(self)
        await self.send({"type": "response.done", "response": {**self.resource(), "output": [item]},
                         "latency": self.clock.breakdown()})

    def resource(self) -> dict:
        voice = self.voice
        return {"id": self.id, "object": "realtime.response", "status": self.status, "status_details": self.details,
                "output": [], "conversation_id": self.conversation_id,
                "output_modalities": ["audio"] if voice else ["text"],
                "max_output_tokens": self.params.max_tokens,
                "audio": {"output": {"format": {"type": "audio/pcm", "rate": voice.out_rate}, "voice": voice.name}}
                if voice else None, "usage": self.usage, "metadata": self.metadata}

    def _where(self) -> dict:
        return {"response_id": self.id, "item_id": self.item_id, "output_index": 0, "content_index": 0}

    def _part(self, text: str, event: bool = False) -> dict:
        """The content part: item content says output_audio/output_text, part events say audio/text."""
        if self.audio:
            return {"type": "audio" if event else "output_audio", "transcript": text}
        return {"type": "text" if event else "output_text", "text": text}
