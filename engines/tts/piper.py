"""TTS on Piper voices (VITS exported to ONNX, espeak-ng phonemes): piper-tts phonemizes, onnxruntime runs the voice.

A voice is an `.onnx` file beside its `.onnx.json`; `path` names either file or a folder holding one
voice. On CUDA the session's arena is held to the model's share (`gpu_mem_limit`).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from budget.model_files import piper_voice_files
from budget.estimate import PlanInputError
from engines.base import local_model_dir, spec_device
from engines.errors import EngineInputError
from engines.tts.backend import MIN_SPEED, TTSBackend, Voice, voice_table
from engines.tts.onnx_session import open_session

log = logging.getLogger(__name__)
WARMUP_SAMPLE = "The quick brown fox jumps over the lazy dog. "


class PiperBackend(TTSBackend):
    def __init__(self, voice_path: str | Path, device: str | None = None, max_input_chars: int = 400,
                 speaker: str | None = None) -> None:
        try:
            files = piper_voice_files(Path(voice_path))
        except PlanInputError as error:
            raise ValueError(str(error)) from None
        if files is None:
            raise ValueError(f"{voice_path} is not a Piper voice (no .onnx file); point path at a voice's .onnx "
                             "file with its .onnx.json beside it")
        self.onnx, self.config_file = files
        try:
            self.config = json.loads(self.config_file.read_text())
            self.sample_rate = int(self.config["audio"]["sample_rate"])
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"{self.config_file} is not a Piper voice config ({exc}); download it again") from None
        self.device = device or "cpu"
        self.max_input_chars = max_input_chars
        speakers = sorted(self.config.get("speaker_id_map") or {}, key=self.config["speaker_id_map"].get) \
            if self.config.get("num_speakers", 1) > 1 else []
        self._voices = voice_table([(name, self.config["speaker_id_map"][name]) for name in speakers])
        self.default_voice = self._voices[0].name
        if speaker is not None:
            self.default_voice = self.voice(speaker).name
        self.length_scale = float(self.config.get("inference", {}).get("length_scale", 1.0))
        self.piper = None

    @classmethod
    def from_spec(cls, spec, device: str | None = None) -> PiperBackend:
        backend = cls(local_model_dir(spec), device or spec_device(spec), spec.max_input_chars, spec.speaker)
        backend.set_voice_aliases(spec.voice_aliases)
        return backend

    def load(self) -> None:
        from piper import PiperVoice
        from piper.config import PiperConfig

        session = open_session(self.onnx, self.device, self.device.startswith("cuda"), False, "Piper voice",
                               "download it again")
        if self.device.startswith("cuda") and "CUDAExecutionProvider" not in session.get_providers():
            raise ValueError(f"onnxruntime runs {self.onnx.name} on {', '.join(session.get_providers())}, not CUDA "
                             "(its CPU build is installed, or CUDA's libraries are missing), while the plan holds card "
                             "memory for it; install onnxruntime-gpu, or set this voice's device: cpu")
        self.piper = PiperVoice(config=PiperConfig.from_dict(self.config), session=session)
        log.info("Piper voice %s on %s (%d Hz, %d voices)", self.onnx.name, self.device, self.sample_rate,
                 len(self._voices))

    def warmup(self) -> None:
        """The longest piece at the slowest speed: the most frames the decoder will ever hold."""
        text = (WARMUP_SAMPLE * (self.max_input_chars // len(WARMUP_SAMPLE) + 1))[: self.max_input_chars]
        self.synthesize(text.rsplit(" ", 1)[0], None, MIN_SPEED)

    def voices(self) -> list[Voice]:
        return list(self._voices)

    def speakable(self, text: str) -> bool:
        return any(any(p.isalpha() for p in sentence) for sentence in self._loaded().phonemize(text))

    def _loaded(self):
        if self.piper is None:
            raise RuntimeError(f"the Piper voice {self.onnx} is not loaded; call load() first")
        return self.piper

    def synthesize(self, text: str, voice: str | None, speed: float) -> np.ndarray:
        from piper.config import SynthesisConfig

        speaker = self.check_piece(text, voice, speed)
        config = SynthesisConfig(speaker_id=speaker, length_scale=self.length_scale / speed)
        chunks = [chunk.audio_float_array for chunk in self._loaded().synthesize(text, config)]
        if not chunks:
            raise EngineInputError(f"nothing in {text[:60]!r} is speakable by this voice", "input")
        return np.concatenate(chunks).astype(np.float32, copy=False)

    def close(self) -> None:
        self.piper = None
