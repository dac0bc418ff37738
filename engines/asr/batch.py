"""Many short transcriptions as one batch through CTranslate2's Whisper: one encode for all, one generate per group.

faster-whisper batches only the windows of one file; here the windows come from different requests (realtime
turns, drafts, HTTP uploads). Each item brings its own language (or has it detected from its own audio) and
prompt, written into its own decoder prompt; items whose decoding must match (beam size, prompt length) share
a generate call. faster-whisper still makes the features, and splits the tokens into timed segments. An item
decodes exactly as it would alone (greedy or beam search, one window), so batching changes when a transcript
comes, never what it says. Long audio, sampling and word timestamps go the one-at-a-time way.

An item may ask for a shorter encoder window than Whisper's 30 s (`window_s`, a live pass over the words being
spoken): CTranslate2 encodes fewer frames, about as many times faster on a CPU, and items share an encode only with
items of the same window.
"""
from __future__ import annotations

from dataclasses import dataclass
from math import ceil
from typing import Any

import numpy as np

from engines.asr.outputs import Segment, TranscribeOptions, Transcription

SAMPLE_RATE = 16000
WINDOW_SECONDS = 30
WINDOW_SAMPLES = WINDOW_SECONDS * SAMPLE_RATE
FRAMES_PER_SECOND = 100   # Whisper's mel frames
NO_SPEECH_THRESHOLD, LOG_PROB_THRESHOLD = 0.6, -1.0   # faster-whisper's defaults: such a window holds no speech


def batchable(audio: np.ndarray, options: TranscribeOptions) -> bool:
    """Whether this transcription can join a batch: one window, greedy or beam search, no word timestamps."""
    return len(audio) <= window_seconds(options) * SAMPLE_RATE and options.temperature == 0 \
        and not options.word_timestamps


def window_seconds(options: TranscribeOptions) -> int:
    """The encoder window an item asks for: Whisper's whole 30 s unless it names a shorter one."""
    return options.window_s or WINDOW_SECONDS


def fitted_window(samples: int) -> int:
    """The encoder window for a live pass over this much audio: the next 5 s step with at least 5 s of silence to
    spare (with less, Whisper loops on some short clips: bench/asr_wer.py --windows)."""
    return min(WINDOW_SECONDS, 5 * ceil((samples / SAMPLE_RATE + 5) / 5))


@dataclass(slots=True)
class _Item:
    index: int
    audio: np.ndarray
    options: TranscribeOptions
    language: str | None = None
    probability: float = 1.0
    prompt: list[int] | None = None
    row: int = 0          # its row in its window's encoding


def transcribe_batch(model: Any, items: list[tuple[np.ndarray, TranscribeOptions]], default_language: str | None,
                     default_beam: int) -> list[Transcription]:
    """Each (16 kHz audio, checked options) item's transcription, in order; all items must be `batchable`."""
    from faster_whisper.audio import pad_or_trim
    from faster_whisper.tokenizer import Tokenizer, _LANGUAGE_CODES
    from faster_whisper.transcribe import get_compression_ratio, get_suppressed_tokens

    work = [_Item(i, audio, options, options.language or default_language) for i, (audio, options) in enumerate(items)]
    encodes: dict[int, tuple[list[_Item], np.ndarray, Any]] = {}   # window -> its items, features and encoding
    for window in sorted({window_seconds(item.options) for item in work}):
        members = [item for item in work if window_seconds(item.options) == window]
        for row, item in enumerate(members):
            item.row = row
        features = np.stack([pad_or_trim(model.feature_extractor(item.audio)[..., :-1], window * FRAMES_PER_SECOND)
                             for item in members])
        encodes[window] = members, features, model.encode(features)
    for members, _, encoded in encodes.values():
        unknown = [item for item in members if item.language is None]
        if unknown and not model.model.is_multilingual:
            for item in unknown:
                item.language = "en"
        elif unknown:  # detected from each item's own encoding, as faster-whisper does for one window
            detected = model.model.detect_language(encoded)
            for item in unknown:
                token, probability = next((t, p) for t, p in detected[item.row] if t[2:-2] in _LANGUAGE_CODES)
                item.language, item.probability = token[2:-2], probability
    tokenizers: dict[tuple[str, str], Tokenizer] = {}
    groups: dict[tuple, list[_Item]] = {}
    for item in work:
        key = (item.language, item.options.task)
        tokenizer = tokenizers.setdefault(key, Tokenizer(model.hf_tokenizer, model.model.is_multilingual,
                                                         task=item.options.task, language=item.language))
        previous = tokenizer.encode(" " + item.options.prompt.strip()) if item.options.prompt else []
        item.prompt = model.get_prompt(tokenizer, previous, without_timestamps=False)
        key = (window_seconds(item.options), item.options.beam_size or default_beam, len(item.prompt))
        groups.setdefault(key, []).append(item)
    out: list[Transcription | None] = [None] * len(work)
    for (window, beam, _), members in groups.items():
        _, features, encoded = encodes[window]
        rows = [item.row for item in members]
        tokenizer = tokenizers[(members[0].language, members[0].options.task)]
        results = model.model.generate(
            _rows(model, encoded, features, rows), [item.prompt for item in members], beam_size=beam,
            max_length=model.max_length, suppress_blank=True, return_scores=True, return_no_speech_prob=True,
            suppress_tokens=get_suppressed_tokens(tokenizer, [-1]))
        for item, result in zip(members, results):
            tokens = result.sequences_ids[0]
            avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
            duration = len(item.audio) / SAMPLE_RATE
            silent = result.no_speech_prob > NO_SPEECH_THRESHOLD and avg_logprob < LOG_PROB_THRESHOLD
            pieces = [] if silent else model._split_segments_by_timestamps(
                tokenizer=tokenizer, tokens=tokens, time_offset=0.0, seek=0, segment_duration=duration,
                segment_size=int(ceil(duration) * model.frames_per_second))[0]
            segments = []
            for piece in pieces:
                text = tokenizer.decode(piece["tokens"])
                segments.append(Segment(len(segments), 0, _within(piece["start"], duration),
                                        _within(piece["end"], duration), text, list(piece["tokens"]), 0.0,
                                        float(avg_logprob), get_compression_ratio(text), float(result.no_speech_prob)))
            text = "".join(s.text for s in segments).strip()
            out[item.index] = Transcription(text, item.language, float(item.probability), round(duration, 3),
                                            segments)
    return out


def _within(t: float, duration: float) -> float:
    return round(min(max(float(t), 0.0), duration), 3)


def _rows(model: Any, encoded: Any, features: np.ndarray, rows: list[int]) -> Any:
    """The encoder output of these batch rows: all of it, a slice of it (CPU), or their own encode (GPU)."""
    if rows == list(range(len(features))):
        return encoded
    if encoded.device == "cpu":
        import ctranslate2

        return ctranslate2.StorageView.from_array(np.ascontiguousarray(np.asarray(encoded)[rows]))
    return model.encode(features[rows])
