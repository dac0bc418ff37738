"""Triton kernel: causal attention of new queries over a paged KV pool, for decodes and prefill chunks alike.

One program handles one sequence, one KV head and a tile of its new tokens. The rows of a tile are
(token, query head of the group) pairs, so a decode step reads each K/V page once per KV head, not
once per query head. Keys are walked a page at a time with an online softmax.

Compiled variants: Triton specialises on pointer alignment and integer values, so the step's metadata comes in
aligned int32 buffers (engines/llm/input_batch.py) and the block table's width, which changes every step, is not
specialised; decode and prefill are the two variants, both compiled at warm-up.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit(do_not_specialize=["stride_table"])
def _paged_attention_kernel(q_ptr, k_cache_ptr, v_cache_ptr, o_ptr, cu_q_ptr, seq_lens_ptr, tables_ptr, scale,
                            stride_qt, stride_qh, stride_ot, stride_oh, stride_kb, stride_ks, stride_kh,
                            stride_vb, stride_vs, stride_vh, stride_table,
                            GROUP: tl.constexpr, GROUP_PAD: tl.constexpr, TOKENS: tl.constexpr,
                            HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, PAGE: tl.constexpr,
                            DOT_PRECISION: tl.constexpr):
    seq, kv_head, tile = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    q_start = tl.load(cu_q_ptr + seq)
    q_len = tl.load(cu_q_ptr + seq + 1) - q_start
    if tile * TOKENS < q_len:
        ctx_len = tl.load(seq_lens_ptr + seq)
        rows = tl.arange(0, TOKENS * GROUP_PAD)
        token = tile * TOKENS + rows // GROUP_PAD
        head = kv_head * GROUP + rows % GROUP_PAD
        row_ok = (token < q_len) & (rows % GROUP_PAD < GROUP)
        dims = tl.arange(0, BLOCK_D)
        dim_ok = dims < HEAD_DIM
        q_off = (q_start + token).to(tl.int64)[:, None] * stride_qt + head[:, None] * stride_qh + dims[None, :]
        q = tl.load(q_ptr + q_off, mask=row_ok[:, None] & dim_ok[None, :], other=0.0)
        q_pos = ctx_len - q_len + token

        m_i = tl.full([TOKENS * GROUP_PAD], float("-inf"), tl.float32)
        l_i = tl.zeros([TOKENS * GROUP_PAD], tl.float32)
        acc = tl.zeros([TOKENS * GROUP_PAD, BLOCK_D], tl.float32)
        keys_needed = tl.minimum(ctx_len, ctx_len - q_len + (tile + 1) * TOKENS)
        slots = tl.arange(0, PAGE)
        for page in range(0, tl.cdiv(keys_needed, PAGE)):
            block = tl.load(tables_ptr + seq * stride_table + page).to(tl.int64)
            key_pos = page * PAGE + slots
            # a reused block's tail past the context holds stale values, maybe inf or NaN: never read them
            kv_ok = (key_pos < ctx_len)[:, None] & dim_ok[None, :]
            k = tl.load(k_cache_ptr + block * stride_kb + slots[:, None] * stride_ks + kv_head * stride_kh
                        + dims[None, :], mask=kv_ok, other=0.0).to(q.dtype)
            v = tl.load(v_cache_ptr + block * stride_vb + slots[:, None] * stride_vs + kv_head * stride_vh
                        + dims[None, :], mask=kv_ok, other=0.0).to(q.dtype)
            s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * scale
            visible = (key_pos[None, :] <= q_pos[:, None]) & (key_pos[None, :] < ctx_len)
            s = tl.where(visible, s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            alpha = tl.exp(m_i - m_new)
            p = tl.exp(s - m_new[:, None])
            l_i = l_i * alpha + tl.sum(p, 1)
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
            m_i = m_new
        acc = acc / l_i[:, None]
        o_off = (q_start + token).to(tl.int64)[:, None] * stride_ot + head[:, None] * stride_oh + dims[None, :]
        tl.store(o_ptr + o_off, acc.to(o_ptr.dtype.element_ty), mask=row_ok[:, None] & dim_ok[None, :])


def paged_attention_triton(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                           cu_seqlens_q: torch.Tensor, seq_lens: torch.Tensor, block_tables: torch.Tensor,
                           scale: float, max_seqlen_q: int) -> torch.Tensor:
    """Causal attention of each sequence's new queries over its whole paged context (see the reference)."""
    out = torch.empty_like(q)
    grid, args, constants = launch_arguments(q, k_cache, v_cache, out, cu_seqlens_q, seq_lens, block_tables, scale,
                                             max_seqlen_q)
    _paged_attention_kernel[grid](*args, **constants)
    return out


def launch_arguments(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, out: torch.Tensor,
                     cu_seqlens_q: torch.Tensor, seq_lens: torch.Tensor, block_tables: torch.Tensor, scale: float,
                     max_seqlen_q: int) -> tuple[tuple[int, int, int], tuple, dict]:
    """(grid, arguments, constexprs) of one launch; apart from the launch, the tests read them to count variants."""
    _, heads, head_dim = q.shape
    _, page, kv_heads, _ = k_cache.shape
    assert q.stride(2) == 1 and k_cache.stride(3) == 1 and v_cache.stride(3) == 1 and block_tables.stride(1) == 1
    assert page >= 16 and page & (page - 1) == 0, "block_size must be a power of two, at least 16"
    group = heads // kv_heads
    group_pad = triton.next_power_of_2(group)
    rows = 16 if max_seqlen_q == 1 else 64
    tokens_per_tile = max(1, rows // group_pad)
    grid = (seq_lens.shape[0], kv_heads, triton.cdiv(max_seqlen_q, tokens_per_tile))
    args = (q, k_cache, v_cache, out, cu_seqlens_q, seq_lens, block_tables, scale,
            q.stride(0), q.stride(1), out.stride(0), out.stride(1),
            k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
            v_cache.stride(0), v_cache.stride(1), v_cache.stride(2), block_tables.stride(0))
    # float32 dots in full precision: on NVIDIA tl.dot would otherwise round its inputs to TF32 (~1e-3 error)
    constants = dict(GROUP=group, GROUP_PAD=group_pad, TOKENS=tokens_per_tile, HEAD_DIM=head_dim,
                     BLOCK_D=max(16, triton.next_power_of_2(head_dim)), PAGE=page,
                     DOT_PRECISION="ieee" if q.dtype == torch.float32 else "tf32")
    return grid, args, constants
