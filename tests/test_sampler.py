"""The sampler draws from the right distribution and each filter keeps exactly the tokens it should."""
from __future__ import annotations

import pytest
import torch

from engines.llm.sampler import Sampler
from engines.llm.sampling_params import SamplingParams
from engines.llm.sequence import Sequence

PROBS = torch.tensor([0.5, 0.3, 0.15, 0.05])


def draw(params: SamplingParams, rows: int = 6000, history: list[int] = (0,)) -> torch.Tensor:
    seqs = [Sequence(f"r{i}", list(history), params) for i in range(rows)]
    logits = PROBS.log().repeat(rows, 1)
    return torch.tensor([t.token_id for t in Sampler()(logits, seqs)])


def frequencies(tokens: torch.Tensor) -> torch.Tensor:
    return torch.bincount(tokens, minlength=4).float() / len(tokens)


def test_temperature_one_draws_the_model_distribution():
    assert (frequencies(draw(SamplingParams(temperature=1.0))) - PROBS).abs().max() < 0.025


@pytest.mark.parametrize("params, support", [
    (SamplingParams(top_k=2), {0, 1}),
    (SamplingParams(top_p=0.6), {0, 1}),
    (SamplingParams(top_p=0.5), {0}),
    (SamplingParams(min_p=0.4), {0, 1}),
    (SamplingParams(temperature=0), {0}),
])
def test_filters_keep_the_right_tokens(params, support):
    assert set(draw(params, rows=2000).tolist()) == support


def test_renormalised_after_top_k():
    freq = frequencies(draw(SamplingParams(top_k=2)))
    assert abs(freq[0].item() - 0.5 / 0.8) < 0.03


def test_low_temperature_sharpens():
    assert frequencies(draw(SamplingParams(temperature=0.3)))[0] > 0.8


def test_repetition_penalty_pushes_seen_tokens_down():
    seen_first = draw(SamplingParams(temperature=0, repetition_penalty=10.0), rows=1, history=[0])
    assert seen_first.item() == 1  # log(0.5) * 10 falls below log(0.3)


def test_seeded_rows_repeat_exactly():
    params = SamplingParams(temperature=1.0, seed=7)
    assert torch.equal(draw(params, rows=50), draw(params, rows=50))
    assert len(set(draw(params, rows=50).tolist())) == 1  # each row has its own generator with the same seed


def test_logit_bias_bans_and_forces_tokens():
    logits = torch.zeros(3, 10)
    logits[:, 4] = 5.0  # the favourite without bias
    seqs = [Sequence(f"r{i}", [1, 2], SamplingParams(temperature=0, logit_bias=bias))
            for i, bias in enumerate([{}, {4: -100}, {7: 100}])]
    picked = [t.token_id for t in Sampler()(logits, seqs)]
    assert picked[0] == 4 and picked[1] != 4 and picked[2] == 7
