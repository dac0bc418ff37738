"""Teacher forcing through our engine: the logits after every prefix of a prompt, from its prefill chunks."""
from __future__ import annotations

import torch

from engines.llm import LLMEngine, SamplingParams
from engines.llm.input_batch import build_inputs


def prefill_logits(llm: LLMEngine, ids: list[int]) -> list[torch.Tensor]:
    """One [tokens, vocab] tensor per prefill chunk the scheduler makes (later chunks attend to the cached ones)."""
    llm.add_request("teacher", ids, SamplingParams(temperature=0, max_tokens=1))
    chunks: list[torch.Tensor] = []
    with torch.inference_mode():
        while sum(map(len, chunks)) < len(ids):
            batch = llm.scheduler.schedule()
            inputs = build_inputs(batch, llm.block_manager.block_size, torch.device("cpu"))
            hidden = llm.runner._forward(inputs.input_ids, inputs.positions, inputs.context)
            chunks.append(llm.runner.model.compute_logits(hidden))
            batch.seqs[0].num_computed_tokens += batch.num_new_tokens[0]
    llm.abort_request("teacher")
    return chunks


def decode_logits(llm: LLMEngine, ids: list[int], prompt_tokens: int) -> torch.Tensor:
    """[len(ids) - prompt_tokens + 1, vocab]: the logits after ids[:prompt_tokens] (its prefill), then after each
    later token fed as a decode step, the next one forced instead of sampled."""
    llm.add_request("teacher", ids[:prompt_tokens], SamplingParams(temperature=0, max_tokens=len(ids)))
    rows: list[torch.Tensor] = []
    with torch.inference_mode():
        while True:
            batch = llm.scheduler.schedule()
            seq = batch.seqs[0]
            inputs = build_inputs(batch, llm.block_manager.block_size, torch.device("cpu"))
            hidden = llm.runner._forward(inputs.input_ids, inputs.positions, inputs.context)
            seq.num_computed_tokens += batch.num_new_tokens[0]
            if seq.num_computed_tokens < seq.num_tokens:
                continue  # a prefill chunk short of the prompt's end
            rows.append(llm.runner.model.compute_logits(hidden[-1:]))
            if seq.num_tokens == len(ids):
                break
            seq.token_ids.append(ids[seq.num_tokens])
    llm.abort_request("teacher")
    return torch.cat(rows)
