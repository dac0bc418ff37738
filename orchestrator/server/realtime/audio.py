"""Realtime audio on the wire: base64 PCM16 in at the session's rate, 16 kHz for VAD and ASR; TTS audio out."""
from __future__ import annotations

import base64
import binascii

import numpy as np

from orchestrator.server.audio_encode import PcmEncoder
from orchestrator.server.realtime.events import ClientError

ENGINE_RATE = 16000          # what Silero VAD and Whisper take
DELTA_MS = 200               # audio per response.output_audio.delta


def decode_pcm16(audio: str) -> np.ndarray:
    """int16 samples from an append's base64 payload; ClientError says what is wrong."""
    try:
        data = base64.b64decode(audio, validate=True)
    except (binascii.Error, ValueError):
        raise ClientError("audio is not valid base64; send base64-encoded PCM16 little-endian mono", "invalid_audio",
                          "audio") from None
    if len(data) % 2:
        raise ClientError(f"audio holds {len(data)} bytes, an odd number; PCM16 has 2 bytes a sample",
                          "invalid_audio", "audio")
    return np.frombuffer(data, dtype="<i2")


class InputResampler:
    """The client's PCM16 at its rate to float32 at 16 kHz, streaming (libswresample keeps the filter state)."""

    def __init__(self, rate: int) -> None:
        import av  # here, not at the top: the server starts without PyAV (an offline GPU host's image has none)

        self.rate = rate
        self._resampler = None if rate == ENGINE_RATE else av.AudioResampler(format="flt", layout="mono",
                                                                               rate=ENGINE_RATE)
        self._pts = 0

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        if self._resampler is None or not len(samples):
            return samples.astype(np.float32) / 32768.0
        import av

        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.pts = self.rate, self._pts
        self._pts += len(samples)
        out = [f.to_ndarray().reshape(-1) for f in self._resampler.resample(frame)]
        return np.concatenate(out).astype(np.float32) if out else np.zeros(0, dtype=np.float32)


class OutputAudio:
    """TTS audio (float32 at the model's rate) to base64 PCM16 deltas at the session's output rate."""

    def __init__(self, tts_rate: int, out_rate: int) -> None:
        self.rate = out_rate
        self._encoder = PcmEncoder(tts_rate, out_rate)
        self._delta_bytes = out_rate * DELTA_MS // 1000 * 2
        self.sent_ms = 0.0

    def deltas(self, pcm: np.ndarray | None) -> list[str]:
        """The deltas this audio makes (None: the end of the response's audio)."""
        data = self._encoder.finish() if pcm is None else self._encoder.encode(pcm)
        out = [base64.b64encode(data[i:i + self._delta_bytes]).decode() for i in range(0, len(data),
                                                                                        self._delta_bytes)]
        self.sent_ms += len(data) / 2 / self.rate * 1000
        return out
