"""Real spoken audio for tests, made offline by espeak-ng and resampled by PyAV (libswresample)."""
from __future__ import annotations

import functools
import re
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from needs import needs_command


def speak(text: str, rate: int = 16000, voice: str = "en", words_per_minute: int = 160) -> np.ndarray:
    """Mono float32 samples in [-1, 1] of `text` spoken at `rate` Hz; skips the test (fails under CI) without espeak-ng."""
    needs_command("espeak-ng", "apt-get install espeak-ng; scripts/setup.sh does")
    return _speak(text, rate, voice, words_per_minute).copy()


def silence(seconds: float, rate: int = 16000) -> np.ndarray:
    return np.zeros(round(seconds * rate), dtype=np.float32)


def voiced_span(audio: np.ndarray, level: float = 0.01) -> tuple[int, int]:
    """First and one-past-last sample louder than `level`: where the speech really is."""
    loud = np.flatnonzero(np.abs(audio) > level)
    if not len(loud):
        raise ValueError("the audio holds no sample louder than the level")
    return int(loud[0]), int(loud[-1]) + 1


@functools.lru_cache(maxsize=32)
def _speak(text: str, rate: int, voice: str, words_per_minute: int) -> np.ndarray:
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(words_per_minute), "-w", str(wav), text],
                       check=True, capture_output=True, timeout=60)
        return _read_resampled(wav, rate)


def _read_resampled(path: Path, rate: int) -> np.ndarray:
    import av

    resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
    pieces = []
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            pieces += [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
        pieces += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    return np.concatenate(pieces).astype(np.float32)


def words(text: str) -> list[str]:
    """Lower-cased words without punctuation (no other normalisation: "two" and "2" differ)."""
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower().replace("-", " ")).split()


def edit_distance(ref: Sequence, hyp: Sequence) -> int:
    """Levenshtein distance between two sequences (of words, or of characters)."""
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        previous, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (r != h))
    return row[-1]


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(edit distance in words, reference length): WER is their ratio, summed over clips before dividing."""
    ref = words(reference)
    return edit_distance(ref, words(hypothesis)), len(ref)
