"""Pick each kernel's implementation by device: Triton on CUDA, the PyTorch reference elsewhere."""
from __future__ import annotations

import torch

from llm_kernels.reference import paged_attention_reference, store_kv_reference


def store_kv(k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
             slot_mapping: torch.Tensor) -> None:
    """Write the step's new K/V into the paged pool."""
    if k.is_cuda:
        from llm_kernels.triton_store_kv import store_kv_triton
        return store_kv_triton(k, v, k_cache, v_cache, slot_mapping)
    return store_kv_reference(k, v, k_cache, v_cache, slot_mapping)


def paged_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, cu_seqlens_q: torch.Tensor,
                    seq_lens: torch.Tensor, block_tables: torch.Tensor, scale: float,
                    max_seqlen_q: int) -> torch.Tensor:
    """Causal attention of the step's new queries over each sequence's paged context."""
    if q.is_cuda:
        from llm_kernels.triton_paged_attention import paged_attention_triton
        return paged_attention_triton(q, k_cache, v_cache, cu_seqlens_q, seq_lens, block_tables, scale,
                                      max_seqlen_q)
    return paged_attention_reference(q, k_cache, v_cache, cu_seqlens_q, seq_lens, block_tables, scale,
                                     max_seqlen_q)
