"""The non-LLM engines the server routes to, by served name, and how a request's `model` picks one."""
from __future__ import annotations

from engines.protocols import FrontProtocol
from orchestrator.kinds import COMPANIONS, KINDS
from orchestrator.server.errors import OpenAIError


class Companions:
    """Each routed kind's engines by served name (`Companions(asr={"whisper": front})`), plus the stack's aliases."""

    def __init__(self, **engines: dict[str, FrontProtocol]) -> None:
        if unknown := set(engines) - set(COMPANIONS):
            raise ValueError(f"no routed kind {sorted(unknown)}; the server routes to {', '.join(COMPANIONS)}")
        self.engines = {kind: dict(engines.get(kind, {})) for kind in COMPANIONS}
        self.aliases: dict[str, str] = {}   # a stack's `aliases:` -> the model's name

    def of(self, kind: str) -> dict[str, FrontProtocol]:
        """The kind's engines by served name, in the stack's order."""
        return self.engines[kind]

    def names(self) -> list[tuple[str, str]]:
        """(served name, kind) for every companion engine and alias, for /v1/models."""
        own = [(name, kind) for kind, engines in self.engines.items() for name in engines]
        return own + [(alias, kind) for alias, name in self.aliases.items() for n, kind in own if n == name]

    def add(self, kind: str, name: str, front: FrontProtocol, aliases: list[str] = ()) -> None:
        """Route a started engine by its served name and aliases; kinds with no route (the VAD) are skipped."""
        if kind in self.engines:
            self.engines[kind][name] = front
            self.aliases.update({alias: name for alias in aliases})

    def pick(self, kind: str, model: str | None) -> FrontProtocol:
        """The engine a request names; OpenAI's model names pick the stack's first engine of that kind."""
        engines = self.engines[kind]
        model = self.aliases.get(model, model) if model is not None else None
        if model in engines:
            return engines[model]
        if engines and (model is None or model in KINDS[kind].openai_names):
            return next(iter(engines.values()))
        have = ", ".join(repr(n) for n in engines) or "none"
        raise OpenAIError(404, f"the {KINDS[kind].words} model {model!r} does not exist; this server has {have}",
                          "model", "model_not_found")
