"""Triton kernel: causal attention of new queries over a paged KV pool, for decodes and prefill chunks alike.

One program handles one sequence, one KV head and a tile of its new tokens. The rows of a tile are
(token, query head of the group) pairs, so a decode step reads each K/V page once per KV head, not
once per query head. Keys are walked a tile at a time with an online softmax: a page for a decode, 64 keys across
pages for a prefill chunk, so its dots are 64 x 64.

Split-KV decode (flash-decoding, as vLLM's unified Triton attention): when a decode step's grid of (sequence, KV
head) programs is small beside the card's SMs (Qwen3-8B at batch 1: 8 programs on 132 SMs), each sequence's pages are
shared out among up to MAX_SPLITS programs, each writing its partial (max, sum, unnormalised output), and a reduce
kernel combines them. The split count depends on the batch alone, so a captured CUDA graph replays it at any length.

Compiled variants: Triton specialises on pointer alignment and integer values, so the step's metadata comes in
aligned int32 buffers (engines/llm/input_batch.py) and the block table's width, which changes every step, is not
specialised (nor the split count); decode, split decode and prefill are the variants, all compiled at warm-up.
"""
from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl


MAX_SPLITS = 16
PREFILL_KEYS = 64  # keys a prefill tile walks at once, across pages: 64x64 dots, not 64x16


@triton.jit(do_not_specialize=["stride_table", "num_splits"])
def _paged_attention_kernel(q_ptr, k_cache_ptr, v_cache_ptr, o_ptr, cu_q_ptr, seq_lens_ptr, tables_ptr, scale,
                            stride_qt, stride_qh, stride_ot, stride_oh, stride_kb, stride_ks, stride_kh,
                            stride_vb, stride_vs, stride_vh, stride_table, part_o_ptr, part_ml_ptr, num_splits,
                            GROUP: tl.constexpr, GROUP_PAD: tl.constexpr, TOKENS: tl.constexpr,
                            HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, PAGE: tl.constexpr, KEYS: tl.constexpr,
                            DOT_PRECISION: tl.constexpr, SPLIT: tl.constexpr, NUM_HEADS: tl.constexpr,
                            SPLITS: tl.constexpr):
    seq, kv_head, tile = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    split = 0
    if SPLIT:  # a decode: one tile of one token; the grid's third axis shares out its pages
        split = tile
        tile = 0
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
        keys = tl.arange(0, KEYS)  # a tile of KEYS keys spans KEYS // PAGE pages (one page for a decode)
        first_tile, end_tile = 0, tl.cdiv(keys_needed, KEYS)
        if SPLIT:
            per_split = tl.cdiv(end_tile, num_splits)
            first_tile = split * per_split
            end_tile = tl.minimum(end_tile, first_tile + per_split)
        for key_tile in range(first_tile, end_tile):
            key_pos = key_tile * KEYS + keys
            # a reused block's tail past the context holds stale values, maybe inf or NaN: never read them (nor
            # the block table past the sequence's last page)
            key_ok = key_pos < ctx_len
            block = tl.load(tables_ptr + seq * stride_table + key_pos // PAGE, mask=key_ok, other=0).to(tl.int64)
            slot = key_pos % PAGE
            kv_ok = key_ok[:, None] & dim_ok[None, :]
            k = tl.load(k_cache_ptr + block[:, None] * stride_kb + slot[:, None] * stride_ks + kv_head * stride_kh
                        + dims[None, :], mask=kv_ok, other=0.0).to(q.dtype)
            v = tl.load(v_cache_ptr + block[:, None] * stride_vb + slot[:, None] * stride_vs + kv_head * stride_vh
                        + dims[None, :], mask=kv_ok, other=0.0).to(q.dtype)
            s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * scale
            visible = (key_pos[None, :] <= q_pos[:, None]) & key_ok[None, :]
            s = tl.where(visible, s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            alpha = tl.exp(m_i - m_new)
            p = tl.exp(s - m_new[:, None])
            l_i = l_i * alpha + tl.sum(p, 1)
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
            m_i = m_new
        if SPLIT:  # the partial, unnormalised: [token, head, split] of float32 scratch; an empty split's m is -inf
            part = ((q_start + token).to(tl.int64) * NUM_HEADS + head) * SPLITS + split
            tl.store(part_o_ptr + part[:, None] * BLOCK_D + dims[None, :], acc, mask=row_ok[:, None])
            tl.store(part_ml_ptr + part * 2, m_i, mask=row_ok)
            tl.store(part_ml_ptr + part * 2 + 1, l_i, mask=row_ok)
        else:
            acc = acc / l_i[:, None]
            o_off = (q_start + token).to(tl.int64)[:, None] * stride_ot + head[:, None] * stride_oh + dims[None, :]
            tl.store(o_ptr + o_off, acc.to(o_ptr.dtype.element_ty), mask=row_ok[:, None] & dim_ok[None, :])


@triton.jit(do_not_specialize=["num_splits"])
def _reduce_splits_kernel(o_ptr, part_o_ptr, part_ml_ptr, num_splits, stride_ot, stride_oh,
                          NUM_HEADS: tl.constexpr, SPLITS: tl.constexpr, HEAD_DIM: tl.constexpr,
                          BLOCK_D: tl.constexpr):
    """One (token, head): the splits' partials rescaled to their common max and summed, then normalised."""
    token, head = tl.program_id(0), tl.program_id(1)
    splits = tl.arange(0, SPLITS)
    dims = tl.arange(0, BLOCK_D)
    part = (token.to(tl.int64) * NUM_HEADS + head) * SPLITS + splits
    used = splits < num_splits
    m = tl.load(part_ml_ptr + part * 2, mask=used, other=float("-inf"))
    l_i = tl.load(part_ml_ptr + part * 2 + 1, mask=used, other=0.0)
    weight = tl.where(m > float("-inf"), tl.exp(m - tl.max(m, 0)), 0.0)
    acc = tl.load(part_o_ptr + part[:, None] * BLOCK_D + dims[None, :], mask=used[:, None], other=0.0)
    out = tl.sum(acc * weight[:, None], 0) / tl.sum(l_i * weight, 0)
    tl.store(o_ptr + token.to(tl.int64) * stride_ot + head * stride_oh + dims, out.to(o_ptr.dtype.element_ty),
             mask=dims < HEAD_DIM)


def paged_attention_triton(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                           cu_seqlens_q: torch.Tensor, seq_lens: torch.Tensor, block_tables: torch.Tensor,
                           scale: float, max_seqlen_q: int, num_splits: int | None = None) -> torch.Tensor:
    """Causal attention of each sequence's new queries over its whole paged context (see the reference).

    `num_splits`: a decode step's pages shared among this many programs per sequence (None: by the grid's size)."""
    out = torch.empty_like(q)
    for kernel, grid, args, constants in launches(q, k_cache, v_cache, out, cu_seqlens_q, seq_lens, block_tables,
                                                  scale, max_seqlen_q, num_splits):
        kernel[grid](*args, **constants)
    return out


def launches(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, out: torch.Tensor,
             cu_seqlens_q: torch.Tensor, seq_lens: torch.Tensor, block_tables: torch.Tensor, scale: float,
             max_seqlen_q: int, num_splits: int | None = None) -> list[tuple]:
    """(kernel, grid, arguments, constexprs) of each launch of one step, in order (the tests count their variants)."""
    if max_seqlen_q > 1:
        num_splits = 1
    elif num_splits is None:
        num_splits = decode_splits(seq_lens.shape[0] * k_cache.shape[2], q.device)
    if num_splits == 1:
        return [(_paged_attention_kernel, *launch_arguments(q, k_cache, v_cache, out, cu_seqlens_q, seq_lens,
                                                            block_tables, scale, max_seqlen_q))]
    block_d = max(16, triton.next_power_of_2(q.shape[2]))  # float32 scratch: partial outputs, maxima and sums
    parts = (q.new_empty(q.shape[0], q.shape[1], MAX_SPLITS, block_d, dtype=torch.float32),
             q.new_empty(q.shape[0], q.shape[1], MAX_SPLITS, 2, dtype=torch.float32))
    reduce = ((q.shape[0], q.shape[1]), (out, *parts, num_splits, out.stride(0), out.stride(1)),
              dict(NUM_HEADS=q.shape[1], SPLITS=MAX_SPLITS, HEAD_DIM=q.shape[2], BLOCK_D=block_d))
    return [(_paged_attention_kernel, *launch_arguments(q, k_cache, v_cache, out, cu_seqlens_q, seq_lens,
                                                        block_tables, scale, max_seqlen_q, num_splits, parts)),
            (_reduce_splits_kernel, *reduce)]


def decode_splits(programs: int, device: torch.device) -> int:
    """How many programs share a decode's pages: enough to give the card about two programs per SM (one per
    (sequence, KV head) when the batch alone fills it); from the batch's shape alone, so graphs replay it."""
    return max(1, min(MAX_SPLITS, 2 * _sm_count(device) // max(programs, 1)))


@functools.cache
def _sm_count(device: torch.device) -> int:
    """The card's SMs (asked once: every layer of every decode step needs it); 132, an H100's, off CUDA."""
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 132


def launch_arguments(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, out: torch.Tensor,
                     cu_seqlens_q: torch.Tensor, seq_lens: torch.Tensor, block_tables: torch.Tensor, scale: float,
                     max_seqlen_q: int, num_splits: int = 1, parts: tuple[torch.Tensor, torch.Tensor] | None = None
                     ) -> tuple[tuple[int, int, int], tuple, dict]:
    """(grid, arguments, constexprs) of one launch; apart from the launch, the tests read them to count variants."""
    _, heads, head_dim = q.shape
    _, page, kv_heads, _ = k_cache.shape
    assert q.stride(2) == 1 and k_cache.stride(3) == 1 and v_cache.stride(3) == 1 and block_tables.stride(1) == 1
    assert page >= 16 and page & (page - 1) == 0, "block_size must be a power of two, at least 16"
    group = heads // kv_heads
    group_pad = triton.next_power_of_2(group)
    rows = 16 if max_seqlen_q == 1 else 64
    tokens_per_tile = max(1, rows // group_pad)
    split = parts is not None
    grid = (seq_lens.shape[0], kv_heads, num_splits if split else triton.cdiv(max_seqlen_q, tokens_per_tile))
    part_o, part_ml = parts if split else (out, out)
    args = (q, k_cache, v_cache, out, cu_seqlens_q, seq_lens, block_tables, scale,
            q.stride(0), q.stride(1), out.stride(0), out.stride(1),
            k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
            v_cache.stride(0), v_cache.stride(1), v_cache.stride(2), block_tables.stride(0),
            part_o, part_ml, num_splits)
    # float32 dots in full precision: on NVIDIA tl.dot would otherwise round its inputs to TF32 (~1e-3 error)
    constants = dict(GROUP=group, GROUP_PAD=group_pad, TOKENS=tokens_per_tile, HEAD_DIM=head_dim,
                     BLOCK_D=max(16, triton.next_power_of_2(head_dim)), PAGE=page,
                     KEYS=page if max_seqlen_q == 1 else max(page, PREFILL_KEYS),
                     DOT_PRECISION="ieee" if q.dtype == torch.float32 else "tf32", SPLIT=split, NUM_HEADS=heads,
                     SPLITS=MAX_SPLITS)
    return grid, args, constants
