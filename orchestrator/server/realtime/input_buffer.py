"""A session's uncommitted input audio at 16 kHz, addressed by absolute sample, with when each part arrived.

Arrival times let a turn measure how long the VAD took to call the end of speech: the wall time from
when the last voiced sample reached the server to when speech_stopped was decided.
"""
from __future__ import annotations

import time
from collections import deque

import numpy as np

from orchestrator.server.realtime.audio import ENGINE_RATE


class InputBuffer:
    def __init__(self, max_seconds: float) -> None:
        self.max_samples = int(max_seconds * ENGINE_RATE)
        self._parts: deque[np.ndarray] = deque()
        self.start = 0     # absolute index of the first sample held
        self.end = 0       # absolute index one past the last sample received
        self._arrivals: deque[tuple[int, float]] = deque()  # (end sample of a part, when it arrived)

    def __len__(self) -> int:
        return self.end - self.start

    def room(self, samples: int) -> bool:
        return len(self) + samples <= self.max_samples

    def append(self, samples: np.ndarray) -> None:
        if len(samples):
            self._parts.append(samples)
            self.end += len(samples)
            self._arrivals.append((self.end, time.perf_counter()))

    def arrival(self, sample: int) -> float:
        """When the part holding this absolute sample arrived (now, if it is not held any more)."""
        for end, when in self._arrivals:
            if sample < end:
                return when
        return time.perf_counter()

    def take(self, start: int | None = None, end: int | None = None) -> np.ndarray:
        """The audio from start to end (default: all held), dropping everything before end."""
        out = self.peek(start, end)
        self.drop_before(self.end if end is None else min(end, self.end))
        return out

    def peek(self, start: int | None = None, end: int | None = None) -> np.ndarray:
        """The audio from start to end (default: all held), keeping it."""
        start = self.start if start is None else max(start, self.start)
        end = self.end if end is None else min(end, self.end)
        held = np.concatenate(self._parts) if self._parts else np.zeros(0, dtype=np.float32)
        return held[start - self.start:max(end, start) - self.start].copy()

    def drop_before(self, sample: int) -> None:
        """Forget audio before this absolute sample (what no turn can need any more)."""
        while self._parts and self.start + len(self._parts[0]) <= sample:
            self.start += len(self._parts.popleft())
        if self._parts and self.start < sample:
            cut = sample - self.start
            self._parts[0] = self._parts[0][cut:]
            self.start = sample
        while len(self._arrivals) > 1 and self._arrivals[0][0] <= self.start:
            self._arrivals.popleft()

    def clear(self) -> None:
        self.drop_before(self.end)
