"""What a transcription asks for and what it gives back: plain records, so they cross a process boundary as-is."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(slots=True, frozen=True)
class TranscribeOptions:
    language: str | None = None             # None: the stack's default, else detected from the audio
    task: Literal["transcribe", "translate"] = "transcribe"
    prompt: str | None = None               # earlier text or spellings, fed as Whisper's initial prompt
    temperature: float | None = None        # None: Whisper's fallback schedule 0.0, 0.2 ... 1.0; a value pins it
    word_timestamps: bool = False
    beam_size: int | None = None            # None: the stack's beam_size
    draft: bool = False                     # a realtime pause's guess: it runs after every final transcription
    window_s: int | None = None             # None: Whisper's whole 30 s encoder window; a live pass's window fitted
                                            # to its audio (many times faster; a courtesy, not the final's words)


@dataclass(slots=True, frozen=True)
class Word:
    word: str
    start: float
    end: float
    probability: float


@dataclass(slots=True, frozen=True)
class Segment:
    id: int
    seek: int
    start: float
    end: float
    text: str
    tokens: list[int]
    temperature: float
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float
    words: list[Word] = field(default_factory=list)


@dataclass(slots=True, frozen=True)
class Transcription:
    text: str
    language: str                           # the code used: given, the stack's default, or detected
    language_probability: float
    duration: float                         # seconds of audio received
    segments: list[Segment]
    batch_size: int = 1                     # how many transcriptions ran in its batch
    queue_seconds: float = 0.0              # how long it waited for the engine

    @property
    def words(self) -> list[Word]:
        return [w for s in self.segments for w in s.words]
