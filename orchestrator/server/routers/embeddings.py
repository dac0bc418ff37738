"""POST /v1/embeddings: OpenAI's request and response, over the stack's embedding engines."""
from __future__ import annotations

import base64
from typing import Literal

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from orchestrator.server.auth import require_api_key
from orchestrator.server.errors import OpenAIError
from orchestrator.server.protocol import encodable

router = APIRouter(dependencies=[Depends(require_api_key)])
MAX_INPUTS = 2048  # OpenAI's limit on inputs in one request
INPUT_SHAPES = "a string, a list of strings, a list of token ids, or a list of token-id lists"


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    user: str | None = None

    @field_validator("input", mode="before")
    @classmethod
    def _one_shape(cls, value: object) -> object:
        """Name the accepted shapes, rather than pydantic's guess at which union member was meant."""
        if isinstance(value, str):
            return encodable(value)
        if not isinstance(value, list):
            raise PydanticCustomError("input_shape", f"must be {INPUT_SHAPES}; got {_kind(value)}")
        kinds = {_kind(item) for item in value}
        if len(kinds) > 1 or kinds - {"a string", "an integer", "a list"}:
            raise PydanticCustomError("input_shape", f"must be {INPUT_SHAPES}; got a list holding "
                                                     f"{' and '.join(sorted(kinds))}")
        for item in value:
            if isinstance(item, str):
                encodable(item)
        inner = {_kind(token) for item in value if isinstance(item, list) for token in item}
        if inner - {"an integer"}:
            raise PydanticCustomError("input_shape", f"token-id lists must hold integers only; got "
                                                     f"{' and '.join(sorted(inner))}")
        return value

    def inputs(self) -> list[str] | list[list[int]]:
        """The input as a list of texts or of token arrays; empty or too many inputs are a 400 that says so."""
        raw = self.input
        if raw == "" or raw == []:
            raise OpenAIError(400, "input is empty; send a non-empty string, a list of strings, or token arrays",
                              "input")
        items = [raw] if isinstance(raw, str) or isinstance(raw[0], int) else raw
        if len(items) > MAX_INPUTS:
            raise OpenAIError(400, f"input has {len(items)} items, but at most {MAX_INPUTS} are allowed in one "
                                   f"request; split it across several requests", "input")
        empty = next((i for i, item in enumerate(items) if len(item) == 0), None)
        if empty is not None:
            kind = "string" if isinstance(items[empty], str) else "token array"
            raise OpenAIError(400, f"input[{empty}] is an empty {kind}; every input needs at least one character "
                                   f"or token", "input")
        return items


@router.post("/v1/embeddings")
async def create_embeddings(body: EmbeddingRequest, request: Request) -> JSONResponse:
    companions = request.app.state.companions
    engine = companions.pick("embedding", body.model)
    inputs = body.inputs()
    result = await engine.embed(inputs, body.dimensions)  # its refusals carry their param
    served = body.model if body.model in companions.of("embedding") else next(iter(companions.of("embedding")))
    data = [{"object": "embedding", "index": i, "embedding": _encode(vector, body.encoding_format)}
            for i, vector in enumerate(result.vectors)]
    usage = {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens}
    return JSONResponse({"object": "list", "data": data, "model": served, "usage": usage})


def _kind(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, list)):
        return type(value).__name__ if value is not None else "null"
    return {str: "a string", int: "an integer", list: "a list"}[type(value)]


def _encode(vector: np.ndarray, encoding_format: str) -> list[float] | str:
    """A float list, or base64 of little-endian float32 bytes, which is what the openai SDK decodes."""
    if encoding_format == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return vector.tolist()
