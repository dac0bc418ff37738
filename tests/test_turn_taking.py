"""When a spoken turn ends, on the real demo stack (Whisper base hears the words): semantic_vad against server_vad,
a mid-sentence pause, and an answer started on a pause that the user talks over.

The server counts silence in samples received, not in wall time, so these tests hold the microphone still
(send nothing) while they look at the server: what must not happen cannot happen by being slow.
"""
from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from live_stack import live_stack
from realtime_client import Client, types
from speech import silence, speak, voiced_span

from tests.conftest import CONFIGS

KEY = "turn-key"
RATE = 24000
SERVER_VAD = {"type": "server_vad", "silence_duration_ms": 500}
SEMANTIC = {"type": "semantic_vad", "eagerness": "auto"}  # complete: 250 ms of silence ends it; mid-sentence: 4 s


@pytest.fixture(scope="module")
def demo(real_models):
    """configs/demo.yaml with every engine in this process, so the test can see the session and the LLM."""
    with live_stack(CONFIGS / "demo.yaml", KEY) as started:
        yield started


def said(text: str) -> np.ndarray:
    """espeak's speech without its own leading and trailing silence, so each test sets every pause itself."""
    audio = speak(text, RATE)
    start, end = voiced_span(audio)
    return audio[start:end]


def preemptive(app, outcome: str) -> float:
    return app.state.metrics.registry.get_sample_value("orchestrator_voice_preemptive_answers_total",
                                                       {"outcome": outcome}) or 0.0


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 240))


async def open_session(url: str, detection: dict) -> Client:
    client = await Client.connect(url, KEY)
    await client.until("session.created")
    await client.send(type="session.update", session={"max_output_tokens": 16, "temperature": 0,
                                                      "audio": {"input": {"turn_detection": detection}}})
    await client.until("session.updated")
    return client


async def quiet_for(client: Client, seconds: float) -> list[dict]:
    """Events that come while the microphone sends nothing (the server's silence clock stands still)."""
    got = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            got.append(await client.recv(left))
        except TimeoutError:
            break
    return got


def judged(app) -> float:
    """Pauses whose words the server has recognised (and judged), as /metrics counts them."""
    return app.state.metrics.registry.get_sample_value("orchestrator_voice_pauses_judged_total") or 0.0


async def until_judged(app, before: float, timeout: float = 60) -> None:
    """Until the session's pause has been transcribed (and, under semantic_vad, judged): one more than `before`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if judged(app) > before:
            return
        await asyncio.sleep(0.02)
    pytest.fail("the pause's draft never finished")


def test_a_complete_question_ends_on_a_short_silence_under_semantic_vad_only(demo):
    """450 ms of silence after "What time is it?": semantic_vad hears a complete question and answers; server_vad
    (500 ms) is still waiting, however long the test waits."""
    app, _, url = demo
    question = np.concatenate([silence(0.3, RATE), said("What time is it?"), silence(0.45, RATE)])

    async def main():
        outcome = {}
        for name, detection in (("server_vad", SERVER_VAD), ("semantic_vad", SEMANTIC)):
            client = await open_session(url, detection)
            before = judged(app)
            await client.speak(question, RATE)
            await until_judged(app, before)
            outcome[name] = await quiet_for(client, 3.0)
            if name == "semantic_vad" and "response.done" not in types(outcome[name]):
                outcome[name] += await client.until("response.done", timeout=120)
            await client.close()
        return outcome

    outcome = run(main())
    assert "input_audio_buffer.speech_stopped" not in types(outcome["server_vad"])
    heard = next(e for e in outcome["semantic_vad"]
                 if e["type"] == "conversation.item.input_audio_transcription.completed")
    assert "time" in heard["transcript"].lower() and heard["transcript"].rstrip().endswith("?")
    assert outcome["semantic_vad"][-1]["response"]["status"] in ("completed", "incomplete")


def test_a_mid_sentence_pause_is_not_cut_under_semantic_vad(demo):
    """A second's pause after "...a pizza with": the words are not complete, so the turn waits, and the rest of the
    sentence joins the same item. server_vad (500 ms) cuts the same line in two."""
    app, _, url = demo
    first = np.concatenate([silence(0.3, RATE), said("I would like to order a pizza with"), silence(1.0, RATE)])
    rest = np.concatenate([said("mushrooms and olives."), silence(1.0, RATE)])

    async def main():
        outcome = {}
        for name, detection in (("semantic_vad", SEMANTIC), ("server_vad", SERVER_VAD)):
            client = await open_session(url, detection)
            before = judged(app)
            await client.speak(first, RATE)
            if name == "semantic_vad":
                await until_judged(app, before)
            events = await quiet_for(client, 1.0)
            await client.speak(rest, RATE)
            # The answer to the rest follows the speech_stopped that ends past the first part. (server_vad's answer
            # to the first part may finish, or be cancelled, before or after the rest is heard: wait past it.)
            end_of_first_ms = len(first) * 1000 // RATE
            while not any(e["type"] == "input_audio_buffer.speech_stopped" and e["audio_end_ms"] > end_of_first_ms
                          for e in events):
                events += await client.until("input_audio_buffer.speech_stopped", timeout=120)
            events += await client.until("response.done", timeout=120)
            while events[-1]["response"]["status"] == "cancelled":  # the first part's answer, cut late
                events += await client.until("response.done", timeout=120)
            outcome[name] = events
            await client.close()
        return outcome

    outcome = run(main())
    semantic = outcome["semantic_vad"]
    assert types(semantic).count("input_audio_buffer.committed") == 1
    heard = next(e for e in semantic if e["type"] == "conversation.item.input_audio_transcription.completed")
    words = heard["transcript"].lower()
    assert "pizza" in words and "mushroom" in words and "olives" in words, heard["transcript"]
    assert types(outcome["server_vad"]).count("input_audio_buffer.committed") == 2


def test_an_answer_started_on_a_pause_is_cancelled_when_the_user_goes_on(demo):
    """server_vad at 500 ms: a 450 ms pause is long enough to start the answer early (held back), not to end the
    turn. The user goes on: the early answer is aborted (its KV blocks come back), nothing of it is sent, and the
    one answer comes after the real end of the turn."""
    app, supervisor, url = demo
    llm = supervisor.clients["smollm2"]
    first = np.concatenate([silence(0.3, RATE), said("Tell me a story"), silence(0.45, RATE)])
    rest = np.concatenate([said("about a brave little dog."), silence(1.0, RATE)])

    async def main():
        before = preemptive(app, "cancelled")
        client = await open_session(url, SERVER_VAD)
        judged_before = judged(app)
        await client.speak(first, RATE)
        await until_judged(app, judged_before)
        held = await quiet_for(client, 0.5)
        await client.speak(rest, RATE)
        events = held + await client.until("response.done", timeout=120)
        await client.close()
        return preemptive(app, "cancelled") - before, events

    dropped, events = run(main())
    assert dropped >= 1  # an answer was begun on the pause, and thrown away when the user went on (counted only then)
    kinds = types(events)
    assert kinds.count("input_audio_buffer.committed") == 1 and kinds.count("response.created") == 1
    assert kinds.index("response.created") > kinds.index("input_audio_buffer.speech_stopped")
    first_audio = kinds.index("response.output_audio.delta")
    assert first_audio > kinds.index("input_audio_buffer.speech_stopped")
    heard = next(e for e in events if e["type"] == "conversation.item.input_audio_transcription.completed")
    assert "dog" in heard["transcript"].lower() and "story" in heard["transcript"].lower()
    for _ in range(200):
        if llm.stats.running + llm.stats.waiting == 0 and llm.stats.blocks_used == 0:
            break
        time.sleep(0.05)
    assert (llm.stats.running, llm.stats.waiting, llm.stats.blocks_used) == (0, 0, 0)


LONG = "I would like to book a table for four people tomorrow evening at the little Italian restaurant near the park."


def test_live_words_arrive_while_the_user_speaks_for_a_streaming_transcription_model(demo):
    """gpt-4o-transcribe: the words come as deltas while a 6-second sentence is spoken, each agreed on by two passes,
    and the final text extends (or corrects) them. whisper-1: nothing before the pass at the turn's end."""
    _, _, url = demo
    sentence = np.concatenate([silence(0.3, RATE), said(LONG), silence(1.0, RATE)])
    assert len(sentence) / RATE > 5.5

    async def turn(model: str) -> list[dict]:
        client = await open_session(url, SERVER_VAD)
        await client.send(type="session.update", session={"audio": {"input": {"transcription": {"model": model}}}})
        await client.until("session.updated")
        await client.speak(sentence, RATE)
        events = await client.until("conversation.item.input_audio_transcription.completed", timeout=120)
        await client.close()
        return events

    async def main():
        return await turn("gpt-4o-transcribe"), await turn("whisper-1")

    streaming, plain = run(main())
    stopped = types(streaming).index("input_audio_buffer.speech_stopped")
    early = [e for e in streaming[:stopped] if e["type"] == "conversation.item.input_audio_transcription.delta"]
    started = next(e for e in streaming if e["type"] == "input_audio_buffer.speech_started")
    assert len(early) >= 3 and all(e["item_id"] == started["item_id"] for e in early)
    final = streaming[-1]["transcript"]
    sent = "".join(e["delta"] for e in streaming if e["type"] == "conversation.item.input_audio_transcription.delta")
    heard = " ".join(e["delta"].strip() for e in early)
    assert "table" in final.lower() and "restaurant" in final.lower()
    assert sent == final or not final.startswith(heard), (sent, final)  # extended to the final text, or corrected
    stopped = types(plain).index("input_audio_buffer.speech_stopped")
    assert "conversation.item.input_audio_transcription.delta" not in types(plain)[:stopped]


def test_four_sessions_speaking_at_once_each_hear_their_own_words(demo):
    """Four sessions speak four sentences at once, their utterances sharing ASR batches (the demo's Whisper set to
    batch as on a GPU, drafts riding with finals; on a CPU it batches finals only): each session's transcript is
    its own sentence, and the ASR ran some of the transcriptions batched."""
    app, _, url = demo
    front = app.state.companions.of("asr")["whisper-base"]
    demo_policy = front.max_batch, front.rows_in_parallel
    front.max_batch, front.rows_in_parallel = 4, True
    lines = ["The cat sat on the warm kitchen floor.", "Please send the invoice to the accounting office.",
             "We will meet at the station after lunch.", "Turn left at the bank and walk to the bridge."]
    keys = [("cat", "kitchen"), ("invoice", "office"), ("station", "lunch"), ("bank", "bridge")]
    def asr(sample: str) -> float:  # over finals and drafts (a pause's draft is the turn's transcript when it ends it)
        return sum(app.state.metrics.registry.get_sample_value(f"orchestrator_asr_batch_size_{sample}",
                                                               {"priority": p}) or 0 for p in ("final", "draft"))

    before, count = asr("sum"), asr("count")

    async def one(line: str) -> str:
        client = await open_session(url, SERVER_VAD)
        await client.speak(np.concatenate([silence(0.3, RATE), said(line), silence(1.0, RATE)]), RATE)
        done = await client.until("conversation.item.input_audio_transcription.completed", timeout=120)
        await client.close()
        return done[-1]["transcript"].lower()

    async def main():
        return await asyncio.gather(*(one(line) for line in lines))

    try:
        heard = run(main())
    finally:
        front.max_batch, front.rows_in_parallel = demo_policy
    for text, (a, b) in zip(heard, keys):
        assert a in text and b in text, heard
    batched, transcriptions = asr("sum") - before, asr("count") - count
    assert transcriptions >= 4 and batched > transcriptions, (batched, transcriptions)  # some shared a batch
