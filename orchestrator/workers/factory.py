"""Per engine kind: how a worker builds it (load, warm up, async front) and what the server holds to reach it."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from orchestrator.workers.client import EngineClient


@dataclass(slots=True)
class Built:
    engine: Any                                # the lifecycle object (load/warmup/memory/close)
    front: Any                                 # what calls reach: AsyncASR, AsyncTTS, AsyncEmbedder, AsyncVAD (LLM: below)
    info: dict = field(default_factory=dict)   # what the server needs before the first call (paths, voices, rates)

    def close(self) -> None:
        shutdown = getattr(self.front, "shutdown", None)
        if shutdown is not None:
            shutdown()
        close = getattr(self.engine, "close", None)
        if close is not None:
            close()


def build(spec, device: str, kv_bytes: int, progress: Callable[[str], None]) -> Built:
    """Load and warm up one engine at its peak shape; errors name the model and the fix."""
    progress("loading weights")
    if spec.kind == "llm":
        from engines.llm import EngineConfig, LLMEngine

        config = EngineConfig.from_spec(spec, kv_bytes, device)
        engine = LLMEngine(config)  # loads, allocates the KV pool, warms up with a full-budget prefill
        # No front yet: a worker steps the engine itself (one message per step); in-process, AsyncLLM does.
        return Built(engine, None, {"model_dir": config.model, "max_model_len": config.max_model_len})
    engine = _engine_class(spec.kind).from_spec(spec, device)
    engine.load()
    progress("warming up at the peak shape")
    engine.warmup()
    return Built(engine, _front(spec, engine), _info(spec.kind, engine))


def _engine_class(kind: str):
    if kind == "asr":
        from engines.asr import WhisperASR
        return WhisperASR
    if kind == "tts":
        from engines.tts import VitsBackend
        return VitsBackend
    if kind == "embedding":
        from engines.embedding import SentenceEmbedder
        return SentenceEmbedder
    from engines.vad import SileroVAD
    return SileroVAD


def _front(spec, engine) -> Any:
    if spec.kind == "asr":
        from engines.asr import AsyncASR
        return AsyncASR(engine)
    if spec.kind == "tts":
        from engines.tts import AsyncTTS
        return AsyncTTS(engine)
    if spec.kind == "embedding":
        from engines.embedding import AsyncEmbedder
        return AsyncEmbedder(engine)
    from engines.vad import AsyncVAD
    return AsyncVAD(engine)


def _info(kind: str, engine) -> dict:
    if kind == "tts":
        return {"sample_rate": engine.sample_rate, "voices": engine.voices()}
    return {}


def in_process_front(spec, built: Built) -> Any:
    """An engine loaded in the server process is reached through its async front directly."""
    if spec.kind == "llm":
        from engines.llm import AsyncLLM

        built.front = AsyncLLM(built.engine, spec.max_pending_requests)
    return built.front


def remote_client(spec, info: dict) -> EngineClient:
    """The server-side stand-in for a worker, with the same async methods as the engine's front."""
    if spec.kind == "llm":
        from transformers import AutoTokenizer

        from orchestrator.workers.llm_client import LLMClient

        return LLMClient(spec.name, AutoTokenizer.from_pretrained(info["model_dir"]), spec.max_pending_requests)
    from orchestrator.workers.remote import REMOTE_CLASSES

    return REMOTE_CLASSES[spec.kind](spec.name, info)
