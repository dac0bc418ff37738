"""POST /v1/audio/speech (OpenAI's text-to-speech, streamed as it is made) and GET /v1/audio/voices."""
from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from engines.tts.backend import MAX_SPEED, MIN_SPEED
from orchestrator.server.audio_encode import AudioEncoder, make_encoder
from orchestrator.server.auth import require_api_key
from orchestrator.server.errors import OpenAIError
from orchestrator.server.streaming import ClosingStreamingResponse, StreamAborted

router = APIRouter(dependencies=[Depends(require_api_key)])
MAX_INPUT_CHARS = 4096  # OpenAI's limit on one speech request


class SpeechRequest(BaseModel):
    model: str | None = None
    input: str = Field(min_length=1, max_length=MAX_INPUT_CHARS)
    voice: str | None = None
    response_format: Literal["mp3", "opus", "aac", "flac", "wav", "pcm"] = "mp3"
    speed: float = Field(1.0, ge=MIN_SPEED, le=MAX_SPEED)
    instructions: str | None = None  # accepted for gpt-4o-mini-tts clients; these models take no instructions
    stream_format: Literal["audio", "sse"] = "audio"


@router.post("/v1/audio/speech")
async def create_speech(body: SpeechRequest, request: Request) -> ClosingStreamingResponse:
    tts = await request.app.state.companions.pick_speaker("tts", body.model, body.voice)
    if body.stream_format != "audio":
        raise OpenAIError(400, f"stream_format {body.stream_format!r} is not supported; leave it out or send "
                          "'audio' to get the audio bytes streamed as they are made", "stream_format")
    stream = await tts.stream(body.input, body.voice, body.speed)  # its refusals carry their param
    encoder = make_encoder(body.response_format, tts.sample_rate)
    return ClosingStreamingResponse(_audio_bytes(stream, encoder), media_type=encoder.media_type,
                                    headers={"X-Request-Id": stream.request_id}, on_close=stream.aclose)


async def _audio_bytes(stream, encoder: AudioEncoder) -> AsyncGenerator[bytes, None]:
    """Each piece's bytes as soon as it is spoken; a failure mid-stream breaks the connection (StreamAborted)."""
    try:
        async for chunk in stream:
            data = await run_in_threadpool(encoder.encode, chunk.pcm)
            if data:
                yield data
        if tail := await run_in_threadpool(encoder.finish):
            yield tail
    except Exception as error:
        raise StreamAborted(f"speech {stream.request_id} ended early: {error}") from None
    finally:
        await stream.aclose()  # the client went away: its queued pieces are dropped (the response closes it too)
        encoder.close()


@router.get("/v1/audio/voices")
async def list_voices(request: Request, model: str | None = None) -> dict:
    """Every voice of every TTS model (or of the one named), with the speaker it maps to."""
    companions = request.app.state.companions
    engines = {model: companions.pick("tts", model)} if model else companions.of("tts")
    data = [{"id": voice.name, "object": "voice", "model": name, "speaker_id": voice.speaker_id}
            for name, tts in engines.items() for voice in await tts.voices()]
    return {"object": "list", "data": data}
