"""Kokoro-82M as a TTS backend, on the real int8 model and its Japanese voices (PyPI packages, checked by SHA-256).

Voice blends are checked on the style vector the ONNX session is given; Japanese speech goes through the
server's /v1/audio/speech and comes back through /v1/audio/transcriptions (Whisper base, Japanese); a spoken
Japanese turn runs on configs/demo-ja.yaml; broken files stop `plan` and `run` with the file named.
"""
from __future__ import annotations

import asyncio
import base64
import io
import json
import re
import unicodedata
import wave
from pathlib import Path

import av
import httpx2 as httpx
import numpy as np
import pytest
from live_stack import live_stack
from realtime_client import spoken_turn
from speech import edit_distance

from engines.errors import UnknownVoiceError
from engines.tts.kokoro import VOCAB, KokoroBackend, chunk_phonemes, english_phonemes
from engines.tts.voice_blend import parse_blend
from orchestrator.server.audio_decode import decode_audio
from tests.conftest import CONFIGS

KEY = "kokoro-key"
VOICES = ["jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo"]
SENTENCES = ["今日はとてもいい天気ですね。", "駅はどこにありますか。", "私は毎朝コーヒーを飲みます。",
             "明日は友達と映画を見に行きます。", "この本はとても面白かったです。", "週末に家族と公園で遊びました。",
             "日本の夏はとても暑いです。", "電車が少し遅れて到着しました。"]
# Every response_format, one sentence each (all go through Whisper); the rate each format carries.
FORMATS = ["wav", "mp3", "opus", "aac", "flac", "pcm", "wav", "mp3"]
RATES = {"wav": 24000, "mp3": 24000, "opus": 48000, "aac": 24000, "flac": 24000}
# Character error rate of Kokoro jf_alpha read back by Whisper base (int8, beam 1, language ja), over the 8 sentences,
# NFKC-normalised, punctuation and spaces dropped: measured 0.038 here (8 errors in 210 characters: 毎朝 heard as
# まやさ, 暑い as 熱い), the same for wav and for the lossy formats. The bound leaves about 4x.
ROUND_TRIP_CER = 0.15


@pytest.fixture(scope="module")
def kokoro_dir(real_models) -> Path:
    return real_models / "kokoro-ja"


@pytest.fixture(scope="module")
def kokoro(kokoro_dir) -> KokoroBackend:
    backend = KokoroBackend(kokoro_dir, speaker="jf_alpha", max_input_chars=400)
    backend.load()
    return backend


class Recorder:
    """The ONNX session, with every feed it is given kept; `fake` answers without running the model."""

    def __init__(self, session, fake: bool = False) -> None:
        self.session, self.fake, self.feeds = session, fake, []

    def run(self, outputs, feed):
        self.feeds.append({k: np.array(v, copy=True) for k, v in feed.items()})
        if self.fake:
            return [np.zeros(feed["tokens"].shape[1] * 300, dtype=np.float32)]
        return self.session.run(outputs, feed)


@pytest.fixture
def recorded(kokoro):
    real = kokoro.session
    kokoro.session = Recorder(real)
    try:
        yield kokoro.session
    finally:
        kokoro.session = real


def test_a_blend_speaks_with_the_mean_style_and_a_weighted_blend_weights_it(kokoro, recorded):
    tables = kokoro.tables
    text = "こんにちは、元気ですか。"
    alone = kokoro.synthesize(text, "jf_alpha", 1.0)
    blended = kokoro.synthesize(text, "jf_alpha+jf_nezumi", 1.0)
    weighted = kokoro.synthesize(text, "jf_alpha(3)+jm_kumo(1)", 1.0)
    fast = kokoro.synthesize(text, "jf_alpha", 2.0)
    assert len(recorded.feeds) == 4  # one chunk each
    assert 0.35 < len(fast) / len(alone) < 0.65 and recorded.feeds[3]["speed"][0] == 2.0  # speed reaches the model
    n = recorded.feeds[0]["tokens"].shape[1] - 2  # the phonemes, without the two pads
    assert n == len(kokoro.phonemes(text, "j")) and tables["jf_alpha"].shape == (510, 256)
    styles = [feed["style"] for feed in recorded.feeds[:3]]
    np.testing.assert_array_equal(styles[0], tables["jf_alpha"][n - 1][None])
    np.testing.assert_allclose(styles[1], (tables["jf_alpha"][n - 1] + tables["jf_nezumi"][n - 1])[None] / 2, atol=1e-6)
    np.testing.assert_allclose(styles[2], (0.75 * tables["jf_alpha"][n - 1] + 0.25 * tables["jm_kumo"][n - 1])[None],
                               atol=1e-6)
    assert all(np.isfinite(a).all() and 1.0 < len(a) / 24000 < 4.0 for a in (alone, blended, weighted))
    assert not np.array_equal(alone, blended)
    # one spelling per blend: spaces and a repeated voice fold away; OpenAI's names and aliases resolve inside a blend
    assert kokoro.voice(" jf_alpha + jf_nezumi ").name == "jf_alpha+jf_nezumi"
    assert kokoro.voice("jf_alpha(2)+jf_alpha(2)").name == "jf_alpha"
    assert kokoro.voice("alloy(3)+jm_kumo").name == "jf_alpha(3)+jm_kumo(1)"
    assert parse_blend("a(0.5)+b") == [("a", 0.5), ("b", 1.0)]


def test_an_unknown_or_malformed_voice_names_the_voices(kokoro):
    for bad in ("af_sky", "jf_alpha+af_bella", "nobody(2)+jm_kumo(1)"):
        with pytest.raises(UnknownVoiceError) as error:
            kokoro.voice(bad)
        assert all(v in str(error.value) for v in VOICES) and error.value.param == "voice"
    for malformed in ("jf_alpha(0)", "jf_alpha(-1)", "jf alpha", "jf_alpha+"):
        with pytest.raises(UnknownVoiceError, match="blend like"):
            kokoro.voice(malformed)
    assert [v.name for v in kokoro.voices()][:5] == VOICES and kokoro.voice("alloy").name == "jf_alpha"


def test_a_long_piece_goes_in_chunks_within_the_context_and_fewer_when_slow(kokoro):
    real = kokoro.session
    kokoro.session = recorder = Recorder(real, fake=True)
    try:
        text = "今日は朝から雨が降っていましたが、午後には晴れて、私たちは公園まで歩いて行き、" * 6
        phonemes = kokoro.phonemes(text, "j")
        assert len(phonemes) > 500
        for speed, limit in ((1.0, 250), (2.0, 250), (0.5, 125)):
            recorder.feeds.clear()
            kokoro.synthesize(text, None, speed)
            sizes = [feed["tokens"].shape[1] - 2 for feed in recorder.feeds]
            assert len(sizes) > 1 and max(sizes) <= limit and sum(sizes) >= len(phonemes) - len(sizes), (speed, sizes)
            assert all(feed["speed"][0] == speed for feed in recorder.feeds)
            for feed, size in zip(recorder.feeds, sizes):  # each chunk's own style row
                np.testing.assert_array_equal(feed["style"], kokoro.tables["jf_alpha"][size - 1][None])
    finally:
        kokoro.session = real
    assert chunk_phonemes("ab, cd. ef gh", 6) == ["ab,", "cd.", "ef gh"]
    assert chunk_phonemes("abcdefgh", 3) == ["abc", "def", "gh"]


def test_phonemes_japanese_by_openjtalk_english_by_espeak(kokoro):
    """Japanese through misaki's ja.py over pyopenjtalk (its dictionary ships in the wheel: this runs offline);
    English through espeak-ng, mapped onto Kokoro's letters as misaki's fallback maps it."""
    assert kokoro.phonemes("こんにちは。今日はいい天気ですね。", "j") == "koɲɲiʨiβa. kʲoː βa ii teŋkʲi desɨ ne."
    us = kokoro.phonemes("Hello world, the judge chose a boy.", "a")
    assert us == "həlˈO wˈɜɹld, ðə ʤˈʌʤ ʧˈOz ə bˈY.", us
    assert english_phonemes("həlˈəʊ ðˈeə", british=True) == "həlˈQ ðˈɛː"
    assert all(c in VOCAB for c in us + kokoro.phonemes("Nothing near the air.", "b"))
    assert not kokoro.speakable("。、！") and kokoro.speakable("はい")



def test_an_english_voice_speaks_through_espeak(kokoro, kokoro_dir, tmp_path):
    """No package ships Kokoro's English voices: a voices file whose `af_` voice holds jf_alpha's table still takes
    the English path (espeak-ng phonemes) end to end."""
    (tmp_path / "kokoro.onnx").symlink_to(kokoro_dir / "kokoro-v1.0.int8.onnx")
    np.savez(tmp_path / "voices.npz", af_test=kokoro.tables["jf_alpha"][:, None, :],
             zf_test=kokoro.tables["jf_alpha"][:, None, :])
    english = KokoroBackend(tmp_path)
    english.session = Recorder(kokoro.session)
    audio = english.synthesize("Good morning, how are you?", None, 1.0)
    assert english.default_voice == "af_test" and 1.0 < len(audio) / 24000 < 3
    letters = {i: c for c, i in VOCAB.items()}
    spoken = "".join(letters[i] for i in english.session.feeds[0]["tokens"][0, 1:-1].tolist())
    assert spoken == english.phonemes("Good morning, how are you?", "a")
    with pytest.raises(UnknownVoiceError, match="Mandarin"):  # listed, and refused with the reason
        english.voice("zf_test")


def test_voices_files_and_models_that_are_not_kokoros_are_refused_naming_the_file(kokoro_dir, real_models, tmp_path,
                                                                                  run_cli):
    model = kokoro_dir / "kokoro-v1.0.int8.onnx"
    narrow = tmp_path / "narrow"
    narrow.mkdir()
    (narrow / "kokoro.onnx").symlink_to(model)
    np.savez(narrow / "voices.npz", jf_alpha=np.zeros((510, 1, 128), np.float32))
    piper = tmp_path / "piper-as-kokoro"
    piper.mkdir()
    (piper / "model.onnx").symlink_to(real_models / "piper-joe" / "en_US-joe-medium.onnx")
    (piper / "voices_ja.npz").symlink_to(kokoro_dir / "voices_ja.npz")
    pickle = tmp_path / "pickled"
    pickle.mkdir()
    (pickle / "kokoro.onnx").symlink_to(model)
    (pickle / "voices.bin").write_bytes(b"not a zip archive at all")
    cases = [(narrow, "voices.npz", ["voices.npz", "not a Kokoro voices file", "510×1×128", "510×1×256"]),
             (piper, "model.onnx", ["model.onnx", "is not a Kokoro model", "input_lengths",
                                    "style (float32, 1 × 256)"]),
             (pickle, "voices.bin", ["voices.bin", "not a Kokoro voices file", "voices-v1.0.bin"])]
    for folder, named, words in cases:
        stack = tmp_path / f"{folder.name}.yaml"
        stack.write_text(json.dumps({"gpu": {"device": "cpu", "memory": "8GiB"}, "models": [
            {"name": "broken", "kind": "tts", "backend": "kokoro", "path": str(folder)}]}))
        for command in ("plan", "run"):
            done = run_cli(command, str(stack))
            out = done.stdout + done.stderr
            assert done.returncode == 2 and "Traceback" not in out and "\n\n" not in out.strip(), (command, out)
            message = " ".join(out.split())  # rich wraps long lines
            assert str(folder / named) in message and all(w in message for w in words), (command, message)
    with pytest.raises(ValueError, match="not a Kokoro voices file"):
        KokoroBackend(narrow)


def test_the_plan_shows_kokoro_from_its_files(kokoro_dir, tmp_path):
    """`backend: auto` knows Kokoro by the voices file beside its .onnx; the estimate counts its initializers."""
    from budget.planner import plan_stack
    from orchestrator.stack import Stack

    stack = Stack.model_validate({"gpu": {"device": "cpu", "memory": "8GiB"}, "models": [
        {"name": "kokoro", "kind": "tts", "path": str(kokoro_dir)}]})
    estimate = plan_stack(stack, 8 << 30, "test").models[0].estimate
    assert "(Kokoro)" in estimate.source and 80e6 < estimate.parameters < 83e6  # Kokoro-82M
    assert estimate.weights_bytes < 100 << 20 and 300 << 20 < estimate.activation_bytes < 1 << 30
    assert "250 phonemes" in estimate.formulas["activations"] and "5 voices" in estimate.formulas["weights"]
    with pytest.raises(ValueError, match="only a Kokoro model"):
        Stack.model_validate({"models": [{"name": "v", "kind": "tts", "backend": "piper", "path": "x",
                                          "voices": "v.npz"}]})


async def _voices(names):
    from engines.tts.backend import Voice

    return [Voice(n, None) for n in names]


class FakeTTS:
    def __init__(self, *voices: str) -> None:
        self.names = voices

    async def voices(self):
        return await _voices(self.names)


def test_open_llm_vtubers_kokoro_names_reach_a_kokoro_model_that_has_them():
    """`kokoro` (the model name OLV sends) goes to the stack's Kokoro before a Piper voice aliased `kokoro`, when the
    Kokoro has the voice asked for; else to the alias's holder when that one has it; a request naming no model goes
    to the first TTS with the voice."""
    from orchestrator.server.companions import Companions

    piper = FakeTTS("default", "alloy", "af_sky+af_bella")
    ja = FakeTTS(*VOICES, "alloy")
    english = FakeTTS("af_sky", "af_bella", "af_heart", "alloy")
    companions = Companions()
    companions.add("tts", "voice", piper, ["kokoro"])
    companions.add("tts", "kokoro-ja", ja, family="kokoro")
    companions.add("tts", "kokoro-en", english, family="kokoro")

    def pick(model, voice):
        return asyncio.run(companions.pick_speaker("tts", model, voice))

    assert pick("kokoro", "af_sky+af_bella") is english and pick("kokoro", "af_sky(2)+af_heart(1)") is english
    assert pick("kokoro", "jf_alpha+jf_nezumi") is ja and pick("kokoro", None) is ja
    assert pick("voice", "af_sky+af_bella") is piper and pick("tts-1", "jm_kumo") is ja and pick(None, "alloy") is piper
    assert ("kokoro", "tts") in companions.names()
    without = Companions()
    without.add("tts", "voice", piper, ["kokoro"])
    without.add("tts", "kokoro-ja", ja, family="kokoro")
    assert asyncio.run(without.pick_speaker("tts", "kokoro", "af_sky+af_bella")) is piper  # only the alias has it
    assert asyncio.run(without.pick_speaker("tts", "kokoro", "af_nicole")) is ja  # which then names its voices
    alone = Companions()
    alone.add("tts", "voice", piper, ["kokoro"])
    assert asyncio.run(alone.pick_speaker("tts", "kokoro", "af_sky+af_bella")) is piper  # no Kokoro: the alias


# -- the Japanese demo, served

@pytest.fixture(scope="module")
def demo_ja(real_models):
    """configs/demo-ja.yaml with every engine in this process, served on a loopback port."""
    with live_stack(CONFIGS / "demo-ja.yaml", KEY) as (_, _, url):
        yield url


def speech(url: str, text: str, fmt: str = "wav", voice: str | None = "jf_alpha", model: str = "kokoro"):
    return httpx.post(url + "/v1/audio/speech", json={"model": model, "input": text, "voice": voice,
                                                      "response_format": fmt},
                      headers={"Authorization": f"Bearer {KEY}"}, timeout=180)


def transcribe(url: str, audio: bytes, name: str) -> str:
    reply = httpx.post(url + "/v1/audio/transcriptions", files={"file": (name, audio)},
                       data={"model": "whisper-1", "temperature": "0"}, headers={"Authorization": f"Bearer {KEY}"},
                       timeout=180)
    assert reply.status_code == 200, reply.text
    return reply.json()["text"]


def characters(text: str) -> str:
    return re.sub(r"[\W_]+", "", unicodedata.normalize("NFKC", text))


def character_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    ref = characters(reference)
    return edit_distance(ref, characters(hypothesis)), len(ref)


def test_japanese_speech_read_back_by_whisper_in_every_format(demo_ja):
    errors = total = 0
    heard = []
    for sentence, fmt in zip(SENTENCES, FORMATS):
        reply = speech(demo_ja, sentence, fmt)
        assert reply.status_code == 200, reply.text
        data = reply.content
        if fmt == "pcm":  # OpenAI's pcm: 24 kHz mono s16le, no header
            seconds = len(data) / 2 / 24000
            buffer = io.BytesIO()
            with wave.open(buffer, "wb") as w:
                w.setnchannels(1), w.setsampwidth(2), w.setframerate(24000), w.writeframes(data)
            data = buffer.getvalue()
        else:
            with av.open(io.BytesIO(data)) as container:
                assert container.streams.audio[0].rate == RATES[fmt], fmt
            seconds = len(decode_audio(data, 16000)) / 16000
        assert 0.1 < seconds / len(sentence) < 0.4, (fmt, sentence, seconds)  # ~5 characters a second
        text = transcribe(demo_ja, data, f"speech.{'wav' if fmt == 'pcm' else fmt}")
        heard.append(text)
        e, n = character_errors(sentence, text)
        errors, total = errors + e, total + n
    assert errors / total <= ROUND_TRIP_CER, (errors / total, heard)


def test_voices_blends_and_open_llm_vtubers_defaults_on_the_japanese_demo(demo_ja):
    unknown = speech(demo_ja, "こんにちは。", voice="jf_beta")
    assert unknown.status_code == 400, unknown.text
    error = unknown.json()["error"]
    assert error["param"] == "voice" and all(v in error["message"] for v in VOICES), error
    blend = speech(demo_ja, "こんにちは。", voice="jf_alpha(3)+jm_kumo(1)", fmt="pcm")
    olv = speech(demo_ja, "こんにちは。", voice="af_sky+af_bella", fmt="pcm")  # OLV's default voice, aliased
    alpha = speech(demo_ja, "こんにちは。", voice="jf_alpha", fmt="pcm")
    assert blend.status_code == olv.status_code == 200 and olv.content == alpha.content != blend.content
    listed = httpx.get(demo_ja + "/v1/audio/voices", headers={"Authorization": f"Bearer {KEY}"}).json()["data"]
    assert set(VOICES) | {"alloy", "af_sky+af_bella"} <= {v["id"] for v in listed}
    models = httpx.get(demo_ja + "/v1/models", headers={"Authorization": f"Bearer {KEY}"}).json()["data"]
    assert {"kokoro", "whisper-base", "qwen2.5-coder-0.5b"} <= {m["id"] for m in models}


def test_a_spoken_japanese_turn_on_the_japanese_demo(demo_ja):
    question = decode_audio(speech(demo_ja, "今日の天気はどうですか？").content, 24000)

    events = spoken_turn(demo_ja, KEY, question, timeout=240)
    heard = next(e for e in events if e["type"] == "conversation.item.input_audio_transcription.completed")
    assert "天気" in heard["transcript"], heard["transcript"]
    said = next(e for e in events if e["type"] == "response.output_audio_transcript.done")["transcript"]
    audio = b"".join(base64.b64decode(e["delta"]) for e in events if e["type"] == "response.output_audio.delta")
    assert events[-1]["response"]["status"] in ("completed", "incomplete") and said.strip(), said
    assert len(audio) / 2 / 24000 > 0.5, (said, len(audio))  # the answer is spoken
