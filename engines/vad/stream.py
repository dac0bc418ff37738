"""One audio stream's VAD: frames of any size in, speech start/stop events out; its recurrent state is its own."""
from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from engines.errors import EngineInputError
from engines.vad.detector import SpeechDetector, VADEvent
from engines.vad.model import CONTEXT, HIDDEN, SAMPLE_RATE, WINDOW

__all__ = ["NetState", "VADEvent", "VADStream", "as_samples"]


@dataclass(slots=True)
class NetState:
    """What the net carries from one window to the next: the last CONTEXT samples and the LSTM's h and c."""

    context: torch.Tensor  # (CONTEXT,)
    hidden: torch.Tensor   # (2, HIDDEN)

    @classmethod
    def zeros(cls, device: str) -> NetState:
        return cls(torch.zeros(CONTEXT, device=device), torch.zeros(2, HIDDEN, device=device))


def as_samples(pcm: np.ndarray) -> np.ndarray:
    """Mono float32 in [-1, 1] from float32 or int16 PCM; an EngineInputError says what is wrong with anything else."""
    if not isinstance(pcm, np.ndarray):
        raise EngineInputError(f"pcm must be a numpy array of 16 kHz mono samples, got {type(pcm).__name__}", "pcm")
    if pcm.ndim != 1:
        raise EngineInputError(f"pcm must be mono (a 1-D array), got shape {pcm.shape}; mix the channels down "
                               f"first, e.g. pcm.mean(axis=1)", "pcm")
    if pcm.dtype == np.int16:
        return pcm.astype(np.float32) / 32768.0
    if pcm.dtype != np.float32:
        raise EngineInputError(f"pcm dtype {pcm.dtype} is not supported; send float32 samples in [-1, 1] or int16 "
                               f"PCM at {SAMPLE_RATE} Hz", "pcm")
    bad = int(np.count_nonzero(~np.isfinite(pcm)))
    if bad:
        raise EngineInputError(f"pcm holds {bad} non-finite samples (NaN or inf); send finite float32 samples in "
                               "[-1, 1]", "pcm")
    return pcm


Scorer = Callable[[list[NetState], list[np.ndarray]], list[np.ndarray]]  # states and windows -> probabilities


class VADStream:
    """Buffers audio into the net's 512-sample windows and reports where speech starts and stops.

    Positions are absolute sample indices since the stream began. flush() ends the audio: it closes an open
    segment and resets the net, so later audio starts a fresh utterance (positions keep counting).
    """

    def __init__(self, score: Scorer, device: str, detector: SpeechDetector) -> None:
        self._score, self.device = score, device  # the shared net's batch scorer, and where its state lives
        self.detector = detector
        self.state = NetState.zeros(device)
        self._pending = np.zeros(0, dtype=np.float32)
        self._origin = 0   # sample where the current window grid starts (moves on flush)
        self._windows = 0  # windows scored since _origin
        self._fed = 0      # real samples fed in all
        self._lock = threading.Lock()

    @property
    def speaking(self) -> bool:
        return self.detector.speaking

    def feed(self, pcm: np.ndarray) -> list[VADEvent]:
        """Add 16 kHz mono audio (float32 or int16, any length) and return the events it completes."""
        samples = as_samples(pcm)
        with self._lock:
            first, windows = self.take(samples)
            return self.settle(self._score([self.state], [windows])[0], first, ending=False)

    def flush(self) -> list[VADEvent]:
        """The audio ended: score the buffered tail, close an open segment, and start the net afresh."""
        with self._lock:
            first, windows = self.take(None)
            return self.settle(self._score([self.state], [windows])[0], first, ending=True)

    def take(self, samples: np.ndarray | None) -> tuple[int, np.ndarray]:
        """First half of feed (None: of flush): the whole windows now ready, (n, WINDOW), and where they start."""
        if samples is None:
            tail = self._pending
            self._pending = np.zeros(0, dtype=np.float32)
            if not len(tail):
                return self._origin + self._windows * WINDOW, np.zeros((0, WINDOW), dtype=np.float32)
            return self._cut(np.pad(tail, (0, WINDOW - len(tail))), 0)
        buffered = np.concatenate([self._pending, samples])
        usable = len(buffered) // WINDOW * WINDOW
        self._pending = buffered[usable:]
        return self._cut(buffered[:usable], len(samples))

    def settle(self, probs: np.ndarray, first: int, ending: bool) -> list[VADEvent]:
        """Second half: the events these window probabilities complete; on ending, close and reset."""
        events = self.detector.update(probs, first, self._fed)
        if ending:
            events += self.detector.finish(self._fed)
            self.state = NetState.zeros(self.device)
            self._origin, self._windows = self._fed, 0
        return events

    def _cut(self, audio: np.ndarray, real: int) -> tuple[int, np.ndarray]:
        first = self._origin + self._windows * WINDOW
        windows = audio.reshape(-1, WINDOW)
        self._windows += len(windows)
        self._fed += real
        return first, windows
