"""One descriptor per engine kind, in one table: how to build it, what reaches it, how it is capped and served.

Every per-kind fact is derived from here: the worker descriptors, the server's routers, the route labels
in /metrics, the body limits, the OpenAI model names that reach a kind, the companions the server routes
to. The kind's stack-file schema (and with it the planner's estimator) is its `ModelSpec` subclass in
`orchestrator/stack.py`, tied to its row by the `kind` literal (checked below). Engines and routers are
named by import path and loaded only where they run, so the server and the planner never import an
engine they do not host.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from engines.protocols import ASRProtocol, EmbeddingProtocol, LLMProtocol, TTSProtocol, VADProtocol
from orchestrator.workers.client import EngineClient
from orchestrator.workers.llm_client import LLMClient
from orchestrator.workers.messages import RequestType
from orchestrator.workers.remote import RemoteASR, RemoteEmbedder, RemoteTTS, RemoteVAD


@dataclass(frozen=True, slots=True)
class EngineKind:
    name: str
    words: str                        # how messages name the kind ("speech-to-text")
    engine: str                       # "module:Class" of the lifecycle engine (or "module:function" of the stack
                                      # entry that picks it), imported where it runs
    front: str                        # "module:Class" of its in-process async front
    client: type[EngineClient]        # the server's stand-in for a worker of this kind
    protocol: type                    # what the front and the client both implement
    calls: frozenset[RequestType] = frozenset()   # what a worker of this kind serves
    routes: tuple[str, ...] = ()      # the HTTP routes it serves, labelled with its name in /metrics
    routers: tuple[str, ...] = ()     # "module:router" of the FastAPI routers that serve those routes
    openai_names: frozenset[str] = frozenset()  # OpenAI's model names, so a hard-coded "whisper-1" reaches it
    body_limit: int | None = None     # bytes a JSON body to its routes may have (None: the server's default)
    uploads: bool = False             # multipart uploads: their own limit names the file (routers/transcriptions)
    kv_pool: bool = False             # the LLM: starts last, its KV pool sized from what is then free
    front_options: Callable[[Any], dict] = field(default=lambda spec: {})
    info: Callable[[Any], dict] = field(default=lambda engine: {})   # what the server needs before the first call

    def engine_class(self, spec) -> type:
        found = load(self.engine)
        return found if isinstance(found, type) else found(spec)

    def front_class(self) -> type:
        return load(self.front)

    @property
    def companion(self) -> bool:
        """Served by its own routes beside the LLM (the LLM has its serving interface; the VAD serves no route)."""
        return bool(self.routes) and not self.kv_pool


def load(path: str) -> Any:
    """The object a "module:name" path names."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def _llm_info(engine) -> dict:
    return {"model_dir": engine.config.model, "max_model_len": engine.config.max_model_len, "stats": engine.stats()}


def _tts_info(engine) -> dict:
    return {"sample_rate": engine.sample_rate, "voices": engine.listed_voices()}


KINDS: dict[str, EngineKind] = {k.name: k for k in (
    EngineKind("llm", "language", "engines.llm.llm_engine:LLMEngine", "engines.llm.async_llm:AsyncLLM", LLMClient,
               LLMProtocol, routes=("/v1/chat/completions", "/v1/completions"), kv_pool=True,
               routers=("orchestrator.server.routers.chat:router", "orchestrator.server.routers.completions:router"),
               front_options=lambda spec: {"max_pending": spec.max_pending_requests}, info=_llm_info),
    EngineKind("asr", "speech-to-text", "engines.asr.whisper:WhisperASR", "engines.asr.async_asr:AsyncASR", RemoteASR,
               ASRProtocol, frozenset({RequestType.TRANSCRIBE}),
               routes=("/v1/audio/transcriptions", "/v1/audio/translations", "/openai/v1/audio/transcriptions",
                       "/openai/v1/audio/translations"),
               routers=("orchestrator.server.routers.transcriptions:router",), uploads=True,
               openai_names=frozenset({"whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe"})),
    EngineKind("tts", "text-to-speech", "engines.tts.backend_choice:backend_class", "engines.tts.async_tts:AsyncTTS",
               RemoteTTS, TTSProtocol, frozenset({RequestType.SPEAK}), routes=("/v1/audio/speech",),
               routers=("orchestrator.server.routers.speech:router",), body_limit=1 << 20, info=_tts_info,
               openai_names=frozenset({"tts-1", "tts-1-hd", "gpt-4o-mini-tts"})),
    EngineKind("embedding", "embedding", "engines.embedding.embedder:SentenceEmbedder",
               "engines.embedding.async_embedder:AsyncEmbedder", RemoteEmbedder, EmbeddingProtocol,
               frozenset({RequestType.EMBED}), routes=("/v1/embeddings",),
               routers=("orchestrator.server.routers.embeddings:router",), body_limit=16 << 20,
               openai_names=frozenset({"text-embedding-3-small", "text-embedding-3-large", "text-embedding-ada-002"})),
    EngineKind("vad", "voice activity", "engines.vad.silero:SileroVAD", "engines.vad.async_vad:AsyncVAD", RemoteVAD,
               VADProtocol, frozenset({RequestType.VAD_OPEN, RequestType.VAD_FEED, RequestType.VAD_FLUSH,
                                       RequestType.VAD_CLOSE})),
)}

COMPANIONS = tuple(k.name for k in KINDS.values() if k.companion)  # the kinds the server routes to beside the LLM


def _check_schema_rows() -> None:
    """Each kind's stack-file schema has its row here, and each row its schema."""
    from orchestrator.stack import SPEC_BY_KIND

    if set(SPEC_BY_KIND) != set(KINDS):
        raise RuntimeError(f"kinds with a schema but no row, or a row but no schema: "
                           f"{sorted(set(SPEC_BY_KIND) ^ set(KINDS))}")


_check_schema_rows()
