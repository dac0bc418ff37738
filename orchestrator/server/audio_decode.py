"""Uploaded audio files (wav, mp3, ogg, webm, flac, m4a, ...) to the float32 16 kHz mono samples ASR takes."""
from __future__ import annotations

import io

import numpy as np

SAMPLE_RATE = 16000
MAX_SECONDS = 3 * 60 * 60  # 25 MB of low-bitrate speech can be hours; past this the decoded samples alone are ~700 MB


def decode_audio(data: bytes, rate: int = SAMPLE_RATE, max_seconds: float = MAX_SECONDS) -> np.ndarray:
    """The first audio stream, mixed to mono and resampled; ValueError says why a file is not usable audio."""
    import av  # here, not at the top: the server starts without PyAV (an offline GPU host's image has none)

    if not data:
        raise ValueError("the uploaded file is empty; send an audio file (wav, mp3, ogg, webm, flac, m4a, ...)")
    limit = int(max_seconds * rate)
    pieces: list[np.ndarray] = []
    total = 0
    try:
        with av.open(io.BytesIO(data), mode="r", metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise ValueError("could not decode the file as audio: it holds no audio stream")
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    pieces.append(out.to_ndarray().reshape(-1))
                    total += pieces[-1].size
                if total > limit:
                    raise ValueError(f"the audio is longer than {max_seconds / 3600:g} hours; split it and send the "
                                     f"parts separately")
            pieces += [out.to_ndarray().reshape(-1) for out in resampler.resample(None)]
    except av.FFmpegError as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ValueError(f"could not decode the file as audio: {reason}; send wav, mp3, ogg, webm, flac or m4a"
                         ) from None
    audio = np.concatenate(pieces).astype(np.float32, copy=False) if pieces else np.zeros(0, np.float32)
    if audio.size == 0:
        raise ValueError("the audio file holds no samples; send a recording that is not empty")
    if not np.isfinite(audio).all():
        raise ValueError("the audio holds NaN or infinite samples; send a valid recording")
    return audio
