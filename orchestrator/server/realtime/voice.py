"""What a realtime session chains (VAD, ASR, LLM, TTS), the stack's voice prompt, and the session limits."""
from __future__ import annotations

from dataclasses import dataclass, field

from engines.protocols import ASRProtocol, TTSProtocol, VADProtocol
from orchestrator.server.realtime.answers import Answers
from orchestrator.server.state import LLMState

# OpenAI's realtime model names, so clients with a hard-coded model reach the stack's voice LLM.
REALTIME_ALIASES = ("gpt-realtime", "gpt-realtime-mini", "gpt-4o-realtime-preview", "gpt-4o-mini-realtime-preview")


@dataclass(slots=True)
class RealtimeLimits:
    max_sessions: int
    max_session_s: float
    idle_timeout_s: float
    max_event_bytes: int
    max_buffered_audio_s: float


@dataclass(slots=True)
class VoiceEngines:
    llm: LLMState
    vad: VADProtocol | None = None
    asr: ASRProtocol | None = None
    tts: TTSProtocol | None = None
    system_prompt: str | None = None
    limits: RealtimeLimits = field(default_factory=lambda: limits_from(None))
    asr_names: tuple[str, ...] = ()   # the stack's own names for its ASR: a session naming one gets live words
    fitted_turns: bool = False        # a turn's transcript encodes a window fitted to it, not Whisper's whole 30 s
    answers: Answers = field(init=False)  # our LLM or its upstream, behind one shape
    asr_in_flight: int = field(default=0, init=False)  # transcriptions asked of the ASR by every session, not back yet

    def __post_init__(self) -> None:
        self.answers = self.llm.serving.answers(self.llm)

    def model_matches(self, name: str | None) -> bool:
        return name is None or name == self.llm.served_name or name.startswith(REALTIME_ALIASES)


def limits_from(spec) -> RealtimeLimits:
    """The stack's voice: section (or, without one, its defaults) as limits; the defaults live in VoiceSpec alone."""
    from orchestrator.stack import VoiceSpec

    spec = spec or VoiceSpec()
    return RealtimeLimits(spec.max_sessions, spec.max_session_minutes * 60, spec.idle_timeout_s, spec.max_event_bytes,
                          spec.max_buffered_audio_s)
