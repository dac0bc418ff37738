"""faster-whisper behind the engine lifecycle: a CTranslate2 Whisper folder in, timed segments out, no network."""
from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from budget.estimators.asr import resolve_compute_type
from budget.tensors import read_ct2_model
from engines.asr.batch import WINDOW_SECONDS, batchable, transcribe_batch
from engines.asr.languages import language_code
from engines.asr.outputs import Segment, TranscribeOptions, Transcription, Word
from engines.base import Engine, local_model_dir, spec_device
from engines.errors import OptionError

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
_STORED = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "I8": "int8_float16", "I16": "int16"}
_CONVERT = ("ct2-transformers-converter --model <hf-whisper> --output_dir <dir> "
            "--copy_files tokenizer.json preprocessor_config.json")


class WhisperASR(Engine):
    """One CTranslate2 Whisper; with batch_size > 1 long audio is cut at pauses and its windows decoded together."""

    kind = "asr"

    def __init__(self, model: str, device: str = "cpu", compute_type: str = "default", beam_size: int = 5,
                 batch_size: int = 1, language: str | None = None, name: str | None = None,
                 cpu_threads: int = 0) -> None:
        self.model_path, self.device, self.requested_compute_type = model, device, compute_type
        self.beam_size, self.batch_size, self.default_language = beam_size, batch_size, language
        self.name = name or Path(model).name
        # CTranslate2's own default is 4; a worker given its share of the cores says so in OMP_NUM_THREADS
        self.cpu_threads = cpu_threads or int(os.environ.get("OMP_NUM_THREADS", 0)) or min(4, os.cpu_count() or 1)
        self.compute_type: str | None = None
        self.languages: tuple[str, ...] = ()
        self._model: Any = None
        self._batched: Any = None

    @classmethod
    def from_spec(cls, spec, device: str | None = None) -> WhisperASR:
        """The engine for a stack file's ASR entry, on `device` or the one the entry names."""
        folder = local_model_dir(spec, "download the faster-whisper folder, or point path at it")
        device = device or spec_device(spec) or _default_device()
        return cls(str(folder), device, spec.compute_type, spec.beam_size, spec.batch_size, spec.language,
                   spec.name)

    def load(self) -> None:
        import ctranslate2
        from faster_whisper import BatchedInferencePipeline, WhisperModel

        folder = self._checked_folder()
        backend, _, index = self.device.partition(":")
        stored = _stored_type(folder / "model.bin")
        self.compute_type = resolve_compute_type(self.requested_compute_type, stored, backend == "cuda")
        try:
            supported = ctranslate2.get_supported_compute_types(backend, int(index or 0))
        except (RuntimeError, ValueError) as exc:
            raise ValueError(f"model {self.name!r}: CTranslate2 cannot use device {self.device} ({exc}); "
                             f"fix the CUDA install or run this model on cpu") from None
        if self.compute_type not in supported:
            raise ValueError(f"model {self.name!r}: compute_type {self.compute_type} does not run on {self.device}; "
                             f"set compute_type to one of {', '.join(sorted(supported))}")
        try:
            self._model = WhisperModel(str(folder), device=backend, device_index=int(index or 0),
                                       compute_type=self.compute_type, cpu_threads=self.cpu_threads,
                                       local_files_only=True)
        except (RuntimeError, ValueError, OSError) as exc:
            raise ValueError(f"model {self.name!r}: CTranslate2 could not load {folder} as Whisper ({exc}); "
                             f"reconvert it with: {_CONVERT}") from None
        mels = self._model.feature_extractor.mel_filters.shape[0]
        if mels != self._model.model.n_mels:
            raise ValueError(f"model {self.name!r}: the model takes {self._model.model.n_mels} mel bins but the "
                             f"feature extractor makes {mels}; copy the model's preprocessor_config.json into {folder}")
        tokenizer = self._model.hf_tokenizer
        self.languages = tuple(c for c in self._model.supported_languages
                               if tokenizer.token_to_id(f"<|{c}|>") is not None) or ("en",)
        if self.default_language is not None:
            try:
                self.default_language = language_code(self.default_language, self.languages)
            except ValueError as exc:
                raise ValueError(f"model {self.name!r}: {exc}") from None
        self._batched = BatchedInferencePipeline(self._model) if self.batch_size > 1 else None
        log.info("loaded %s from %s on %s (%s, stored %s)", self.name, folder, self.device, self.compute_type, stored)

    def warmup(self) -> None:
        """Encode `batch_size` full windows of quiet noise and decode each to the length limit: the largest shape."""
        seconds = WINDOW_SECONDS * self.batch_size
        noise = (0.01 * np.random.default_rng(0).standard_normal(seconds * SAMPLE_RATE)).astype(np.float32)
        options = self.check(TranscribeOptions(temperature=0.0))
        if self._batched is None:  # one decode over the whole window (timestamps would re-window a random tail)
            self._run(noise, options, without_timestamps=True)
        else:
            self._run(noise, options, clip_timestamps=[{"start": i * WINDOW_SECONDS, "end": (i + 1) * WINDOW_SECONDS}
                                                       for i in range(self.batch_size)])

    def check(self, options: TranscribeOptions) -> TranscribeOptions:
        """The options with the language as the model's code; OptionError for anything it cannot honour."""
        if self._model is None:
            raise RuntimeError(f"ASR model {self.name!r} is not loaded; call load() first")
        if options.task not in ("transcribe", "translate"):
            raise OptionError(f"task {options.task!r} is not 'transcribe' or 'translate'", "task")
        if options.temperature is not None and not 0 <= options.temperature <= 1:
            raise OptionError(f"temperature {options.temperature} is out of range; use 0 to 1", "temperature")
        if options.beam_size is not None and not 1 <= options.beam_size <= 16:
            raise OptionError(f"beam_size {options.beam_size} is out of range; use 1 to 16", "beam_size")
        if options.window_s is not None and not 1 <= options.window_s <= WINDOW_SECONDS:
            raise OptionError(f"window_s {options.window_s} is out of range; use 1 to {WINDOW_SECONDS}", "window_s")
        language = options.language or None
        if language is not None:
            try:
                language = language_code(language, self.languages)
            except ValueError as exc:
                raise OptionError(str(exc), "language") from None
        return replace(options, language=language, prompt=options.prompt or None)

    def transcribe(self, audio: np.ndarray, options: TranscribeOptions | None = None) -> Transcription:
        """Float32 mono 16 kHz samples to text, segments and (when asked) words, all within the audio's length."""
        options = self.check(options or TranscribeOptions())
        audio = checked_audio(audio)
        if batchable(audio, options):
            return self.transcribe_batch([(audio, options)])[0]
        return self._run(audio, options)

    def transcribe_batch(self, items: list[tuple[np.ndarray, TranscribeOptions]]) -> list[Transcription]:
        """Several short transcriptions at once (each `batchable`), each as it would come alone."""
        checked = [(checked_audio(audio), self.check(options)) for audio, options in items]
        return transcribe_batch(self._model, checked, self.default_language, self.beam_size)

    def close(self) -> None:
        self._batched = self._model = None

    def _run(self, audio: np.ndarray, options: TranscribeOptions, **extra: Any) -> Transcription:
        kwargs = dict(language=options.language or self.default_language, task=options.task,
                      beam_size=options.beam_size or self.beam_size, initial_prompt=options.prompt,
                      word_timestamps=options.word_timestamps,
                      temperature=FALLBACK_TEMPERATURES if options.temperature is None else (options.temperature,),
                      **extra)
        if self._batched is not None:
            pieces, info = self._batched.transcribe(audio, batch_size=self.batch_size, **kwargs)
        else:
            pieces, info = self._model.transcribe(audio, **kwargs)
        duration = float(info.duration)
        segments = [_segment(i, s, duration) for i, s in enumerate(pieces)]
        return Transcription("".join(s.text for s in segments).strip(), info.language,
                             float(info.language_probability), duration, segments)

    def _checked_folder(self) -> Path:
        """The model folder, refused with the fix when it is not a complete faster-whisper model."""
        folder = Path(self.model_path).expanduser()
        if not folder.is_dir():
            raise ValueError(f"model {self.name!r}: {folder} is not a folder; point path at a faster-whisper "
                             f"(CTranslate2) model folder")
        if not (folder / "model.bin").is_file():
            raise ValueError(f"model {self.name!r}: {folder} has no model.bin, so it is not a CTranslate2 model; "
                             f"use a faster-whisper folder or convert one with: {_CONVERT}")
        if not (folder / "tokenizer.json").is_file():
            raise ValueError(f"model {self.name!r}: {folder} has no tokenizer.json (faster-whisper would fetch one "
                             f"from the internet); copy the original model's tokenizer.json into it")
        return folder


def checked_audio(audio: np.ndarray) -> np.ndarray:
    """Float32 1-D samples; OptionError for anything else (or nothing)."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1 or audio.size == 0:
        raise OptionError(f"audio must be a non-empty 1-D array of 16 kHz samples, got shape {audio.shape}", "audio")
    return audio


def _stored_type(model_bin: Path) -> str:
    """The type the weights were converted to, read from model.bin's headers without loading it."""
    try:
        variables = read_ct2_model(model_bin)
    except ValueError as exc:
        raise ValueError(f"{model_bin} is not a readable CTranslate2 model ({exc}); reconvert it with: "
                         f"{_CONVERT}") from None
    matrix = next((v.dtype for v in variables if len(v.shape) >= 2 and not v.name.endswith("_scale")), "F16")
    return _STORED.get(matrix, "float16")


def _default_device() -> str:
    import ctranslate2

    return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"


def _clamp(t: float, duration: float) -> float:
    return round(min(max(float(t), 0.0), duration), 3)


def _segment(index: int, s: Any, duration: float) -> Segment:
    """faster-whisper's segment as a plain record; times clamped to the audio (a window can overrun its end)."""
    words = [Word(w.word, _clamp(w.start, duration), _clamp(w.end, duration), float(w.probability))
             for w in s.words or ()]
    return Segment(index, int(s.seek), _clamp(s.start, duration), _clamp(s.end, duration), s.text,
                   [int(t) for t in s.tokens], float(s.temperature or 0.0), float(s.avg_logprob),
                   float(s.compression_ratio), float(s.no_speech_prob), words)
