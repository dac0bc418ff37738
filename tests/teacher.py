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
