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
    aliases: dict[str, str] = field(default_factory=dict)   # a stack's `aliases:` -> the model's name

    def names(self) -> list[tuple[str, str]]:
        """(served name, kind) for every companion engine and alias, for /v1/models."""
        own = [(name, kind) for kind in OPENAI_ALIASES for name in getattr(self, kind)]
        return own + [(alias, kind) for alias, name in self.aliases.items() for n, kind in own if n == name]

    def add(self, kind: str, name: str, front: EngineFront, aliases: list[str] = ()) -> None:
        """Route a started engine by its served name and aliases; kinds with no route (the VAD) are skipped."""
        if kind in OPENAI_ALIASES:
            getattr(self, kind)[name] = front
            self.aliases.update({alias: name for alias in aliases})

    def pick(self, kind: str, model: str | None) -> EngineFront:
        """The engine a request names; OpenAI's model names pick the stack's first engine of that kind."""
        engines: dict[str, EngineFront] = getattr(self, kind)
        model = self.aliases.get(model, model) if model is not None else None
        if model in engines:
            return engines[model]
        if engines and (model is None or model in OPENAI_ALIASES[kind]):
            return next(iter(engines.values()))
        have = ", ".join(repr(n) for n in engines) or "none"
        raise OpenAIError(404, f"the {KINDS[kind].words} model {model!r} does not exist; this server has {have}",
                          "model", "model_not_found")
