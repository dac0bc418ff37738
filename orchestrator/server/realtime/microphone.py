"""A session's incoming audio: resampled to 16 kHz, held until committed, and cut into turns by server VAD.

The session hears of a turn through two callbacks: `on_speech` when the user starts talking (barge-in)
and `on_turn` with the utterance's audio when the VAD calls its end (or the client commits).
"""
from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import numpy as np

from orchestrator.server.realtime.audio import ENGINE_RATE, InputResampler, decode_pcm16
from orchestrator.server.realtime.events import ClientError, new_id
from orchestrator.server.realtime.input_buffer import InputBuffer
from orchestrator.server.realtime.protocol import TurnDetection
from orchestrator.server.realtime.response import TurnClock

MIN_COMMIT_MS = 100
PRE_ROLL_S = 1.0  # audio kept before speech starts, beyond the prefix padding (the VAD calls a start late)

OnTurn = Callable[[np.ndarray, str, TurnClock, bool], Awaitable[None]]


class Microphone:
    def __init__(self, vad, max_seconds: float, send: Callable[[dict], Awaitable[None]],
                 on_speech: Callable[[], Awaitable[None]], on_turn: OnTurn) -> None:
        self.vad, self.send, self.on_speech, self.on_turn = vad, send, on_speech, on_turn
        self.max_seconds = max_seconds
        self.buffer = InputBuffer(max_seconds)
        self.resampler = InputResampler(24000)
        self.detection: TurnDetection | None = None
        self.stream: str | None = None
        self.speech: tuple[str, int] | None = None  # (item id, first sample) while the user speaks

    async def configure(self, rate: int, detection: TurnDetection | None) -> None:
        """Follow the session's input settings; a new turn_detection starts a fresh VAD stream."""
        if rate != self.resampler.rate:
            self.resampler = InputResampler(rate)
        if detection == self.detection and (self.stream is not None) == (detection is not None):
            return
        await self.close()
        self.detection = detection
        if detection is not None:
            self.stream = await self.vad.open_stream(detection.threshold, detection.silence_duration_ms)

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
            await (self._speech_started if event.kind == "speech_start" else self._speech_stopped)(event)
        if self.speech is None:
            self.buffer.drop_before(self.buffer.end - self._prefix() - int(PRE_ROLL_S * ENGINE_RATE))

    async def commit(self) -> None:
        """The client ends the turn: everything held becomes the utterance (no response is started)."""
        held_ms = len(self.buffer) * 1000 // ENGINE_RATE
        if held_ms < MIN_COMMIT_MS:
            raise ClientError(f"the input audio buffer holds {held_ms} ms of audio; commit needs at least "
                              f"{MIN_COMMIT_MS} ms", "input_audio_buffer_commit_empty")
        item_id = self.speech[0] if self.speech else new_id("item")
        await self._forget_segment()
        now = time.perf_counter()
        await self.on_turn(self.buffer.take(), item_id, TurnClock(speech_end=now, speech_stopped=now), False)

    async def clear(self) -> None:
        self.buffer.clear()
        await self._forget_segment()

    def _prefix(self) -> int:
        return self.detection.prefix_padding_ms * ENGINE_RATE // 1000 if self.detection else 0

    async def _speech_started(self, event) -> None:
        self.speech = (new_id("item"), event.sample)
        await self.send({"type": "input_audio_buffer.speech_started", "audio_start_ms": event.ms,
                         "item_id": self.speech[0]})
        if self.detection.interrupt_response:
            await self.on_speech()

    async def _speech_stopped(self, event) -> None:
        if self.speech is None:
            return
        (item_id, start), self.speech = self.speech, None
        clock = TurnClock(speech_end=self.buffer.arrival(event.sample - 1), speech_stopped=time.perf_counter())
        await self.send({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": event.ms, "item_id": item_id})
        audio = self.buffer.take(start - self._prefix(), event.sample)
        await self.on_turn(audio, item_id, clock, self.detection.create_response)

    async def _forget_segment(self) -> None:
        """A segment in progress is over: the audio it covered is committed or cleared."""
        if self.stream is not None:
            await self.vad.flush(self.stream)
        self.speech = None
