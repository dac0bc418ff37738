"""Token ids to text, a step at a time: never a broken UTF-8 character, stop strings across token boundaries.

Text that could still turn out to be the start of a stop string is held back until it cannot.
"""
from __future__ import annotations

from transformers import PreTrainedTokenizerBase

from engines.llm.sampling_params import SamplingParams

PROMPT_CONTEXT_TOKENS = 5  # prompt tokens decoded alongside the first output, so spacing comes out right


class IncrementalDetokenizer:
    def __init__(self, tokenizer: PreTrainedTokenizerBase | None, prompt_token_ids: list[int], params: SamplingParams) -> None:
        self.tokenizer, self.params = tokenizer, params
        self.ids = list(prompt_token_ids[-PROMPT_CONTEXT_TOKENS:])
        self.prefix_offset, self.read_offset = 0, len(self.ids)
        self.text = ""
        self.sent = 0
        self.holdback = max((len(s) for s in params.stop), default=1) - 1
        self.stopped_by: str | None = None

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=self.params.skip_special_tokens)

    def add_tokens(self, token_ids: list[int]) -> None:
        """Decode the new tokens onto `text`; check stop strings in what is new (plus a stop's length back)."""
        if self.tokenizer is None:
            return
        before = len(self.text)
        for token_id in token_ids:
            self.ids.append(token_id)
            prefix = self._decode(self.ids[self.prefix_offset:self.read_offset])
            full = self._decode(self.ids[self.prefix_offset:])
            if len(full) > len(prefix) and not full.endswith("\ufffd"):
                self.text += full[len(prefix):]
                self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
        if self.params.stop and len(self.text) > before:
            self._find_stop(max(0, before - self.holdback))

    def _find_stop(self, start: int) -> None:
        found = [(i, s) for s in self.params.stop if (i := self.text.find(s, start)) >= 0]
        if found:
            at, stop = min(found)
            self.text = self.text[: at + len(stop) if self.params.include_stop_str_in_output else at]
            self.stopped_by = stop

    def delta(self, finished: bool) -> str:
        """Text not sent yet, keeping back a possible stop-string prefix unless the request is over."""
        upto = len(self.text) if finished or self.stopped_by else max(self.sent, len(self.text) - self.holdback)
        piece, self.sent = self.text[self.sent:upto], upto
        return piece
