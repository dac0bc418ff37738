"""Where the session's turn stands, as one named phase, and every way it moves from one phase to the next.

The microphone and the responses report what happened; the phase is what the session decides on (a turn
whose words arrive while the user already speaks again is not answered until that turn ends too).
"""
from __future__ import annotations

import logging
from enum import Enum

log = logging.getLogger(__name__)


class TurnPhase(Enum):
    LISTENING = "listening"    # nobody speaks and nothing is being answered
    SPEAKING = "speaking"      # the user is talking
    PAUSED = "paused"          # the user stopped: the pause may end the turn (its words are worked on meanwhile)
    ENDED = "ended"            # the turn is over: its words are being recognised
    ANSWERING = "answering"    # a response is running


class Turn:
    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self.phase = TurnPhase.LISTENING

    @property
    def user_talking(self) -> bool:
        return self.phase in (TurnPhase.SPEAKING, TurnPhase.PAUSED)

    def speech_started(self) -> None:
        self._to(TurnPhase.SPEAKING)

    def paused(self) -> None:
        self._to(TurnPhase.PAUSED)

    def resumed(self) -> None:
        self._to(TurnPhase.SPEAKING)

    def ended(self) -> None:
        """The VAD's silence or the client's commit ended the turn."""
        self._to(TurnPhase.ENDED)

    def answering(self) -> None:
        self._to(TurnPhase.ANSWERING)

    def heard(self) -> None:
        """The turn's words are in and no answer follows them now."""
        if self.phase is TurnPhase.ENDED:
            self._to(TurnPhase.LISTENING)

    def answered(self) -> None:
        """A response ended; a user already talking again keeps their phase."""
        if self.phase is TurnPhase.ANSWERING:
            self._to(TurnPhase.LISTENING)

    def cleared(self) -> None:
        """The audio of a turn in progress was thrown away (input_audio_buffer.clear, a new turn_detection)."""
        if self.user_talking:
            self._to(TurnPhase.LISTENING)

    def _to(self, phase: TurnPhase) -> None:
        log.debug("session %s: %s -> %s", self.session_id, self.phase.value, phase.value)
        self.phase = phase
