"""The non-LLM engines the server routes to, by served name, and how a request's `model` picks one."""
from __future__ import annotations

from dataclasses import dataclass, field

from engines.protocols import ASRProtocol, EmbeddingProtocol, EngineFront, TTSProtocol
from orchestrator.server.errors import OpenAIError
from orchestrator.workers.kinds import KINDS

# OpenAI's own model names, so clients with a hard-coded "whisper-1" or "tts-1" reach the stack's engine.
OPENAI_ALIASES = {
    "asr": {"whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe"},
    "tts": {"tts-1", "tts-1-hd", "gpt-4o-mini-tts"},
    "embedding": {"text-embedding-3-small", "text-embedding-3-large", "text-embedding-ada-002"},
}


@dataclass(slots=True)
class Companions:
    asr: dict[str, ASRProtocol] = field(default_factory=dict)
    tts: dict[str, TTSProtocol] = field(default_factory=dict)
    embedding: dict[str, EmbeddingProtocol] = field(default_factory=dict)

    def names(self) -> list[tuple[str, str]]:
        """(served name, kind) for every companion engine, for /v1/models."""
        return [(name, kind) for kind in OPENAI_ALIASES for name in getattr(self, kind)]

    def add(self, kind: str, name: str, front: EngineFront) -> None:
        """Route a started engine by its served name; kinds with no route of their own (the VAD) are skipped."""
        if kind in OPENAI_ALIASES:
            getattr(self, kind)[name] = front

    def pick(self, kind: str, model: str | None) -> EngineFront:
        """The engine a request names; OpenAI's model names pick the stack's first engine of that kind."""
        engines: dict[str, EngineFront] = getattr(self, kind)
        if model in engines:
            return engines[model]
        if engines and (model is None or model in OPENAI_ALIASES[kind]):
            return next(iter(engines.values()))
        have = ", ".join(repr(n) for n in engines) or "none"
        raise OpenAIError(404, f"the {KINDS[kind].words} model {model!r} does not exist; this server has {have}",
                          "model", "model_not_found")
