"""A transcription in each of OpenAI's response formats: json, text, srt, vtt and verbose_json."""
from __future__ import annotations

import math
from typing import Literal

from fastapi.responses import JSONResponse, PlainTextResponse, Response

from engines.asr.languages import language_name
from engines.asr.outputs import Transcription

ResponseFormat = Literal["json", "text", "srt", "verbose_json", "vtt"]
Task = Literal["transcribe", "translate"]


def render(result: Transcription, fmt: ResponseFormat, task: Task, granularities: list[str]) -> Response:
    plain = {"text": to_text, "srt": to_srt, "vtt": to_vtt}.get(fmt)
    if plain is not None:
        return PlainTextResponse(plain(result))
    usage = {"usage": {"type": "duration", "seconds": math.ceil(result.duration)}} if task == "transcribe" else {}
    if fmt == "json":
        return JSONResponse({"text": result.text, **usage})
    return JSONResponse({**verbose(result, task, granularities), **usage})


def verbose(result: Transcription, task: Task, granularities: list[str]) -> dict:
    """OpenAI's verbose_json: segments unless only word timing was asked for, words when it was."""
    body: dict = {"task": task, "language": "english" if task == "translate" else language_name(result.language),
                  "duration": result.duration, "text": result.text}
    if "segment" in granularities or not granularities:
        body["segments"] = [{"id": s.id, "seek": s.seek, "start": s.start, "end": s.end, "text": s.text,
                             "tokens": s.tokens, "temperature": s.temperature, "avg_logprob": s.avg_logprob,
                             "compression_ratio": s.compression_ratio, "no_speech_prob": s.no_speech_prob}
                            for s in result.segments]
    if "word" in granularities:
        body["words"] = [{"word": w.word.strip(), "start": w.start, "end": w.end} for w in result.words]
    return body


def to_text(result: Transcription) -> str:
    return result.text + "\n"


def to_srt(result: Transcription) -> str:
    return "".join(f"{i}\n{_clock(s.start, ',')} --> {_clock(s.end, ',')}\n{s.text.strip()}\n\n"
                   for i, s in enumerate(result.segments, 1))


def to_vtt(result: Transcription) -> str:
    return "WEBVTT\n\n" + "".join(f"{_clock(s.start, '.')} --> {_clock(s.end, '.')}\n{s.text.strip()}\n\n"
                                  for s in result.segments)


def _clock(seconds: float, mark: str) -> str:
    """HH:MM:SS,mmm (SubRip) or HH:MM:SS.mmm (WebVTT)."""
    ms = round(seconds * 1000)
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{mark}{ms:03d}"
