"""The non-LLM engines the server routes to, by served name, and how a request's `model` picks one."""
from __future__ import annotations

import re

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
        # A model family's own name (what its other servers call it: "kokoro") -> the engines of that family, in
        # the stack's order. The name reaches them first, before an alias another model holds.
        self.families: dict[str, list[str]] = {}

    def of(self, kind: str) -> dict[str, FrontProtocol]:
        """The kind's engines by served name, in the stack's order."""
        return self.engines[kind]

    def names(self) -> list[tuple[str, str]]:
        """(served name, kind) for every companion engine and alias, for /v1/models."""
        own = [(name, kind) for kind, engines in self.engines.items() for name in engines]
        aliased = [(alias, kind) for alias, name in self.aliases.items() for n, kind in own if n == name]
        served = {n for n, _ in own + aliased}
        return own + aliased + [(family, kind) for family, members in self.families.items() if family not in served
                                for n, kind in own if n == members[0]]

    def add(self, kind: str, name: str, front: FrontProtocol, aliases: list[str] = (),
            family: str | None = None) -> None:
        """Route a started engine by its served name and aliases (and its family's name, when it has one); kinds with
        no route (the VAD) are skipped."""
        if kind in self.engines:
            self.engines[kind][name] = front
            self.aliases.update({alias: name for alias in aliases})
            if family is not None:
                self.families.setdefault(family, []).append(name)

    def pick(self, kind: str, model: str | None) -> FrontProtocol:
        """The engine a request names; OpenAI's model names pick the stack's first engine of that kind; a family's
        name (`kokoro`) its first engine of that family, before another model's alias of the same name."""
        engines = self.engines[kind]
        if model in self.families and model not in engines and (first := self.families[model][0]) in engines:
            return engines[first]
        model = self.aliases.get(model, model) if model is not None else None
        if model in engines:
            return engines[model]
        if engines and (model is None or model in KINDS[kind].openai_names):
            return next(iter(engines.values()))
        have = ", ".join(repr(n) for n in engines) or "none"
        raise OpenAIError(404, f"the {KINDS[kind].words} model {model!r} does not exist; this server has {have}",
                          "model", "model_not_found")

    async def pick_speaker(self, kind: str, model: str | None, voice: str | None) -> FrontProtocol:
        """The TTS a speech request means, by its model and voice. A family's name (`kokoro`, Open-LLM-VTuber's default)
        goes to the first engine of that family that has the voice, else to the model that holds the name as an alias
        if that one has it (a Piper voice carrying Kokoro's default names), else to the family's first engine, which
        refuses the voice by naming its own. A request that names no particular model (none, or OpenAI's names) goes
        to the first engine that has its voice."""
        engines = self.engines[kind]
        if voice is None:
            return self.pick(kind, model)
        if model in self.families and model not in engines:
            candidates = [engines[n] for n in self.families[model] if n in engines]
            if self.aliases.get(model) in engines:
                candidates.append(engines[self.aliases[model]])
            for front in candidates:
                if await has_voice(front, voice):
                    return front
            return self.pick(kind, model)
        if model is None or model in KINDS[kind].openai_names:
            for front in engines.values():
                if await has_voice(front, voice):
                    return front
        return self.pick(kind, model)


async def has_voice(front, voice: str) -> bool:
    """Whether a TTS answers to a voice: by its whole name (an alias), or every part of a blend `a(2)+b(1)`."""
    names = {v.name for v in await front.voices()}
    return voice in names or all(re.sub(r"\(.*\)\s*$", "", part).strip() in names for part in voice.split("+"))
