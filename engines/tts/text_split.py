"""Cut text into pieces a TTS model speaks well: sentences, then clauses, then words, never over max_chars.

`SentenceSplitter` works on text that arrives in deltas (an LLM's stream): `feed()` returns the pieces
completed so far and keeps the unfinished tail; `flush()` returns the rest. `split_text` is the same
splitter fed the whole text at once, so both paths cut identically.
"""
from __future__ import annotations

import re

# A sentence ends at . ! ? … (then closing quotes/brackets) before whitespace, at CJK 。！？ at once, or at a line break.
_TERMINATOR = re.compile(r"[.!?…]+[\"'”’)\]]*|[。！？]+[」』”’)）]*|\n")
_CJK_STOPS = set("。！？")
_CLAUSE_END = re.compile(r"[,;:](?=\s)|[，、；：]")
_LAST_WORD = re.compile(r"(\S+)$")
# Words whose trailing period does not end a sentence ("Dr. Smith", "e.g. this").
ABBREVIATIONS = {"mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "vs", "cf", "approx", "fig", "vol", "eq",
                 "e.g", "i.e"}


def _is_abbreviation(text: str, dot: int) -> bool:
    """Whether the '.' at `dot` closes an abbreviation or an initial ("J. R. R. Tolkien")."""
    word = _LAST_WORD.search(text, 0, dot)
    if word is None:
        return False
    token = word.group(1).lstrip("\"'“‘([")
    return token.lower() in ABBREVIATIONS or (len(token) == 1 and token.isupper())


def _sentence_end(text: str, final: bool) -> int | None:
    """Index just past the first complete sentence, or None while the text may still go on."""
    for match in _TERMINATOR.finditer(text):
        end = match.end()
        if match.group() == "\n" or match.group()[0] in _CJK_STOPS:
            return end
        if end == len(text):
            return end if final else None  # "3." may become "3.5": wait for the next character
        if not text[end].isspace():
            continue  # "3.5", "e.g.x", "wait...what"
        if match.group() == "." and _is_abbreviation(text, match.start()):
            continue
        return end
    return None


def _cut(text: str, max_chars: int) -> int:
    """Where to cut a too-long text: the last clause end in range, else the last space, else hard at max_chars."""
    clauses = [m.end() for m in _CLAUSE_END.finditer(text, 0, max_chars + 1) if m.end() <= max_chars]
    if clauses and clauses[-1] >= max_chars // 3:
        return clauses[-1]
    space = text.rfind(" ", 1, max_chars + 1)
    return space if space > 0 else max_chars


def split_long(text: str, max_chars: int) -> list[str]:
    """One sentence as pieces of at most max_chars, cut at clauses, then words."""
    pieces = []
    text = text.strip()
    while len(text) > max_chars:
        cut = _cut(text, max_chars)
        pieces.append(text[:cut].strip())
        text = text[cut:].lstrip()
    pieces.append(text)
    return [p for p in pieces if p]


class SentenceSplitter:
    """Feed text deltas, get speakable pieces as soon as they are complete."""

    def __init__(self, max_chars: int, first_clause_early: bool = False, min_early_chars: int = 10) -> None:
        if max_chars < 1:
            raise ValueError(f"max_chars must be at least 1, got {max_chars}")
        self.max_chars = max_chars
        self.first_clause_early = first_clause_early
        self.min_early_chars = min_early_chars
        self._buffer = ""
        self._emitted = 0

    def feed(self, delta: str) -> list[str]:
        self._buffer += delta
        return self._drain(final=False)

    def flush(self) -> list[str]:
        """The pieces left once the text is known to be complete."""
        return self._drain(final=True)

    def _drain(self, final: bool) -> list[str]:
        out: list[str] = []
        while True:
            self._buffer = self._buffer.lstrip()
            end = _sentence_end(self._buffer, final) or self._early_cut() or self._overflow_cut()
            if end is None and final and self._buffer:
                end = len(self._buffer)
            if end is None:
                break
            pieces = split_long(self._buffer[:end], self.max_chars)
            self._buffer = self._buffer[end:]
            self._emitted += len(pieces)
            out.extend(pieces)
        return out

    def _early_cut(self) -> int | None:
        """The first clause of the whole text, so the first audio starts before the first sentence ends."""
        if not self.first_clause_early or self._emitted:
            return None
        for match in _CLAUSE_END.finditer(self._buffer):
            if self.min_early_chars <= match.end() <= self.max_chars:
                return match.end()
        return None

    def _overflow_cut(self) -> int | None:
        """A sentence already longer than a piece may be: cut it now rather than wait for its end."""
        if len(self._buffer) <= self.max_chars:
            return None
        return _cut(self._buffer, self.max_chars)


def split_text(text: str, max_chars: int) -> list[str]:
    """Whole text to pieces: one per sentence, long sentences cut at clauses, then words."""
    splitter = SentenceSplitter(max_chars)
    return splitter.feed(text) + splitter.flush()
