"""A sampler that stands in for the model's choice, so tests drive real token boundaries through the real stack."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class ScriptedSampler:
    """Each sequence emits the current script's tokens, then EOS; with no script, the real sampler decides.

    `scripts` (a list of token lists) gives successive requests successive scripts, the last one repeating. A
    scripted token the request's grammar does not allow is replaced by the model's best allowed one, as a
    constrained model would have it."""

    def __init__(self, real, eos: int) -> None:
        self.real, self.eos, self.script = real, eos, None
        self.scripts: list[list[int]] = []
        self._given: dict[str, list[int]] = {}

    def __call__(self, logits, seqs, masks=None):
        from engines.llm.sampler import SampledToken

        if self.script is None and not self.scripts:
            return self.real(logits, seqs, masks)
        from engines.llm.structured_output import apply_masks

        allowed = apply_masks(logits, masks) if masks is not None else logits
        out = []
        for row, s in enumerate(seqs):
            script = self._script_for(s.seq_id)
            token = script[s.num_output_tokens] if s.num_output_tokens < len(script) else self.eos
            if allowed[row, token] == float("-inf"):
                token = int(allowed[row].argmax())
            out.append(SampledToken(token))
        return out

    def _script_for(self, seq_id) -> list[int]:
        if self.script is not None:
            return self.script
        if seq_id not in self._given:
            self._given[seq_id] = self.scripts.pop(0) if len(self.scripts) > 1 else self.scripts[0]
        return self._given[seq_id]


@contextmanager
def scripted(llm) -> Iterator[ScriptedSampler]:
    """Put a ScriptedSampler into an in-process AsyncLLM for the block; the real sampler comes back after."""
    runner = llm.engine.runner
    sampler = ScriptedSampler(runner.sampler, llm.tokenizer.eos_token_id)
    runner.sampler = sampler
    try:
        yield sampler
    finally:
        runner.sampler = sampler.real
