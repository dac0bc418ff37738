"""After warm-up, 1,000 decode steps leave memory where it was: no growing tensors, caches or lists.

On CUDA torch's allocated bytes are compared directly. On CPU torch keeps no allocator statistics,
so the test counts the live tensors and their bytes, and Python's own allocations (tracemalloc).
"""
from __future__ import annotations

import gc
import tracemalloc
import warnings

import torch

from engines.llm import EngineConfig, LLMEngine, SamplingParams


def live_tensor_bytes() -> tuple[int, int]:
    gc.collect()
    with warnings.catch_warnings():  # isinstance() on torch's deprecated module aliases warns
        warnings.simplefilter("ignore", FutureWarning)
        tensors = [o for o in gc.get_objects() if isinstance(o, torch.Tensor)]
    return len(tensors), sum(t.untyped_storage().nbytes() for t in tensors)


def test_decode_memory_is_flat_over_1000_steps(tiny_models):
    llm = LLMEngine(EngineConfig(str(tiny_models["qwen3"]), dtype="float32", num_kv_blocks=240, max_model_len=1200,
                                 max_num_seqs=4))
    params = SamplingParams(temperature=0.7, top_p=0.9, seed=0, max_tokens=1150, ignore_eos=True, logprobs=2)
    for i in range(3):
        llm.add_request(f"r{i}", "Hello there", params)
    for _ in range(50):
        llm.step()
    cuda = torch.cuda.is_available()
    before_cuda = torch.cuda.memory_allocated() if cuda else 0
    before_tensors = live_tensor_bytes()
    tracemalloc.start()
    start, _ = tracemalloc.get_traced_memory()
    for _ in range(1000):
        assert len(llm.step()) == 3
    grown = tracemalloc.get_traced_memory()[0] - start
    tracemalloc.stop()
    after_tensors = live_tensor_bytes()
    assert after_tensors == before_tensors
    # Python side: each request's own token list grows by 1,000 ints (~40 KB for 3), output records are dropped
    assert grown < 400_000, f"Python allocations grew by {grown:,} B over 1,000 steps"
    if cuda:
        assert torch.cuda.memory_allocated() == before_cuda
