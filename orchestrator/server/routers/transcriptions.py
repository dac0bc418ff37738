"""POST /v1/audio/transcriptions and /v1/audio/translations (and Groq's /openai/v1/... paths): OpenAI's forms."""
from __future__ import annotations

import asyncio
from typing import Literal

from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import FormData, UploadFile
from starlette.types import Message, Receive

from engines.asr.outputs import TranscribeOptions
from orchestrator.server.audio_decode import decode_audio
from orchestrator.server.auth import require_api_key
from orchestrator.server.errors import OpenAIError
from orchestrator.server.transcript_formats import ResponseFormat, Task, render

router = APIRouter(dependencies=[Depends(require_api_key)])

MAX_FILE_BYTES = 25 * 1024 * 1024   # OpenAI's upload limit
FORM_OVERHEAD = 64 * 1024           # boundaries, headers and the small fields around the file


class TranslationForm(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str | None = None
    prompt: str | None = None
    response_format: ResponseFormat = "json"
    temperature: float | None = Field(None, ge=0, le=1)


class TranscriptionForm(TranslationForm):
    language: str | None = None
    timestamp_granularities: list[Literal["word", "segment"]] = Field(default_factory=list)


class _TooLarge(Exception):
    """The request body passed the upload limit while it was being read."""


@router.post("/v1/audio/transcriptions")
@router.post("/openai/v1/audio/transcriptions")
async def create_transcription(request: Request) -> Response:
    return await _serve(request, "transcribe")


@router.post("/v1/audio/translations")
@router.post("/openai/v1/audio/translations")
async def create_translation(request: Request) -> Response:
    return await _serve(request, "translate")


async def _serve(request: Request, task: Task) -> Response:
    form = await _read_form(request)
    try:
        fields = _fields(form, task)
        data = await _file_bytes(form)
        engine = request.app.state.companions.pick("asr", fields.model)
        try:
            audio = await asyncio.to_thread(decode_audio, data)
        except ValueError as error:
            raise OpenAIError(400, str(error), "file") from None
    finally:
        await form.close()
    word = isinstance(fields, TranscriptionForm) and "word" in fields.timestamp_granularities
    options = TranscribeOptions(language=getattr(fields, "language", None) or None, task=task,  # "": detect it
                                prompt=fields.prompt or None,
                                temperature=fields.temperature,
                                word_timestamps=word and fields.response_format == "verbose_json")
    result = await engine.transcribe(audio, options)  # a bad option is a 400 that names it
    request.app.state.metrics.observe_asr(result, "final")
    granularities = getattr(fields, "timestamp_granularities", [])
    return render(result, fields.response_format, task, granularities)


async def _read_form(request: Request) -> FormData:
    """The multipart form, refused with 413 before (Content-Length) or while (streamed) a body passes the limit."""
    limit = MAX_FILE_BYTES + FORM_OVERHEAD
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise _too_large()
    limited = Request(request.scope, _limited_receive(request.receive, limit))
    try:
        return await limited.form(max_files=1, max_fields=32)
    except _TooLarge:
        raise _too_large() from None


def _limited_receive(receive: Receive, limit: int) -> Receive:
    seen = 0

    async def limited() -> Message:
        nonlocal seen
        message = await receive()
        seen += len(message.get("body", b""))
        if seen > limit:
            raise _TooLarge
        return message

    return limited


def _too_large() -> OpenAIError:
    return OpenAIError(413, f"the upload is larger than {MAX_FILE_BYTES // (1024 * 1024)} MB; send a shorter or "
                       f"more compressed recording, or split it", "file", "file_too_large")


def _fields(form: FormData, task: Task) -> TranslationForm:
    """The form's text fields, validated; empty strings count as absent, as form clients send them."""
    model = TranscriptionForm if task == "transcribe" else TranslationForm
    values: dict = {k: v for k, v in form.items() if isinstance(v, str) and v != "" and k in model.model_fields}
    granularities = form.getlist("timestamp_granularities[]") + form.getlist("timestamp_granularities")
    if task == "transcribe" and granularities:
        values["timestamp_granularities"] = granularities
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None


async def _file_bytes(form: FormData) -> bytes:
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise OpenAIError(400, "no audio file: send it as the multipart/form-data field 'file'", "file")
    data = await upload.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise _too_large()
    return data


