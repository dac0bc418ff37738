"""The one FastAPI app over every engine a supervisor started: the LLM's state, the companions, the realtime voice.

Both `orchestrator run` and each Ray Serve replica build their app here.
"""
from __future__ import annotations

from fastapi import FastAPI

from orchestrator.server.app import build_app
from orchestrator.server.companions import Companions
from orchestrator.server.metrics import Metrics
from orchestrator.server.realtime.voice import VoiceEngines, limits_from
from orchestrator.server.state import LLMState


def build_stack_app(stack, supervisor, api_key: str | None) -> FastAPI:
    """The one FastAPI app for every engine the supervisor started."""
    llm_state, companions = None, Companions()
    for spec in stack.models:
        client = supervisor.clients[spec.name]
        if spec.kind == "llm":
            template_kwargs = dict(spec.chat_template_kwargs)
            if spec.enable_thinking is not None:
                template_kwargs.setdefault("enable_thinking", spec.enable_thinking)
            llm_state = LLMState(client, spec.name, supervisor.infos[spec.name]["max_model_len"], template_kwargs,
                                 spec.seed, spec.reasoning_parser, tuple(spec.aliases))
        else:
            companions.add(spec.kind, spec.name, client, spec.aliases, family=family_of(spec))
    metrics = Metrics()
    metrics.status = lambda: list(supervisor.status.values())
    app = build_app(llm_state, api_key, companions, metrics, voice_engines(stack, supervisor, llm_state))
    app.state.plan = supervisor.plan  # /health/plan: every card in its JSON; the playground draws the first
    return app


def family_of(spec) -> str | None:
    """"kokoro" for a Kokoro TTS (Open-LLM-VTuber asks for that model name), from its stack entry and file names."""
    if spec.kind != "tts":
        return None
    from budget.kokoro_files import looks_like_kokoro

    kokoro = spec.backend == "kokoro" or (spec.backend == "auto" and looks_like_kokoro(spec.path, spec.voices))
    return "kokoro" if kokoro else None


def voice_engines(stack, supervisor, llm_state: LLMState | None) -> VoiceEngines | None:
    """What /v1/realtime chains: the models the stack's voice: section names, else the first of each kind."""
    if llm_state is None:
        return None
    voice = stack.voice

    def name_of(kind: str) -> str | None:
        named = getattr(voice, kind) if voice else None
        return named or next((m.name for m in stack.models if m.kind == kind), None)

    def pick(kind: str):
        name = name_of(kind)
        return supervisor.clients[name] if name else None

    asr = next((m for m in stack.models if m.name == name_of("asr")), None)
    return VoiceEngines(llm_state, pick("vad"), pick("asr"), pick("tts"), voice.system_prompt if voice else None,
                        limits_from(voice), (asr.name, *asr.aliases) if asr else (),
                        fitted_turns=voice is not None and voice.turn_window == "fitted")
