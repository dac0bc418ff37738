"""Turn the step's last-token logits into next tokens: penalties, temperature, top-k/top-p/min-p, seeds.

Sampling inverts the CDF: one uniform number per row, found in the row's cumulative probabilities
(on CPU ~35x cheaper than vocab-sized noise). A request with a seed draws its number from its own
generator, so its tokens do not depend on what else shares the batch.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from budget.estimators.sampler import FILTER_ROWS
from engines.llm.sequence import Sequence
from engines.llm.structured_output import StepMasks, apply_masks


@dataclass(slots=True)
class SampledToken:
    token_id: int
    logprob: float | None = None
    top_logprobs: dict[int, float] | None = None


class Sampler:
    def __call__(self, logits: torch.Tensor, seqs: list[Sequence], masks: StepMasks | None = None
                 ) -> list[SampledToken]:
        """`masks`: the step's grammar masks, for the rows whose request has structured outputs."""
        params = [s.params for s in seqs]
        want_logprobs = any(p.logprobs is not None for p in params)
        raw_logprobs = torch.log_softmax(logits, dim=-1) if want_logprobs else None
        if any(p.logit_bias for p in params):
            logits = apply_logit_bias(logits.clone(), seqs)
        if any(p.penalized for p in params):
            logits = apply_penalties(logits.clone(), seqs)
        if masks is not None:  # after bias and penalties, before any choice: no mode can pick a banned token
            logits = apply_masks(logits, masks)
        greedy_ids = logits.argmax(dim=-1)
        if all(p.greedy for p in params):
            token_ids = greedy_ids
        else:
            temperature = logits.new_tensor([p.temperature if not p.greedy else 1.0 for p in params])
            logits = logits / temperature.unsqueeze(1)
            if any(p.filtered for p in params):  # on the sampler's own tensor (made by the division above)
                logits = apply_filters(logits, seqs)
            cdf = torch.softmax(logits, dim=-1).cumsum_(dim=-1)
            uniform = torch.rand(len(seqs), 1, device=logits.device)
            for row, seq in enumerate(seqs):
                if seq.params.seed is not None and not seq.params.greedy:
                    if seq.generator is None:
                        seq.generator = torch.Generator(device=logits.device).manual_seed(seq.params.seed)
                    uniform[row] = torch.rand(1, generator=seq.generator, device=logits.device)
            sampled = torch.searchsorted(cdf, uniform * cdf[:, -1:], right=True).squeeze(1).clamp_(max=cdf.shape[1] - 1)
            greedy_rows = torch.tensor([p.greedy for p in params], device=logits.device)
            token_ids = torch.where(greedy_rows, greedy_ids, sampled)
        ids = token_ids.tolist()
        if raw_logprobs is None:
            return [SampledToken(t) for t in ids]
        return [_with_logprobs(t, raw_logprobs[row], seqs[row].params.logprobs) for row, t in enumerate(ids)]


def _with_logprobs(token_id: int, logprobs: torch.Tensor, count: int | None) -> SampledToken:
    if count is None:
        return SampledToken(token_id)
    top = {}
    if count:
        values, ids = logprobs.topk(count)
        top = dict(zip(ids.tolist(), values.tolist()))
    return SampledToken(token_id, logprobs[token_id].item(), top)


def apply_logit_bias(logits: torch.Tensor, seqs: list[Sequence]) -> torch.Tensor:
    """OpenAI's logit_bias: each listed token's logit moved by its bias (-100 bans it, 100 all but forces it)."""
    for row, seq in enumerate(seqs):
        if bias := seq.params.logit_bias:
            ids = torch.tensor(list(bias), device=logits.device)
            logits[row, ids] += logits.new_tensor(list(bias.values()))
    return logits


def apply_penalties(logits: torch.Tensor, seqs: list[Sequence]) -> torch.Tensor:
    """OpenAI presence/frequency penalties over generated tokens; repetition penalty over prompt and output."""
    vocab = logits.shape[1]
    for row, seq in enumerate(seqs):
        p = seq.params
        if not p.penalized:
            continue
        if p.repetition_penalty != 1.0:
            seen = torch.tensor(seq.token_ids, device=logits.device).clamp_(max=vocab - 1)
            picked = logits[row, seen]
            logits[row, seen] = torch.where(picked > 0, picked / p.repetition_penalty, picked * p.repetition_penalty)
        if (p.presence_penalty or p.frequency_penalty) and seq.num_output_tokens:
            counts = torch.bincount(torch.tensor(seq.output_token_ids, device=logits.device), minlength=vocab)[:vocab]
            logits[row] -= p.frequency_penalty * counts + p.presence_penalty * (counts > 0)
    return logits


def apply_filters(logits: torch.Tensor, seqs: list[Sequence]) -> torch.Tensor:
    """Mask tokens outside top-k, outside the top-p nucleus, or below min_p times the best probability; in place,
    FILTER_ROWS rows at a time, so the sort's vocab-sized buffers stay small (the plan counts them: sampler_bytes)."""
    for start in range(0, len(seqs), FILTER_ROWS):
        _filter_rows(logits[start:start + FILTER_ROWS], [s.params for s in seqs[start:start + FILTER_ROWS]])
    return logits


def _filter_rows(logits: torch.Tensor, params: list) -> None:
    vocab = logits.shape[1]
    top_k = logits.new_tensor([p.top_k if p.top_k > 0 else vocab for p in params], dtype=torch.long)
    top_p = logits.new_tensor([p.top_p for p in params])
    min_p = logits.new_tensor([p.min_p for p in params])
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    sorted_probs = sorted_logits.softmax(dim=-1)
    drop = sorted_probs < min_p.unsqueeze(1) * sorted_probs[:, :1]
    before = sorted_probs.cumsum(dim=-1).sub_(sorted_probs)  # mass strictly ahead of each token
    del sorted_probs
    drop |= before >= top_p.unsqueeze(1)
    del before
    drop |= torch.arange(vocab, device=logits.device).expand_as(drop) >= top_k.unsqueeze(1)
    drop[:, 0] = False
    logits.scatter_(1, order, sorted_logits.masked_fill_(drop, float("-inf")))
