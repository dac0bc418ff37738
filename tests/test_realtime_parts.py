"""The realtime session's parts on their own: input buffer, resampling, output deltas, settings merge, stage clock."""
from __future__ import annotations

import base64

import numpy as np
import pytest

from orchestrator.server.realtime.audio import InputResampler, OutputAudio, decode_pcm16
from orchestrator.server.realtime.events import ClientError, parse_client_event
from orchestrator.server.realtime.input_buffer import InputBuffer
from orchestrator.server.realtime.protocol import SessionConfig
from orchestrator.server.realtime.response import TurnClock
from orchestrator.server.realtime.session import _merge


def tone(hz: float, seconds: float, rate: int) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * hz * np.arange(int(seconds * rate)) / rate)).astype(np.float32)


def peak_hz(audio: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(audio))
    return float(np.fft.rfftfreq(len(audio), 1 / rate)[spectrum.argmax()])


def test_input_buffer_cuts_by_absolute_sample_and_forgets_what_is_before():
    buffer = InputBuffer(max_seconds=1)
    for i in range(5):
        buffer.append(np.full(1000, i, dtype=np.float32))
    assert (buffer.start, buffer.end, len(buffer)) == (0, 5000, 5000)
    cut = buffer.take(1500, 3200)
    assert len(cut) == 1700 and cut[0] == 1 and cut[-1] == 3
    assert buffer.start == 3200 and len(buffer) == 1800
    buffer.drop_before(4000)
    assert buffer.take()[0] == 4 and len(buffer) == 0
    assert buffer.room(16000) and not buffer.room(16001)
    buffer.append(np.zeros(10, dtype=np.float32))
    buffer.clear()
    assert len(buffer) == 0 and buffer.start == buffer.end == 5010


def test_input_buffer_knows_when_each_sample_arrived():
    buffer = InputBuffer(max_seconds=1)
    buffer.append(np.zeros(100, dtype=np.float32))
    first = buffer.arrival(99)
    buffer.append(np.zeros(100, dtype=np.float32))
    assert buffer.arrival(0) == first <= buffer.arrival(100)


@pytest.mark.parametrize("rate", [16000, 24000])
def test_input_resampler_keeps_pitch_and_length_at_16khz(rate):
    resample = InputResampler(rate)
    audio = (tone(440, 1.0, rate) * 32767).astype("<i2")
    out = np.concatenate([resample(audio[i:i + rate // 10]) for i in range(0, len(audio), rate // 10)])
    assert abs(len(out) - 16000) <= 64  # the filter holds back a few samples
    assert abs(peak_hz(out, 16000) - 440) < 2
    assert out.dtype == np.float32 and 0.45 < np.abs(out).max() < 0.55


def test_output_audio_is_pcm16_deltas_at_the_session_rate():
    audio = OutputAudio(tts_rate=16000, out_rate=24000)
    deltas = audio.deltas(tone(300, 1.0, 16000)) + audio.deltas(None)
    pcm = np.frombuffer(b"".join(base64.b64decode(d) for d in deltas), dtype="<i2")
    assert abs(len(pcm) - 24000) <= 64 and abs(peak_hz(pcm.astype(np.float32), 24000) - 300) < 2
    assert all(len(base64.b64decode(d)) <= 24000 * 2 // 5 for d in deltas)  # 200 ms at most each
    assert 990 < audio.sent_ms < 1010


def test_decode_pcm16_refuses_what_is_not_pcm16():
    assert decode_pcm16(base64.b64encode(b"\x01\x00\xff\x7f").decode()).tolist() == [1, 32767]
    for bad in ("!!", base64.b64encode(b"abc").decode()):
        with pytest.raises(ClientError):
            decode_pcm16(bad)


def test_session_update_merges_object_by_object():
    config = SessionConfig(model="m").model_dump()
    merged = _merge(config, {"audio": {"output": {"speed": 1.2}}, "instructions": "Be brief."})
    parsed = SessionConfig.model_validate(merged)
    assert parsed.audio.output.speed == 1.2 and parsed.audio.input.format.rate == 24000
    assert parsed.instructions == "Be brief." and parsed.audio.input.turn_detection.silence_duration_ms == 500
    off = SessionConfig.model_validate(_merge(merged, {"audio": {"input": {"turn_detection": None}}}))
    assert off.audio.input.turn_detection is None and off.audio.output.speed == 1.2


def test_client_events_parse_to_their_types_and_errors_name_the_param():
    event = parse_client_event('{"type": "response.create", "response": {"output_modalities": ["text"]}}')
    assert event.response.output_modalities == ["text"] and event.response.conversation == "auto"
    with pytest.raises(ClientError) as error:
        parse_client_event('{"type": "response.create", "event_id": "e1", "response": {"max_output_tokens": -1}}')
    assert error.value.param == "response.max_output_tokens" and error.value.event_id == "e1"


def test_turn_clock_splits_the_latency_into_stages():
    clock = TurnClock(speech_end=10.0, speech_stopped=10.5, transcribed=10.6, response_start=10.6,
                      first_token=10.65, first_audio=10.75)
    assert clock.breakdown() == {"vad_ms": 500.0, "asr_ms": 100.0, "llm_first_token_ms": 50.0,
                                 "first_audio_ms": 100.0, "total_ms": 750.0}
    typed = TurnClock(response_start=1.0, first_token=1.2)
    assert typed.breakdown() == {"llm_first_token_ms": 200.0}
