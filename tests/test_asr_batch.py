"""Speech recognition batched across requests, on the real Whisper base: each item's words exactly as alone, mixed
batches split by what must match, finals before drafts, a draft nobody waits for never decoded, HTTP batched."""
from __future__ import annotations

import asyncio
import io
import threading
import wave
from concurrent.futures import ThreadPoolExecutor

import httpx2 as httpx
import numpy as np
import openai
import pytest
from live_server import live_server
from speech import silence, speak, word_errors

from engines.asr.async_asr import AsyncASR
from engines.asr.outputs import TranscribeOptions
from engines.asr.whisper import WhisperASR

KEY = "asr-batch"
SENTENCES = ["The weather is lovely today, so we are going for a walk.", "Please buy milk and bread on the way home.",
             "My favourite colour is blue, like the morning sky.", "The train to London leaves at half past nine.",
             "She opened the window and listened to the birds.", "Could you tell me where the library is?"]
VOICES = ["en", "en-us", "en+f3", "en-gb", "en+m3", "en-us+f2"]
GREEDY = TranscribeOptions(temperature=0.0)


@pytest.fixture(scope="module")
def whisper(real_models) -> WhisperASR:
    engine = WhisperASR(str(real_models / "whisper-base"), "cpu", "int8", beam_size=1, batch_size=8, language=None)
    engine.load()
    return engine


@pytest.fixture(scope="module")
def utterances() -> list[np.ndarray]:
    return [np.concatenate([silence(0.3), speak(text, voice=voice), silence(0.3)])
            for text, voice in zip(SENTENCES, VOICES)]


def test_a_batch_gives_each_utterance_exactly_its_words_alone(whisper, utterances):
    alone = [whisper.transcribe(audio, GREEDY) for audio in utterances]
    together = whisper.transcribe_batch([(audio, GREEDY) for audio in utterances])
    assert [t.text for t in together] == [t.text for t in alone]
    assert [t.segments[0].tokens for t in together] == [t.segments[0].tokens for t in alone]
    assert all(t.language == "en" for t in together)
    errors, total = map(sum, zip(*(word_errors(s, t.text) for s, t in zip(SENTENCES, together))))
    assert errors / total < 0.15, [t.text for t in together]  # real words, not just equal ones


def test_a_mixed_batch_is_split_by_what_must_match(whisper, utterances):
    """Languages, prompts, beam sizes and tasks differ item by item: each still decodes as it would alone."""
    mixed = [GREEDY, TranscribeOptions(language="fr", temperature=0.0),
             TranscribeOptions(prompt="Milk, bread.", temperature=0.0),
             TranscribeOptions(beam_size=3, temperature=0.0),
             TranscribeOptions(language="en", task="translate", temperature=0.0),
             GREEDY]
    alone = [whisper.transcribe(audio, options) for audio, options in zip(utterances, mixed)]
    together = whisper.transcribe_batch(list(zip(utterances, mixed)))
    assert [(t.text, t.language) for t in together] == [(t.text, t.language) for t in alone]
    assert together[1].language == "fr"


def test_a_live_pass_encodes_a_window_fitted_to_its_audio(whisper, utterances):
    """A live pass asks for the next 5 s step with 5 s to spare instead of Whisper's 30 s: it shares a batch with
    whole-window items (each window encoded apart), each item gives what it gives alone, and on these utterances
    the fitted window hears as well as the whole one (measured: 5 word errors over the six sentences with either;
    on real recorded speech, `bench/asr_wer.py --windows`)."""
    from engines.asr.batch import fitted_window

    assert [fitted_window(int(s * 16000)) for s in (0.5, 4.9, 5.1, 12.0, 29.0)] == [10, 10, 15, 20, 30]
    live = [TranscribeOptions(temperature=0.0, draft=True, window_s=fitted_window(len(audio))) for audio in utterances]
    assert {options.window_s for options in live} == {10}
    mixed = [live[i] if i % 2 else GREEDY for i in range(len(utterances))]
    together = whisper.transcribe_batch(list(zip(utterances, mixed)))
    assert [t.text for t in together] == [whisper.transcribe(audio, o).text for audio, o in zip(utterances, mixed)]
    fitted = whisper.transcribe_batch(list(zip(utterances, live)))
    whole = whisper.transcribe_batch([(audio, GREEDY) for audio in utterances])
    errors = {name: sum(word_errors(sentence, t.text)[0] for sentence, t in zip(SENTENCES, transcripts))
              for name, transcripts in (("fitted", fitted), ("whole", whole))}
    assert errors["fitted"] <= errors["whole"] + 3, ([t.text for t in fitted], [t.text for t in whole])
    with pytest.raises(ValueError, match="window_s 40 is out of range"):
        whisper.transcribe(utterances[0], TranscribeOptions(temperature=0.0, window_s=40))


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_finals_run_before_drafts_and_a_left_draft_never_runs(whisper, utterances, device):
    """The engine is busy; two drafts, then a final, queue; one draft's caller leaves. The final runs first and the
    draft that left never runs; the waiting draft rides in the final's batch on a GPU, and runs after it on a CPU
    (where a batch costs the sum of its rows)."""
    asr = AsyncASR(whisper)
    asr.rows_in_parallel = device == "cuda"   # the policy AsyncASR takes from the engine's device
    batches: list[list[str]] = []
    gate, started = threading.Event(), threading.Event()
    real = whisper.transcribe_batch

    def recording(items):
        batches.append(["draft" if options.draft else "final" for _, options in items])
        if len(batches) == 1:
            started.set()
            gate.wait(30)
        return real(items)

    whisper.transcribe_batch = recording
    draft = TranscribeOptions(temperature=0.0, draft=True)

    async def main():
        first = asyncio.create_task(asr.transcribe(utterances[0], GREEDY))
        await asyncio.to_thread(started.wait, 30)
        kept = asyncio.create_task(asr.transcribe(utterances[1], draft))
        left = asyncio.create_task(asr.transcribe(utterances[2], draft))
        final = asyncio.create_task(asr.transcribe(utterances[3], GREEDY))
        await asyncio.sleep(0.1)
        left.cancel()
        gate.set()
        return await asyncio.gather(first, kept, final)

    try:
        first, kept, final = asyncio.run(asyncio.wait_for(main(), 120))
    finally:
        whisper.transcribe_batch = real
        gate.set()
        asr.shutdown()
    if device == "cuda":
        assert batches == [["final"], ["final", "draft"]] and final.batch_size == 2
    else:
        assert batches == [["final"], ["final"], ["draft"]] and final.batch_size == 1
    assert final.queue_seconds > 0 and "london" in final.text.lower()
    assert "milk" in kept.text.lower()


def wav_bytes(audio: np.ndarray) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
        w.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
    return out.getvalue()


def test_eight_http_transcriptions_at_once_run_batched_and_right(whisper, utterances):
    from orchestrator.server.app import build_app
    from orchestrator.server.companions import Companions

    asr = AsyncASR(whisper)
    app = build_app(None, KEY, Companions(asr={"whisper-base": asr}))
    clips = [utterances[i % len(utterances)] for i in range(8)]
    try:
        with live_server(app) as url:
            client = openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0, timeout=300)

            def one(audio: np.ndarray) -> str:
                return client.audio.transcriptions.create(model="whisper-base", file=("a.wav", wav_bytes(audio)),
                                                          temperature=0.0, response_format="json").text

            with ThreadPoolExecutor(8) as pool:
                texts = list(pool.map(one, clips))
            metrics = httpx.get(url + "/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
    finally:
        asr.shutdown()
    for i, text in enumerate(texts):
        errors, total = word_errors(SENTENCES[i % len(SENTENCES)], text)
        assert errors / total < 0.3, (SENTENCES[i % len(SENTENCES)], text)
    count = app.state.metrics.registry.get_sample_value("orchestrator_asr_batch_size_count", {"priority": "final"})
    total = app.state.metrics.registry.get_sample_value("orchestrator_asr_batch_size_sum", {"priority": "final"})
    assert count == 8 and total > 8, metrics  # some of them shared a batch
