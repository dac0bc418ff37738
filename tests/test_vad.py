"""The VAD engine on real speech (espeak-ng): segments, settings, shared-model streams, async batching, bad input."""
from __future__ import annotations

import asyncio
import shutil

import numpy as np
import pytest
import torch
from speech import silence, speak, voiced_span

from engines.errors import EngineBusyError, EngineDeadError
from engines.vad import AsyncVAD, SileroVAD, VADEvent
from engines.vad.model import WINDOW, packaged_weights
from orchestrator.stack import VADSpec

RATE = 16000
TOLERANCE = int(0.150 * RATE)
FIRST = "The quick brown fox jumps over the lazy dog."
SECOND = "Voice agents need to know when you stop talking."


@pytest.fixture(scope="module")
def vad() -> SileroVAD:
    engine = SileroVAD()
    engine.load()
    engine.warmup()
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def talk() -> tuple[np.ndarray, list[tuple[int, int]]]:
    """0.5 s silence, a sentence, 1.0 s silence, a sentence, 0.8 s silence; and where each sentence is voiced."""
    parts, spans, at = [silence(0.5)], [], int(0.5 * RATE)
    for text, gap in ((FIRST, 1.0), (SECOND, 0.8)):
        said = speak(text)
        start, stop = voiced_span(said)
        spans.append((at + start, at + stop))
        parts += [said, silence(gap)]
        at += len(said) + len(parts[-1])
    return np.concatenate(parts), spans


def run(stream, audio: np.ndarray, frame: int) -> list[VADEvent]:
    events = []
    for i in range(0, len(audio), frame):
        events += stream.feed(audio[i:i + frame])
    return events + stream.flush()


def segments(events: list[VADEvent]) -> list[tuple[int, int]]:
    kinds = [e.kind for e in events]
    assert kinds == ["speech_start", "speech_stop"] * (len(events) // 2), kinds
    return [(events[i].sample, events[i + 1].sample) for i in range(0, len(events), 2)]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # silero-vad's own loader uses importlib.resources.path
def test_net_matches_the_packages_own_model(talk):
    import silero_vad

    threads = torch.get_num_threads()
    reference = silero_vad.load_silero_vad()  # its import pins torch to one thread; put it back afterwards
    torch.set_num_threads(threads)
    audio = talk[0][: 200 * WINDOW]
    expected = np.array([reference(torch.from_numpy(w), RATE).item() for w in audio.reshape(-1, WINDOW)])
    engine = SileroVAD()
    engine.load()
    stream = engine.stream()
    ours = engine.score([stream.state], [audio.reshape(-1, WINDOW)])[0]
    np.testing.assert_allclose(ours, expected, atol=1e-5)
    assert expected.max() > 0.9 and expected.min() < 0.05  # real speech and real silence were both scored


@pytest.mark.parametrize("frame", [160, 480, 1000, 512, 7919])
def test_two_sentences_give_two_segments_for_any_frame_size(vad, talk, frame):
    audio, spans = talk
    found = segments(run(vad.stream(), audio, frame))
    assert len(found) == 2, found
    next_starts = [spans[1][0], len(audio) + 1]
    for (start, stop), (true_start, true_end), next_start in zip(found, spans, next_starts):
        assert abs(start - true_start) <= TOLERANCE
        assert true_end < stop < next_start


def test_int16_pcm_gives_the_same_events(vad, talk):
    audio = talk[0]
    pcm = np.round(audio * 32767).astype(np.int16)
    assert run(vad.stream(), pcm, 480) == run(vad.stream(), audio, 480)


def test_event_times_in_ms(vad, talk):
    event = run(vad.stream(), talk[0], 1000)[0]
    assert event.ms == event.sample * 1000 // RATE
    assert 400 <= event.ms <= 700


def test_silence_and_faint_noise_give_no_events(vad):
    noise = np.random.default_rng(0).normal(0, 0.003, 3 * RATE).astype(np.float32)
    assert run(vad.stream(), silence(3.0), 320) == []
    assert run(vad.stream(), noise, 320) == []
    assert vad.stream().flush() == []


def test_long_min_silence_merges_the_sentences(vad, talk):
    audio, spans = talk
    found = segments(run(vad.stream(min_silence_ms=2000), audio, 480))
    assert len(found) == 1
    (start, stop), = found
    assert abs(start - spans[0][0]) <= TOLERANCE and spans[1][1] < stop <= len(audio)


def test_min_speech_longer_than_any_sentence_finds_nothing(vad, talk):
    assert run(vad.stream(min_speech_ms=5000), talk[0], 480) == []


def test_lower_threshold_and_more_padding_widen_segments(vad, talk):
    audio = talk[0]
    strict = segments(run(vad.stream(threshold=0.95), audio, 480))
    loose = segments(run(vad.stream(threshold=0.2), audio, 480))
    padded = segments(run(vad.stream(speech_pad_ms=200), audio, 480))
    plain = segments(run(vad.stream(), audio, 480))
    assert len(strict) == len(loose) == len(padded) == len(plain) == 2
    for (s0, e0), (s1, e1) in zip(strict, loose):
        assert s1 <= s0 and e1 >= e0
    assert strict != loose
    for (s0, e0), (s1, e1) in zip(plain, padded):
        assert s1 < s0 and e1 > e0


def test_flush_closes_an_open_segment_where_the_audio_ends(vad, talk):
    audio, spans = talk
    cut = (spans[1][0] + spans[1][1]) // 2
    stream = vad.stream()
    events = stream.feed(audio[:cut])
    assert events[-1].kind == "speech_start"
    assert stream.speaking
    assert stream.flush() == [VADEvent("speech_stop", cut)]
    later = stream.feed(audio[cut:]) + stream.flush()  # a fresh utterance; positions keep counting
    assert all(e.sample >= cut for e in later)


def test_interleaved_streams_on_one_model_match_each_alone(vad, talk):
    audio = talk[0]
    other = np.concatenate([audio[len(audio) // 2:], audio[: len(audio) // 2]])
    alone = [run(vad.stream(), audio, 480), run(vad.stream(min_silence_ms=100), other, 1000)]
    a, b = vad.stream(), vad.stream(min_silence_ms=100)
    got: list[list[VADEvent]] = [[], []]
    for i in range(0, len(audio), 480):
        got[0] += a.feed(audio[i:i + 480])
        if i % 960 == 0:
            got[1] += b.feed(other[i:i + 960])
    assert alone == [got[0] + a.flush(), got[1] + b.flush()]


@pytest.mark.parametrize("pcm, problem", [
    (np.zeros((1600, 2), dtype=np.float32), "mono"),
    (np.zeros(1600, dtype=np.float64), "dtype float64"),
    (np.zeros(1600, dtype=np.int32), "dtype int32"),
    (np.array([0.0, np.nan, np.inf], dtype=np.float32), "2 non-finite"),
    ([0.0] * 1600, "numpy array"),
])
def test_bad_audio_is_refused_and_the_stream_keeps_working(vad, talk, pcm, problem):
    stream = vad.stream()
    with pytest.raises(ValueError, match=problem):
        stream.feed(pcm)
    assert segments(run(stream, talk[0], 1000)) == segments(run(vad.stream(), talk[0], 1000))


@pytest.mark.parametrize("settings, problem", [
    ({"threshold": 1.5}, "threshold"), ({"threshold": 0}, "threshold"),
    ({"min_silence_ms": -1}, "min_silence_ms"), ({"speech_pad_ms": "30"}, "speech_pad_ms"),
])
def test_bad_settings_are_refused(vad, settings, problem):
    with pytest.raises(ValueError, match=problem):
        vad.stream(**settings)


def test_from_spec(tmp_path):
    engine = SileroVAD.from_spec(VADSpec(name="vad", kind="vad", threshold=0.7))
    assert (engine.kind, engine.device, engine.threshold, engine.weights) == ("vad", "cpu", 0.7, None)
    assert SileroVAD.from_spec(VADSpec(name="vad", kind="vad", device=0)).device == "cuda:0"
    shutil.copy(packaged_weights(), tmp_path / "silero_vad.jit")
    copied = SileroVAD.from_spec(VADSpec(name="vad", kind="vad", path=str(tmp_path)))
    copied.load()
    assert copied.stream().feed(silence(0.5)) == []
    copied.close()
    with pytest.raises(RuntimeError, match="not loaded"):
        copied.stream()
    with pytest.raises(ValueError, match="does not exist"):
        SileroVAD.from_spec(VADSpec(name="vad", kind="vad", path=str(tmp_path / "missing")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no Silero VAD checkpoint"):
        SileroVAD.from_spec(VADSpec(name="vad", kind="vad", path=str(tmp_path / "empty")))


def test_async_vad_batches_concurrent_streams_and_matches_sync(vad, talk):
    audio = talk[0]
    expected = run(vad.stream(), audio, 1000)

    async def session(engine: AsyncVAD, frame: int) -> list[VADEvent]:
        stream_id = await engine.open_stream()
        events = []
        for i in range(0, len(audio), frame):
            events += await engine.feed(stream_id, audio[i:i + frame])
        events += await engine.flush(stream_id)
        await engine.close_stream(stream_id)
        return events

    async def main() -> list[list[VADEvent]]:
        return await asyncio.gather(*(session(engine, frame) for frame in (320, 480, 1000, 2048)))

    engine = AsyncVAD(vad)
    try:
        assert asyncio.run(main()) == [expected] * 4
    finally:
        engine.shutdown()


def test_async_vad_refuses_when_full_bad_input_and_after_shutdown(vad, talk):
    long_audio = np.tile(talk[0], 6)

    async def main(engine: AsyncVAD) -> list:
        ids = [await engine.open_stream() for _ in range(40)]
        with pytest.raises(ValueError, match="mono"):
            await engine.feed(ids[0], np.zeros((10, 2), dtype=np.float32))
        with pytest.raises(ValueError, match="no open VAD stream"):
            await engine.feed("vad-nope", silence(0.1))
        calls = [engine.feed(ids[0], long_audio)] + [engine.feed(i, silence(0.1)) for i in ids[1:]]
        return await asyncio.gather(*calls, return_exceptions=True)

    engine = AsyncVAD(vad, max_pending=4)
    results = asyncio.run(main(engine))
    assert isinstance(results[0], list) and len(segments(results[0])) == 12
    assert any(isinstance(r, EngineBusyError) for r in results[1:])
    assert all(r == [] or isinstance(r, EngineBusyError) for r in results[1:])
    engine.shutdown()
    assert not engine.is_alive()
    with pytest.raises(EngineDeadError):
        asyncio.run(engine.feed("vad-0", silence(0.1)))
