"""The VAD engine: one loaded Silero net shared by any number of streams, each holding its own recurrent state."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from budget.model_files import find_model_files
from engines.base import Engine
from engines.vad.detector import SpeechDetector
from engines.vad.model import CONTEXT, WINDOW, SileroNet, load_net, packaged_weights, weights_in
from engines.vad.stream import NetState, VADStream

log = logging.getLogger(__name__)
WARMUP_STREAMS = 64  # streams scored together in warmup: more live sessions than one card serves


class SileroVAD(Engine):
    """Scores 512-sample windows for many streams in one batched forward; holds no per-stream state itself."""

    kind = "vad"

    def __init__(self, threshold: float = 0.5, device: str = "cpu", weights: Path | None = None,
                 name: str = "silero-vad") -> None:
        self.threshold = threshold
        self.device = device
        self.weights = weights
        self.name = name
        self.net: SileroNet | None = None

    @classmethod
    def from_spec(cls, spec, device: str | None = None) -> SileroVAD:
        """The engine for a stack file's VAD entry: the package's weights unless `path` names a folder."""
        weights = None
        if spec.path:
            files = find_model_files(spec.name, spec.path, None)
            if files.config_only:
                raise ValueError(f"model {spec.name!r}: {spec.path} is not on this machine; leave `path` out to "
                                 f"use the weights the silero-vad package ships")
            weights = weights_in(files.directory)
        if device is None:
            device = "cpu" if spec.device in (None, "cpu") else f"cuda:{spec.device}"
        return cls(threshold=spec.threshold, device=device, weights=weights, name=spec.name)

    def load(self) -> None:
        weights = self.weights or packaged_weights()
        if not weights.is_file():
            raise ValueError(f"model {self.name!r}: VAD weights {weights} do not exist; reinstall silero-vad "
                             f"or point `path` at a folder holding silero_vad.jit")
        self.net = load_net(weights, self.device)
        log.info("VAD %s loaded from %s on %s", self.name, weights, self.device)

    def warmup(self) -> None:
        noise = np.random.default_rng(0).uniform(-0.5, 0.5, (WARMUP_STREAMS, 2, WINDOW)).astype(np.float32)
        self.score([NetState.zeros(self.device) for _ in range(WARMUP_STREAMS)], list(noise))

    def close(self) -> None:
        self.net = None

    def stream(self, threshold: float | None = None, min_silence_ms: int = 300, speech_pad_ms: int = 30,
               min_speech_ms: int = 100) -> VADStream:
        """A new detector for one audio stream; ValueError names a bad setting."""
        self._loaded()
        detector = SpeechDetector(self.threshold if threshold is None else threshold, min_silence_ms,
                                  speech_pad_ms, min_speech_ms)
        return VADStream(self.score, self.device, detector)

    @torch.inference_mode()
    def score(self, states: list[NetState], windows: list[np.ndarray]) -> list[np.ndarray]:
        """Each stream's window probabilities ((n_i, WINDOW) in); all streams step together; states are updated."""
        net = self._loaded()
        chunks = [torch.from_numpy(w).to(self.device) for w in windows]
        steps = max((len(c) for c in chunks), default=0)
        probs = torch.zeros(len(chunks), steps, device=self.device)
        for k in range(steps):
            rows = [i for i, c in enumerate(chunks) if len(c) > k]
            x = torch.stack([torch.cat([states[i].context, chunks[i][k]]) for i in rows])
            p, hidden = net(x, torch.stack([states[i].hidden for i in rows], dim=1))
            probs[rows, k] = p
            for j, i in enumerate(rows):
                states[i].context, states[i].hidden = x[j, -CONTEXT:].clone(), hidden[:, j].clone()
        out = probs.cpu().numpy()
        return [out[i, :len(c)] for i, c in enumerate(chunks)]

    def _loaded(self) -> SileroNet:
        if self.net is None:
            raise RuntimeError(f"VAD {self.name!r} is not loaded; call load() first")
        return self.net
