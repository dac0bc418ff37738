"""TTS on transformers' VITS family (MMS-TTS checkpoints): characters in, waveform out, one piece at a time."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from engines.base import local_model_dir, spec_device
from engines.errors import EngineInputError
from engines.tts.backend import MIN_SPEED, TTSBackend, Voice, voice_table

log = logging.getLogger(__name__)

TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
WARMUP_SAMPLE = "the quick brown fox jumps over the lazy dog "


class VitsBackend(TTSBackend):
    def __init__(self, model_dir: str | Path, dtype: str = "float32", device: str | None = None,
                 max_input_chars: int = 400, speaker: str | None = None, seed: int = 0) -> None:
        from transformers import VitsConfig

        self.model_dir = Path(model_dir)
        config_file = self.model_dir / "config.json"
        model_type = json.loads(config_file.read_text()).get("model_type") if config_file.is_file() else None
        if model_type != "vits":
            raise ValueError(f"{self.model_dir} is not a VITS / MMS-TTS model (model_type {model_type!r}); "
                             "point path at a folder with a VITS config.json, weights and vocab.json")
        self.config = VitsConfig.from_pretrained(self.model_dir)  # voices and rate are known before the weights load
        if dtype not in TORCH_DTYPES:
            raise ValueError(f"dtype {dtype!r} is not one of {', '.join(TORCH_DTYPES)}")
        self.dtype = TORCH_DTYPES[dtype]
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.max_input_chars = max_input_chars
        self.sample_rate = self.config.sampling_rate
        self.seed = seed
        speakers = self.config.num_speakers
        self._voices = voice_table([(f"speaker-{i}", i) for i in range(speakers)] if speakers > 1 else [])
        self.default_voice = self._voices[0].name
        if speaker is not None:
            self.default_voice = self.voice(speaker).name
        self.model = self.tokenizer = None

    @classmethod
    def from_spec(cls, spec, device: str | None = None) -> VitsBackend:
        """The backend for a stack file's tts entry; a card-only model is refused with the fix."""
        backend = cls(local_model_dir(spec), spec.dtype, device or spec_device(spec), spec.max_input_chars,
                      spec.speaker)
        backend.set_voice_aliases(spec.voice_aliases)
        return backend

    def load(self) -> None:
        from transformers import VitsModel, VitsTokenizer
        from transformers.utils import is_phonemizer_available

        tokenizer = VitsTokenizer.from_pretrained(self.model_dir)
        if tokenizer.phonemize and not is_phonemizer_available():
            raise ValueError(f"the VITS model in {self.model_dir} phonemizes its input; install the phonemizer "
                             "package and espeak-ng, or use a character-level (MMS-TTS) checkpoint")
        self.tokenizer = tokenizer
        self.model = VitsModel.from_pretrained(self.model_dir, dtype=self.dtype).to(self.device).eval()
        log.info("VITS %s on %s (%s, %d Hz, %d voices)", self.model_dir.name, self.device, self.dtype,
                 self.sample_rate, len(self._voices))

    def warmup(self) -> None:
        """The longest piece at the slowest speed: the most frames the decoder will ever hold."""
        vocab = self.tokenizer.get_vocab()
        sample = "".join(c for c in WARMUP_SAMPLE if c in vocab) or "".join(
            c for c in vocab if len(c) == 1 and c.isalpha())
        text = (sample * (self.max_input_chars // max(len(sample), 1) + 1))[: self.max_input_chars]
        self.synthesize(text, None, MIN_SPEED)

    def voices(self) -> list[Voice]:
        return list(self._voices)

    def speakable(self, text: str) -> bool:
        return bool(self._token_ids(text))

    def _token_ids(self, text: str) -> list[int]:
        """Token ids of a piece, or [] when nothing in it is a sound the model knows."""
        if self.model is None:
            raise RuntimeError(f"the VITS model in {self.model_dir} is not loaded; call load() first")
        ids = self.tokenizer(text).input_ids
        silent = {self.tokenizer.pad_token_id, self.tokenizer.unk_token_id}
        return ids if any(i not in silent for i in ids) else []

    def synthesize(self, text: str, voice: str | None, speed: float) -> np.ndarray:
        speaker = self.check_piece(text, voice, speed)
        ids = self._token_ids(text)
        if not ids:
            raise EngineInputError(f"nothing in {text[:60]!r} is speakable by this voice (its characters are not in "
                                   "the model's alphabet)", "input")
        input_ids = torch.tensor([ids], device=self.device)
        devices = [torch.device(self.device).index or 0] if self.device.startswith("cuda") else []
        with torch.inference_mode(), torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed)  # the same text gives the same audio, without moving the process's RNG
            waveform = self.model(input_ids=input_ids, speaker_id=speaker, speaking_rate=speed).waveform
        return waveform[0].float().cpu().numpy()

    def close(self) -> None:
        self.model = self.tokenizer = None
        if self.device.startswith("cuda") and torch.cuda.is_available():
            torch.cuda.empty_cache()
