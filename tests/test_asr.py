"""ASR end to end: a tiny random Whisper through faster-whisper, AsyncASR, and the real server via the openai and groq SDKs.

The model's words are random, so tests assert structure: times inside the audio, formats that parse, errors
in OpenAI's shape, and that the same audio at temperature 0 always gives the same text.
"""
from __future__ import annotations

import asyncio
import io
import re
import shutil
from concurrent.futures import ThreadPoolExecutor

import av
import ctranslate2
import groq
import httpx2 as httpx
import numpy as np
import openai
import pytest
from live_server import live_server
from speech import silence, speak

from engines.asr import AsyncASR, OptionError, TranscribeOptions, WhisperASR
from engines.asr.languages import LANGUAGE_NAMES
from engines.errors import EngineBusyError, EngineDeadError
from orchestrator.demo.tiny_whisper import make_whisper
from orchestrator.server.app import build_app
from orchestrator.server.audio_decode import decode_audio
from orchestrator.server.companions import Companions
from orchestrator.server.transcript_formats import _clock
from orchestrator.stack import ASRSpec

KEY = "genshin"
MODEL = "tiny-whisper"
GREEDY = TranscribeOptions(language="en", temperature=0.0)


@pytest.fixture(scope="session")
def whisper_dir(tmp_path_factory):
    return make_whisper(tmp_path_factory.mktemp("whisper"))


@pytest.fixture(scope="module")
def engine(whisper_dir):
    asr = WhisperASR.from_spec(ASRSpec(name=MODEL, kind="asr", path=str(whisper_dir), beam_size=1), device="cpu")
    asr.load()
    asr.warmup()
    yield asr
    asr.close()


@pytest.fixture(scope="module")
def voice() -> np.ndarray:
    return np.concatenate([silence(0.4), speak("Hello there, how are you today?"), silence(0.4)])


def encode(audio: np.ndarray, fmt: str, layout: str = "mono", rate: int | None = None) -> bytes:
    """16 kHz mono samples as a real file of that format (and layout, rate), written by PyAV's encoders."""
    codec = {"wav": "pcm_s16le", "mp3": "libmp3lame", "flac": "flac", "ogg": "libopus", "webm": "libopus",
             "m4a": "aac"}[fmt]
    rate = rate or (48000 if codec == "libopus" else 16000)
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format={"m4a": "mp4"}.get(fmt, fmt)) as container:
        stream = container.add_stream(codec, rate=rate, layout=layout)
        resampler = av.AudioResampler(stream.codec_context.codec.audio_formats[0].name, layout, rate)
        frame = av.AudioFrame.from_ndarray(audio.reshape(1, -1), format="flt", layout="mono")
        frame.rate = 16000
        for piece in resampler.resample(frame) + resampler.resample(None):
            container.mux(stream.encode(piece))
        container.mux(stream.encode(None))
    return buffer.getvalue()


def check_times(result, duration: float) -> None:
    assert result.duration == pytest.approx(duration, abs=1e-3)
    assert [s.id for s in result.segments] == list(range(len(result.segments)))
    for s in result.segments:
        assert 0 <= s.start <= s.end <= result.duration
    for w in result.words:
        assert 0 <= w.start <= w.end <= result.duration
    assert result.text == "".join(s.text for s in result.segments).strip()


# --- the engine -------------------------------------------------------------------------------------------------

def test_engine_transcribes_speech(engine, voice):
    result = engine.transcribe(voice, GREEDY)
    check_times(result, len(voice) / 16000)
    assert result.language == "en" and result.language_probability == 1
    assert result.segments and result.text
    assert engine.transcribe(voice, GREEDY) == result  # greedy decoding is deterministic
    assert engine.compute_type == "float32"  # stored float16; CTranslate2 has no fast float16 on CPU


def test_engine_detects_language_and_times_words(engine, voice):
    result = engine.transcribe(voice, TranscribeOptions(temperature=0.0, word_timestamps=True))
    check_times(result, len(voice) / 16000)
    assert result.language in engine.languages and 0 < result.language_probability <= 1
    assert result.words and all(s.words for s in result.segments)


def test_engine_long_audio_runs_window_after_window(engine, voice):
    audio = np.concatenate([voice] * 14)  # ~45 s: two 30 s windows
    result = engine.transcribe(audio, GREEDY)
    check_times(result, len(audio) / 16000)
    assert {s.seek for s in result.segments} >= {0, 3000}
    starts = [s.start for s in result.segments]
    assert starts == sorted(starts)


def test_batched_pipeline(whisper_dir, voice):
    batched = WhisperASR(str(whisper_dir), "cpu", beam_size=1, batch_size=2)
    batched.load()
    batched.warmup()
    audio = np.concatenate([voice] * 14)
    result = batched.transcribe(audio, TranscribeOptions(language="en", temperature=0.0, word_timestamps=True))
    check_times(result, len(audio) / 16000)
    assert result.segments
    batched.close()


def test_options_are_checked(engine, voice):
    assert engine.check(TranscribeOptions(language="English")).language == "en"
    for options, param in [(TranscribeOptions(language="xx"), "language"),
                           (TranscribeOptions(language="yue"), "language"),  # this model (large-v2 layout) has none
                           (TranscribeOptions(temperature=1.5), "temperature"),
                           (TranscribeOptions(task="summarize"), "task"),
                           (TranscribeOptions(beam_size=0), "beam_size")]:
        with pytest.raises(OptionError) as error:
            engine.transcribe(voice, options)
        assert error.value.param == param
    with pytest.raises(OptionError, match="non-empty 1-D"):
        engine.transcribe(np.zeros(0, np.float32), GREEDY)


def test_load_errors_name_the_model_and_the_fix(whisper_dir, tmp_path):
    def load_error(path, **kw) -> str:
        with pytest.raises(ValueError) as error:
            WhisperASR.from_spec(ASRSpec(name="w", kind="asr", path=str(path), **kw)).load()
        return str(error.value)

    assert "'w'" in load_error(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no model.bin" in load_error(empty) and "ct2-transformers-converter" in load_error(empty)
    no_tokenizer = tmp_path / "no-tokenizer"
    shutil.copytree(whisper_dir, no_tokenizer)
    (no_tokenizer / "tokenizer.json").unlink()
    assert "tokenizer.json" in load_error(no_tokenizer)
    garbage = tmp_path / "garbage"
    shutil.copytree(whisper_dir, garbage)
    (garbage / "model.bin").write_bytes(b"\x05\x00\x00\x00not a model")
    assert "reconvert" in load_error(garbage)
    assert "language 'klingon'" in load_error(whisper_dir, language="klingon")
    with pytest.raises(ValueError, match="shipped config"):
        WhisperASR.from_spec(ASRSpec(name="w", kind="asr", path="/nowhere/faster-whisper-large-v3-turbo"))
    if ctranslate2.get_cuda_device_count() == 0:
        assert "cannot use device cuda:0" in load_error(whisper_dir, device=0)


def test_int8_weights(whisper_dir, voice):
    quantized = WhisperASR(str(whisper_dir), "cpu", compute_type="int8", beam_size=1)
    quantized.load()
    assert quantized.compute_type == "int8"
    check_times(quantized.transcribe(voice, GREEDY), len(voice) / 16000)


def test_tables():
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    assert LANGUAGE_NAMES == LANGUAGES
    assert _clock(3661.5, ",") == "01:01:01,500" and _clock(0.0126, ".") == "00:00:00.013"


def test_decode_every_container(voice):
    for fmt in ("wav", "mp3", "flac", "ogg", "webm", "m4a"):
        audio = decode_audio(encode(voice, fmt))
        assert audio.dtype == np.float32 and audio.ndim == 1
        assert abs(len(audio) - len(voice)) < 0.15 * 16000, fmt  # AAC pads its last frame
    assert abs(len(decode_audio(encode(voice, "wav", "stereo", 44100))) - len(voice)) <= 2


# --- AsyncASR ---------------------------------------------------------------------------------------------------

def test_async_queue_is_bounded_and_shuts_down(engine, voice):
    async def burst(asr: AsyncASR) -> list:
        return await asyncio.gather(*(asr.transcribe(np.concatenate([voice] * 9), GREEDY) for _ in range(5)),
                                    return_exceptions=True)

    asr = AsyncASR(engine, max_pending=1)
    outcomes = asyncio.run(burst(asr))
    refused = [o for o in outcomes if isinstance(o, EngineBusyError)]
    done = [o for o in outcomes if not isinstance(o, BaseException)]
    assert refused and done and len(refused) + len(done) == 5
    assert all(o == done[0] for o in done)
    with pytest.raises(OptionError):
        asyncio.run(asr.transcribe(voice, TranscribeOptions(language="xx")))
    asr.shutdown()
    assert not asr.is_alive()
    with pytest.raises(EngineDeadError):
        asyncio.run(asr.transcribe(voice, GREEDY))


# --- the server -------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(engine):
    asr, dead, busy = AsyncASR(engine), AsyncASR(engine), AsyncASR(engine, max_pending=1)
    dead.shutdown()
    companions = Companions(asr={MODEL: asr, "dead-asr": dead, "busy-asr": busy})
    with live_server(build_app(None, KEY, companions)) as url:
        yield url
    asr.shutdown()
    busy.shutdown()


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server + "/v1", api_key=KEY, max_retries=0)


@pytest.fixture(scope="module")
def wav(voice) -> bytes:
    return encode(voice, "wav")


def transcribe(client, data: bytes, name: str = "speech.wav", **kw):
    return client.audio.transcriptions.create(file=(name, data), model=MODEL, temperature=0, **kw)


def test_every_response_format(client, wav, voice):
    duration = len(voice) / 16000
    plain = transcribe(client, wav, response_format="json", language="en")
    assert plain.text and plain.usage.seconds == int(np.ceil(duration))
    text = transcribe(client, wav, response_format="text", language="en")
    assert text == plain.text + "\n"
    full = transcribe(client, wav, response_format="verbose_json", language="en")
    assert full.language == "english" and full.duration == pytest.approx(duration, abs=1e-3)
    assert full.text == plain.text and full.segments and full.words is None
    assert all(0 <= s.start <= s.end <= full.duration for s in full.segments)
    srt = transcribe(client, wav, response_format="srt", language="en")
    blocks = srt.strip().split("\n\n")
    assert len(blocks) == len(full.segments)
    for i, (block, segment) in enumerate(zip(blocks, full.segments), 1):
        number, times, *_ = block.split("\n")
        assert number == str(i) and re.fullmatch(r"\d\d:\d\d:\d\d,\d{3} --> \d\d:\d\d:\d\d,\d{3}", times)
        assert times.startswith(_clock(segment.start, ","))
    vtt = transcribe(client, wav, response_format="vtt", language="en")
    header, *cues = vtt.strip().split("\n\n")
    assert header == "WEBVTT" and len(cues) == len(full.segments)
    assert all(re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3} --> \d\d:\d\d:\d\d\.\d{3}", c.split("\n")[0]) for c in cues)


def test_word_timestamps_and_prompt(client, wav):
    words = transcribe(client, wav, response_format="verbose_json", timestamp_granularities=["word", "segment"],
                       prompt="Hello, Genshin.")
    assert words.words and words.segments
    assert all(0 <= w.start <= w.end <= words.duration for w in words.words)
    only_words = transcribe(client, wav, response_format="verbose_json", timestamp_granularities=["word"])
    assert only_words.words and only_words.segments is None


@pytest.mark.parametrize("fmt", ["wav", "mp3", "flac", "ogg", "webm", "m4a"])
def test_upload_formats(client, voice, fmt):
    result = transcribe(client, encode(voice, fmt), name=f"speech.{fmt}", response_format="verbose_json")
    assert result.text and result.duration == pytest.approx(len(voice) / 16000, abs=0.15)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the SDK marks translations deprecated; OpenAI serves them
def test_translation(client, wav):
    result = client.audio.translations.create(file=("speech.wav", wav), model="whisper-1", temperature=0,
                                              response_format="verbose_json")
    assert result.task == "translate" and result.language == "english" and result.text
    assert client.audio.translations.create(file=("speech.wav", wav), model=MODEL, temperature=0).text


def test_groq_sdk(server, wav):
    client = groq.Groq(api_key=KEY, base_url=server, max_retries=0)
    text = client.audio.transcriptions.create(file=("speech.wav", wav), model=MODEL, response_format="text",
                                              temperature=0, language="en")
    assert isinstance(text, str) and text.strip()


def _post(server: str, files=None, data=None, headers=None, content=None) -> httpx.Response:
    return httpx.post(server + "/v1/audio/transcriptions", files=files, data=data, content=content, timeout=60,
                      headers={"Authorization": f"Bearer {KEY}", **(headers or {})})


def test_bad_inputs_are_4xx_in_openai_shape(server, wav):
    form = {"model": MODEL, "temperature": "0"}
    cases = [
        ({"file": ("x.wav", b"this is not audio at all" * 20)}, form, 400, "could not decode"),
        ({"file": ("x.wav", b"")}, form, 400, "empty"),
        ({"file": ("x.wav", bytes(30 * 1024 * 1024))}, form, 413, "larger than 25 MB"),
        ({"file": ("x.wav", wav)}, {**form, "language": "xx"}, 400, "language 'xx'"),
        ({"file": ("x.wav", wav)}, {**form, "response_format": "docx"}, 400, "response_format"),
        ({"file": ("x.wav", wav)}, {**form, "temperature": "3"}, 400, "temperature"),
        ({"file": ("x.wav", wav)}, {**form, "temperature": "warm"}, 400, "temperature"),
        ({"file": ("x.wav", wav)}, {**form, "model": "nope"}, 404, "does not exist"),
        (None, form, 400, "no audio file"),
    ]
    for files, data, status, words in cases:
        reply = _post(server, files, data)
        assert reply.status_code == status, (words, reply.text)
        error = reply.json()["error"]
        assert words in error["message"] and set(error) == {"message", "type", "param", "code"}
    assert _post(server, content=b'{"model": "whisper-1"}', headers={"Content-Type": "application/json"}
                 ).status_code == 400
    assert _post(server, {"file": ("x.wav", wav)}, form, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert _post(server, {"file": ("x.wav", wav)}, form).json()["text"]  # still serving


def test_streamed_upload_over_the_limit_is_413(server):
    def body():  # a well-formed form whose file part runs past 25 MB, sent chunked (no Content-Length)
        yield b'--x\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n\r\n'
        for _ in range(30):
            yield bytes(1024 * 1024)
        yield b"\r\n--x--\r\n"

    reply = _post(server, content=body(), headers={"Content-Type": "multipart/form-data; boundary=x"})
    assert reply.status_code == 413 and reply.json()["error"]["code"] == "file_too_large"


def test_busy_and_dead_engines(server, voice):
    long = encode(np.concatenate([voice] * 9), "flac")
    with ThreadPoolExecutor(6) as pool:
        replies = list(pool.map(lambda _: _post(server, {"file": ("x.flac", long)},
                                                {"model": "busy-asr", "temperature": "0", "language": "en"}),
                                range(6)))
    statuses = sorted(r.status_code for r in replies)
    assert statuses[0] == 200 and statuses[-1] == 429
    assert all(r.headers["retry-after"] for r in replies if r.status_code == 429)
    dead = _post(server, {"file": ("x.wav", encode(voice, "wav"))}, {"model": "dead-asr"})
    assert dead.status_code == 503 and dead.headers["retry-after"] and dead.json()["error"]["message"]


def test_sixteen_parallel_requests(server, wav):
    async def one(client: openai.AsyncOpenAI, i: int):
        fmt = ("json", "verbose_json")[i % 2]
        return await client.audio.transcriptions.create(file=(f"s{i}.wav", wav), model=MODEL, temperature=0,
                                                        language="en", response_format=fmt)

    async def run_all():
        async with openai.AsyncOpenAI(base_url=server + "/v1", api_key=KEY, max_retries=0) as client:
            return await asyncio.gather(*(one(client, i) for i in range(16)))

    results = asyncio.run(run_all())
    assert len({r.text for r in results}) == 1 and results[0].text
