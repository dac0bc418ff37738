"""The realtime session's parts on their own: input buffer, resampling, output deltas, settings merge, stage clock."""
from __future__ import annotations

import asyncio
import base64

import numpy as np
import pytest
from realtime_client import SERVER_EVENTS

from orchestrator.server.realtime.audio import InputResampler, OutputAudio, decode_pcm16
from orchestrator.server.realtime.conversation import Conversation, HistoryItem
from orchestrator.server.realtime.events import ClientError, parse_client_event
from orchestrator.server.realtime.input_buffer import InputBuffer
from orchestrator.server.realtime.protocol import SessionConfig
from orchestrator.server.realtime.response import TurnClock
from orchestrator.server.realtime.server_events import SERVER_EVENT_TYPES
from orchestrator.server.realtime.settings import Abilities, apply_update, merge
from orchestrator.server.realtime.turn import Turn, TurnPhase


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
    merged = merge(config, {"audio": {"output": {"speed": 1.2}}, "instructions": "Be brief."})
    parsed = SessionConfig.model_validate(merged)
    assert parsed.audio.output.speed == 1.2 and parsed.audio.input.format.rate == 24000
    assert parsed.instructions == "Be brief." and parsed.audio.input.turn_detection.silence_duration_ms == 500
    off = SessionConfig.model_validate(merge(merged, {"audio": {"input": {"turn_detection": None}}}))
    assert off.audio.input.turn_detection is None and off.audio.output.speed == 1.2


def test_session_update_applies_what_it_can_and_names_each_refusal():
    """The pure merge-and-check: a bad setting is dropped and named; the rest applies; what the stack cannot do
    refuses the whole update."""
    can = Abilities(speaks=True, listens=True)
    config = SessionConfig(model="m", id="sess_1")
    new, refused = apply_update(config, {"instructions": "Hi.", "temperature": 9, "audio": {"output": {
        "voice": "nobody", "speed": 1.2}}, "tool_choice": "required"}, can, ["alloy", "echo"], "e1")
    assert new.instructions == "Hi." and new.audio.output.speed == 1.2
    assert new.temperature == config.temperature and new.audio.output.voice is None and new.tool_choice == "auto"
    assert [r.param for r in refused] == ["session.temperature", "session.audio.output.voice", "session.tool_choice"]
    assert all(r.event_id == "e1" and "the rest of the update was applied" in r.message for r in refused)
    assert "alloy, echo" in refused[1].message and "needs at least one tool" in refused[2].message
    assert config.instructions is None  # the old config is left as it was
    blended, refused = apply_update(config, {"audio": {"output": {"voice": "alloy(3)+echo(1)"}}}, can,
                                    ["alloy", "echo"])
    assert blended.audio.output.voice == "alloy(3)+echo(1)" and not refused   # Kokoro-FastAPI's blend syntax
    for voice in ("alloy+nobody", "alloy(0)+echo", "alloy++echo"):
        kept, refused = apply_update(config, {"audio": {"output": {"voice": voice}}}, can, ["alloy", "echo"])
        assert kept.audio.output.voice is None and refused[0].param == "session.audio.output.voice", voice
    mute = Abilities(speaks=False, listens=True)
    with pytest.raises(ClientError) as whole:
        apply_update(config, {"output_modalities": ["audio"]}, mute, None)
    assert whole.value.param == "session.output_modalities"
    with pytest.raises(ClientError) as renamed:
        apply_update(config, {"model": "other"}, can, None)
    assert renamed.value.param == "session.model"


def test_the_conversation_places_items_and_names_the_one_before():
    """Positions (end, after an item, root), previous_item_id in every event, and messages for the chat template."""
    sent = []

    async def send(event):
        sent.append(event.wire())

    async def main():
        conversation = Conversation(send)
        await conversation.add(HistoryItem("a", "user", "one"))
        await conversation.add(HistoryItem("c", "user", "three"))
        await conversation.add(HistoryItem("b", "assistant", "two", "output_text"), "a")
        await conversation.add(HistoryItem("z", "system", "first"), "root")
        answer = HistoryItem("d", "assistant", "", "output_text", status="in_progress")
        await conversation.add_after(answer, "gone")  # its anchor was deleted: at the end
        await conversation.done(conversation.get("b"))
        with pytest.raises(ClientError) as missing:
            await conversation.add(HistoryItem("x", "user", "?"), "nope")
        await conversation.delete("c")
        return conversation, missing.value

    conversation, missing = asyncio.run(main())
    assert [i.id for i in conversation.items] == ["z", "a", "b", "d"]
    assert [(m["type"], m.get("previous_item_id")) for m in sent] == [
        ("conversation.item.added", None), ("conversation.item.added", "a"), ("conversation.item.added", "a"),
        ("conversation.item.added", None), ("conversation.item.added", "c"), ("conversation.item.done", "a"),
        ("conversation.item.deleted", None)]
    assert missing.param == "previous_item_id"
    assert conversation.messages() == [{"role": "system", "content": "first"}, {"role": "user", "content": "one"},
                                       {"role": "assistant", "content": "two"}]  # the answer in progress is not read


def test_the_turn_moves_through_its_phases():
    turn = Turn("sess")
    turn.speech_started()
    turn.paused()
    assert turn.phase is TurnPhase.PAUSED and turn.user_talking
    turn.ended()
    turn.answering()
    turn.speech_started()  # the user talks over the answer (interrupt_response off): the answer does not reset it
    turn.answered()
    assert turn.phase is TurnPhase.SPEAKING
    turn.cleared()
    turn.heard()  # nothing was being recognised
    assert turn.phase is TurnPhase.LISTENING and not turn.user_talking


def test_every_server_event_is_a_ga_event_the_sdk_knows():
    assert len(SERVER_EVENT_TYPES) == len(set(SERVER_EVENT_TYPES)) == 29
    assert set(SERVER_EVENT_TYPES) <= set(SERVER_EVENTS), set(SERVER_EVENT_TYPES) - set(SERVER_EVENTS)


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
