"""Triton kernel: scatter the step's new K/V rows into their slots of the paged pool."""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _store_kv_kernel(k_ptr, v_ptr, k_cache_ptr, v_cache_ptr, slot_ptr, stride_k, stride_v,
                     WIDTH: tl.constexpr, BLOCK: tl.constexpr):
    token = tl.program_id(0)
    slot = tl.load(slot_ptr + token).to(tl.int64)
    if slot >= 0:
        offs = tl.arange(0, BLOCK)
        mask = offs < WIDTH
        k = tl.load(k_ptr + token * stride_k + offs, mask=mask)
        v = tl.load(v_ptr + token * stride_v + offs, mask=mask)
        tl.store(k_cache_ptr + slot * WIDTH + offs, k.to(k_cache_ptr.dtype.element_ty), mask=mask)
        tl.store(v_cache_ptr + slot * WIDTH + offs, v.to(v_cache_ptr.dtype.element_ty), mask=mask)


def store_kv_triton(k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                    slot_mapping: torch.Tensor) -> None:
    """Write each token's K/V ([T, kv_heads, head_dim]) into its slot of the paged pool; slot -1 is padding."""
    grid, args, constants = launch_arguments(k, v, k_cache, v_cache, slot_mapping)
    _store_kv_kernel[grid](*args, **constants)


def launch_arguments(k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                     slot_mapping: torch.Tensor) -> tuple[tuple[int], tuple, dict]:
    """(grid, arguments, constexprs) of one launch; apart from the launch, the tests read them to count variants."""
    tokens, heads, head_dim = k.shape
    assert k.stride(1) == head_dim and k.stride(2) == 1 and v.stride(1) == head_dim and v.stride(2) == 1
    assert k_cache.is_contiguous() and v_cache.is_contiguous()
    width = heads * head_dim
    return ((tokens,), (k, v, k_cache, v_cache, slot_mapping, k.stride(0), v.stride(0)),
            dict(WIDTH=width, BLOCK=triton.next_power_of_2(width)))
