"""Whether the words so far make a complete utterance: semantic_vad's judge, read from the pause's transcript.

Whisper writes punctuation, so a complete question or statement ends in `.`, `?` or `!`; a trailing
ellipsis, comma or dash, or a last word that cannot end an English sentence (an article, a preposition,
a conjunction, a filler), means the user is mid-sentence. English only: for other languages the
punctuation alone decides.
"""
from __future__ import annotations

import re

ENDINGS = (".", "?", "!", "。", "？", "！")
OPEN_ENDINGS = ("...", "…", ",", ";", ":", "-", "–", "—")
# Words after which an English statement goes on ("I'd like a pizza with", "and um"); a question may end in a
# preposition ("Where are you from?"), so after `?` only the fillers count.
CANNOT_END = frozenset("""
a an the my your his her its our their every
and or but so because if when while although though unless than as whether nor
to of in on at by for with from into onto about over under after before between through during without
i'm it's there's i'd i'll you're we're they're
""".split())
FILLERS = frozenset("um uh er erm hmm".split())
WORD = re.compile(r"[\w']+")


def utterance_complete(text: str) -> bool:
    """True when the transcript reads as a finished turn; an empty one (noise) is not."""
    text = text.strip().strip('"\'”’)]')
    if not text or text.endswith(OPEN_ENDINGS) or not text.endswith(ENDINGS):
        return False
    words = WORD.findall(text.lower())
    if not words or words[-1] in FILLERS:
        return False
    return text.endswith(("?", "？")) or words[-1] not in CANNOT_END
