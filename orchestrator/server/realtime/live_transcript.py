"""The words of a turn while it is being spoken: the audio so far is transcribed every PARTIAL_EVERY_S, and words
two passes in a row agree on (LocalAgreement-2) are sent as transcription deltas; the final text may correct them.

On only for a streaming transcription model's name (OpenAI's gpt-4o-transcribe family, or the stack's own ASR
names); whisper-1 clients expect the transcript only after the pass, as OpenAI sends it.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

PARTIAL_EVERY_S = 0.7            # new speech between two passes over the turn so far
STREAMING_MODELS = ("gpt-4o-transcribe", "gpt-4o-mini-transcribe")


@dataclass(slots=True)
class LiveTranscript:
    item_id: str
    sent: list[str] = field(default_factory=list)       # words already sent as deltas
    previous: list[str] = field(default_factory=list)   # the last pass's words
    samples: int = 0                                    # the audio the last pass heard
    task: asyncio.Task | None = None

    def agree(self, words: list[str]) -> str:
        """This pass's words against the last one's: the newly stable words, as the next delta ("" if none).

        Words sent are never taken back; the next words are those both passes have at the positions after them
        (compared without case and punctuation, so "4." and "4" agree)."""
        stable = 0
        while stable < min(len(words), len(self.previous)) and _plain(words[stable]) == _plain(self.previous[stable]):
            stable += 1
        self.previous = words
        if stable <= len(self.sent):
            return ""
        new = words[len(self.sent):stable]
        self.sent = self.sent + new
        return (" " if len(self.sent) > len(new) else "") + " ".join(new)

    def rest(self, final: str) -> str:
        """What the final text adds to the words sent (all of it if none were; "" if it corrects them)."""
        if not self.sent:
            return final
        said = " ".join(self.sent)
        return final[len(said):] if final.startswith(said) else ""

    async def stop(self) -> None:
        if self.task is not None and self.task is not asyncio.current_task():
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)


def _plain(word: str) -> str:
    return word.strip(".,!?;:-\"'").lower()
