"""A session's incoming audio: resampled to 16 kHz, held until committed, and cut into turns by server VAD.

The VAD hears pauses (PAUSE_MS of silence); the microphone decides when a pause ends the turn. server_vad
ends it after silence_duration_ms; semantic_vad after a wait the session sets once it has read the words
so far (short when they are complete, long when the user is mid-sentence). The session hears of a turn
as a `TurnListener`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from orchestrator.server.realtime.audio import ENGINE_RATE, InputResampler, decode_pcm16
from orchestrator.server.realtime import server_events as e
from orchestrator.server.realtime.events import ClientError
from orchestrator.server.realtime.ids import new_id
from orchestrator.server.realtime.input_buffer import InputBuffer
from orchestrator.server.realtime.protocol import SemanticVad, TurnDetection
from orchestrator.server.realtime.response import TurnClock

MIN_COMMIT_MS = 100
PRE_ROLL_S = 1.0  # audio kept before speech starts, beyond the prefix padding (the VAD calls a start late)
PAUSE_MS = 160    # silence that counts as a pause: work on the words so far may begin
SPEECH_PAD_MS = 30  # the VAD pads each segment's end by this much, so the silence counted after it is that much less



class TurnListener(Protocol):
    """What the microphone tells the session, as it happens."""

    async def speech_started(self) -> None:
        """The user started talking (a response may be interrupted)."""

    async def paused(self, audio: np.ndarray, item_id: str) -> None:
        """A pause that may end the turn, with the audio so far (its words may be worked on early)."""

    async def resumed(self, item_id: str) -> None:
        """The user went on after a pause that did not end the turn."""

    async def turn_ended(self, audio: np.ndarray, item_id: str, clock: TurnClock, respond: bool) -> None:
        """The turn's audio, at its end (the VAD's silence, or the client's commit: then respond is False)."""


@dataclass(slots=True)
class Speech:
    """The turn the user is speaking: its item, where it starts, and while paused where the voice stopped."""
    item_id: str
    start: int
    pause: int | None = None
    wait_ms: int | None = None  # silence after the pause that ends the turn (semantic_vad: None until judged)


class Microphone:
    def __init__(self, vad, max_seconds: float, send: e.Send, listener: TurnListener) -> None:
        self.vad, self.send, self.listener = vad, send, listener
        self.max_seconds = max_seconds
        self.buffer = InputBuffer(max_seconds)
        self.resampler = InputResampler(24000)
        self.detection: TurnDetection | SemanticVad | None = None
        self.stream: str | None = None
        self.speech: Speech | None = None

    async def configure(self, rate: int, detection: TurnDetection | SemanticVad | None) -> bool:
        """Follow the session's input settings; a new turn_detection starts a fresh VAD stream (True: it did, and
        a turn in progress was dropped)."""
        if rate != self.resampler.rate:
            self.resampler = InputResampler(rate)
        if detection == self.detection and (self.stream is not None) == (detection is not None):
            return False
        await self.close()
        self.detection = detection
        if detection is not None:
            pause = min(PAUSE_MS, detection.wait_ms(True))
            self.stream = await self.vad.open_stream(detection.threshold, pause, SPEECH_PAD_MS)
        return True

    async def close(self) -> None:
        if self.stream is not None:
            await self.vad.close_stream(self.stream)
        self.stream, self.speech = None, None

    async def append(self, audio: str) -> None:
        samples = self.resampler(decode_pcm16(audio))
        if not self.buffer.room(len(samples)):
            raise ClientError(f"the input audio buffer would pass its limit of {self.max_seconds:g} s of audio; "
                              "commit it (input_audio_buffer.commit) or clear it first", "input_audio_buffer_full",
                              "audio")
        self.buffer.append(samples)
        if self.stream is None:
            return
        for event in await self.vad.feed(self.stream, samples):
            await (self._speech_started if event.kind == "speech_start" else self._paused)(event.sample)
        await self._end_if_due(self.buffer.end)
        if self.speech is None:
            self.buffer.drop_before(self.buffer.end - self._prefix() - int(PRE_ROLL_S * ENGINE_RATE))

    async def decide(self, item_id: str, wait_ms: int) -> None:
        """The session has judged the words of this pause: the turn ends after wait_ms of silence (now, if past)."""
        if self.speech is not None and self.speech.item_id == item_id and self.speech.pause is not None:
            self.speech.wait_ms = wait_ms
            await self._end_if_due(self.buffer.end)

    async def commit(self) -> None:
        """The client ends the turn: everything held becomes the utterance (no response is started)."""
        held_ms = len(self.buffer) * 1000 // ENGINE_RATE
        if held_ms < MIN_COMMIT_MS:
            raise ClientError(f"the input audio buffer holds {held_ms} ms of audio; commit needs at least "
                              f"{MIN_COMMIT_MS} ms", "input_audio_buffer_commit_empty")
        item_id = self.speech.item_id if self.speech else new_id("item")
        await self._forget_segment()
        now = time.perf_counter()
        await self.listener.turn_ended(self.buffer.take(), item_id, TurnClock(speech_end=now, speech_stopped=now),
                                       False)

    async def clear(self) -> None:
        self.buffer.clear()
        await self._forget_segment()

    def speech_so_far(self) -> tuple[str, np.ndarray] | None:
        """The turn being spoken: its item and its audio so far (None while nobody speaks)."""
        if self.speech is None:
            return None
        return self.speech.item_id, self.buffer.peek(self.speech.start - self._prefix(), self.buffer.end)

    def _prefix(self) -> int:
        return self.detection.prefix_padding_ms * ENGINE_RATE // 1000 if self.detection else 0

    async def _speech_started(self, sample: int) -> None:
        speech = self.speech
        if speech is not None and speech.pause is not None:
            await self._end_if_due(sample)  # the silence before this speech may have ended the turn already
            if self.speech is speech:  # it did not: the user goes on with the same turn
                speech.pause = speech.wait_ms = None
                await self.listener.resumed(speech.item_id)
                return
        self.speech = Speech(new_id("item"), sample)
        await self.send(e.SpeechStarted(audio_start_ms=sample * 1000 // ENGINE_RATE, item_id=self.speech.item_id))
        await self.listener.speech_started()

    async def _paused(self, sample: int) -> None:
        speech = self.speech
        if speech is None:
            return
        speech.pause = sample
        if not self.detection.judges_words:
            speech.wait_ms = self.detection.wait_ms(None)
        if speech.wait_ms is None or speech.wait_ms > PAUSE_MS:  # the pause may not be the end: start on it early
            await self.listener.paused(self.buffer.peek(speech.start - self._prefix(), sample), speech.item_id)

    async def _end_if_due(self, now: int) -> None:
        """End the turn when the silence since the pause (up to sample `now`) has reached its wait."""
        speech = self.speech
        if speech is None or speech.pause is None:
            return
        wait_ms = speech.wait_ms if speech.wait_ms is not None else self.detection.wait_ms(None)
        if (now - speech.pause) * 1000 / ENGINE_RATE < wait_ms - SPEECH_PAD_MS:
            return
        self.speech = None
        clock = TurnClock(speech_end=self.buffer.arrival(speech.pause - 1), speech_stopped=time.perf_counter())
        await self.send(e.SpeechStopped(audio_end_ms=speech.pause * 1000 // ENGINE_RATE, item_id=speech.item_id))
        audio = self.buffer.take(speech.start - self._prefix(), speech.pause)
        await self.listener.turn_ended(audio, speech.item_id, clock, self.detection.create_response)

    async def _forget_segment(self) -> None:
        """A segment in progress is over: the audio it covered is committed or cleared."""
        if self.stream is not None:
            await self.vad.flush(self.stream)
        self.speech = None
