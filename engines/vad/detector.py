"""Turns per-window speech probabilities into start/stop events, with hysteresis, hangover and padding."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from engines.errors import EngineInputError
from engines.vad.model import SAMPLE_RATE, WINDOW

HYSTERESIS = 0.15  # speech ends only below threshold - HYSTERESIS, so a wavering probability does not chatter


@dataclass(slots=True, frozen=True)
class VADEvent:
    kind: Literal["speech_start", "speech_stop"]
    sample: int  # absolute sample index in the stream (16 kHz), padding applied

    @property
    def ms(self) -> int:
        return self.sample * 1000 // SAMPLE_RATE


class SpeechDetector:
    """One stream's speech/silence decision; all positions are absolute sample indices."""

    def __init__(self, threshold: float, min_silence_ms: int, speech_pad_ms: int, min_speech_ms: int) -> None:
        for name, value in (("min_silence_ms", min_silence_ms), ("speech_pad_ms", speech_pad_ms),
                            ("min_speech_ms", min_speech_ms)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 60_000:
                raise EngineInputError(f"{name} must be a number of milliseconds from 0 to 60000, got {value!r}", name)
        if not isinstance(threshold, (int, float)) or isinstance(threshold, bool) or not 0 < threshold < 1:
            raise EngineInputError(f"threshold must be a speech probability between 0 and 1 (exclusive), got "
                                   f"{threshold!r}", "threshold")
        self.threshold = float(threshold)
        self.neg_threshold = max(self.threshold - HYSTERESIS, 0.01)
        self.min_silence = int(min_silence_ms * SAMPLE_RATE / 1000)
        self.pad = int(speech_pad_ms * SAMPLE_RATE / 1000)
        self.min_speech = int(min_speech_ms * SAMPLE_RATE / 1000)
        self.speaking = False
        self._start: int | None = None         # first sample of the first speech window of a candidate segment
        self._silence_from: int | None = None  # first sample of the silence run inside a segment
        self._last_stop = 0

    def update(self, probs: np.ndarray, first_sample: int, end: int) -> list[VADEvent]:
        """Consume windows starting at first_sample; `end` is the last real sample fed (events never pass it)."""
        events: list[VADEvent] = []
        for i, prob in enumerate(probs.tolist()):
            at = first_sample + i * WINDOW
            if not self.speaking:
                self._listen(prob, at, events)
            elif prob >= self.threshold:
                self._silence_from = None
            elif prob < self.neg_threshold:
                self._silence_from = at if self._silence_from is None else self._silence_from
                if at + WINDOW - self._silence_from >= self.min_silence:
                    events.append(self._stop(min(self._silence_from + self.pad, at + WINDOW, end)))
        return events

    def finish(self, end: int) -> list[VADEvent]:
        """The audio ended at `end`: close an open segment there (or where its silence began, padded)."""
        if not self.speaking:
            self._start = self._silence_from = None
            return []
        stop = end if self._silence_from is None else min(self._silence_from + self.pad, end)
        return [self._stop(stop)]

    def _listen(self, prob: float, at: int, events: list[VADEvent]) -> None:
        """Before a segment: speech must last min_speech (brief dips allowed) to start one; min_silence drops it."""
        if prob >= self.threshold:
            self._start = at if self._start is None else self._start
            self._silence_from = None
            if at + WINDOW - self._start >= self.min_speech:
                self.speaking = True
                events.append(VADEvent("speech_start", max(self._start - self.pad, self._last_stop)))
        elif prob < self.neg_threshold and self._start is not None:
            self._silence_from = at if self._silence_from is None else self._silence_from
            if at + WINDOW - self._silence_from >= self.min_silence:
                self._start = self._silence_from = None

    def _stop(self, sample: int) -> VADEvent:
        self.speaking, self._start, self._silence_from, self._last_stop = False, None, None, sample
        return VADEvent("speech_stop", sample)
