"""Realtime clients written for OpenAI, run unchanged against the real demo stack with live words on.

openai-agents' RealtimeRunner asks for gpt-4o-mini-transcribe by default, a streaming transcription model, so the
server sends transcription deltas while the user speaks. The client must still parse every event (it validates
each against the openai SDK's union and reports what it cannot read as an error) and finish its turn: the
transcript completes and the spoken answer ends.
"""
from __future__ import annotations

import asyncio
import json
import subprocess
import time
import wave

import numpy as np
from live_stack import live_stack
from needs import missing
from speech import silence, speak, voiced_span

from tests.conftest import CONFIGS, ROOT

KEY = "clients-key"
RATE = 24000
SENTENCE = "I would like to book a table for four people tomorrow evening at the little Italian restaurant."


def test_openai_agents_realtime_runner_finishes_a_spoken_turn_with_live_words_on(real_models):
    """openai-agents' RealtimeRunner speaks a 6-second sentence at real-time pace: live deltas arrive before the
    turn ends, no event is an error, the transcript has the words, and the answer's audio ends."""
    from agents.realtime import RealtimeAgent, RealtimeRunner

    audio = speak(SENTENCE, RATE)
    start, end = voiced_span(audio)
    speech = (np.concatenate([silence(0.3, RATE), audio[start:end]]) * 32767).astype("<i2")
    pause = (silence(1.2, RATE) * 32767).astype("<i2")

    async def main(url: str) -> tuple[list, list[dict]]:
        agent = RealtimeAgent(name="Mia", instructions="Answer in one short sentence.")
        runner = RealtimeRunner(agent, config={"model_settings": {
            "turn_detection": {"type": "server_vad", "silence_duration_ms": 500}}})
        events, raw, heard = [], [], asyncio.Event()
        session = await runner.run(model_config={"url": url.replace("http", "ws", 1) + "/v1/realtime",
                                                 "api_key": KEY})
        async with session:
            async def say(pcm: np.ndarray) -> None:
                step, began = RATE // 10, time.monotonic()
                for i, at in enumerate(range(0, len(pcm), step)):
                    await asyncio.sleep(max(began + i * 0.1 - time.monotonic(), 0))
                    await session.send_audio(pcm[at:at + step].tobytes())

            async def microphone() -> None:
                # The server counts silence in samples received: holding the microphone still until a live word
                # has come makes "words before the turn ends" independent of how busy this machine is.
                await say(speech)
                await asyncio.wait_for(heard.wait(), 120)
                await say(pause)

            sending = asyncio.create_task(microphone())
            async for event in session:
                events.append(event)
                if event.type == "raw_model_event" and event.data.type == "raw_server_event":
                    raw.append(event.data.data)
                    if raw[-1]["type"] == "conversation.item.input_audio_transcription.delta":
                        heard.set()
                if event.type == "audio_end":
                    break
            await sending
        return events, raw

    with live_stack(CONFIGS / "demo.yaml", KEY) as (_, _, url):
        events, raw = asyncio.run(asyncio.wait_for(main(url), 240))

    kinds = [e["type"] for e in raw]
    assert not [e for e in events if e.type == "error"], [e for e in events if e.type == "error"]
    assert "error" not in kinds
    stopped = kinds.index("input_audio_buffer.speech_stopped")
    assert "conversation.item.input_audio_transcription.delta" in kinds[:stopped]
    transcript = next(e for e in raw if e["type"] == "conversation.item.input_audio_transcription.completed")
    assert "table" in transcript["transcript"].lower() and "restaurant" in transcript["transcript"].lower()
    assert any(e.type == "audio" for e in events) and events[-1].type == "audio_end"


def test_pipecat_realtime_service_finishes_a_spoken_turn_with_live_words_on(real_models, tmp_path):
    """Pipecat 1.14's OpenAIRealtimeLLMService, in a headless pipeline in its own venv (.venv-pipecat: Pipecat pins
    protobuf < 7, Ray needs >= 7), asks for gpt-4o-transcribe and speaks the sentence at real-time pace: a live delta
    (Pipecat's InterimTranscriptionFrame) arrives before speech_stopped, nothing is an error, the TranscriptionFrame
    has the words, and the answer's audio ends (TTSStoppedFrame, then LLMFullResponseEndFrame)."""
    python = ROOT / ".venv-pipecat" / "bin" / "python"
    if not python.exists():
        missing(f"{python} does not exist (Pipecat's own venv)")
    audio = speak(SENTENCE, RATE)
    start, end = voiced_span(audio)
    speech = tmp_path / "speech.wav"
    with wave.open(str(speech), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(RATE)
        wav.writeframes((np.concatenate([silence(0.3, RATE), audio[start:end]]) * 32767).astype("<i2").tobytes())

    with live_stack(CONFIGS / "demo.yaml", KEY) as (_, _, url):
        done = subprocess.run([str(python), str(ROOT / "tests" / "pipecat_client.py"),
                               url.replace("http", "ws", 1) + "/v1/realtime", KEY, str(speech)],
                              capture_output=True, text=True, timeout=300)

    assert done.stdout.strip(), done.stderr[-4000:]
    turn = json.loads(done.stdout.strip().splitlines()[-1])
    assert not turn["errors"], turn["errors"]
    assert done.returncode == 0, done.stderr[-4000:]
    order = turn["order"]
    assert "transcription_delta" in order[:order.index("speech_stopped")], order
    assert "table" in turn["transcript"].lower() and "restaurant" in turn["transcript"].lower(), turn["transcript"]
    assert turn["audio_bytes"] > 0 and turn["finished"] and order[-2:] == ["tts_stopped", "response_end"], order
