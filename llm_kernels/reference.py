"""Plain-PyTorch twins of the Triton kernels: same signatures, used off CUDA and as the test oracle."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from budget.gguf import DEQUANT_ROWS


def store_kv_reference(k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                       slot_mapping: torch.Tensor) -> None:
    """Write each token's K/V ([T, kv_heads, head_dim]) into its slot of the paged pool; slot -1 is padding."""
    keep = slot_mapping >= 0
    slots = slot_mapping[keep]
    k_cache.view(-1, *k_cache.shape[2:])[slots] = k[keep].to(k_cache.dtype)
    v_cache.view(-1, *v_cache.shape[2:])[slots] = v[keep].to(v_cache.dtype)


def _gather_context(cache: torch.Tensor, block_table: torch.Tensor, length: int, dtype: torch.dtype) -> torch.Tensor:
    """The first `length` cached tokens of one sequence as [kv_heads, length, head_dim]."""
    block_size = cache.shape[1]
    blocks = block_table[: (length + block_size - 1) // block_size]
    return cache[blocks].flatten(0, 1)[:length].to(dtype).transpose(0, 1)


def paged_attention_reference(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                              cu_seqlens_q: torch.Tensor, seq_lens: torch.Tensor, block_tables: torch.Tensor,
                              scale: float, max_seqlen_q: int) -> torch.Tensor:
    """Causal attention of each sequence's new queries over its whole paged context (cached prefix + new tokens).

    q is [T, heads, head_dim] with sequences laid end to end (cu_seqlens_q); the pool is
    [blocks, block_size, kv_heads, head_dim]; seq_lens counts each sequence's tokens including the new ones.
    Single-token queries (decodes) run as one padded batch; prefill chunks run one by one.
    """
    out = torch.empty_like(q)
    q_lens = (cu_seqlens_q[1:] - cu_seqlens_q[:-1]).tolist()
    starts, lens = cu_seqlens_q[:-1].tolist(), seq_lens.tolist()
    decodes = [i for i, n in enumerate(q_lens) if n == 1]
    if decodes:
        _decode_batch(q, k_cache, v_cache, block_tables, decodes, starts, lens, scale, out)
    for i, n in enumerate(q_lens):
        if n <= 1:
            continue
        s, length = starts[i], lens[i]
        k = _gather_context(k_cache, block_tables[i], length, q.dtype)
        v = _gather_context(v_cache, block_tables[i], length, q.dtype)
        mask = torch.ones(n, length, dtype=torch.bool, device=q.device).tril(diagonal=length - n)
        o = F.scaled_dot_product_attention(q[s:s + n].transpose(0, 1), k, v, attn_mask=mask, scale=scale,
                                           enable_gqa=True)
        out[s:s + n] = o.transpose(0, 1)
    return out


def _decode_batch(q, k_cache, v_cache, block_tables, rows, starts, lens, scale, out) -> None:
    """One query per sequence: gather every context into a padded batch and attend once."""
    block_size = k_cache.shape[1]
    longest = max(lens[i] for i in rows)
    index = torch.tensor(rows, device=q.device)
    tables = block_tables[index, : (longest + block_size - 1) // block_size]
    k = k_cache[tables].flatten(1, 2)[:, :longest].to(q.dtype).transpose(1, 2)
    v = v_cache[tables].flatten(1, 2)[:, :longest].to(q.dtype).transpose(1, 2)
    lengths = torch.tensor([lens[i] for i in rows], device=q.device)
    mask = (torch.arange(longest, device=q.device)[None, :] < lengths[:, None])[:, None, None, :]
    q_rows = q[torch.tensor([starts[i] for i in rows], device=q.device)].unsqueeze(2)
    o = F.scaled_dot_product_attention(q_rows, k, v, attn_mask=mask, scale=scale, enable_gqa=True)
    out[index.new_tensor([starts[i] for i in rows])] = o.squeeze(2)


ROWS_PER_SLICE = DEQUANT_ROWS  # the quantized references dequantize this many rows at a time (the plan counts it)


def unpack_int4(nibbles: torch.Tensor) -> torch.Tensor:
    """[N, K/2] bytes (low nibble: even column, high: odd) -> [N, K] codes 0..15."""
    return torch.stack([nibbles & 0x0F, nibbles >> 4], dim=-1).flatten(-2)


def pack_int4(codes: torch.Tensor) -> torch.Tensor:
    """[N, K] codes 0..15 -> [N, K/2] bytes, the reference layout."""
    return (codes[:, 0::2] | (codes[:, 1::2] << 4)).to(torch.uint8)


def int4_matmul_reference(x: torch.Tensor, nibbles: torch.Tensor, scales_zeros: torch.Tensor,
                          group: int) -> torch.Tensor:
    """x @ W.T for W = (q - 8) * scale + zero per group of `group` inputs; scales_zeros is [K/group, N, 2]."""
    out = x.new_empty(*x.shape[:-1], nibbles.shape[0])
    for start in range(0, nibbles.shape[0], ROWS_PER_SLICE):
        rows = slice(start, start + ROWS_PER_SLICE)
        codes = unpack_int4(nibbles[rows]).to(x.dtype)
        scales = scales_zeros[:, rows, 0].t().to(x.dtype).repeat_interleave(group, dim=1)
        zeros = scales_zeros[:, rows, 1].t().to(x.dtype).repeat_interleave(group, dim=1)
        out[..., rows] = x @ ((codes - 8) * scales + zeros).t()
    return out


def int8_matmul_reference(x: torch.Tensor, codes: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """x @ W.T for W = q * scale, one scale per output row."""
    out = x.new_empty(*x.shape[:-1], codes.shape[0])
    for start in range(0, codes.shape[0], ROWS_PER_SLICE):
        rows = slice(start, start + ROWS_PER_SLICE)
        out[..., rows] = x @ (codes[rows].to(x.dtype) * scales[rows, None].to(x.dtype)).t()
    return out
