"""Float32 PCM pieces to the bytes of one audio stream, a piece at a time, so speech plays while it is made.

wav: a 16-bit PCM header whose sizes are 0xFFFFFFFF (what OpenAI sends for a streamed wav; browsers,
ffmpeg/PyAV and Python's `wave` read it to the end of the stream), then samples at the model's rate.
pcm: raw s16le resampled to 24 kHz, the rate OpenAI documents for its header-less pcm.
flac, mp3 (MPEG audio), opus (Ogg Opus) and aac (ADTS): PyAV encoders muxing into a buffer drained after
each piece; they keep the model's rate where the codec allows it, else the nearest rate above it.
"""
from __future__ import annotations

import struct
from abc import ABC, abstractmethod
from fractions import Fraction
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import av

PCM_RATE = 24_000
MEDIA_TYPES = {"mp3": "audio/mpeg", "opus": "audio/ogg", "aac": "audio/aac", "flac": "audio/flac",
               "wav": "audio/wav", "pcm": "audio/pcm"}
# response_format -> (container, codec, bit rate; 0 for lossless)
CODECS = {"mp3": ("mp3", "libmp3lame", 64_000), "opus": ("ogg", "libopus", 32_000), "aac": ("adts", "aac", 64_000),
          "flac": ("flac", "flac", 0)}
CONTAINER_OPTIONS = {"ogg": {"page_duration": "20000"}}  # close an Ogg page every 20 ms, not every second
UNKNOWN_SIZE = 0xFFFFFFFF


def to_s16le(pcm: np.ndarray) -> bytes:
    return (np.clip(pcm, -1.0, 1.0) * 32767).astype("<i2").tobytes()


def _frame(pcm: np.ndarray, sample_rate: int, pts: int) -> av.AudioFrame:
    import av  # here, not at the top: the server starts without PyAV (an offline GPU host), wav needs none

    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm, dtype=np.float32).reshape(1, -1),
                                       format="flt", layout="mono")
    frame.sample_rate, frame.pts, frame.time_base = sample_rate, pts, Fraction(1, sample_rate)
    return frame


class AudioEncoder(ABC):
    """encode() per piece returns the bytes ready so far; finish() returns the rest; close() drops it all."""

    media_type: str
    sample_rate: int  # of the audio in the bytes

    @abstractmethod
    def encode(self, pcm: np.ndarray) -> bytes: ...

    @abstractmethod
    def finish(self) -> bytes: ...

    def close(self) -> None:
        """Free what the encoder holds; safe after finish() and twice."""


class WavEncoder(AudioEncoder):
    media_type = MEDIA_TYPES["wav"]

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self._header_sent = False

    def _header(self) -> bytes:
        if self._header_sent:
            return b""
        self._header_sent = True
        fmt = struct.pack("<HHIIHH", 1, 1, self.sample_rate, self.sample_rate * 2, 2, 16)
        return (b"RIFF" + struct.pack("<I", UNKNOWN_SIZE) + b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
                + b"data" + struct.pack("<I", UNKNOWN_SIZE))

    def encode(self, pcm: np.ndarray) -> bytes:
        return self._header() + to_s16le(pcm)

    def finish(self) -> bytes:
        return self._header()


class PcmEncoder(AudioEncoder):
    media_type = MEDIA_TYPES["pcm"]

    def __init__(self, sample_rate: int, out_rate: int = PCM_RATE) -> None:
        self.in_rate, self.sample_rate = sample_rate, out_rate
        import av

        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=out_rate)
        self._samples = 0

    def _bytes(self, frames: list[av.AudioFrame]) -> bytes:
        return b"".join(f.to_ndarray().astype("<i2", copy=False).tobytes() for f in frames)

    def encode(self, pcm: np.ndarray) -> bytes:
        if self.in_rate == self.sample_rate:
            return to_s16le(pcm)
        if not len(pcm):
            return b""
        frame = _frame(pcm, self.in_rate, self._samples)
        self._samples += len(pcm)
        return self._bytes(self._resampler.resample(frame))

    def finish(self) -> bytes:
        return b"" if self.in_rate == self.sample_rate else self._bytes(self._resampler.resample(None))


class _Sink:
    """A write-only file for PyAV's muxer; what it wrote is taken out after every piece."""

    def __init__(self) -> None:
        self._data = bytearray()

    def write(self, data: bytes) -> int:
        self._data += data
        return len(data)

    def take(self) -> bytes:
        out = bytes(self._data)
        self._data.clear()
        return out


def codec_rate(codec: str, sample_rate: int) -> int:
    """The model's rate if the codec takes it, else the nearest rate above it (or the codec's highest)."""
    import av

    rates = av.codec.Codec(codec, "w").audio_rates
    if not rates or sample_rate in rates:
        return sample_rate
    above = [r for r in rates if r > sample_rate]
    return min(above) if above else max(rates)


class CodecEncoder(AudioEncoder):
    def __init__(self, response_format: str, sample_rate: int) -> None:
        container_format, codec, bit_rate = CODECS[response_format]
        self.media_type = MEDIA_TYPES[response_format]
        self.in_rate = sample_rate
        self.sample_rate = codec_rate(codec, sample_rate)
        self._sink = _Sink()
        import av

        self._container = av.open(self._sink, "w", format=container_format,
                                  options=CONTAINER_OPTIONS.get(container_format, {}))
        self._stream = self._container.add_stream(codec, rate=self.sample_rate, layout="mono")
        if bit_rate:
            self._stream.bit_rate = bit_rate
        self._samples = 0
        self._closed = False

    def encode(self, pcm: np.ndarray) -> bytes:
        if len(pcm):
            frame = _frame(pcm, self.in_rate, self._samples)
            self._samples += len(pcm)
            self._container.mux(self._stream.encode(frame))
        return self._sink.take()

    def finish(self) -> bytes:
        self._container.mux(self._stream.encode(None))
        self.close()
        return self._sink.take()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._container.close()


def make_encoder(response_format: str, sample_rate: int) -> AudioEncoder:
    """The encoder for an OpenAI response_format, fed PCM at the model's sample_rate."""
    if response_format == "wav":
        return WavEncoder(sample_rate)
    if response_format == "pcm":
        return PcmEncoder(sample_rate)
    if response_format in CODECS:
        return CodecEncoder(response_format, sample_rate)
    raise ValueError(f"response_format {response_format!r} is not one of {', '.join(MEDIA_TYPES)}")
