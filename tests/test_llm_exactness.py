"""Our engine's greedy tokens and logits equal Hugging Face transformers' on tiny random Qwen3, Qwen2 and Llama.

Every variant goes through the real loading code (safetensors, sharded for Qwen2, tied embeddings and
llama3 rope scaling for Llama) and the real scheduler: plain batching, chunked prefill forced small,
prefix-cache hits, and preemption forced by a pool of very few blocks.
"""
from __future__ import annotations

import functools

import pytest
import torch
from teacher import prefill_logits
from transformers import AutoModelForCausalLM

from engines.llm.config import EngineConfig
from engines.llm.llm_engine import LLMEngine
from engines.llm.sampling_params import SamplingParams

MODEL_TYPES = ["qwen3", "qwen2", "llama"]
SHARED = "The quick brown fox jumps over the lazy dog. Paged attention stores keys and values. "
PROMPTS = ["Hello there", SHARED + "Voice agents need", "Voice", SHARED + "héllo wörld, naïve café", "how are you today?"]
NEW_TOKENS = 12
GREEDY = SamplingParams(temperature=0, max_tokens=NEW_TOKENS, ignore_eos=True)

SETUPS = {
    "plain": dict(num_kv_blocks=64, max_model_len=256),
    "chunked": dict(num_kv_blocks=64, max_model_len=256, max_num_seqs=4, max_num_batched_tokens=8),
    "preempt": dict(num_kv_blocks=5, max_model_len=80),
    "no-prefix-cache": dict(num_kv_blocks=64, max_model_len=256, enable_prefix_caching=False),
}


@functools.cache
def hf_model(path) -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


@functools.cache
def hf_greedy(path, prompt_ids: tuple[int, ...]) -> list[int]:
    out = hf_model(path).generate(torch.tensor([prompt_ids]), max_new_tokens=NEW_TOKENS, do_sample=False,
                                  eos_token_id=None, pad_token_id=0)
    return out[0, len(prompt_ids):].tolist()


def engine(path, **kw) -> LLMEngine:
    return LLMEngine(EngineConfig(str(path), dtype="float32", **kw))


@pytest.mark.parametrize("setup", SETUPS)
@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_greedy_tokens_equal_transformers(tiny_models, model_type, setup):
    path = tiny_models[model_type]
    llm = engine(path, **SETUPS[setup])
    outputs = llm.generate(PROMPTS, GREEDY)
    for prompt, out in zip(PROMPTS, outputs):
        ids = tuple(llm.tokenizer.encode(prompt, add_special_tokens=False))
        assert out.token_ids == hf_greedy(path, ids), prompt
        assert out.finish_reason == "length" and len(out.token_ids) == NEW_TOKENS
    if setup == "preempt":
        assert llm.scheduler.num_preemptions > 0
    llm.block_manager.check()
    assert llm.block_manager.num_used == 0


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_prefix_cache_hits_give_the_same_tokens(tiny_models, model_type):
    path = tiny_models[model_type]
    llm = engine(path, **SETUPS["plain"])
    first = llm.generate(PROMPTS, GREEDY)
    again = llm.generate(PROMPTS, GREEDY)
    assert [o.token_ids for o in again] == [o.token_ids for o in first]
    shared_prompt = again[1]
    assert shared_prompt.num_cached_tokens >= 16 and first[1].num_cached_tokens == 0
    assert sum(o.num_cached_tokens for o in again) > sum(o.num_cached_tokens for o in first)


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_prefill_logits_equal_transformers(tiny_models, model_type):
    """All positions of a prompt computed in two chunks, the second attending to the cached first."""
    path = tiny_models[model_type]
    llm = engine(path, num_kv_blocks=64, max_model_len=256, max_num_seqs=2, max_num_batched_tokens=24)
    ids = llm.tokenizer.encode(SHARED + "Voice agents need", add_special_tokens=False)
    chunks = prefill_logits(llm, ids)
    assert len(chunks) == 2
    ours = torch.cat(chunks)
    want = hf_model(path)(torch.tensor([ids])).logits[0]
    assert ours.shape == want.shape
    assert (ours - want).abs().max().item() < 1e-4


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_decode_logprobs_equal_transformers(tiny_models, model_type):
    """Each decode step's log-probabilities (from logits over the paged cache) match a full recompute."""
    path = tiny_models[model_type]
    llm = engine(path, **SETUPS["plain"])
    llm.add_request("r", PROMPTS[1], SamplingParams(temperature=0, max_tokens=6, ignore_eos=True, logprobs=5))
    outputs = [o for _ in range(6) for o in llm.step()]
    ids = llm.tokenizer.encode(PROMPTS[1], add_special_tokens=False)
    full = torch.tensor([ids + [t for o in outputs for t in o.delta_token_ids][:-1]])
    want = torch.log_softmax(hf_model(path)(full).logits[0, len(ids) - 1:], dim=-1)
    entries = [entry for o in outputs for entry in o.logprobs]
    assert len(entries) == 6 and outputs[-1].finished
    for step, entry in enumerate(entries):
        assert abs(entry.logprob - want[step, entry.token_id].item()) < 1e-4
        assert len(entry.top_logprobs) == 5
        for token_id, value in entry.top_logprobs.items():
            assert abs(value - want[step, token_id].item()) < 1e-4
