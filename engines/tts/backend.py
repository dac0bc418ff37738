"""What every TTS model offers the server, so VITS, Kokoro or Piper slot in behind the same calls."""
from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from engines.base import Engine
from engines.errors import EngineInputError, UnknownVoiceError

# OpenAI's voice names, accepted by every backend so clients with a hard-coded voice work.
OPENAI_VOICES = ("alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer", "verse")
MIN_SPEED, MAX_SPEED = 0.25, 4.0


@dataclass(slots=True, frozen=True)
class Voice:
    name: str
    speaker_id: int | None  # None: the model has a single speaker


class TTSBackend(Engine):
    """Text to float32 mono PCM at `sample_rate`; one piece of at most `max_input_chars` per call."""

    kind: ClassVar[str] = "tts"
    sample_rate: int
    max_input_chars: int
    default_voice: str
    voice_aliases: dict[str, str] = {}  # other servers' voice names (Kokoro's "af_sky+af_bella") -> one of ours

    @abstractmethod
    def voices(self) -> list[Voice]:
        """Every voice name this model answers to, its own names first."""

    @abstractmethod
    def speakable(self, text: str) -> bool:
        """Whether the model has anything to say for this text (False for punctuation or unknown script only)."""

    @abstractmethod
    def synthesize(self, text: str, voice: str | None, speed: float) -> np.ndarray:
        """One piece of text as audio; ValueError for an unknown voice or text with nothing to speak."""

    def voice(self, name: str | None) -> Voice:
        """The voice a request names (None: the default), through the aliases; a Kokoro-style blend "a+b" takes its
        first part that names a voice. An unknown name lists the ones there are."""
        name = self.default_voice if name is None else name
        own = {v.name: v for v in self.voices()}
        for candidate in (name, *name.split("+")) if "+" in name else (name,):
            candidate = self.voice_aliases.get(candidate.strip(), candidate.strip())
            if candidate in own:
                return own[candidate]
        raise UnknownVoiceError(f"voice {name!r} does not exist for this model; choose one of: {', '.join(own)}")

    def check_piece(self, text: str, voice: str | None, speed: float) -> int | None:
        """What every backend checks before synthesising a piece; the voice's speaker id."""
        check_speed(speed)
        speaker = self.voice(voice).speaker_id
        if len(text) > self.max_input_chars:
            raise EngineInputError(f"a piece is {len(text)} characters, over max_input_chars {self.max_input_chars}; "
                                   "split the text first (engines.tts.text_split)", "input")
        return speaker

    def set_voice_aliases(self, aliases: dict[str, str]) -> None:
        """The stack's `voice_aliases`; each must name one of the model's voices."""
        for alias, target in aliases.items():
            if target not in {v.name for v in self.voices()}:
                raise ValueError(f"voice_aliases maps {alias!r} to {target!r}, which is not a voice of this model; "
                                 f"choose one of: {', '.join(v.name for v in self.voices())}")
        self.voice_aliases = dict(aliases)

    def listed_voices(self) -> list[Voice]:
        """The model's voices and then the aliases, as /v1/audio/voices shows them."""
        return self.voices() + [Voice(alias, self.voice(alias).speaker_id) for alias in self.voice_aliases]


def voice_table(speakers: list[tuple[str, int]]) -> list[Voice]:
    """The model's own speakers, then OpenAI's names dealt round them; a one-speaker model answers to all of them."""
    if speakers:
        return [Voice(name, sid) for name, sid in speakers] + [
            Voice(name, speakers[i % len(speakers)][1]) for i, name in enumerate(OPENAI_VOICES)]
    return [Voice("default", None)] + [Voice(name, None) for name in OPENAI_VOICES]


def check_speed(speed: float) -> None:
    if not MIN_SPEED <= speed <= MAX_SPEED:
        raise EngineInputError(f"speed {speed} is out of range; use {MIN_SPEED} to {MAX_SPEED} (1.0 is normal)",
                               "speed")
