"""Triton kernel: x @ W.T for a group-wise int4 weight, the weight read as packed nibbles and widened tile by tile.

The layout is the reference's (llm_kernels/reference.py, `pack_int4`): [N, K/2] bytes, the low nibble an even input
column and the high nibble the odd one after it, with a (scale, zero) pair per GROUP inputs ([K/GROUP, N, 2]) and
w = (q - 8) * scale + zero. Each program owns a BLOCK_M x BLOCK_N tile of the output and walks K: it reads the
tile's bytes once, widens the low and high nibbles into two [BLOCK_K/2, BLOCK_N] weight tiles, and multiplies them
by the even and odd input columns, so the nibbles are never interleaved in registers. Decode reads 4.5 bits a
weight (codes plus bfloat16 scales and zeros per 32) instead of 16: the memory-bound step's lever.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK_N = 64
BLOCK_K = 64   # inputs per step: a multiple of the group (32), so a byte's two columns share one scale


@triton.jit
def _int4_matmul_kernel(x_ptr, w_ptr, sz_ptr, out_ptr, M, N, K, stride_xm, stride_om,
                        GROUP: tl.constexpr, IEEE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                        BLOCK_K: tl.constexpr):
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    half = tl.arange(0, BLOCK_K // 2)
    m_ok, n_ok = offs_m < M, offs_n < N
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        even = k0 + 2 * half                                   # the even input column each byte starts
        k_ok = even < K
        w_ok = k_ok[:, None] & n_ok[None, :]
        nibbles = tl.load(w_ptr + offs_n[None, :] * (K // 2) + (even // 2)[:, None], mask=w_ok, other=0)
        pair = sz_ptr + (even // GROUP)[:, None] * (2 * N) + 2 * offs_n[None, :]
        scale = tl.load(pair, mask=w_ok, other=0.0).to(tl.float32)
        zero = tl.load(pair + 1, mask=w_ok, other=0.0).to(tl.float32)
        w_even = ((nibbles & 0xF).to(tl.float32) - 8.0) * scale + zero      # [BLOCK_K/2, BLOCK_N]
        w_odd = ((nibbles >> 4).to(tl.float32) - 8.0) * scale + zero
        x_ok = m_ok[:, None] & k_ok[None, :]
        rows = x_ptr + offs_m[:, None] * stride_xm + even[None, :]
        x_even = tl.load(rows, mask=x_ok, other=0.0)
        x_odd = tl.load(rows + 1, mask=x_ok, other=0.0)
        if IEEE:  # float32 activations: full-precision products, not TF32
            acc += tl.dot(x_even, w_even, input_precision="ieee")
            acc += tl.dot(x_odd, w_odd, input_precision="ieee")
        else:
            acc += tl.dot(x_even, w_even.to(x_even.dtype))
            acc += tl.dot(x_odd, w_odd.to(x_odd.dtype))
    out = out_ptr + offs_m[:, None] * stride_om + offs_n[None, :]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])


def int4_matmul_triton(x: torch.Tensor, nibbles: torch.Tensor, scales_zeros: torch.Tensor,
                       group: int) -> torch.Tensor:
    """x [..., K] @ W.T with W packed as `pack_int4` ([N, K/2] uint8) and scales_zeros [K/group, N, 2]."""
    rows = x.reshape(-1, x.shape[-1]).contiguous()
    m, k = rows.shape
    n = nibbles.shape[0]
    assert nibbles.shape[1] * 2 == k and k % group == 0 and BLOCK_K % group == 0 and group % 2 == 0
    assert nibbles.is_contiguous() and scales_zeros.is_contiguous() and scales_zeros.shape == (k // group, n, 2)
    out = torch.empty(m, n, dtype=x.dtype, device=x.device)
    block_m = 16 if m <= 16 else 32 if m <= 32 else 64   # decode's few rows: the smallest tile tl.dot takes
    grid = (triton.cdiv(m, block_m), triton.cdiv(n, BLOCK_N))
    _int4_matmul_kernel[grid](rows, nibbles, scales_zeros, out, m, n, k, rows.stride(0), out.stride(0),
                              GROUP=group, IEEE=x.dtype == torch.float32, BLOCK_M=block_m, BLOCK_N=BLOCK_N,
                              BLOCK_K=BLOCK_K)
    return out.view(*x.shape[:-1], n)
