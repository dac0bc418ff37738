"""Plain-PyTorch twins of the Triton kernels: same signatures, used off CUDA and as the test oracle."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from budget.gguf import DEQUANT_ROWS


@dataclass(slots=True)
class ReferencePlan:
    """The step's gather and scatter indices, worked out once and shared by every layer (as vLLM's attention
    metadata builders do), so a layer's attention is a few whole-tensor ops."""
    write_rows: torch.Tensor | None    # rows of the step's tokens that have a slot (None: all of them)
    write_slots: torch.Tensor          # those rows' pool slots
    decode_rows: torch.Tensor | None   # query rows of single-token sequences (None: every row is one)
    decode_blocks: torch.Tensor | None  # [decodes, blocks] pool blocks of each one's context, padded with 0
    decode_length: int                 # context tokens of the longest of them
    decode_mask: torch.Tensor | None   # [decodes, 1, 1, length] true where a token is real (None: all are)
    prefills: list[tuple[int, int, int, torch.Tensor]]  # (first row, new tokens, context tokens, its pool blocks)

    @classmethod
    def build(cls, slot_mapping: torch.Tensor, cu_seqlens_q: torch.Tensor, seq_lens: torch.Tensor,
              block_tables: torch.Tensor, block_size: int) -> ReferencePlan:
        keep = slot_mapping >= 0
        padded = not bool(keep.all())
        write_rows = keep.nonzero().squeeze(1) if padded else None
        q_lens = (cu_seqlens_q[1:] - cu_seqlens_q[:-1]).tolist()
        starts, lens = cu_seqlens_q[:-1].tolist(), seq_lens.tolist()
        decodes = [i for i, n in enumerate(q_lens) if n == 1]
        decode_rows = decode_blocks = decode_mask = None
        longest = 0
        if decodes:
            longest = max(lens[i] for i in decodes)
            index = torch.tensor(decodes, device=slot_mapping.device)
            decode_blocks = block_tables.index_select(0, index)[:, : -(-longest // block_size)].long()
            lengths = seq_lens.index_select(0, index)
            if bool((lengths < longest).any()):
                decode_mask = (torch.arange(longest, device=index.device) < lengths[:, None])[:, None, None, :]
            if len(decodes) < len(q_lens):
                decode_rows = torch.tensor([starts[i] for i in decodes], device=index.device)
        prefills = [(starts[i], n, lens[i], block_tables[i, : -(-lens[i] // block_size)].long())
                    for i, n in enumerate(q_lens) if n > 1]
        slots = (slot_mapping[write_rows] if padded else slot_mapping).long()  # index_copy_ takes int64 only
        return cls(write_rows, slots, decode_rows, decode_blocks, longest, decode_mask, prefills)


def store_kv_reference(k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                       slot_mapping: torch.Tensor, plan: ReferencePlan | None = None) -> None:
    """Write each token's K/V ([T, kv_heads, head_dim]) into its slot of the paged pool; slot -1 is padding."""
    if plan is None:
        keep = slot_mapping >= 0
        rows, slots = keep.nonzero().squeeze(1), slot_mapping[keep].long()
    else:
        rows, slots = plan.write_rows, plan.write_slots
    for new, cache in ((k, k_cache), (v, v_cache)):
        new = (new if rows is None else new.index_select(0, rows)).to(cache.dtype)
        if cache.element_size() == 1:  # fp8: index_copy_ has no CPU kernel for it, its bytes copy alike
            new, cache = new.view(torch.uint8), cache.view(torch.uint8)
        cache.view(-1, *cache.shape[2:]).index_copy_(0, slots, new)


def paged_attention_reference(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                              cu_seqlens_q: torch.Tensor, seq_lens: torch.Tensor, block_tables: torch.Tensor,
                              scale: float, max_seqlen_q: int, plan: ReferencePlan | None = None) -> torch.Tensor:
    """Causal attention of each sequence's new queries over its whole paged context (cached prefix + new tokens).

    q is [T, heads, head_dim] with sequences laid end to end (cu_seqlens_q); the pool is
    [blocks, block_size, kv_heads, head_dim]; seq_lens counts each sequence's tokens including the new ones.
    Single-token queries (decodes) run as one padded batch; prefill chunks run one by one.
    """
    if plan is None:
        no_writes = cu_seqlens_q.new_zeros(0)
        plan = ReferencePlan.build(no_writes, cu_seqlens_q, seq_lens, block_tables, k_cache.shape[1])
    if plan.decode_blocks is not None and plan.decode_rows is None and not plan.prefills:
        return _decode(q, k_cache, v_cache, plan, scale)   # a pure decode step: every row is one sequence's query
    out = torch.empty_like(q)
    if plan.decode_blocks is not None:
        out.index_copy_(0, plan.decode_rows, _decode(q.index_select(0, plan.decode_rows), k_cache, v_cache, plan,
                                                     scale))
    for start, n, length, blocks in plan.prefills:
        k, v = (cache.index_select(0, blocks).flatten(0, 1)[:length].to(q.dtype).transpose(0, 1)
                for cache in (k_cache, v_cache))
        mask = torch.ones(n, length, dtype=torch.bool, device=q.device).tril(diagonal=length - n)
        o = F.scaled_dot_product_attention(q[start:start + n].transpose(0, 1), k, v, attn_mask=mask, scale=scale,
                                           enable_gqa=True)
        out[start:start + n] = o.transpose(0, 1)
    return out


def _decode(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, plan: ReferencePlan,
            scale: float) -> torch.Tensor:
    """One query per sequence ([decodes, heads, head_dim]) over its context gathered a block at a time, as one
    padded batch."""
    seqs, length = plan.decode_blocks.shape[0], plan.decode_length
    k, v = (cache.index_select(0, plan.decode_blocks.flatten()).view(seqs, -1, *cache.shape[2:])[:, :length]
            .to(q.dtype).transpose(1, 2) for cache in (k_cache, v_cache))
    if plan.decode_mask is not None:  # a shorter sequence's padding is a block's stale tail, maybe inf or NaN
        padding = ~plan.decode_mask.transpose(2, 3)
        k, v = k.masked_fill(padding, 0), v.masked_fill(padding, 0)
    o = F.scaled_dot_product_attention(q.unsqueeze(2), k, v, attn_mask=plan.decode_mask, scale=scale,
                                       enable_gqa=True)
    return o.squeeze(2)


ROWS_PER_SLICE = DEQUANT_ROWS  # the quantized references dequantize this many rows at a time (the plan counts it)


def unpack_int4(nibbles: torch.Tensor) -> torch.Tensor:
    """[N, K/2] bytes (low nibble: even column, high: odd) -> [N, K] codes 0..15."""
    return torch.stack([nibbles & 0x0F, nibbles >> 4], dim=-1).flatten(-2)


def pack_int4(codes: torch.Tensor) -> torch.Tensor:
    """[N, K] codes 0..15 -> [N, K/2] bytes, the reference layout."""
    return (codes[:, 0::2] | (codes[:, 1::2] << 4)).to(torch.uint8)


def int4_matmul_reference(x: torch.Tensor, nibbles: torch.Tensor, scales_zeros: torch.Tensor, group: int,
                          unpack: Callable[[torch.Tensor], torch.Tensor] = unpack_int4) -> torch.Tensor:
    """x @ W.T for W = (q - 8) * scale + zero per group of `group` inputs; scales_zeros is [K/group, N, 2]; `unpack`
    reads a slice of rows' codes from `nibbles` (the reference layout unless told). One widened slice at a time."""
    out = x.new_empty(*x.shape[:-1], nibbles.shape[0])
    for start in range(0, nibbles.shape[0], ROWS_PER_SLICE):
        rows = slice(start, start + ROWS_PER_SLICE)
        groups = unpack(nibbles[rows]).to(x.dtype).unflatten(1, (-1, group))   # [rows, K/group, group]
        groups.sub_(8).mul_(scales_zeros[:, rows, 0].t()[..., None]).add_(scales_zeros[:, rows, 1].t()[..., None])
        out[..., rows] = x @ groups.flatten(1).t()
    return out


def scaled_matmul_reference(x: torch.Tensor, codes: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """x @ W.T for W = q * scale, one scale per output row (int8 or float8 codes). One widened slice at a time."""
    out = x.new_empty(*x.shape[:-1], codes.shape[0])
    for start in range(0, codes.shape[0], ROWS_PER_SLICE):
        rows = slice(start, start + ROWS_PER_SLICE)
        out[..., rows] = x @ codes[rows].to(x.dtype).mul_(scales[rows, None]).t()
    return out
