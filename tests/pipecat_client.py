"""One spoken turn through a headless Pipecat pipeline (OpenAIRealtimeLLMService) against a realtime server.

Run with .venv-pipecat/bin/python (Pipecat 1.14 pins protobuf < 7, which the project's venv cannot hold), so it imports
nothing from the project. Usage: pipecat_client.py WS_URL API_KEY SPEECH.wav (24 kHz mono PCM16). It prints one JSON
line: the frames Pipecat pushed, in order; exit 0 when the bot's response ended with no error.

What Pipecat 1.14 surfaces: a transcription delta as an InterimTranscriptionFrame and the completed transcript as a
TranscriptionFrame (both pushed upstream), speech_started/stopped as Proposed User Started/Stopped Speaking frames
(broadcast), the answer as TTSAudioRawFrame, LLMTextFrame and TTSTextFrame, its end as TTSStoppedFrame then
LLMFullResponseEndFrame, and a server error as an ErrorFrame. A server event it cannot parse only reaches its log
(the receive task dies with an ERROR record), so ERROR log records count as errors here too.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
import wave

from loguru import logger
from pipecat.frames.frames import (
    EndFrame,
    ErrorFrame,
    Frame,
    InputAudioRawFrame,
    InterimTranscriptionFrame,
    LLMFullResponseEndFrame,
    LLMTextFrame,
    ProposedUserStartedSpeakingFrame,
    ProposedUserStoppedSpeakingFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.openai.realtime import events
from pipecat.services.openai.realtime.llm import OpenAIRealtimeLLMService
from pipecat.workers.runner import WorkerRunner

RATE = 24000
CHUNK = RATE // 10  # 100 ms of samples per frame, sent at real-time pace
BREATH_S = 0.3  # past the server's 160 ms pause (it drafts the words so far), short of the 500 ms that ends a turn
PAUSE_S = 1.2  # trailing silence, long enough for the 500 ms server VAD to end the turn
HOLD_S = 60  # the longest the microphone is held, still, for a live word
MARKS = {ProposedUserStartedSpeakingFrame: "speech_started", ProposedUserStoppedSpeakingFrame: "speech_stopped",
         TTSStartedFrame: "tts_started", TTSStoppedFrame: "tts_stopped", LLMFullResponseEndFrame: "response_end"}
BROADCAST = (ProposedUserStartedSpeakingFrame, ProposedUserStoppedSpeakingFrame)  # pushed both ways: noted once


class Turn:
    """What arrived during the turn, in order, and whether the bot's response has ended."""

    def __init__(self) -> None:
        self.order: list[str] = []
        self.deltas: list[str] = []
        self.transcript: str | None = None
        self.bot_text = ""
        self.audio_bytes = 0
        self.errors: list[str] = []
        self.finished = False
        self.held_s: float | None = None
        self.heard = asyncio.Event()
        self.done = asyncio.Event()

    def see(self, frame: Frame, facing: FrameDirection) -> None:
        if isinstance(frame, InterimTranscriptionFrame):
            self.deltas.append(frame.text)
            self.order.append("transcription_delta")
            self.heard.set()
        elif isinstance(frame, TranscriptionFrame):
            self.transcript = frame.text
            self.order.append("transcription_completed")
        elif isinstance(frame, TTSAudioRawFrame):
            self.audio_bytes += len(frame.audio)
        elif isinstance(frame, LLMTextFrame):
            self.bot_text += frame.text
        elif isinstance(frame, ErrorFrame):
            self.error(frame.error)
        elif type(frame) in MARKS and not (facing == FrameDirection.DOWNSTREAM and type(frame) in BROADCAST):
            self.order.append(MARKS[type(frame)])
            if isinstance(frame, LLMFullResponseEndFrame) and self.audio_bytes:
                self.finished = True
                self.done.set()

    def error(self, text: str) -> None:
        self.errors.append(text)
        self.done.set()

    def summary(self) -> dict:
        return {"order": self.order, "deltas": self.deltas, "transcript": self.transcript, "bot_text": self.bot_text,
                "audio_bytes": self.audio_bytes, "errors": self.errors, "finished": self.finished,
                "held_s": self.held_s}


class Recorder(FrameProcessor):
    """Notes the frames that travel towards it: put before the LLM it sees the upstream ones, after it the rest."""

    def __init__(self, turn: Turn, facing: FrameDirection) -> None:
        super().__init__()
        self.turn, self.facing = turn, facing

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if direction == self.facing:
            self.turn.see(frame, self.facing)
        await self.push_frame(frame, direction)


async def speak(worker: PipelineWorker, llm: OpenAIRealtimeLLMService, turn: Turn, speech: bytes) -> None:
    """Feed the speech at real-time pace, hold the microphone until a live word came, then the pause."""
    while not llm._api_session_ready:  # no public hook: audio before session.updated would miss its settings
        await asyncio.sleep(0.05)

    async def say(pcm: bytes) -> None:
        began, step = time.monotonic(), CHUNK * 2
        for i, at in enumerate(range(0, len(pcm), step)):
            await asyncio.sleep(max(began + i * 0.1 - time.monotonic(), 0))
            await worker.queue_frame(InputAudioRawFrame(audio=pcm[at:at + step], sample_rate=RATE, num_channels=1))

    # The server counts silence in samples received, so holding the microphone still until a live word has come
    # makes "words before the turn ends" independent of how busy this machine is. Its live passes start only as
    # audio arrives (on a busy machine the first may still be running when the speech ends), so the hold begins
    # after a breath: the server's draft of a pause is a pass too, and the word two passes agree on comes.
    await say(speech + bytes(round(BREATH_S * RATE) * 2))
    held = time.monotonic()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(turn.heard.wait(), HOLD_S)
    turn.held_s = round(time.monotonic() - held, 2)
    await say(bytes(round(PAUSE_S * RATE) * 2))


def read_speech(path: str) -> bytes:
    with wave.open(path, "rb") as wav:
        if (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) != (RATE, 1, 2):
            raise SystemExit(f"{path}: want {RATE} Hz mono PCM16")
        return wav.readframes(wav.getnframes())


async def main(url: str, key: str, speech: bytes, timeout: float = 240) -> Turn:
    turn = Turn()
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    logger.add(lambda message: turn.error(message.record["message"]), level="ERROR")
    properties = events.SessionProperties(audio=events.AudioConfiguration(input=events.AudioInput(
        transcription=events.InputAudioTranscription(model="gpt-4o-transcribe"),
        turn_detection=events.TurnDetection(silence_duration_ms=500))))
    llm = OpenAIRealtimeLLMService(api_key=key, base_url=url, settings=OpenAIRealtimeLLMService.Settings(
        system_instruction="Answer in one short sentence.", session_properties=properties))
    pipeline = Pipeline([Recorder(turn, FrameDirection.UPSTREAM), llm, Recorder(turn, FrameDirection.DOWNSTREAM)])
    worker = PipelineWorker(pipeline, params=PipelineParams(audio_in_sample_rate=RATE, audio_out_sample_rate=RATE),
                            enable_rtvi=False, idle_timeout_secs=None)
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    running = asyncio.create_task(runner.run())
    sending = asyncio.create_task(speak(worker, llm, turn, speech))
    try:
        await asyncio.wait_for(turn.done.wait(), timeout)
    except TimeoutError:
        turn.errors.append(f"the turn did not finish in {timeout:.0f} s")
    if sending.done() and not sending.cancelled() and sending.exception():
        turn.errors.append(f"sending the speech failed: {sending.exception()!r}")
    sending.cancel()
    await worker.queue_frame(EndFrame())
    await asyncio.wait_for(running, 30)
    return turn


if __name__ == "__main__":
    ws_url, api_key, wav_path = sys.argv[1:4]
    result = asyncio.run(main(ws_url, api_key, read_speech(wav_path)))
    print(json.dumps(result.summary()))
    sys.exit(0 if result.finished and not result.errors else 1)
