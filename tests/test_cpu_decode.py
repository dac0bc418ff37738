"""The CPU's fused decode step (engines/llm/models/cpu_decode.py, C++ in llm_kernels/cpu_decode.cpp) against the
layer-by-layer Python path it stands in for, on every architecture and weight format it takes."""
from __future__ import annotations

import pytest
import torch

from engines.llm import EngineConfig, LLMEngine
from engines.llm.context import AttentionContext, set_context
from engines.llm.input_batch import pack_metadata
from llm_kernels.reference import ReferencePlan

LENGTHS = [37, 5, 16]             # contexts of three sequences decoding together (the third fills its block)
TABLES = [[7, 2, 12], [4], [9]]   # their pool blocks: scattered, out of order, none at 0
# Relative error allowed. Dense float32: the same sums in another order (measured 4-8e-7). Packed kernels: both paths
# round the same activations to bfloat16 before each matmul (measured 0 here); a last-bit difference just before a
# rounding would move that element by one bfloat16 step (2^-8), which this still allows for a few elements.
TOLERANCE = {"none": 1e-5, "int8": 1e-3, "int4": 1e-3}


def decode_step(engine: LLMEngine) -> tuple[torch.Tensor, torch.Tensor, AttentionContext, list[int]]:
    """Three one-token decodes over TABLES (ids, positions, context, and the slots they write)."""
    block, width = engine.runner.block_size, max(map(len, TABLES))
    slots = [table[(n - 1) // block] * block + (n - 1) % block for table, n in zip(TABLES, LENGTHS)]
    ids, positions, slot_mapping, cu_seqlens_q, seq_lens, block_tables = pack_metadata(
        [[11, 50, 70], [n - 1 for n in LENGTHS], slots, list(range(len(LENGTHS) + 1)), LENGTHS,
         [b for table in TABLES for b in table + [0] * (width - len(table))]], engine.runner.device)
    block_tables = block_tables.view(len(LENGTHS), width)
    plan = ReferencePlan.build(slot_mapping, cu_seqlens_q, seq_lens, block_tables, block)
    return ids, positions, AttentionContext(slot_mapping, cu_seqlens_q, seq_lens, block_tables, 1, plan), slots


@pytest.mark.parametrize("quantization", ["none", "int8", "int4"])
@pytest.mark.parametrize("kind", ["qwen3", "qwen2", "llama"])
def test_a_fused_decode_step_gives_the_layer_by_layer_hidden_states_and_kv(tiny_models, kind, quantization):
    engine = LLMEngine(EngineConfig(str(tiny_models[kind]), dtype="float32", num_kv_blocks=32, max_model_len=256,
                                    max_num_seqs=4, quantization=quantization))
    runner = engine.runner
    if kind == "qwen2" and quantization == "int4":
        # qkv has 96 output rows: torch's CPU int4 layout needs blocks of 64, so this model stays layer by layer
        assert runner.cpu_decode is None
        return
    assert runner.cpu_decode is not None, "the CPU decode extension did not build (scripts/setup.sh builds it)"
    torch.manual_seed(0)
    runner.kv_cache.normal_()
    pool = runner.kv_cache.clone()
    ids, positions, context, slots = decode_step(engine)
    with torch.inference_mode():
        fused = runner.cpu_decode(ids, positions, context)
        fused_pool = runner.kv_cache.clone()
        runner.kv_cache.copy_(pool)
        set_context(context)
        try:
            want = runner.model(ids, positions)
        finally:
            set_context(None)
    tolerance = TOLERANCE[quantization]
    assert (fused - want).norm() / want.norm() < tolerance, (fused - want).abs().max()
    assert (fused_pool - runner.kv_cache).norm() / runner.kv_cache.norm() < tolerance
    changed = (fused_pool != pool).flatten(-2).any(-1).flatten(2)   # [K/V, layer, slot]
    assert changed.any(dim=(0, 1)).nonzero().flatten().tolist() == sorted(slots)  # only the new tokens' slots
    engine.close()


def test_enforce_eager_keeps_the_cpu_on_the_layer_by_layer_path(tiny_models):
    engine = LLMEngine(EngineConfig(str(tiny_models["qwen3"]), dtype="float32", num_kv_blocks=32, max_model_len=256,
                                    enforce_eager=True))
    assert engine.runner.cpu_decode is None
    engine.close()
